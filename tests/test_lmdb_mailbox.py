"""The lmdb mailbox changes in the same transaction as the records (DESIGN §11)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import torpor
from torpor import codec
from torpor.conformance._kit import blocked_consumer

pytest.importorskip("lmdb")
from torpor.plugins.lmdb import LmdbBackend, create_backend

ROOT = Path(__file__).resolve().parent.parent


def _open(path: Path, **options: Any) -> tuple[torpor.Manager, LmdbBackend]:
    backend = create_backend(path=str(path), durability="nosync")
    options.setdefault("clock", torpor.ManualClock())
    return torpor.open(backend, sweeper=False, **options), backend


def _drain(mgr: torpor.Manager, sid: str) -> list[Any]:
    return mgr.receive(sid, max_messages=1_000_000)


def test_send_checks_the_incarnation_in_its_transaction(tmp_path: Path) -> None:
    mgr, backend = _open(tmp_path / "env")
    mailbox = backend.torpor_mailbox()
    with mgr:
        old = mgr.create({}, session_id="s")
        assert mailbox.send("s", old.incarnation, codec.encode_value("old"), False)
        assert mgr.cancel("s")
        assert not mailbox.send("s", old.incarnation, codec.encode_value("late"), False)
        new = mgr.create({}, session_id="s")
        assert not mailbox.send("s", old.incarnation, codec.encode_value("stale"), False)
        assert mailbox.pending("s", old.incarnation) == 0
        assert mailbox.send("s", new.incarnation, codec.encode_value("new"), True)
        assert _drain(mgr, "s") == ["new"]


def test_an_expired_session_replaced_by_create_leaves_no_mail(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, _ = _open(tmp_path / "env", clock=clock)
    with mgr:
        mgr.create({}, session_id="s", timeout_ms=1000)
        mgr.send("s", "for the first life")
        clock.advance(5000)  # expired, not swept
        mgr.create({}, session_id="s", timeout_ms=1000)
        assert mgr.pending("s") == 0
        assert _drain(mgr, "s") == []


def test_a_send_racing_a_cancel_never_leaks_or_drops(tmp_path: Path) -> None:
    """Senders race cancel + re-create of one id.  A stale sender (it checked the old
    incarnation) must never reach the new session; a live sender whose send began
    after it saw the new session must always be received."""
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        for round_no in range(150):
            _race_round(mgr, backend, round_no)


def _race_round(mgr: torpor.Manager, backend: LmdbBackend, round_no: int) -> None:
    mailbox = backend.torpor_mailbox()
    old = mgr.create({}, session_id="race")
    stop = threading.Event()
    cancelled = threading.Event()
    new_incarnation: list[int] = []
    sent: dict[str, list[tuple[str, int, bool]]] = {"stale": [], "live": []}
    progress = threading.Semaphore(0)
    violations: list[int] = []

    def stale_sender() -> None:
        k = 0
        while not stop.is_set():
            after_cancel = cancelled.is_set()
            ok = mailbox.send("race", old.incarnation, codec.encode_value(["stale", k]), False)
            if ok and after_cancel:
                violations.append(k)  # a send to a cancelled incarnation succeeded
            sent["stale"].append(("stale", k, ok))
            progress.release()
            k += 1

    def live_sender() -> None:
        k = 0
        while not stop.is_set():
            seen = mgr.peek("race")
            fresh = seen is not None and seen.incarnation in new_incarnation
            try:
                mgr.send("race", ["live", k])
                ok = True
            except torpor.SessionNotFound:
                ok = False
            sent["live"].append(("fresh" if fresh else "maybe", k, ok))
            progress.release()
            k += 1

    threads = [threading.Thread(target=stale_sender), threading.Thread(target=live_sender)]
    for t in threads:
        t.start()
    for _ in range(round_no % 7 + 1):  # let some sends in first, a varying number
        assert progress.acquire(timeout=30), "a sender died"
    assert mgr.cancel("race")
    cancelled.set()
    new = mgr.create({}, session_id="race")
    new_incarnation.append(new.incarnation)
    for _ in range(20):
        assert progress.acquire(timeout=30), "a sender died"
    stop.set()
    for t in threads:
        t.join()
    assert not violations, f"round {round_no}: stale sends succeeded after the cancel"
    received = [tuple(m) for m in _drain(mgr, "race")]
    live_ok = {("live", k) for _, k, ok in sent["live"] if ok}
    assert all(m[0] == "live" for m in received), f"round {round_no}: stale mail leaked"
    assert set(received) <= live_ok
    must = {("live", k) for tag, k, ok in sent["live"] if ok and tag == "fresh"}
    assert must <= set(received), f"round {round_no}: live messages dropped"
    assert [k for _, k in received] == sorted(k for _, k in received)  # FIFO
    mgr.delete("race")


def test_cancel_wakes_a_blocked_receiver_at_once(tmp_path: Path) -> None:
    mgr, _ = _open(tmp_path / "env")
    with mgr:
        s = mgr.create({})
        thread, outcome = blocked_consumer(mgr, s.id)
        assert mgr.cancel(s.id)
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and type(outcome[0]) is torpor.SessionCancelled


def test_close_wakes_a_blocked_receiver_with_manager_closed(tmp_path: Path) -> None:
    mgr, _ = _open(tmp_path / "env")
    s = mgr.create({})
    thread, outcome = blocked_consumer(mgr, s.id)
    mgr.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and type(outcome[0]) is torpor.ManagerClosed


_RECEIVER = textwrap.dedent(
    """
    import sys, threading, time
    import torpor
    path, sid = sys.argv[1], sys.argv[2]
    with torpor.open("lmdb", path=path, sweeper=False) as mgr:
        outcome = []
        def consume():
            try:
                outcome.append(repr(mgr.receive(sid, timeout=30)))
            except Exception as exc:
                outcome.append(type(exc).__name__)
        thread = threading.Thread(target=consume)
        thread.start()
        while not mgr.waiters(sid) and thread.is_alive():
            time.sleep(0.001)
        print("waiting", flush=True)
        thread.join()
        print(outcome[0], flush=True)
    """
)


@pytest.mark.parametrize(
    ("end", "expected"), [("cancel", "SessionCancelled"), ("delete", "SessionNotFound")]
)
def test_a_receiver_in_another_process_learns_why(tmp_path: Path, end: str, expected: str) -> None:
    mgr, _ = _open(tmp_path / "env")
    with mgr:
        s = mgr.create({}, timeout_ms=None)
        child = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER, str(tmp_path / "env"), s.id],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "waiting"
        assert getattr(mgr, end)(s.id)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert out.strip() == expected


_SENDER = textwrap.dedent(
    """
    import sys
    import torpor
    from torpor import codec
    from torpor.plugins.lmdb import create_backend
    path, old = sys.argv[1], int(sys.argv[2])
    backend = create_backend(path=path, durability="nosync")
    with torpor.open(backend, sweeper=False) as mgr:
        mailbox = backend.torpor_mailbox()
        fresh_sends = 0
        k = 0
        while fresh_sends < 200:
            ok = mailbox.send("race", old, codec.encode_value(["stale", k]), False)
            print("stale", k, int(ok), flush=True)
            seen = mgr.peek("race")
            fresh = seen is not None and seen.incarnation != old
            try:
                mgr.send("race", ["live", k])
                ok = True
            except torpor.SessionNotFound:
                ok = False
            fresh_sends += fresh
            print("live", k, int(ok), int(fresh), flush=True)
            k += 1
    """
)


def test_a_send_racing_a_cancel_in_another_process(tmp_path: Path) -> None:
    mgr, _ = _open(tmp_path / "env", clock=torpor.system_clock)
    with mgr:
        old = mgr.create({}, session_id="race", timeout_ms=None)
        child = subprocess.Popen(
            [sys.executable, "-c", _SENDER, str(tmp_path / "env"), str(old.incarnation)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(40)]  # the child is sending
        assert mgr.cancel("race")
        mgr.create({}, session_id="race", timeout_ms=None)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        records = [line.split() for line in lines + out.splitlines() if line.strip()]
        received = [tuple(m) for m in _drain(mgr, "race")]
        live_ok = {("live", int(r[1])) for r in records if r[0] == "live" and r[2] == "1"}
        fresh = {("live", int(r[1])) for r in records if r[0] == "live" and r[3] == "1"}
        assert received, "nothing reached the new session"
        assert all(m[0] == "live" for m in received), "stale mail reached the new session"
        assert set(received) <= live_ok
        assert fresh <= set(received), "messages to the live session were dropped"
