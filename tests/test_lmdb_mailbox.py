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
from torpor.conformance.helpers import blocked_consumer

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


# -- damaged metadata never passes for another incarnation ---------------------------------
def _meta_entry(
    path: Path, key: bytes, value: bytes | None = None, *, write: bool = False
) -> bytes | None:
    """The metadata of ``key``, read behind torpor's back; with ``write``, replaced by
    ``value`` (deleted if None) first, returning what was there."""
    import lmdb

    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=write) as txn:
        meta = env.open_db(b"torpor.meta", txn=txn, create=False)
        old = txn.get(key, db=meta)
        if write and value is None:
            txn.delete(key, db=meta)
        elif write:
            txn.put(key, value, db=meta)
        return old


@pytest.mark.parametrize(
    "damage", ["short", "other incarnation", "missing"], ids=lambda d: d.replace(" ", "-")
)
def test_damaged_metadata_of_a_live_session_keeps_its_mail(tmp_path: Path, damage: str) -> None:
    import struct

    path = tmp_path / "env"
    clock = torpor.ManualClock()
    with torpor.open(
        "lmdb", path=str(path), clock=clock, sweeper=False, touch_resolution_ms=0
    ) as mgr:
        s = mgr.create({"a": 1}, session_id="s", timeout_ms=None)
        mgr.send(s.id, "queued")
    good = _meta_entry(path, b"s")
    assert good is not None
    fields = list(struct.unpack_from(">QQQBQ", good))
    fields[4] ^= 1  # a valid entry naming another incarnation than the record's
    bad = {
        "short": b"\x01\x02",
        "other incarnation": struct.pack(">QQQBQ", *fields),
        "missing": None,
    }[damage]
    _meta_entry(path, b"s", bad, write=True)
    with torpor.open(
        "lmdb", path=str(path), clock=clock, sweeper=False, touch_resolution_ms=0
    ) as mgr:
        assert mgr.pending(s.id) == 1  # the record's envelope says it is this life
        clock.advance(5)
        got = mgr.get(s.id)  # a touch: a store over the same incarnation
        assert got is not None and got.data == {"a": 1}
        assert mgr.pending(s.id) == 1
        assert _drain(mgr, s.id) == ["queued"]
        mgr.send(s.id, "more")
        assert _drain(mgr, s.id) == ["more"]
    repaired = _meta_entry(path, b"s")
    assert repaired is not None and struct.unpack_from(">QQQBQ", repaired)[4] == s.incarnation


def test_sending_to_a_session_with_damaged_metadata_repairs_it(tmp_path: Path) -> None:
    import struct

    path = tmp_path / "env"
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        s = mgr.create({}, session_id="s", timeout_ms=None)
    _meta_entry(path, b"s", b"\xff", write=True)
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        mgr.send(s.id, "hello")  # a write that passes by: the metadata is rewritten
    raw = _meta_entry(path, b"s")
    assert raw is not None and struct.unpack_from(">QQQBQ", raw)[4] == s.incarnation
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        assert _drain(mgr, s.id) == ["hello"]


# -- a damaged mail counter ------------------------------------------------------------------
@pytest.mark.parametrize("counter", [b"\x01", b"", None], ids=["one-byte", "empty", "missing"])
def test_a_damaged_mail_counter_is_recomputed_and_lanes_stay_fifo(
    tmp_path: Path, counter: bytes | None
) -> None:
    import lmdb

    path = tmp_path / "env"
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        s = mgr.create({}, session_id="s", timeout_ms=None)
        for i in range(5):
            mgr.send(s.id, f"n{i}")
            mgr.send(s.id, f"p{i}", priority=True)
    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=True) as txn:
        counters = env.open_db(b"torpor.counters", txn=txn, create=False)
        if counter is None:
            txn.delete(b"mail_seq", db=counters)
        else:
            txn.put(b"mail_seq", counter, db=counters)
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        mgr.send(s.id, "n5")
        mgr.send(s.id, "p5", priority=True)
        assert _drain(mgr, s.id) == [*(f"p{i}" for i in range(6)), *(f"n{i}" for i in range(6))]


def test_a_foreign_mail_key_is_not_taken_for_queued_mail(tmp_path: Path) -> None:
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        s = mgr.create({}, session_id="s", timeout_ms=None)
        foreign = b"s\x00\x07" + b"\x00" * 8  # under the session's prefix, in no lane
        backend.shared.write(lambda txn: txn.put(foreign, b"?", db=backend._dbs.mail))
        before = backend.shared.env.info()["last_txnid"]
        assert mgr.pending(s.id) == 0
        assert mgr.receive(s.id, timeout=0) == []
        assert backend.shared.env.info()["last_txnid"] == before  # no write to take it
        mgr.send(s.id, "real")
        assert _drain(mgr, s.id) == ["real"]
        assert mgr.cancel(s.id)  # and the foreign key goes with the session
        assert backend.shared.read(lambda txn: txn.get(foreign, db=backend._dbs.mail)) is None


def test_pending_counts_both_lanes_of_one_life_of_one_session(tmp_path: Path) -> None:
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        s = mgr.create({}, session_id="s", timeout_ms=None)
        mgr.create({}, session_id="s1", timeout_ms=None)  # "s" is a prefix of its key
        for i in range(3):
            mgr.send("s", i)
        mgr.send("s", "urgent", priority=True)
        mgr.send("s1", "not for s")
        assert (mgr.pending("s"), mgr.pending("s1")) == (4, 1)
        assert mgr.receive("s", max_messages=2) == ["urgent", 0]
        assert mgr.pending("s") == 2
        # The protocol call with the incarnation of another life of the id sees none of
        # this life's mail (a caller holding a stale record must not count it).
        mailbox = backend.torpor_mailbox()
        assert mailbox.pending("s", s.incarnation) == 2
        assert mailbox.pending("s", s.incarnation + 1) == 0
        assert mgr.delete("s")
        assert mgr.pending("s") == 0  # gone with the session
        again = mgr.create({}, session_id="s", timeout_ms=None)
        assert mgr.pending("s") == 0 and mgr.receive("s", timeout=0) == []
        assert again.incarnation != s.incarnation
        assert mailbox.pending("s", again.incarnation) == 0
        mgr.send("s", "new life")
        assert mailbox.pending("s", s.incarnation) == 0  # the old life has none
        assert mgr.pending("s1") == 1
