"""The serializers that ship with jobshelf, one module per format."""

from __future__ import annotations

from .cloudpickle import CloudPickleSerializer
from .msgpack import MsgpackStateSerializer
from .pickle import PickleSerializer

__all__ = ["CloudPickleSerializer", "MsgpackStateSerializer", "PickleSerializer"]
