"""mnesia_like: raw ``sqlite3`` with torpor's codec as the floor, and stores in a file
of their own, filled once and copied for each repetition.

The raw database is opened by the very code the backend opens its own with (its
factory, so the same option checks, and its connection module: ``journal_mode=WAL``,
the ``synchronous`` level and page cache of the storage mode asked, the busy
timeout), so the ratio is torpor's code against the engine, never two configurations
of the engine.  Like a user of raw ``sqlite3`` it keeps one rowid table
``(id BLOB UNIQUE, blob)`` of ``torpor.codec.encode_data`` bytes, with ids as UTF-8
bytes as the backend keys its own: no metadata, no expiry, no mailbox, no index but
the key's.  Every write is ``BEGIN IMMEDIATE`` ... ``COMMIT``, as the backend's are.

Stores are files (``path`` names the database file), each in a folder of its own.
The benchmark's stores are filled with ``storage=disc`` (no fsync per commit) and
measured with the command's storage mode: only the filling is sped up.  ``ram``
cannot be measured this way (an in-memory database dies with the manager that filled
it): the command refuses it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from torpor import codec
from torpor.cli.bench._profiles import Profile

if TYPE_CHECKING:
    from torpor.plugins.mnesia_like import SqliteBackend

__all__ = ["PROFILE", "RAW_LABEL", "SqliteEngine", "clone_store", "scratch"]

RAW_LABEL: Final = "raw sqlite3"
FILE_NAME: Final = "sessions.sqlite3"
NO_RAM: Final = (
    "bench --backend mnesia_like measures storage=disc or storage=disc_only: a ram "
    "database lives only as long as the manager that filled it"
)
_T = TypeVar("_T")
_SCHEMA: Final = "CREATE TABLE raw (id BLOB NOT NULL UNIQUE, blob BLOB NOT NULL) STRICT"


def _check(options: Mapping[str, str]) -> None:
    if options.get("storage", "disc") == "ram":
        raise click.ClickException(NO_RAM)


def _ids(count: int) -> list[bytes]:
    # Shaped like torpor's generated ids (session_ + 22 URL-safe characters).
    return [f"session_{secrets.token_urlsafe(16)}".encode() for _ in range(count)]


class SqliteEngine:
    """Raw ``sqlite3`` on one connection: ``SELECT blob`` then the decode; and writes
    in ``BEGIN IMMEDIATE`` ... ``COMMIT``: an ``INSERT``, a ``DELETE``, and an update
    that reads, decodes, changes a field, encodes and writes back.

    Errors leave as the backend's would (``BackendUnavailable`` naming the cause):
    the backend's own translation is used."""

    label = RAW_LABEL

    def __init__(
        self, options: Mapping[str, str], count: int, data: tuple[dict[str, Any], ...]
    ) -> None:
        _check(options)
        from torpor.plugins.mnesia_like import create_backend

        self._folder = tempfile.TemporaryDirectory(prefix="torpor-raw-", ignore_cleanup_errors=True)
        try:
            # The backend only lends its connection: torpor's empty tables beside the
            # raw one cost the raw statements nothing.
            path = Path(self._folder.name) / FILE_NAME
            self._backend: SqliteBackend = create_backend(**{**options, "path": str(path)})
            self._conn = self._backend.db.conn()
            self._data = data
            self._keys = _ids(count)
            blobs = [codec.encode_data(d) for d in data]
            self._write(lambda c: c.execute(_SCHEMA))
            rows = ((key, blobs[i % len(blobs)]) for i, key in enumerate(self._keys))
            self._write(lambda c: c.executemany("INSERT INTO raw(id, blob) VALUES (?, ?)", rows))
        except BaseException:
            self.close()
            raise
        self._new: deque[bytes] = deque()
        self._next = 0

    def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """``body`` in ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back if it fails)."""
        from torpor.plugins.mnesia_like._errors import translated

        conn = self._conn
        with translated("raw sqlite3 baseline"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return result

    def get(self, i: int) -> object:
        from torpor.plugins.mnesia_like._errors import translated

        with translated("raw sqlite3 baseline"):
            found = self._conn.execute(
                "SELECT blob FROM raw WHERE id = ?", (self._keys[i % len(self._keys)],)
            ).fetchone()
        return codec.decode_data(_found(found))

    def put(self, i: int) -> None:
        key = f"new-{self._next}".encode()
        self._next += 1
        blob = codec.encode_data(self._data[i % len(self._data)])
        self._write(lambda c: c.execute("INSERT INTO raw(id, blob) VALUES (?, ?)", (key, blob)))
        self._new.append(key)

    def update(self, i: int) -> None:
        key = self._keys[i % len(self._keys)]

        def change(conn: sqlite3.Connection) -> None:
            found = conn.execute("SELECT blob FROM raw WHERE id = ?", (key,)).fetchone()
            data = codec.decode_data(_found(found))
            # A new value every call, as the manager's update case writes: SQLite
            # skips a write that leaves the row as it was (no WAL frame, no fsync).
            data["turn"] = data.get("turn", 0) + 1
            conn.execute("UPDATE raw SET blob = ? WHERE id = ?", (codec.encode_data(data), key))

        self._write(change)

    def delete(self) -> None:
        key = self._new.popleft()
        self._write(lambda c: c.execute("DELETE FROM raw WHERE id = ?", (key,)))

    def spare(self) -> int:
        return len(self._new)

    def close(self) -> None:
        backend: SqliteBackend | None = getattr(self, "_backend", None)
        if backend is not None:
            backend.torpor_close(True)  # no PRAGMA optimize: the file is deleted next
        self._folder.cleanup()


def _found(row: tuple[bytes] | None) -> bytes:
    if row is None:  # only the benchmark writes this database
        raise RuntimeError("a key the raw sqlite3 baseline wrote is missing")
    return row[0]


@contextmanager
def scratch(options: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """The options of a store in a new database file (in a folder of its own, 0700),
    deleted with its folder on exit."""
    _check(options)
    with tempfile.TemporaryDirectory(prefix="torpor-bench-", ignore_cleanup_errors=True) as d:
        yield {**options, "path": str(Path(d) / FILE_NAME)}


def clone_store(source: Path, target: Path) -> None:
    """Copy a closed database file (and its WAL, if its last connection left one:
    SQLite replays it when the copy opens) to ``target``, created 0600."""
    for suffix in ("", "-wal"):
        origin = source.with_name(source.name + suffix)
        if not origin.exists():
            continue
        fd = os.open(
            target.with_name(target.name + suffix), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
        )
        with os.fdopen(fd, "wb") as out, origin.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)


PROFILE = Profile(
    raw=SqliteEngine,
    scratch=scratch,
    # Filling only: the measured manager reopens the file with the command's options
    # (disc_only: an fsync per commit, which would make a fill of 200,000 take hours).
    fast_fill={"storage": "disc"},
    clone=clone_store,
    calls=5_000,
    # disc_only waits for an fsync per commit (~1-5 ms here): fewer per block.
    write_calls=200,
)
