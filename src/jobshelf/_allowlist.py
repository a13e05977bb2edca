"""Which callables a stored job may name, judged by what a reference resolves to.

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

import fnmatch
import functools
import importlib
import re
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CallablePolicy", "GlobalGate", "RefusedReference", "resolve_reference"]

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
        raise RefusedReference(f"{_short(reference)}, which is not a 'module:qualname' reference")
    module, _, qualname = reference.partition(":")
    names = qualname.split(".")
    if not all(_NAME.fullmatch(part) for part in module.split(".")) or not all(map(_is_plain, names)):
        raise RefusedReference(
            f"{_short(reference)}, which is not a reference to a function or class: its module and "
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


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if type(value) is str else f"a {type(value).__name__}"
    return text if len(text) <= limit else f"{text[:limit]}..."


class _Patterns:
    """The spelling check: module names (and their submodules) and per-segment globs."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.modules: tuple[str, ...] = ()
        self.globs: tuple[tuple[list[str], list[str]], ...] = ()
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise TypeError(f"allowed_callables holds {pattern!r}; give module names or 'module:name'")
            if ":" in pattern:
                module, _, qualname = pattern.partition(":")
                segments = module.split("."), qualname.split(".")
                if ":" in qualname or not all(map(_GLOB_SEGMENT.fullmatch, [*segments[0], *segments[1]])):
                    raise ValueError(
                        f"allowed_callables pattern {pattern!r}: expected 'module:name' with dotted "
                        "identifiers and * ? [] wildcards (a wildcard never matches a dot)"
                    )
                self.globs += (segments,)
            elif all(_NAME.fullmatch(part) for part in pattern.split(".")):
                self.modules += (pattern,)
            else:
                raise ValueError(
                    f"allowed_callables pattern {pattern!r}: a module name is dotted identifiers "
                    "(use 'module:name_*' for wildcards)"
                )

    def match(self, module: str, names: list[str]) -> bool:
        if any(module == allowed or module.startswith(f"{allowed}.") for allowed in self.modules):
            return True
        modules = module.split(".")
        return any(
            len(glob_modules) == len(modules)
            and len(glob_names) == len(names)
            and all(map(fnmatch.fnmatchcase, modules, glob_modules))
            and all(map(fnmatch.fnmatchcase, names, glob_names))
            for glob_modules, glob_names in self.globs
        )


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


class _PolicyGate(GlobalGate):
    def __init__(self, policy: CallablePolicy) -> None:
        super().__init__(
            lambda module, name: policy.allows(f"{module}:{name}"), by_value=policy.allow_by_value
        )
        self._policy = policy

    def resolve(self, module: str, name: str) -> Any:
        return self._policy.resolve(f"{module}:{name}")

    def module_allowed(self, module: str) -> bool:
        return self._policy.module_allowed(module)


class CallablePolicy:
    """Which callables a stored job may name: the ``allowed_callables=`` list.

    Each pattern is a module name (that module and its submodules: ``"myapp.jobs"``) or a
    ``"module:qualname"`` pattern whose shell-style wildcards match within one dotted segment
    (``"myapp.tasks:send_*"`` matches ``send_mail``, never ``send_mail.__globals__.get``). A
    reference matching a pattern is allowed only if it resolves, as described in this module, to a
    function or class defined exactly there.

    :param patterns: the allow-list; ``None`` allows every callable (the stock store's behaviour)
    :param allow_by_value: allow callables stored by value (cloudpickle's lambdas and closures):
        the restricted unpickler then also builds code objects and functions (it never calls them)
    """

    def __init__(self, patterns: Iterable[str] | None = None, *, allow_by_value: bool = False) -> None:
        if isinstance(patterns, (str, bytes)):
            raise TypeError(f"allowed_callables must be a list, got the string {patterns!r}")
        self.patterns = None if patterns is None else tuple(patterns)
        self.allow_by_value = bool(allow_by_value) or self.patterns is None
        self._spelling = _Patterns(self.patterns or ())
        self._resolved: dict[str, Any] = {}
        #: The restricted unpickler's question, as a :class:`GlobalGate` (a predicate too).
        self.allows_global: GlobalGate = _PolicyGate(self)

    @property
    def restricts(self) -> bool:
        """True when an allow-list is configured."""
        return self.patterns is not None

    def spelled_allowed(self, reference: str) -> bool:
        """True when the reference's spelling matches a pattern (nothing imported, nothing resolved)."""
        if self.patterns is None:
            return True
        try:
            module, names = split_reference(reference)
        except RefusedReference:
            return False
        return self._spelling.match(module, names)

    def module_allowed(self, module: str) -> bool:
        """True when ``module`` is covered by a module pattern, or by a glob's module part (so it
        may be imported to look a reference up)."""
        if self.patterns is None:
            return True
        if any(module == allowed or module.startswith(f"{allowed}.") for allowed in self._spelling.modules):
            return True
        modules = module.split(".")
        return any(
            len(glob_modules) == len(modules) and all(map(fnmatch.fnmatchcase, modules, glob_modules))
            for glob_modules, _ in self._spelling.globs
        )

    def resolve(self, reference: str) -> Any:
        """The function or class an allowed reference names.

        :raises RefusedReference: with the reason and what to do
        """
        found = self._resolved.get(reference, _MISSING)
        if found is not _MISSING:
            return found
        split_reference(reference)  # a malformed reference is refused for what it is
        if not self.spelled_allowed(reference):
            raise RefusedReference(
                f"{_short(reference)}, which allowed_callables does not allow ({list(self.patterns or ())}); "
                "add its module to allowed_callables if it is yours"
            )
        found = resolve_reference(reference, self.module_allowed)
        if len(self._resolved) >= _CACHE_SIZE:
            self._resolved.clear()
        self._resolved[reference] = found
        return found

    def refusal(self, reference: str) -> str | None:
        """Why ``reference`` is not allowed, or ``None`` when it is (imports only allowed modules)."""
        if self.patterns is None:
            return None
        try:
            self.resolve(reference)
        except RefusedReference as exc:
            return str(exc)
        return None

    def allows(self, reference: str) -> bool:
        """True when the ``"module:qualname"`` reference is allowed (see :meth:`resolve`)."""
        return self.refusal(reference) is None

    def check_state(self, state: dict[str, Any], job_id: Any) -> None:
        """Refuse a decoded state whose callable is not allowed (before APScheduler resolves it).

        :raises DeserializationError: naming the job and the reference
        """
        from ._exceptions import DeserializationError

        problem = self._problem(state["func"])
        if problem:
            raise DeserializationError(f"job {job_id!r} {problem}")

    def check_outgoing(self, state: dict[str, Any], job_id: Any) -> None:
        """Refuse to store a job whose callable is not allowed.

        :raises SerializationError: naming the job and the reference
        """
        from ._exceptions import SerializationError

        problem = self._problem(state["func"])
        if problem:
            raise SerializationError(f"job {job_id!r} {problem}; nothing was written")

    def _problem(self, func: Any) -> str | None:
        if self.patterns is None:
            return None
        if isinstance(func, str):
            refusal = self.refusal(func)
            return None if refusal is None else f"calls {refusal}"
        if self.allow_by_value:
            return None
        return (
            f"carries its callable by value ({type(func).__name__}), which no allow-list can check "
            "before unpickling; pass allow_by_value=True to trust it"
        )

    def __repr__(self) -> str:
        return f"CallablePolicy({self.patterns!r}, allow_by_value={self.allow_by_value})"
