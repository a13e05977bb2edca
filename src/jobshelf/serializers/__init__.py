"""The serializers that ship with jobshelf, one module per format; ``signed`` wraps any of them."""

from __future__ import annotations

from .cloudpickle import CloudPickleSerializer
from .msgpack import MsgpackStateSerializer
from .pickle import PickleSerializer
from .signed import SignedSerializer

__all__ = ["CloudPickleSerializer", "MsgpackStateSerializer", "PickleSerializer", "SignedSerializer"]
