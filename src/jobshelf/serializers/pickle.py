"""``pickle``: byte-compatible with APScheduler's stock ``MongoDBJobStore``."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from .._exceptions import SerializationError
from .._serializer import decode_with, pickle_protocol_number
from ._admitted import prepare as prepare_restricted
from ._restricted import restricted_loads

__all__ = ["PickleSerializer", "restricted_globals"]


def restricted_globals() -> list[str]:
    """Every ``"module:name"`` the restricted reader admits for a job state by itself, sorted.

    Constructors (``builtins.set``, ``datetime.datetime``, ``zoneinfo.ZoneInfo._unpickle``...)
    are called only with the arguments a job state needs, checked by type and size; classes
    (``uuid.UUID``, APScheduler's cron fields and expressions, the registered triggers) are built
    without arguments and filled in. Besides these, only the functions and classes
    ``allowed_callables`` allows are loaded, and with ``allow_by_value=True`` cloudpickle's
    reconstructors (see the README's Security model).
    """
    from .._marshal._triggers import REGISTRY_BY_CLASS
    from ._admitted import CONSTRUCTORS, INSTANCE_CLASSES

    names = {f"{module}:{name}" for module, name in (*CONSTRUCTORS, *INSTANCE_CLASSES)}
    names.update(f"{cls.__module__}:{cls.__qualname__}" for cls in REGISTRY_BY_CLASS)
    return sorted(names)


class PickleSerializer:
    """Pickles the job state exactly as the stock store does.

    ``dumps(state)`` is ``pickle.dumps(state, protocol)``, byte for byte, so documents written
    with it are read by APScheduler's own ``MongoDBJobStore`` and the other way round.

    :param protocol: pickle protocol, as :func:`pickle.dumps` takes it (default:
        :data:`pickle.HIGHEST_PROTOCOL`, as the stock store)
    """

    format_name = "pickle"
    pickle_family = True
    stores_callables_by_value = False
    decoding_runs_code = True

    def __init__(self, protocol: int | None = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = pickle_protocol_number(protocol)
        prepare_restricted()  # zone lists read now, so that restricted decoding reads nothing else

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Pickle ``state`` at the configured protocol."""
        try:
            return pickle.dumps(state, self.protocol)
        except Exception as exc:
            raise SerializationError(
                f"{self.format_name} cannot encode the job state: {type(exc).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes, /) -> dict[str, Any]:
        """Unpickle ``data`` (any protocol; stock documents included)."""
        return decode_with(self.format_name, pickle.loads, data)

    def loads_restricted(self, data: bytes, allows_global: Callable[[str, str], bool], /) -> dict[str, Any]:
        """Unpickle ``data`` on the restricted interpreter: only :func:`restricted_globals`, each
        with the arguments a job state needs, and the functions and classes ``allows_global``
        allows (by the reference rule of ``allowed_callables``); every other instruction with an
        effect is judged too (see ``jobshelf.serializers._restricted``).

        Stores call this instead of :meth:`loads` when ``allowed_callables`` is set; a store's
        policy also says whether callables stored by value (``allow_by_value=True``) are built.
        """
        return decode_with(self.format_name, lambda payload: restricted_loads(payload, allows_global), data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(protocol={self.protocol})"
