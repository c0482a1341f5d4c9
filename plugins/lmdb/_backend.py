"""The lmdb backend: sessions in an LMDB environment, shared by processes.

The databases of a namespace and the marker that guards them are described in
``_layout.py``; what each write does inside its transaction in ``_store.py``; the
mailbox in ``_mailbox.py``; the environment (sharing, map growth, fork, errors) in
``_env.py`` and ``_envs.py``; the ids walk, which checks records against a checksum
in their metadata instead of decoding them, in ``_walk.py`` and ``_meta.py``; touches
written to the metadata alone, and how reads see them, in ``_touch.py``.

Every hook is one LMDB transaction: a read, or a write with one commit (when the map
must grow, the attempt that hit the limit is aborted and retried: still one commit).
So a delete or a cancel (record, indexes, mail, tombstone) is one commit, and an expiry or
hibernation sweep is one commit per batch of ``sweep_batch_size`` sessions.  With
``durability="sync"`` every commit waits for the disk (LMDB flushes the data pages,
then writes the meta page synchronously), so batching is what keeps a sweep's disk
waits to one per batch instead of one per session.

Big-endian stamps sort by time, so hibernation and expiry read the oldest entries of an
index and stop at the first one past the bound: their cost follows the idle or expired
sessions, not the store.  Keys stay within LMDB's 511-byte limit: an id has at most 255
bytes, the longest key (a field index entry) 279.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from torpor import DELETE, BackendStats, Capability, Clock, Record, Removal
from torpor.errors import BackendUnavailable, ManagerClosed
from torpor.hookspecs import BatchFn, TransactFn
from torpor.plugins.lmdb._env import EnvConfig, SharedEnv, Txn
from torpor.plugins.lmdb._envs import acquire_env, release_env
from torpor.plugins.lmdb._index import entry_prefix
from torpor.plugins.lmdb._layout import Dbs, field_key, open_layout, reopen_layout
from torpor.plugins.lmdb._mailbox import LmdbMailbox
from torpor.plugins.lmdb._store import Store, adopt
from torpor.plugins.lmdb._touch import restamped
from torpor.plugins.lmdb._walk import ids_page, resume

__all__ = ["LmdbBackend"]

T = TypeVar("T")
log = logging.getLogger("torpor")
Pair = tuple[str | bytes, bytes | Record]
_DEFAULT_LIMIT = 1 << 20  # max_session_bytes until torpor_open says otherwise


CAPABILITIES: frozenset[Capability] = frozenset(
    {
        Capability.PERSISTENT,
        Capability.MULTI_PROCESS,
        Capability.ATOMIC_UPDATE,
        Capability.NATIVE_ITERATION,
        Capability.NATIVE_HIBERNATION,
        Capability.NATIVE_EXPIRY,
        Capability.SHARED_MAILBOX,
        Capability.SECONDARY_INDEX,
    }
)
"""What every LmdbBackend claims; also its factory's static metadata."""


class LmdbBackend:
    """See the module docstring; build it with ``torpor.open("lmdb", path=...)``."""

    name = "lmdb"

    def __init__(
        self, path: Path, config: EnvConfig, *, namespace: str, touch_resolution_ms: int
    ) -> None:
        self._touch_resolution = touch_resolution_ms
        self._closing = threading.Lock()
        shared = acquire_env(path, config)
        try:
            store = Store(Dbs(namespace), _DEFAULT_LIMIT)

            def layout(txn: Txn) -> Dbs:
                return open_layout(
                    shared.env,
                    txn,
                    namespace,
                    adopt=lambda t, d: adopt(t, d, store.limit, store.check_open),
                )

            # Handles opened once per environment and namespace: opening again needs no
            # exclusive transaction (which would wait for every running one).
            dbs = shared.layouts.get(namespace)
            if dbs is None:
                dbs = shared.layouts[namespace] = shared.exclusive_write(layout)
            store.dbs = dbs
        except BaseException:
            release_env(shared)
            raise
        self._shared: SharedEnv | None = shared
        self._store = store
        self._dbs = store.dbs
        self._mailbox = LmdbMailbox(shared, store)
        shared.reopeners[id(self)] = self._reopen

    def _reopen(self, env: lmdb.Environment) -> None:
        with env.begin(write=True) as txn:
            reopen_layout(env, txn, self._dbs)

    @property
    def shared(self) -> SharedEnv:
        shared = self._shared
        if shared is None:
            raise ManagerClosed("this lmdb backend is closed; open a new manager")
        return shared

    # -- lifecycle ---------------------------------------------------------------
    def torpor_capabilities(self) -> Iterable[Capability]:
        return CAPABILITIES

    def torpor_open(self, clock: Clock, options: Mapping[str, Any]) -> None:
        self._store.limit = int(options.get("max_session_bytes") or _DEFAULT_LIMIT)

    def torpor_touch_resolution_ms(self) -> int:
        return self._touch_resolution

    def torpor_close(self, urgent: bool) -> None:
        """Release the environment (the last backend on it closes it).  Idempotent.

        Never waits: transactions still running (only after an urgent close: an
        orderly one has waited for them) fail instead of committing, and the last of
        them closes the environment as it leaves (see ``_envs.py``).
        """
        with self._closing:
            shared, self._shared = self._shared, None
        if shared is not None:
            self._store.closing = True  # long operations stop; no write commits
            self._mailbox.close()
            shared.reopeners.pop(id(self), None)
            release_env(shared)

    # -- required data hooks ---------------------------------------------------------
    def torpor_fetch(self, session_id: str) -> bytes | Record | None:
        key = session_id.encode("utf-8")
        dbs = self._dbs
        blob, raw = self.shared.get_pair(key, dbs.sessions, dbs.meta)
        return None if blob is None else restamped(key, blob, raw)  # see _touch.py

    def torpor_store(self, record: Record) -> None:
        self._write([record.id], lambda txn: self._store.put(txn, record))

    def torpor_delete(self, session_id: str) -> bool:
        key = session_id.encode("utf-8")
        return self._write([session_id], lambda txn: self._store.remove(txn, key, DELETE.reason))

    def torpor_ids(self) -> list[str | bytes]:
        def keys(txn: Txn) -> list[str | bytes]:
            return [_key(k) for k in txn.cursor(db=self._dbs.sessions).iternext(values=False)]

        return self.shared.read(keys)

    # -- native hooks ----------------------------------------------------------------
    def torpor_transact(self, session_id: str, fn: TransactFn) -> None:
        key = session_id.encode("utf-8")
        store = self._store
        self._write([session_id], lambda txn: self._apply(txn, key, fn(store.value(txn, key))))

    def torpor_transact_batch(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        store = self._store

        def batch(txn: Txn) -> None:
            for sid in session_ids:
                key = sid.encode("utf-8")
                self._apply(txn, key, fn(sid, store.value(txn, key)))

        # The ids come from torpor_idle_ids/torpor_expired_ids, which remembered the
        # stale and foreign index entries they passed over: this transaction (``_write``
        # tidies first) deletes them.
        self._write(session_ids, batch)

    def torpor_iterate(self, cursor: Any, batch_size: int) -> tuple[list[Pair], Any]:
        meta = self._dbs.meta

        def page(txn: Txn) -> tuple[list[Pair], bytes | None]:
            walk = txn.cursor(db=self._dbs.sessions)
            more = resume(walk, cursor)
            items: list[Pair] = []
            last = None
            while more and len(items) < batch_size:
                last = walk.key()
                items.append((_key(last), restamped(last, walk.value(), txn.get(last, db=meta))))
                more = walk.next()
            return items, (last if more else None)

        return self.shared.read(page)

    def torpor_iterate_ids(
        self, cursor: Any, batch_size: int, now_ms: int
    ) -> tuple[list[str | bytes], Any]:
        """``ids()``: the same walk, reading records in place (see ``_walk.py``)."""
        dbs, limit = self._dbs, self._store.limit
        return self.shared.read(
            lambda txn: ids_page(txn, dbs, cursor, batch_size, now_ms, limit), buffers=True
        )

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> Sequence[str]:
        return self._below("idle", cutoff_ms, limit)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> Sequence[str]:
        return self._below("expiry", now_ms, limit)

    def torpor_stats(self) -> BackendStats:
        def pages(txn: Txn) -> int:
            found = txn.stat(self._dbs.sessions)
            used = found["branch_pages"] + found["leaf_pages"] + found["overflow_pages"]
            return int(used * found["psize"])

        return BackendStats(
            self.shared.read(pages), "LMDB pages in use by the sessions database x page size"
        )

    def torpor_create_index(self, field: str) -> None:
        self._write((), lambda txn: self._store.index_field(txn, field))

    def torpor_find(self, criteria: Mapping[str, Any]) -> list[Pair] | None:
        def lookup(txn: Txn) -> list[Pair] | None:
            for field, value in criteria.items():
                if txn.get(field_key(field), db=self._dbs.fields) is None:
                    continue
                try:
                    prefix = entry_prefix(field, value)
                except (TypeError, ValueError):
                    continue  # no session can hold such a value: let the manager compare
                return self._candidates(txn, prefix)
            return None  # nothing indexed: the manager scans, in batches

        return self.shared.read(lookup)

    def torpor_mailbox(self) -> LmdbMailbox:
        return self._mailbox

    # -- the conformance kit ---------------------------------------------------------
    def conformance_plant(self, key: bytes, value: bytes) -> None:
        """For the conformance kit's damaged-data tests: write ``value`` under ``key``
        straight into the sessions database, as another program sharing the
        environment would: no metadata, no index entries."""
        dbs = self._dbs
        self._write((), lambda txn: txn.put(key, value, db=dbs.sessions))

    # -- internals -------------------------------------------------------------------
    def _write(self, session_ids: Iterable[str], body: Callable[[Txn], T]) -> T:
        """One write transaction; then wake this process's receivers of the sessions
        (their mail or their life may have changed)."""
        store = self._store

        def run(txn: Txn) -> T:
            store.tidy(txn)  # foreign or stale entries reads met: deleted on the way
            result = body(txn)
            if store.closing:  # closed urgently while this ran: not acknowledged
                raise ManagerClosed("the manager was closed; this write was not applied")
            return result

        result = self.shared.write(run)
        for sid in session_ids:
            self._mailbox.changed(sid)
        return result

    def _apply(self, txn: Txn, key: bytes, change: object) -> None:
        if change is None:
            return
        if isinstance(change, Removal):
            self._store.remove(txn, key, change.reason)
        elif isinstance(change, Record):
            self._store.put(txn, change)
        else:
            raise BackendUnavailable(
                f"a transaction function returned {type(change).__name__}; expected a "
                "Record, a torpor.Removal or None"
            )

    def _candidates(self, txn: Txn, prefix: bytes) -> list[Pair]:
        found: list[Pair] = []
        store = self._store
        walk = txn.cursor(db=self._dbs.index)
        if walk.set_range(prefix):
            for entry in walk.iternext(values=False):
                if not entry.startswith(prefix):
                    break
                pair = store.index_candidate(txn, entry, len(prefix))
                if pair is not None:  # else: pointing nowhere; the next write deletes it
                    found.append((_key(pair[0]), pair[1]))
        return found

    def _below(self, which: str, bound: int, limit: int) -> list[str]:
        """Candidates from the idle or expiry index.  Entries that are foreign or stale
        (the session is gone or has moved on) are skipped and remembered; the sweep's
        own write deletes them, or, if no candidate is left to sweep, a write now."""
        found, dirty = self.shared.read(
            lambda txn: self._store.scan_below(txn, which, bound, limit)
        )
        if dirty and not found:
            try:
                self._write((), lambda txn: None)  # tidies
            except BackendUnavailable:  # best effort: the next write tries again
                log.debug("torpor: deleting stale index entries failed", exc_info=True)
        return found


def _key(key: bytes) -> str | bytes:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key
