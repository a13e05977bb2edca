"""The in-process adapter: the store core with encoded jobs kept in memory.

- ``_store``: :class:`MemoryJobStore` and :class:`MemoryStorage`;
- ``_history``: where its execution history is kept.
"""

from __future__ import annotations

from ._store import MemoryJobStore, MemoryStorage

__all__ = ["MemoryJobStore", "MemoryStorage"]
