"""LMDB's own rules at work on real files: a map another process grew is adopted by a
store that is open, and engine errors reach users as torpor errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import torpor

lmdb = pytest.importorskip("lmdb")
from torpor.plugins.lmdb import LmdbBackend, create_backend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL_MAP = 1 << 16

_GROW = textwrap.dedent(
    """
    import sys, torpor
    path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with torpor.open("lmdb", path=path, map_size=1 << 16, durability="nosync",
                     sweeper=False) as mgr:
        for i in range(count):
            mgr.create({"pad": "x" * 2000}, session_id=f"{prefix}{i}", timeout_ms=None)
        print(mgr._b._backend.shared.env.info()["map_size"])
    """
)


def _open(path: Path, **options: Any) -> tuple[torpor.Manager, LmdbBackend]:
    backend = create_backend(path=str(path), map_size=SMALL_MAP, durability="nosync", **options)
    return torpor.open(backend, sweeper=False), backend


def _map_size(backend: LmdbBackend) -> int:
    return int(backend.shared.env.info()["map_size"])


def _grow_elsewhere(path: Path, prefix: str, count: int) -> int:
    """Another process writes ``count`` sessions of 2 KB, growing the map past what this
    process has mapped; returns the map size it left in the file."""
    child = subprocess.run(
        [sys.executable, "-c", _GROW, str(path), prefix, str(count)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    return int(child.stdout)


# -- map growth by another process -------------------------------------------------------


def test_an_open_store_adopts_the_map_another_process_grew(tmp_path: Path) -> None:
    path = tmp_path / "env"
    mgr, backend = _open(path)
    with mgr:
        mgr.create({"mine": True}, session_id="mine", timeout_ms=None)
        # A read of a page past this process's map: LMDB refuses it (MapResizedError)
        # until the new size is adopted.
        grown = _grow_elsewhere(path, "a", 300)
        assert grown > SMALL_MAP == _map_size(backend)
        assert mgr.get("a299").data == {"pad": "x" * 2000}  # type: ignore[union-attr]
        assert _map_size(backend) == grown
        # A write: the same refusal, the same adoption, and the write is not lost.
        grown_again = _grow_elsewhere(path, "b", 600)
        assert grown_again > grown
        mgr.create({"after": True}, session_id="after", timeout_ms=None)
        assert _map_size(backend) == grown_again
        assert len(mgr) == 1 + 300 + 600 + 1
        assert mgr.peek("after").data == {"after": True}  # type: ignore[union-attr]


def test_a_new_namespace_opened_after_growth_elsewhere_adopts_it(tmp_path: Path) -> None:
    # Opening a namespace's databases is a write of its own (with no other transaction
    # of the process running); it meets the grown map first.
    path = tmp_path / "env"
    mgr, backend = _open(path)
    with mgr:
        grown = _grow_elsewhere(path, "a", 300)
        other, other_backend = _open(path, namespace="other")
        with other:
            assert other_backend.shared is backend.shared  # one environment per process
            assert _map_size(backend) == grown
            other.create({}, session_id="theirs", timeout_ms=None)
            assert "theirs" not in mgr and len(mgr) == 300


# -- engine errors -----------------------------------------------------------------------


def test_a_data_file_that_is_not_lmdb_is_refused_as_such(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"SQLite format 3\x00" + bytes(64 * 1024))
    with pytest.raises(torpor.BackendUnavailable, match="not an LMDB file") as info:
        _open(path)
    assert isinstance(info.value.__cause__, lmdb.InvalidError)
    # Refused, not started afresh over it.
    assert (path / "data.mdb").read_bytes().startswith(b"SQLite format 3\x00")
