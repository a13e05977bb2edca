"""References (``"module:qualname"``) resolved by what they resolve to, never by their spelling.

A reference ``"module:qualname"`` is allowed when its spelling matches ``allowed_callables`` **and**
the object it resolves to is itself defined there: the module is taken from :data:`sys.modules`
(or imported, only when the list allows it), the qualified name is walked one plain name at a
time, through classes only, by looking in ``__dict__``s (no descriptor, ``__getattr__`` or
property runs), and the object reached must be a function, a built-in function or a class whose
own ``__module__`` and ``__qualname__`` are the reference's. So ``"myapp.jobs:logging.os.system"``
(a module attribute), ``"myapp.tasks:send_mail.__globals__.get"`` (a function's attributes) and
``"myapp.jobs:helper"`` where ``helper`` was imported from elsewhere are all refused.

The same rule serves the store (every read, before APScheduler resolves the callable; every
``add_job``/``update_job``), the restricted unpickler's ``find_class`` and the CLI's ``--allow``.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["GlobalGate", "RefusedReference", "as_gate", "brief", "resolve_reference", "split_reference"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOB_SEGMENT = re.compile(r"[A-Za-z0-9_*?\[\]!]+")
_MISSING = object()
#: Kinds of object a reference may resolve to (APScheduler's ``obj_to_ref`` makes references to
#: nothing else that resolves back to itself).
_CALLABLE_KINDS = (types.FunctionType, types.BuiltinFunctionType, functools._lru_cache_wrapper)
_CACHE_SIZE = 1024


class RefusedReference(ValueError):
    """A reference that is not allowed, with the reason (and what to do) as its message."""


def _is_plain(name: str) -> bool:
    """A plain identifier: not a dunder, not a sunder, not a name-mangled private one."""
    return (
        bool(_NAME.fullmatch(name))
        and not name.startswith("__")
        and not (len(name) > 2 and name.startswith("_") and name.endswith("_"))
    )


def split_reference(reference: Any) -> tuple[str, list[str]]:
    """``"a.b:C.d"`` -> ``("a.b", ["C", "d"])``, or :class:`RefusedReference` when malformed."""
    if type(reference) is not str or reference.count(":") != 1:
        raise RefusedReference(f"{brief(reference)}, which is not a 'module:qualname' reference")
    module, _, qualname = reference.partition(":")
    names = qualname.split(".")
    if not all(_NAME.fullmatch(part) for part in module.split(".")) or not all(map(_is_plain, names)):
        raise RefusedReference(
            f"{brief(reference)}, which is not a reference to a function or class: its module and "
            "qualified name must be plain identifiers (no dunder or '_x_' names)"
        )
    return module, names


def resolve_reference(reference: str, may_import: Callable[[str], bool]) -> Any:
    """The function or class ``reference`` names, when it is defined where the reference says.

    :param may_import: whether a module not imported yet may be imported to look (the allow-list's
        verdict; nothing else is ever imported)
    :raises RefusedReference: with the reason and what to do
    """
    module_name, names = split_reference(reference)
    module = sys.modules.get(module_name)
    if module is None:
        if not may_import(module_name):
            raise RefusedReference(f"{reference!r}, whose module is not imported (nor imported to look)")
        try:
            importlib.import_module(module_name)
        except Exception as exc:
            raise RefusedReference(
                f"{reference!r}, whose module cannot be imported ({type(exc).__name__}: {exc})"
            ) from exc
        module = sys.modules.get(module_name)
    if type(module) is not types.ModuleType:
        raise RefusedReference(
            f"{reference!r}, whose module is a {type(module).__name__} in sys.modules, not a plain "
            "module: its attributes cannot be looked up without running its code"
        )
    found: Any = module
    for depth, name in enumerate(names):
        if depth == 0:
            found = module.__dict__.get(name, _MISSING)
        elif isinstance(found, type):
            found = _class_attribute(reference, found, name)
        else:
            where = ".".join(names[:depth])
            raise RefusedReference(
                f"{reference!r}, which goes through {module_name}:{where}, a {type(found).__name__}: "
                "a reference may only go through classes"
            )
        if found is _MISSING:
            missing = ".".join(names[: depth + 1])
            raise RefusedReference(
                f"{reference!r}, which names nothing: {module_name}:{missing} is not in a module's or "
                "class's own namespace"
            )
    if isinstance(found, (classmethod, staticmethod)):
        found = found.__func__
    if not isinstance(found, (type, *_CALLABLE_KINDS)):
        raise RefusedReference(
            f"{reference!r}, which is a {type(found).__name__}: a job may only name a function or class"
        )
    own = _own_reference(found)
    if own is None:
        raise RefusedReference(
            f"{reference!r}, which resolves to an object with no module and name of its own"
        )
    if own != reference:
        defining = own.partition(":")[0]
        if defining != module_name:
            raise RefusedReference(
                f"{reference!r}, which resolves to {own!r}, defined in {defining!r} and only imported "
                f"into {module_name!r}: allow {defining!r} (or exactly {own!r}) and name it {own!r}"
            )
        raise RefusedReference(
            f"{reference!r}, which resolves to an object whose own module and qualified name are "
            f"{own!r}: a job names a function or class by those"
        )
    return found


def _class_attribute(reference: str, cls: type, name: str) -> Any:
    """``name`` as ``getattr(cls, name)`` would find it, found without running a descriptor, or
    refused when a metaclass could answer differently."""
    meta: Any = type(cls)
    metaclass_names = [vars(klass) for klass in meta.__mro__[:-2]] if meta is not type else []
    if meta.__getattribute__ is not type.__getattribute__ or any(name in names for names in metaclass_names):
        raise RefusedReference(
            f"{reference!r}, whose class {cls.__qualname__} has a metaclass ({meta.__qualname__}) that "
            f"defines {name!r} or how attributes are found: getattr would run its code"
        )
    for klass in cls.__mro__:
        namespace = vars(klass)
        if name in namespace:
            found = namespace[name]
            if isinstance(found, type) and hasattr(type(found), "__get__"):
                raise RefusedReference(
                    f"{reference!r}, which is a class whose metaclass is a descriptor: getattr would run it"
                )
            return found
    return _MISSING


def _own_reference(obj: Any) -> str | None:
    """``"module:qualname"`` from the object's own names, or ``None``."""
    if isinstance(obj, type):
        module, qualname = vars(obj).get("__module__"), type.__dict__["__qualname__"].__get__(obj)
    elif isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        module, qualname = obj.__module__, obj.__qualname__
    else:  # a functools wrapper: update_wrapper stored the wrapped function's names in its __dict__
        names = vars(obj)
        module, qualname = names.get("__module__"), names.get("__qualname__")
    if type(module) is not str or type(qualname) is not str:
        return None
    return f"{module}:{qualname}"


def brief(value: Any, limit: int = 80) -> str:
    """A stored reference for a message: quoted when a string, else its type; cut to ``limit``."""
    text = repr(value) if type(value) is str else f"a {type(value).__name__}"
    return text if len(text) <= limit else f"{text[:limit]}..."


class GlobalGate:
    """What the restricted unpickler asks about a global: a ``(module, name) -> bool`` predicate
    that also resolves the global by the reference rule and says whether callables by value are
    admitted. ``CallablePolicy.allows_global`` is one; any plain predicate can be wrapped in one."""

    def __init__(self, allows: Callable[[str, str], bool], *, by_value: bool = False) -> None:
        self._allows = allows
        self.by_value = by_value

    def __call__(self, module: str, name: str) -> bool:
        """True when ``module.name`` may be loaded (spelling and resolution)."""
        try:
            self.resolve(module, name)
        except RefusedReference:
            return False
        return True

    def resolve(self, module: str, name: str) -> Any:
        """The object ``module:name`` resolves to, when allowed.

        :raises RefusedReference: not allowed, with the reason
        """
        if type(module) is not str or type(name) is not str or not self._allows(module, name):
            raise RefusedReference(f"{module}:{name} is not allowed")
        return resolve_reference(f"{module}:{name}", lambda _module: True)

    def module_allowed(self, module: str) -> bool:
        """True when ``module`` may be imported to build a callable by value (a plain predicate
        cannot say: never)."""
        return False


def as_gate(allows_global: Callable[[str, str], bool]) -> GlobalGate:
    """``allows_global`` as a :class:`GlobalGate` (a plain predicate is wrapped: no by-value)."""
    return allows_global if isinstance(allows_global, GlobalGate) else GlobalGate(allows_global)
