"""Restricted unpickling: a pickle run on an interpreter that judges every instruction with an effect.

:class:`pickle.Unpickler` imports and calls whatever a payload names, and its C implementation
offers no hook but ``find_class``: a payload can still call what ``find_class`` returned with any
arguments, set attributes on a class (BUILD on a global), or claim memo index 200,000,000 (a
9-byte pickle took 3 GiB). This unpickler runs the pickle on Python's own opcode interpreter
(``pickle._Unpickler``) with every instruction that calls, imports or changes something replaced:

- ``find_class`` admits the job-state globals of :mod:`._admitted` (each behind an argument guard),
  the registered trigger classes, the application's allowed functions and classes (judged by
  :mod:`jobshelf._references`'s reference rule: by what they resolve to) and, with
  ``allow_by_value``, cloudpickle's reconstructors (:mod:`._byvalue`). Nothing else is imported;
- REDUCE, INST and OBJ call only an admitted constructor's guard or an allowed class (whose
  constructor runs: your class, your code); never a function of the application, never anything
  the pickle built;
- NEWOBJ builds only job-state classes (without arguments) and allowed classes;
- BUILD and the item instructions change only containers and objects this pickle made (never a
  class, a module, a cached zone or an enum member); ``__setstate__`` is looked up on the class,
  and dunder attribute names are refused;
- what no pickle may do at all is bounded by the machine it runs on (:mod:`._machine`): memory
  budgeted, memo indexes, buffer sizes and text numbers bounded, keys that collide or expand
  exponentially when hashed refused.

A refusal is a :class:`pickle.UnpicklingError` (:class:`Refused`) naming the global or instruction.
Decoding takes about 10 times as long as with the C unpickler (a cron job's state alone: ~0.5 ms
instead of ~0.05 ms; with the store's checks, reading such a job takes about twice as long).
"""

from __future__ import annotations

import collections
import enum
import pickle
import sys
from collections.abc import Callable
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import BaseCombiningTrigger

from .._marshal._triggers import REGISTRY_BY_CLASS
from .._references import GlobalGate, RefusedReference, as_gate, resolve_reference
from . import _admitted
from ._admitted import CONSTRUCTORS, INSTANCE_CLASSES, Guard, Refused
from ._byvalue import ByValue
from ._machine import BoundedMachine

__all__ = ["Refused", "Unresolved", "restricted_loads"]

_COMPAT_NAMES = {("__builtin__", "xrange"): ("builtins", "range")}
_COMPAT_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_LISTS = (list, collections.deque)
StateCheck = Callable[[Any], None]


class Unresolved:
    """Stands in, when a pickle is only being looked at, for a class or function it names but that is
    not part of a job state: nothing is imported and nothing is called."""

    __module_name__ = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self.args))
        state = f" state={self.state!r}" if self.state is not None else ""
        return f"<unresolved {self.__module_name__}.{type(self).__qualname__}({shown}){state}>"


class _Interpreter(BoundedMachine):
    """The bounded pickle machine with every instruction that has an effect judged."""

    def __init__(self, data: bytes, gate: GlobalGate, lenient: bool) -> None:
        super().__init__(data)
        self._gate = gate
        self._lenient = lenient
        self._callables: dict[int, tuple[Any, Guard]] = {}
        self._classes: dict[int, tuple[type, StateCheck | None]] = {}
        self._allowed_classes: set[int] = set()
        self._buildable: dict[int, Any] = {}
        self._stubs: dict[tuple[str, str], type] = {}
        self._by_value = ByValue(self, gate) if gate.by_value else None

    def register_callable(self, obj: Any, guard: Guard) -> None:
        """Admit ``obj`` as something REDUCE may call, through ``guard``."""
        self._callables[id(obj)] = (obj, guard)

    def is_instance_class(self, obj: Any) -> bool:
        """True for a class NEWOBJ may build in this decode."""
        entry = self._classes.get(id(obj))
        return entry is not None and entry[0] is obj

    def mark_buildable(self, obj: Any) -> None:
        """Allow BUILD and the item instructions on ``obj``, an object this decode made."""
        self._buildable[id(obj)] = obj

    def is_buildable(self, obj: Any) -> bool:
        """True for an object BUILD may fill in."""
        return self._buildable.get(id(obj)) is obj

    # ------------------------------------------------------------------------- globals

    def find_class(self, module: str, name: str) -> Any:
        """The admitted object ``module.name`` names, or :class:`Refused` (a stand-in if lenient)."""
        if type(module) is not str or type(name) is not str:
            raise Refused("a global's module and name must be strings")
        if self.proto < 3:
            module, name = _COMPAT_NAMES.get((module, name), (_COMPAT_MODULES.get(module, module), name))
        constructor = CONSTRUCTORS.get((module, name))
        if constructor is not None:
            self.register_callable(*constructor)
            return constructor[0]
        instance = INSTANCE_CLASSES.get((module, name))
        if instance is not None:
            self._classes[id(instance[0])] = instance
            return instance[0]
        if self._by_value is not None:
            found = self._by_value.reconstructor(module, name)
            if found is not None:
                return found
        trigger = _trigger_class(module, name)
        if trigger is not None:
            self._classes[id(trigger)] = (trigger, self._trigger_check(trigger))
            return trigger
        try:
            found = self._gate.resolve(module, name)
        except RefusedReference as exc:
            inert = self._by_value.inert(module, name) if self._by_value is not None else None
            if inert is not None:
                return inert
            if self._lenient:
                return self._stub(module, name)
            raise Refused(f"{module}.{name} is not part of a job state: {_hint(module, exc)}") from exc
        if isinstance(found, type):
            self._classes[id(found)] = (found, None)
            self._allowed_classes.add(id(found))
            self.register_callable(found, _constructor(found))
        return found

    def _trigger_check(self, cls: type) -> StateCheck | None:
        if not issubclass(cls, BaseCombiningTrigger):
            return None

        def check(state: Any) -> None:
            # APScheduler's __setstate__ imports its members by reference: check them first
            _check_members(state.get("triggers") if type(state) is dict else None, self._member_class)

        return check

    def _member_class(self, reference: str) -> type | None:
        """The trigger class a combining trigger's member names: registered, or an allowed one."""
        module, _, name = reference.partition(":")
        found: Any = _trigger_class(module, name)
        if found is None:
            try:
                found = self._gate.resolve(module, name)
            except RefusedReference:
                return None
        return found if isinstance(found, type) and issubclass(found, BaseTrigger) else None

    def _stub(self, module: str, name: str) -> type:
        stub = self._stubs.get((module, name))
        if stub is None:
            self.charge(2048)
            names = {"__module_name__": module[:200], "__qualname__": name[:200]}
            stub = type(name[:200], (Unresolved,), names)
            self._stubs[(module, name)] = stub
            self._classes[id(stub)] = (stub, None)
            self._allowed_classes.add(id(stub))
            self.register_callable(stub, _constructor(stub))
        return stub

    # ------------------------------------------------------------------------- calls

    def _call(self, func: Any, args: Any, opcode: str) -> Any:
        entry = self._callables.get(id(func))
        if entry is None or entry[0] is not func:
            raise Refused(f"{opcode} on {_describe(func)}: decoding calls only admitted constructors")
        if type(args) is not tuple:
            raise Refused(f"{opcode} with {type(args).__name__} arguments (a tuple is expected)")
        return entry[1](self, args)

    def _new(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        if not self.is_instance_class(cls):
            raise Refused(f"NEWOBJ on {_describe(cls)}: only job-state classes and allowed classes are built")
        if type(args) is not tuple or (kwargs is not None and type(kwargs) is not dict):
            raise Refused("NEWOBJ with arguments that are not a tuple (and a dict)")
        if id(cls) not in self._allowed_classes and (args or kwargs):
            raise Refused(f"NEWOBJ on {_describe(cls)} with arguments: a job state builds it with none")
        obj = cls.__new__(cls, *args, **(kwargs or {}))
        if type(obj) is cls:
            self.mark_buildable(obj)
        return obj

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, "REDUCE")

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args)

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, kwargs)

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        if not args and self.is_instance_class(klass):
            self.append(self._new(klass, ()))
        else:
            self.append(self._call(klass, tuple(args), "INST/OBJ"))

    def load_inst(self) -> None:
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        klass = self.find_class(module, name)
        self._instantiate(klass, self.pop_mark())

    def load_obj(self) -> None:
        args = self.pop_mark()
        if not args:
            raise Refused("OBJ without a class")
        self._instantiate(args.pop(0), args)

    # ------------------------------------------------------------------------- changes

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not self.is_buildable(inst):
            raise Refused(f"BUILD on {_describe(inst)}: only objects this pickle made are filled in")
        cls = type(inst)
        entry = self._classes.get(id(cls))
        if entry is not None and entry[0] is cls and entry[1] is not None:
            entry[1](state)
        setstate = _class_setstate(cls)
        if setstate is not None:
            setstate(inst, state)
            return
        slotstate = None
        if type(state) is tuple and len(state) == 2:
            state, slotstate = state
        for part in (state, slotstate):
            if part is not None and (type(part) is not dict or any(map(_is_dunder, part))):
                raise Refused(f"BUILD of {_describe(inst)} with a state that is not a dict of plain names")
        if state:
            inst_dict = inst.__dict__
            for key, value in state.items():
                inst_dict[sys.intern(key)] = value
        if slotstate:
            for key, value in slotstate.items():
                setattr(inst, key, value)

    def _target(self, kinds: tuple[type, ...], opcode: str) -> Any:
        target = self.stack[-1]
        if type(target) is kinds[0] or (isinstance(target, kinds) and self.is_buildable(target)):
            return target
        expected = kinds[0].__name__
        raise Refused(f"{opcode} on {_describe(target)}: only a {expected} this pickle made is filled")

    def load_append(self) -> None:
        value = self.stack.pop()
        target = self._target(_LISTS, "APPEND")
        type(target).append(target, value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self._target(_LISTS, "APPENDS")
        self.charge(8 * len(items))
        type(target).extend(target, items)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        target = self._target((dict,), "SETITEM")
        self.check_items(target, (key,))
        type(target).__setitem__(target, key, value)

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target((dict,), "SETITEMS")
        self.check_items(target, items[::2])
        setitem = type(target).__setitem__
        for index in range(0, len(items) - 1, 2):
            setitem(target, items[index], items[index + 1])

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        self.check_items(target, items)
        add = type(target).add
        for item in items:
            add(target, item)

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.check_items(None, items[::2])
        self.append({items[index]: items[index + 1] for index in range(0, len(items) - 1, 2)})

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.check_items(None, items)
        self.append(frozenset(items))


_OVERRIDES = {
    "REDUCE": "load_reduce", "NEWOBJ": "load_newobj", "NEWOBJ_EX": "load_newobj_ex", "INST": "load_inst",
    "OBJ": "load_obj", "BUILD": "load_build", "APPEND": "load_append", "APPENDS": "load_appends",
    "SETITEM": "load_setitem", "SETITEMS": "load_setitems", "ADDITEMS": "load_additems", "DICT": "load_dict",
    "FROZENSET": "load_frozenset",
}  # fmt: skip
_Interpreter.dispatch = dict(BoundedMachine.dispatch)
for _opcode, _method in _OVERRIDES.items():
    _Interpreter.dispatch[getattr(pickle, _opcode)[0]] = getattr(_Interpreter, _method)


def _trigger_class(module: str, name: str) -> type | None:
    """A registered trigger class named exactly (never imported: the registry holds it)."""
    try:
        found = resolve_reference(f"{module}:{name}", lambda _module: False)
    except RefusedReference:
        return None
    return found if found in REGISTRY_BY_CLASS else None


def _constructor(cls: type) -> Guard:
    """REDUCE on an allowed class (or a stand-in): its constructor runs with the pickle's
    arguments. What it returns may be filled in only if it is a new instance of it."""

    def construct(context: Any, args: tuple[Any, ...]) -> Any:
        obj = cls(*args)
        if type(obj) is cls and not isinstance(obj, enum.Enum):
            context.mark_buildable(obj)
        return obj

    return construct


def _class_setstate(cls: type) -> Any:
    """The ``__setstate__`` the class defines (an instance attribute of that name never counts)."""
    for klass in cls.__mro__[:-1]:
        found = vars(klass).get("__setstate__")
        if found is not None:
            return found
    return None


def _is_dunder(key: Any) -> bool:
    return type(key) is not str or (key.startswith("__") and key.endswith("__"))


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__name__}"


def _hint(module: str, exc: RefusedReference) -> str:
    if module.startswith("cloudpickle"):
        return "it rebuilds a callable stored by value, which needs allow_by_value=True"
    return f"{exc} (allowed_callables, or the CLI's --allow)"


def _check_members(members: Any, member_class: Callable[[str], type | None]) -> None:
    if type(members) is not list:
        raise Refused("malformed combining trigger state")
    for item in members:
        if type(item) not in (list, tuple) or len(item) != 2 or type(item[0]) is not str:
            raise Refused("malformed combining trigger member")
        reference, state = item
        member = member_class(reference)
        if member is None:
            raise Refused(f"trigger member {reference[:200]!r} is not an allowed trigger class")
        if issubclass(member, BaseCombiningTrigger):
            _check_members(state.get("triggers") if type(state) is dict else None, member_class)


def restricted_loads(data: bytes, allows_global: Callable[[str, str], bool], *, lenient: bool = False) -> Any:
    """Unpickle ``data`` admitting only job-state values and what ``allows_global`` allows.

    ``allows_global`` is a ``(module, name) -> bool`` predicate or a
    :class:`~jobshelf._references.GlobalGate` (``CallablePolicy.allows_global`` is one, and says
    whether callables by value are admitted). With ``lenient`` (for looking, never for running),
    a global that is not admitted becomes an :class:`Unresolved` stand-in instead of an error.

    :raises pickle.UnpicklingError: what was refused, by name
    """
    _admitted.prepare()
    return _Interpreter(bytes(data), as_gate(allows_global), lenient).load()
