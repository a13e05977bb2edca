"""The globals a job-state pickle may name, each with the only arguments a job state needs.

A pickle is a program: whatever a global is, the pickle may call it with any arguments it builds.
So every global the restricted unpickler admits for job states is listed here with a *guard* that
checks the arguments by type and size and builds the value itself, or refuses. Nothing here
imports a module, reads a file other than a known zone's, or allocates more than its arguments
already take. The table is exhaustive: a global not in it (and not an allowed callable of the
application) is refused.

Two kinds of entry:

- *constructors* (``set``, ``datetime``, ``ZoneInfo._unpickle``...): REDUCE calls the guard;
- *instance classes* (APScheduler's triggers, cron fields and expressions, ``uuid.UUID``): built
  with NEWOBJ (``cls.__new__(cls)``, no arguments) and filled with BUILD; never called.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import datetime as dt
import decimal
import pickle
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any, Protocol

from apscheduler.triggers.cron import expressions as cron_expressions
from apscheduler.triggers.cron import fields as cron_fields

from .._marshal import _zones
from .._marshal._zones import construct_zone, is_known_zone_key, warm_up

__all__ = ["CONSTRUCTORS", "INSTANCE_CLASSES", "Context", "Guard", "Refused", "prepare"]

#: The longest text a scalar constructor takes (a Decimal's digits, a zone or zone name).
MAX_TEXT = 4300


class Refused(pickle.UnpicklingError):
    """A global, or its arguments, that a job state does not need."""


class Context(Protocol):
    """What a guard may ask of the unpickler running it."""

    def register_callable(self, obj: Any, guard: Guard) -> None:
        """Admit ``obj`` (built by a guard) as something REDUCE may call, through ``guard``."""

    def is_instance_class(self, obj: Any) -> bool:
        """True for a class this unpickle may build with NEWOBJ."""

    def mark_buildable(self, obj: Any) -> None:
        """Allow BUILD (and item opcodes) on ``obj``, an object this unpickle made."""

    def check_items(self, container: Any, items: Any) -> None:
        """Refuse items that would cost more than their size to hash (collisions, shared tuples)."""


Guard = Callable[[Context, tuple[Any, ...]], Any]


def _refuse(what: str, args: tuple[Any, ...], expected: str) -> Refused:
    shown = ", ".join(type(arg).__name__ for arg in args)
    return Refused(f"{what}({shown}) is refused: a job state calls it only with {expected}")


def _scalars(what: str, args: tuple[Any, ...], kinds: tuple[type, ...], most: int, expected: str) -> None:
    if len(args) > most or not all(type(arg) in kinds for arg in args):
        raise _refuse(what, args, expected)
    if any(type(arg) in (str, bytes) and len(arg) > MAX_TEXT for arg in args):
        raise _refuse(what, args, f"{expected} of at most {MAX_TEXT} characters")


def _build(what: str, args: tuple[Any, ...], make: Callable[..., Any]) -> Any:
    try:
        return make(*args)
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        raise Refused(f"{what}: {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------------------- builtins


def _set(context: Context, args: tuple[Any, ...]) -> Any:
    if args and (len(args) > 1 or type(args[0]) is not list):
        raise _refuse("set", args, "nothing or a list")
    result: set[Any] = set()
    if args:
        context.check_items(result, args[0])
        result.update(args[0])
    return result


def _frozenset(context: Context, args: tuple[Any, ...]) -> Any:
    if args and (len(args) > 1 or type(args[0]) is not list):
        raise _refuse("frozenset", args, "nothing or a list")
    if args:
        context.check_items(None, args[0])
    return frozenset(*args)


def _bytearray(context: Context, args: tuple[Any, ...]) -> Any:
    if not args:
        return bytearray()
    if len(args) == 1 and type(args[0]) is bytes:
        return bytearray(args[0])
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin-1", "latin1"):
        return bytearray(args[0].encode("latin-1"))  # never a codec lookup by name
    raise _refuse("bytearray", args, "nothing, bytes, or (str, 'latin-1')")


def _bytes(context: Context, args: tuple[Any, ...]) -> Any:
    if args:
        raise _refuse("bytes", args, "no arguments (protocols 0-2 write b'' so)")
    return b""


def _codecs_encode(context: Context, args: tuple[Any, ...]) -> Any:
    if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str or args[1] != "latin1":
        raise _refuse("_codecs.encode", args, "(str, 'latin1'), how protocols 0-2 write bytes")
    try:
        return args[0].encode("latin-1")  # the built-in codec: no lookup, no import
    except UnicodeEncodeError as exc:
        raise Refused(f"_codecs.encode: {exc}") from exc


def _complex(context: Context, args: tuple[Any, ...]) -> Any:
    _scalars("complex", args, (int, float), 2, "one or two numbers")
    return _build("complex", args, complex)


def _slice(context: Context, args: tuple[Any, ...]) -> Any:
    _scalars("slice", args, (int, type(None)), 3, "up to three ints or None")
    return _build("slice", args, slice)


def _range(context: Context, args: tuple[Any, ...]) -> Any:
    _scalars("range", args, (int,), 3, "up to three ints")
    return _build("range", args, range)


def _object(context: Context, args: tuple[Any, ...]) -> Any:
    if args:
        raise _refuse("object", args, "no arguments")
    return object()


def _reconstructor(context: Context, args: tuple[Any, ...]) -> Any:
    plain = len(args) == 3 and args[1] is object and args[2] is None
    if not plain or not context.is_instance_class(args[0]):
        raise _refuse(
            "copyreg._reconstructor", args,
            "(an admitted class, object, None), how protocols 0-1 write plain objects",
        )  # fmt: skip
    obj = object.__new__(args[0])
    context.mark_buildable(obj)
    return obj


def _getattr(context: Context, args: tuple[Any, ...]) -> Any:
    if len(args) == 2 and args[0] is zoneinfo.ZoneInfo and type(args[1]) is str and args[1] == "_unpickle":
        method = zoneinfo.ZoneInfo._unpickle  # type: ignore[attr-defined]
        context.register_callable(method, _zoneinfo_unpickle)
        return method
    raise _refuse("getattr", args, "(zoneinfo.ZoneInfo, '_unpickle'), how ZoneInfo pickles itself")


# ----------------------------------------------------------------------------- dates and zones


def _date_args(what: str, args: tuple[Any, ...], most: int) -> None:
    kinds = (int, float, bytes, str, type(None))
    if len(args) > most or not all(type(arg) in kinds or isinstance(arg, dt.tzinfo) for arg in args):
        raise _refuse(what, args, "numbers, its pickled state (bytes) and a time zone")
    if any(type(arg) in (str, bytes) and len(arg) > 16 for arg in args):
        raise _refuse(what, args, "a pickled state of at most 16 bytes")


def _datetime_guard(cls: type, most: int) -> Guard:
    what = f"datetime.{cls.__name__}"

    def guard(context: Context, args: tuple[Any, ...]) -> Any:
        _date_args(what, args, most)
        return _build(what, args, cls)

    return guard


def _timezone(context: Context, args: tuple[Any, ...]) -> Any:
    if (
        not 1 <= len(args) <= 2
        or type(args[0]) is not dt.timedelta
        or (len(args) == 2 and (type(args[1]) is not str or len(args[1]) > 256))
    ):
        raise _refuse("datetime.timezone", args, "(timedelta) or (timedelta, name)")
    return _build("datetime.timezone", args, dt.timezone)


def _tzinfo(context: Context, args: tuple[Any, ...]) -> Any:
    if args:
        raise _refuse("datetime.tzinfo", args, "no arguments")
    return dt.tzinfo()  # type: ignore[abstract]


def _zoneinfo(context: Context, args: tuple[Any, ...]) -> Any:
    if len(args) != 1 or not is_known_zone_key(args[0]):
        raise _refuse("zoneinfo.ZoneInfo", args, "a known zone key")
    return zoneinfo.ZoneInfo(args[0])


def _zoneinfo_unpickle(context: Context, args: tuple[Any, ...]) -> Any:
    if len(args) != 2 or not is_known_zone_key(args[0]) or type(args[1]) is not int or args[1] not in (0, 1):
        raise _refuse("zoneinfo.ZoneInfo._unpickle", args, "(a known zone key, 0 or 1)")
    return zoneinfo.ZoneInfo._unpickle(*args)  # type: ignore[attr-defined]


def _pytz_p(context: Context, args: tuple[Any, ...]) -> Any:
    if len(args) not in (1, 4) or not all(type(arg) in (str, int, type(None)) for arg in args):
        raise _refuse("pytz._p", args, "(zone) or (zone, utcoffset, dst, tzname)")
    if any(type(arg) is str and len(arg) > 64 for arg in args):
        raise _refuse("pytz._p", args, "zone names of at most 64 characters")
    return _build("pytz._p", (list(args),), lambda payload: construct_zone("pytz", payload))


def _pytz_utc(context: Context, args: tuple[Any, ...]) -> Any:
    if args:
        raise _refuse("pytz._UTC", args, "no arguments")
    return construct_zone("pytz", ["UTC"])


def _pytz_fixed(context: Context, args: tuple[Any, ...]) -> Any:
    if len(args) != 1 or type(args[0]) is not int:
        raise _refuse("pytz.FixedOffset", args, "(minutes)")
    return _build("pytz.FixedOffset", (args[0],), lambda minutes: construct_zone("pytz", [None, minutes]))


# ----------------------------------------------------------------------------- other values


def _decimal(context: Context, args: tuple[Any, ...]) -> Any:
    _scalars("decimal.Decimal", args, (str, int, float), 1, "one str, int or float")
    return _build("decimal.Decimal", args, decimal.Decimal)


def _safe_uuid(context: Context, args: tuple[Any, ...]) -> Any:
    if len(args) != 1 or args[0] not in (0, -1, None) or type(args[0]) not in (int, type(None)):
        raise _refuse("uuid.SafeUUID", args, "(0), (-1) or (None)")
    return uuid.SafeUUID(args[0])


def _ordered_dict(context: Context, args: tuple[Any, ...]) -> Any:
    if args:
        raise _refuse("collections.OrderedDict", args, "no arguments (its items follow)")
    result: collections.OrderedDict[Any, Any] = collections.OrderedDict()
    context.mark_buildable(result)
    return result


def _deque(context: Context, args: tuple[Any, ...]) -> Any:
    maxlen_ok = len(args) < 2 or args[1] is None or (type(args[1]) is int and args[1] >= 0)
    if len(args) > 2 or not maxlen_ok or (args and type(args[0]) not in (list, tuple)):
        raise _refuse("collections.deque", args, "nothing, or (list or tuple[, maxlen])")
    result: collections.deque[Any] = collections.deque(*args)
    context.mark_buildable(result)
    return result


def _check_uuid(state: Any) -> None:
    if (
        type(state) is not dict
        or not state.keys() <= {"int", "is_safe"}
        or type(state.get("int")) is not int
        or not 0 <= state["int"] < 1 << 128
        or not isinstance(state.get("is_safe", uuid.SafeUUID.unknown), uuid.SafeUUID)
    ):
        raise Refused("uuid.UUID's state is refused: a job state has {'int': a 128-bit int[, 'is_safe']}")


#: Constructors by (module, name), as the names are written in protocols 3-5 (``__builtin__`` and
#: ``copy_reg`` of protocols 0-2 are mapped first, as pickle itself does).
CONSTRUCTORS: dict[tuple[str, str], tuple[Any, Guard]] = {
    ("builtins", "set"): (set, _set),
    ("builtins", "frozenset"): (frozenset, _frozenset),
    ("builtins", "bytearray"): (bytearray, _bytearray),
    ("builtins", "bytes"): (bytes, _bytes),
    ("builtins", "complex"): (complex, _complex),
    ("builtins", "slice"): (slice, _slice),
    ("builtins", "range"): (range, _range),
    ("builtins", "object"): (object, _object),
    ("builtins", "getattr"): (getattr, _getattr),
    ("_codecs", "encode"): (codecs.encode, _codecs_encode),
    ("copyreg", "_reconstructor"): (copyreg._reconstructor, _reconstructor),  # type: ignore[attr-defined]
    ("datetime", "datetime"): (dt.datetime, _datetime_guard(dt.datetime, 9)),
    ("datetime", "date"): (dt.date, _datetime_guard(dt.date, 3)),
    ("datetime", "time"): (dt.time, _datetime_guard(dt.time, 6)),
    ("datetime", "timedelta"): (dt.timedelta, _datetime_guard(dt.timedelta, 7)),
    ("datetime", "timezone"): (dt.timezone, _timezone),
    ("datetime", "tzinfo"): (dt.tzinfo, _tzinfo),
    ("zoneinfo", "ZoneInfo"): (zoneinfo.ZoneInfo, _zoneinfo),
    ("zoneinfo", "ZoneInfo._unpickle"): (zoneinfo.ZoneInfo._unpickle, _zoneinfo_unpickle),  # type: ignore[attr-defined]
    ("decimal", "Decimal"): (decimal.Decimal, _decimal),
    ("uuid", "SafeUUID"): (uuid.SafeUUID, _safe_uuid),
    ("collections", "OrderedDict"): (collections.OrderedDict, _ordered_dict),
    ("collections", "deque"): (collections.deque, _deque),
}
for _alias in ("zoneinfo._zoneinfo", "_zoneinfo"):
    CONSTRUCTORS[(_alias, "ZoneInfo")] = CONSTRUCTORS[("zoneinfo", "ZoneInfo")]
    CONSTRUCTORS[(_alias, "ZoneInfo._unpickle")] = CONSTRUCTORS[("zoneinfo", "ZoneInfo._unpickle")]
for _alias in ("_decimal", "_pydecimal"):
    CONSTRUCTORS[(_alias, "Decimal")] = CONSTRUCTORS[("decimal", "Decimal")]
_pytz: Any = getattr(_zones, "pytz", None)
if _pytz is not None:  # pytz is optional; its globals are admitted when it is installed
    CONSTRUCTORS[("pytz", "_p")] = (_pytz._p, _pytz_p)
    CONSTRUCTORS[("pytz", "_UTC")] = (_pytz._UTC, _pytz_utc)
    CONSTRUCTORS[("pytz", "FixedOffset")] = (_pytz.FixedOffset, _pytz_fixed)


def _instance_classes() -> dict[tuple[str, str], tuple[type, Callable[[Any], None] | None]]:
    classes: dict[tuple[str, str], tuple[type, Callable[[Any], None] | None]] = {
        ("uuid", "UUID"): (uuid.UUID, _check_uuid),
    }
    for module in (cron_fields, cron_expressions):
        for name, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module.__name__:
                classes[(module.__name__, name)] = (value, None)
    return classes


#: Classes built with NEWOBJ and BUILD, with a check of their BUILD state (triggers are added from
#: the trigger registry when looked up: registering a trigger admits it).
INSTANCE_CLASSES = _instance_classes()


def prepare() -> None:
    """Read the zone lists and load the codecs pickle's text opcodes use now, so that decoding
    later imports nothing and reads nothing but zone files."""
    warm_up()
    codecs.lookup("raw-unicode-escape")  # protocol 0's UNICODE
