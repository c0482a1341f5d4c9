"""LMDB-specific promises (issue: the LMDB backend).  The conformance kit covers the
shared semantics (tests/test_kit_catches.py runs it against lmdb)."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import torpor
from torpor import Capability
from torpor.conformance.helpers import blocked_consumer, walk_peak_bytes

lmdb = pytest.importorskip("lmdb")
ROOT = Path(__file__).resolve().parent.parent


def _open(path: Path, **options: object) -> torpor.Manager:
    options.setdefault("sweeper", False)
    return torpor.open("lmdb", path=str(path), **options)


def test_claims_every_capability_it_implements(tmp_path: Path) -> None:
    with _open(tmp_path / "env") as mgr:
        assert mgr.capabilities >= {
            Capability.PERSISTENT, Capability.MULTI_PROCESS, Capability.ATOMIC_UPDATE,
            Capability.NATIVE_ITERATION, Capability.NATIVE_HIBERNATION,
            Capability.NATIVE_EXPIRY, Capability.SHARED_MAILBOX, Capability.SECONDARY_INDEX,
        }  # fmt: skip
        assert all(
            mgr.native(a)
            for a in ("iteration", "hibernation", "expiry", "mailbox", "find", "transact")
        )


def test_files_are_private(tmp_path: Path) -> None:
    with _open(tmp_path / "env") as mgr:
        mgr.create({})
    assert stat.S_IMODE((tmp_path / "env").stat().st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE((tmp_path / "env" / name).stat().st_mode) == 0o600


def test_crash_safety_under_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "env"
    rng = random.Random(42)
    acknowledged: set[str] = set()
    counter = 0
    for round_no in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.lmdb_writer", str(path), str(round_no)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        wanted = rng.randint(1, 60)
        lines: list[str] = []
        while len(lines) < wanted:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "writer died"
            lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)  # wherever it is: maybe mid-commit
        rest, _ = proc.communicate()
        for line in lines + rest.splitlines():
            kind, _, value = line.strip().partition(" ")
            if kind == "created":
                acknowledged.add(value)
            elif kind == "counter":
                counter = max(counter, int(value))
        with _open(path) as mgr:  # opens after every crash
            missing = [sid for sid in acknowledged if sid not in mgr]
            assert not missing, f"round {round_no}: acknowledged writes lost: {missing[:5]}"
            stored = mgr.peek("counter")
            assert stored is not None and stored.data["n"] >= counter
            assert len(mgr) >= len(acknowledged) + 1
    assert len(acknowledged) >= 20


# A memory figure over 200,000 sessions: coverage's tracer would only add a minute to it
# (its code runs in other tests too) and allocations of its own to what it measures.
@pytest.mark.unmeasured
def test_iteration_memory_200k_within_1_2x_of_20k(tmp_path: Path) -> None:
    with _open(tmp_path / "env", durability="nosync") as mgr:
        small = walk_peak_bytes(mgr, 20_000, 500, {"x": 1})
        large = walk_peak_bytes(mgr, 200_000, 500, {"x": 1})
    assert large <= small * 1.2, f"peak {small} B at 20,000 sessions, {large} B at 200,000"


def test_a_paused_iteration_pins_no_snapshot(tmp_path: Path) -> None:
    with _open(tmp_path / "env", durability="nosync") as mgr:
        ids = [mgr.create({"blob": "x" * 6000}).id for _ in range(50)]
        walk = mgr.ids(batch_size=10)
        next(walk)  # paused mid-walk, as a slow consumer would be
        data_file = tmp_path / "env" / "data.mdb"
        before = data_file.stat().st_size
        for i in range(3000):
            mgr.update(ids[i % 50], lambda d: {"blob": d["blob"][::-1]})
        growth = data_file.stat().st_size - before
        assert sum(1 for _ in walk) == 49
    # A pinned snapshot would keep every old version: 3000 x 2 pages = 24 MiB.
    assert growth < 4 << 20, f"data file grew by {growth} bytes"


def test_the_map_grows_on_its_own(tmp_path: Path) -> None:
    with _open(tmp_path / "env", map_size=1 << 20, durability="nosync") as mgr:
        ids = [mgr.create({"blob": os.urandom(20_000)}).id for _ in range(300)]
        assert len(mgr) == 300 and all(i in mgr for i in ids)
        grown = mgr._b._backend.shared.env.info()["map_size"]  # type: ignore[attr-defined]
    assert grown > 1 << 20
    with _open(tmp_path / "env", map_size=1 << 20) as again:
        assert len(again) == 300


def test_a_forked_child_gets_a_clear_error(tmp_path: Path) -> None:
    mgr = _open(tmp_path / "env")
    s = mgr.create({})
    pid = os.fork()
    if pid == 0:  # the child: must not touch the parent's environment
        code = 3
        try:
            mgr.get(s.id)
            code = 1
        except torpor.BackendUnavailable as exc:
            code = 0 if "fork" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert mgr.get(s.id) is not None  # the parent is unharmed
    mgr.close()


def test_namespaces_share_one_environment(tmp_path: Path) -> None:
    a = _open(tmp_path / "env", namespace="app-a")
    b = _open(tmp_path / "env", namespace="app-b")
    a.create({"app": "a"}, session_id="same-id")
    b.create({"app": "b"}, session_id="same-id")
    assert a.get("same-id").data == {"app": "a"}  # type: ignore[union-attr]
    assert b.get("same-id").data == {"app": "b"}  # type: ignore[union-attr]
    a.close()
    assert b.get("same-id") is not None  # the environment stays open for b
    b.close()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({}, torpor.ConfigError, "needs option\\(s\\) 'path'"),
        ({"path": "x", "durability": "maybe"}, torpor.ConfigError, "durability must be one of"),
        ({"path": "x", "colour": 1}, torpor.ConfigError, "valid: durability"),
        ({"path": "x", "namespace": "a b"}, torpor.ConfigError, "namespace"),
    ],
)
def test_bad_options(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: dict,  # type: ignore[type-arg]
    error: type,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        torpor.open("lmdb", **options)


def test_engine_errors_are_translated(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(torpor.BackendUnavailable) as info:
        torpor.open("lmdb", path=str(blocker / "env"))
    assert not isinstance(info.value, lmdb.Error)


def test_environment_variables_select_and_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORPOR_BACKEND", "lmdb")
    monkeypatch.setenv("TORPOR_LMDB_PATH", str(tmp_path / "from-env"))
    monkeypatch.setenv("TORPOR_LMDB_DURABILITY", "nometasync")
    with torpor.open(sweeper=False) as mgr:
        assert mgr.backend_name == "lmdb"
        mgr.create({})
    assert (tmp_path / "from-env" / "data.mdb").exists()


def test_sweeps_read_the_indexes_not_the_store(tmp_path: Path) -> None:
    from collections.abc import Generator, Sequence
    from typing import Any

    class Count:
        def __init__(self) -> None:
            self.iterated = 0
            self.batched: list[int] = []

        @torpor.hookimpl(wrapper=True)
        def torpor_iterate(self, cursor: Any, batch_size: int) -> Generator[None, Any, Any]:
            self.iterated += 1
            return (yield)

        @torpor.hookimpl(wrapper=True)
        def torpor_transact_batch(
            self, session_ids: Sequence[str], fn: Any
        ) -> Generator[None, Any, Any]:
            self.batched.append(len(session_ids))
            return (yield)

    clock = torpor.ManualClock()
    count = Count()
    with _open(tmp_path / "env", clock=clock, durability="nosync", plugins=[count]) as mgr:
        idle = [mgr.create({"i": i}, timeout_ms=1000).id for i in range(10)]
        clock.advance(5000)
        for i in range(3000):
            mgr.create({"i": i}, timeout_ms=None)
        assert mgr.hibernate_idle(2000) == 10
        assert mgr.cleanup_expired() == 10
        assert not any(i in mgr for i in idle)
    assert count.iterated == 0
    assert count.batched == [10, 10]  # one transaction per sweep, the candidates only


@pytest.mark.parametrize(
    ("end", "expected"), [("cancel", torpor.SessionCancelled), ("delete", torpor.SessionNotFound)]
)
def test_a_waiter_elsewhere_learns_why_its_session_went(
    tmp_path: Path, end: str, expected: type
) -> None:
    # Two managers on one path share the environment but not in-process wake-ups:
    # the waiter must notice through polling and the tombstone, as in another process.
    waiting_side = _open(tmp_path / "env")
    other_side = _open(tmp_path / "env")
    s = waiting_side.create({})
    thread, outcome = blocked_consumer(waiting_side, s.id)
    assert getattr(other_side, end)(s.id) is True
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and type(outcome[0]) is expected
    waiting_side.close()
    other_side.close()
