"""``cloudpickle``: pickle that also persists lambdas, closures and ``__main__`` functions."""

from __future__ import annotations

import pickle
from typing import Any

from .._exceptions import MissingDependencyError, SerializationError
from .pickle import PickleSerializer

__all__ = ["CloudPickleSerializer"]

_MAIN_MARKER = b"__main__"


class CloudPickleSerializer(PickleSerializer):
    """Stores callables by value where a reference would not resolve in another process.

    Jobs whose callable is a lambda, closure, :func:`functools.partial`, nested function or a
    function defined in ``__main__`` (a script, a notebook) carry the callable itself; jobs with
    importable callables keep APScheduler's textual reference. Encoding goes through the C pickler
    first and falls back to cloudpickle only for states that need it, so ordinary jobs cost what
    they cost with pickle. The output is plain pickle data: ``pickle.loads`` reads it.

    :param protocol: pickle protocol (default: :data:`pickle.HIGHEST_PROTOCOL`)
    """

    format_name = "cloudpickle"
    pickle_family = True
    stores_callables_by_value = True

    def __init__(self, protocol: int | None = pickle.HIGHEST_PROTOCOL) -> None:
        try:
            import cloudpickle
        except ImportError as exc:  # pragma: no cover - cloudpickle is a dependency
            raise MissingDependencyError(
                "the cloudpickle serializer needs cloudpickle: pip install cloudpickle"
            ) from exc
        super().__init__(protocol)
        self._cloudpickle = cloudpickle

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Pickle ``state``; with cloudpickle where plain pickle cannot or would store by name."""
        if isinstance(state.get("func"), str):
            try:
                data = pickle.dumps(state, self.protocol)
            except Exception:  # lambdas or closures in args/kwargs: cloudpickle handles them
                pass
            else:
                # A reference into __main__ resolves only inside the same script: go by value.
                if _MAIN_MARKER not in data:
                    return data
        try:
            return bytes(self._cloudpickle.dumps(state, self.protocol))
        except Exception as exc:
            raise SerializationError(
                f"cloudpickle cannot encode the job state: {type(exc).__name__}: {exc}"
            ) from exc
