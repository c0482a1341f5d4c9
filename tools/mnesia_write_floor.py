"""What a mnesia_like write costs: the engine's floor for torpor's layout, apart
from torpor's own code.

``torpor bench --backend mnesia_like`` compares ``create``/``update`` with raw
``sqlite3`` on a two-column table ``(id UNIQUE, blob)``.  This tool adds the middle
step, so the gap splits into what the layout costs the engine and what torpor's
Python adds:

* **raw**: the bench's own baseline (``SqliteEngine``): ``BEGIN IMMEDIATE``, an
  ``INSERT`` of ``encode_data`` bytes (or ``SELECT``, decode, change, encode,
  ``UPDATE``), ``COMMIT``.
* **layout**: the statements the backend issues for that write, with the same
  values, issued directly on a store torpor filled: ``BEGIN IMMEDIATE``, the row read
  (``_rows.COLUMNS``), the ``INSERT`` of the blob and its metadata columns (an entry
  in the id index and in both partial indexes, idle and deadline) or the ``UPDATE``
  of a stored row (the common one, ``_rows.UPDATES[0]``: no index key moves), the
  indexed-fields read, ``COMMIT``.  Its Python is the least those statements need:
  the codec, an envelope, a CRC.
* **torpor**: ``mgr.create(data)`` and ``mgr.update(sid, fn)``.

Each store is a file of its own holding ``--sessions`` chat-like sessions, opened
with the same pragmas (the backend's connection code).  Blocks of ``--calls`` writes
alternate, ``--rounds`` times; each ratio is the median of the rounds' paired ratios.

Usage: ``python tools/mnesia_write_floor.py [--storage disc|disc_only]``.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torpor
from torpor import Record, codec
from torpor.cli.bench._mnesia_like import SqliteEngine
from torpor.cli.bench._settings import payloads
from torpor.plugins.mnesia_like import create_backend
from torpor.plugins.mnesia_like._rows import COLUMNS, UPDATES

_TIMEOUT_MS = 30 * 60 * 1000
_INSERT = (
    "INSERT INTO torpor_sessions(id, blob, last_accessed, deadline, incarnation, version, "
    "inflated, proof, hibernated, idle_key, due_key) "
    "VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, ?6, 0, ?3, ?4) RETURNING rowid"
)
_UPDATE = UPDATES[0]  # the common update: no index key moves (_rows.py, "Index keys")
_SELECT = f"SELECT {COLUMNS} FROM torpor_sessions WHERE id = ?"  # noqa: S608


def _bump(data: dict[str, Any]) -> dict[str, Any]:
    data["turn"] = data.get("turn", 0) + 1
    return data


class Layout:
    """torpor's statements, issued directly on a store torpor filled."""

    def __init__(self, path: Path, storage: str, ids: list[str]) -> None:
        self._backend = create_backend(path=str(path), storage=storage)
        self._conn = self._backend.db.conn()
        self._ids = ids

    def _write(self, body: Callable[[], None]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        body()
        list(conn.execute("SELECT name FROM torpor_fields"))
        conn.execute("COMMIT")

    def create(self, data: dict[str, Any]) -> None:
        sid = f"session_{secrets.token_urlsafe(16)}"
        now = time.time_ns() // 1_000_000
        record = Record(sid, now, now, _TIMEOUT_MS, 1, False, secrets.randbits(63))
        blob = record._replace(payload=codec.encode_data(data)).blob
        key = sid.encode()

        def body() -> None:
            self._conn.execute(_SELECT, (key,)).fetchone()
            self._conn.execute(
                _INSERT, (key, blob, now, now + _TIMEOUT_MS, record.incarnation, zlib.crc32(blob))
            ).fetchone()

        self._write(body)

    def update(self, i: int) -> None:
        sid = self._ids[i % len(self._ids)]
        key = sid.encode()

        def body() -> None:
            row = self._conn.execute(_SELECT, (key,)).fetchone()
            old = Record.from_blob(row[2])
            data = _bump(codec.decode_data(old.payload or b""))
            now = time.time_ns() // 1_000_000
            new = old.rewritten(codec.encode_data(data), now)
            blob = new.blob
            deadline = now + _TIMEOUT_MS
            crc = zlib.crc32(blob)
            values = (blob, now, deadline, new.incarnation, new.version, 0, crc, row[0])
            self._conn.execute(_UPDATE, values)

        self._write(body)

    def close(self) -> None:
        self._backend.torpor_close(True)


def _filled(path: Path, storage: str, sessions: int, data: tuple[dict[str, Any], ...]) -> list[str]:
    with torpor.open("mnesia_like", path=str(path), storage="disc", sweeper=False) as mgr:
        ids = [mgr.create(data[i % len(data)], timeout_ms=_TIMEOUT_MS).id for i in range(sessions)]
    del storage  # filled fast; measured under the storage mode asked
    return ids


def _block(op: Callable[[int], object], first: int, calls: int) -> float:
    start = time.perf_counter()
    for i in range(first, first + calls):
        op(i)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="disc", choices=("disc", "disc_only"))
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    data = payloads()
    with tempfile.TemporaryDirectory(prefix="torpor-floor-") as folder:
        layout_path, torpor_path = Path(folder, "layout.sqlite3"), Path(folder, "torpor.sqlite3")
        layout_ids = _filled(layout_path, args.storage, args.sessions, data)
        torpor_ids = _filled(torpor_path, args.storage, args.sessions, data)
        raw = SqliteEngine({"storage": args.storage}, args.sessions, data)
        layout = Layout(layout_path, args.storage, layout_ids)
        mgr = torpor.open("mnesia_like", path=str(torpor_path), storage=args.storage)
        try:
            ops: dict[str, Callable[[int], object]] = {
                "create, raw": raw.put,
                "create, layout": lambda i: layout.create(data[i % len(data)]),
                "create, torpor": lambda i: mgr.create(data[i % len(data)], timeout_ms=_TIMEOUT_MS),
                "update, raw": raw.update,
                "update, layout": layout.update,
                "update, torpor": lambda i: mgr.update(torpor_ids[i % len(torpor_ids)], _bump),
            }
            samples: dict[str, list[float]] = {name: [] for name in ops}
            for r in range(args.rounds):
                for name, op in ops.items():
                    start = r * args.calls  # each round writes other sessions
                    samples[name].append(_block(op, start, args.calls))
        finally:
            mgr.close()
            layout.close()
            raw.close()
    print(
        f"mnesia_like storage={args.storage}, {args.sessions:,} sessions, "
        f"{args.rounds} rounds of {args.calls} calls (median µs; median of paired ratios)"
    )
    for write in ("create", "update"):
        base = samples[f"{write}, raw"]
        for kind in ("raw", "layout", "torpor"):
            mine = samples[f"{write}, {kind}"]
            ratio = statistics.median(a / b for a, b in zip(mine, base, strict=True))
            print(f"  {write:6s} {kind:6s} {statistics.median(mine):8.1f} µs  {ratio:5.2f}x raw")
        layout_s, torpor_s = samples[f"{write}, layout"], samples[f"{write}, torpor"]
        ratio = statistics.median(a / b for a, b in zip(torpor_s, layout_s, strict=True))
        print(f"  {write:6s} torpor over layout: {ratio:.2f}x")


if __name__ == "__main__":
    main()
