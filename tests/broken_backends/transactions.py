"""Broken multi-session transactions (capability TRANSACTIONS, issue 11).

``LockedTransactions`` is a correct ``torpor_transaction`` on ``IndexedMinimal``: it
holds the backend's lock from begin to commit (isolation), keeps its writes in layers
of its own until the commit (atomicity; a savepoint is a layer), and applies them all
under that lock.  Each broken one is a small, realistic mistake on top of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.broken_backends.indexes import IndexedMinimal
from torpor import Capability, Record, Removal

__all__ = [
    "LockedTransactions",
    "SavepointsIgnored",
    "TransactionWithoutLock",
    "TransactionWritesThrough",
]

_Layer = dict[str, "Record | Removal"]


class _Transaction:
    """The backend side of one transaction (``torpor.BackendTransaction``)."""

    def __init__(self, backend: LockedTransactions) -> None:
        self.backend = backend
        self.layers: list[_Layer] = [{}]
        self.locked = backend.lock_for_transactions()

    def fetch(self, session_id: str) -> Record | bytes | None:
        for layer in reversed(self.layers):
            if session_id in layer:
                change = layer[session_id]
                return change if isinstance(change, Record) else None
        return self.backend.blobs.get(session_id)

    def store(self, record: Record) -> None:
        self.layers[-1][record.id] = record

    def remove(self, session_id: str, removal: Removal) -> None:
        self.layers[-1][session_id] = removal

    def savepoint(self) -> None:
        self.layers.append({})

    def release(self) -> None:
        top = self.layers.pop()
        self.layers[-1].update(top)

    def rollback_to(self) -> None:
        self.layers.pop()

    def commit(self) -> None:
        merged: _Layer = {}
        for layer in self.layers:
            merged.update(layer)
        with self.backend.lock:
            for sid, change in merged.items():
                if isinstance(change, Record):
                    self.backend.torpor_store(change)
                else:
                    self.backend._remove(sid, change)
        self._end()

    def rollback(self) -> None:
        self._end()

    def _end(self) -> None:
        if self.locked:
            self.locked = False
            self.backend.lock.release()


class LockedTransactions(IndexedMinimal):
    """A correct ``torpor_transaction`` (healthy: it passes the whole kit)."""

    name = "locked_transactions"
    transaction_class: type[_Transaction] = _Transaction

    def torpor_capabilities(self) -> Iterable[Capability]:
        return [*super().torpor_capabilities(), Capability.TRANSACTIONS]

    def torpor_fetch(self, session_id: str) -> bytes | None:
        with self.lock:  # a reader never sees a commit half applied
            return self.blobs.get(session_id)

    def torpor_transaction(self) -> Any:
        return self.transaction_class(self)

    def lock_for_transactions(self) -> bool:
        self.lock.acquire()
        return True


class _WritesThrough(_Transaction):
    def store(self, record: Record) -> None:
        self.backend.torpor_store(record)

    def remove(self, session_id: str, removal: Removal) -> None:
        self.backend._remove(session_id, removal)


class TransactionWritesThrough(LockedTransactions):
    """Applies each write at once under the lock it holds ("nothing else can write
    meanwhile, so it is as good as atomic"): isolated from writers, but a rollback
    undoes nothing, and readers see each write before the commit."""

    transaction_class = _WritesThrough


class TransactionWithoutLock(LockedTransactions):
    """Keeps its writes until the commit and applies them under the lock, but does
    not hold the lock from the beginning ("the commit is atomic"): another writer
    changes a session between the transaction's read and its commit, and the
    commit writes over it (a lost update: the bank's total drifts)."""

    def lock_for_transactions(self) -> bool:
        return False


class _FlatSavepoints(_Transaction):
    def savepoint(self) -> None:
        pass

    def release(self) -> None:
        pass

    def rollback_to(self) -> None:
        pass


class SavepointsIgnored(LockedTransactions):
    """Treats a nested transaction as part of the enclosing one ("SQLite nests them
    anyway"): a nested body that raises keeps its writes."""

    transaction_class = _FlatSavepoints


BROKEN: dict[str, str] = {
    "TransactionWritesThrough": "transactions",
    "TransactionWithoutLock": "transactions",
    "SavepointsIgnored": "transactions",
}
"""Each broken backend and the area of the kit that must catch it."""
