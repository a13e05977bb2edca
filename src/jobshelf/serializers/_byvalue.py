"""What ``allow_by_value=True`` admits: cloudpickle's reconstructors for callables stored by value.

cloudpickle stores a lambda, closure, nested or ``__main__`` function as a code object and the
pieces of a function (globals, defaults, closure cells), rebuilt by a handful of its own functions;
a :func:`functools.partial` as the class and its state; a bound method through
``types.MethodType``. Found by disassembling real cloudpickle output (``pickletools``) for each.
Each of those reconstructors is re-implemented here with its arguments checked by type, so that
decoding **builds** a function and never calls one:

- ``_builtin_type(name)`` answers only ``CodeType``, ``MethodType`` and ``CellType``;
- a code object is built from ints, bytes, strings and constant tuples only;
- ``_function_setstate`` fills in only a function this same pickle built, and only the attributes
  cloudpickle writes;
- ``subimport(name)`` returns a module already imported, or imports one the allow-list allows;
  anything else is refused (decoding imports nothing else);
- classes defined by value (``__main__`` classes, local classes) are not admitted at all: building
  one runs its metaclass, ``__init_subclass__`` and ``__set_name__``, and its methods (by value)
  would then be called by Python itself (hashing, comparing, ``__setstate__``, ``__del__``).

What it gives up, by definition: the code object is the job's code. Once decoded, the callable
does whatever its code says when the job fires (and anything that calls it, such as your own
classes' constructors called with it as an argument while decoding, runs it too).
"""

from __future__ import annotations

import builtins
import functools
import importlib
import re
import sys
import types
from typing import Any

from .._references import GlobalGate, RefusedReference, resolve_reference
from ._admitted import Context, Guard, Refused

__all__ = ["ByValue"]

_CLOUDPICKLE_MODULES = frozenset(("cloudpickle", "cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast"))
_CONSTANTS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis), types.CodeType)
_FUNCTION_ATTRIBUTES = {
    "__name__": (str,),
    "__qualname__": (str,),
    "__module__": (str, type(None)),
    "__doc__": (str, type(None)),
    "__defaults__": (tuple, type(None)),
    "__kwdefaults__": (dict, type(None)),
    "__annotations__": (dict,),
}
_FUNCTION_PARTS = frozenset(("__globals__", "__closure__", "_cloudpickle_submodules"))
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_EMPTY = object()


def _callable_kind(obj: Any) -> bool:
    kinds = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial, type)
    return isinstance(obj, kinds)


class ByValue:
    """The by-value reconstructors, for one decode."""

    def __init__(self, context: Any, gate: GlobalGate) -> None:
        self._context = context
        self._gate = gate
        self._functions: dict[int, types.FunctionType] = {}
        self._guards: dict[str, Guard] = {
            "_builtin_type": self._builtin_type,
            "_make_function": self._make_function,
            "_function_setstate": self._function_setstate,
            "_make_cell": self._make_cell,
            "_make_empty_cell": self._make_empty_cell,
            "subimport": self._subimport,
        }

    def reconstructor(self, module: str, name: str) -> Any:
        """The stand-in for an admitted reconstructor (registered as callable), or ``None``."""
        if module in _CLOUDPICKLE_MODULES and name in self._guards:
            guard = self._guards[name]
            self._context.register_callable(guard, guard)
            return guard
        if (module, name) == ("functools", "partial"):
            self._context.register_callable(functools.partial, self._partial)
            return functools.partial
        if (module, name) == ("builtins", "Ellipsis"):
            return Ellipsis
        return None

    def inert(self, module: str, name: str) -> Any:
        """A function or class a callable by value refers to (``Path``, ``json.dumps``...), found by
        the reference rule in a module already imported or allowed, or ``None``. It is only ever a
        value while decoding: never called, built or filled in (what the by-value code does with it
        when the job runs is the by-value code's business)."""
        may_import = self._gate.module_allowed
        try:
            return resolve_reference(
                f"{module}:{name}", lambda module: module in sys.modules or may_import(module)
            )
        except RefusedReference:
            return None

    def _builtin_type(self, context: Context, args: tuple[Any, ...]) -> Any:
        guards: dict[str, tuple[type, Guard]] = {
            "CodeType": (types.CodeType, self._code),
            "MethodType": (types.MethodType, self._method),
            "CellType": (types.CellType, self._make_cell),
        }
        if len(args) != 1 or type(args[0]) is not str or args[0] not in guards:
            raise Refused("cloudpickle._builtin_type: only CodeType, MethodType and CellType are built")
        cls, guard = guards[args[0]]
        context.register_callable(cls, guard)
        return cls

    def _code(self, context: Context, args: tuple[Any, ...]) -> Any:
        if not all(type(arg) in (int, bytes, str) or _constants(arg) for arg in args):
            raise Refused("types.CodeType: a code object is built of ints, bytes, strings and constants")
        try:
            return types.CodeType(*args)
        except (TypeError, ValueError, OverflowError, SystemError) as exc:
            raise Refused(f"types.CodeType: {type(exc).__name__}: {exc}") from exc

    def _make_function(self, context: Context, args: tuple[Any, ...]) -> Any:
        if len(args) != 5:
            raise Refused("cloudpickle._make_function takes (code, globals, name, argdefs, closure)")
        code, namespace, name, argdefs, closure = args
        if (
            type(code) is not types.CodeType
            or type(namespace) is not dict
            or not all(type(key) is str for key in namespace)
            or type(name) not in (str, type(None))
            or type(argdefs) not in (tuple, type(None))
            or not _cells(closure)
        ):
            raise Refused("cloudpickle._make_function: arguments of the wrong types")
        namespace["__builtins__"] = builtins.__dict__
        try:
            function = types.FunctionType(code, namespace, name, argdefs, closure)
        except (TypeError, ValueError) as exc:
            raise Refused(f"cloudpickle._make_function: {type(exc).__name__}: {exc}") from exc
        self._functions[id(function)] = function
        return function

    def _function_setstate(self, context: Context, args: tuple[Any, ...]) -> Any:
        if len(args) != 2 or self._functions.get(id(args[0])) is not args[0]:
            raise Refused("cloudpickle._function_setstate fills in only a function this pickle built")
        function, state = args
        if type(state) is not tuple or len(state) != 2 or not all(type(part) is dict for part in state):
            raise Refused("cloudpickle._function_setstate: the state is not (dict, dict)")
        attributes, slots = state
        namespace, closure = slots.get("__globals__", _EMPTY), slots.get("__closure__", _EMPTY)
        if (
            not all(type(key) is str for key in attributes)
            or slots.keys() - _FUNCTION_ATTRIBUTES.keys() - _FUNCTION_PARTS
            or type(namespace) is not dict
            or not all(type(key) is str for key in namespace)
            or not _cells(closure)
            or not all(
                type(slots[key]) in kinds for key, kinds in _FUNCTION_ATTRIBUTES.items() if key in slots
            )
        ):
            raise Refused("cloudpickle._function_setstate: a state cloudpickle does not write")
        own_closure = function.__closure__ or ()
        if closure is not None and len(closure) != len(own_closure):
            raise Refused("cloudpickle._function_setstate: the closure does not match the code")
        function.__dict__.update(attributes)
        function.__globals__.update(namespace)
        function.__globals__["__builtins__"] = builtins.__dict__
        for source, target in zip(closure or (), own_closure):
            try:
                target.cell_contents = source.cell_contents
            except ValueError:  # an empty cell
                continue
        for key in _FUNCTION_ATTRIBUTES.keys() & slots.keys():
            setattr(function, key, slots[key])
        return None

    def _make_cell(self, context: Context, args: tuple[Any, ...]) -> Any:
        if len(args) > 1:
            raise Refused("a cell holds at most one value")
        return types.CellType(*args)

    def _make_empty_cell(self, context: Context, args: tuple[Any, ...]) -> Any:
        if args:
            raise Refused("cloudpickle._make_empty_cell takes no arguments")
        return types.CellType()

    def _subimport(self, context: Context, args: tuple[Any, ...]) -> Any:
        if len(args) != 1 or type(args[0]) is not str or not _MODULE_NAME.fullmatch(args[0]):
            raise Refused("cloudpickle.subimport takes one module name")
        name = args[0]
        module = sys.modules.get(name)
        if module is None:
            if not self._gate.module_allowed(name):
                raise Refused(
                    f"the callable by value uses module {name!r}, which is not imported and not in "
                    "allowed_callables: decoding imports only allowed modules (import it at startup, "
                    "or allow it)"
                )
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                raise Refused(f"module {name!r} cannot be imported: {type(exc).__name__}: {exc}") from exc
        if type(module) is not types.ModuleType:
            raise Refused(f"{name!r} in sys.modules is not a module")
        return module

    def _partial(self, context: Context, args: tuple[Any, ...]) -> Any:
        if not args or not _callable_kind(args[0]):
            raise Refused("functools.partial of something not a function, method, class or partial")
        function, *bound = args
        result = functools.partial(function, *bound)
        context.mark_buildable(result)
        return result

    def _method(self, context: Context, args: tuple[Any, ...]) -> Any:
        if len(args) != 2 or type(args[0]) is not types.FunctionType:
            raise Refused("types.MethodType binds a function to an object")
        return types.MethodType(*args)


def _cells(closure: Any) -> bool:
    cells = type(closure) is tuple and all(type(cell) is types.CellType for cell in closure)
    return closure is None or cells


def _constants(value: Any, depth: int = 0) -> bool:
    """A tuple of code constants (names included): nothing but literals, nested tuples and code."""
    if type(value) not in (tuple, frozenset) or depth > 32:
        return False
    return all(type(item) in _CONSTANTS or _constants(item, depth + 1) for item in value)
