"""Opening and closing lmdb stores: one configuration per store, bad paths, opens racing
closes, fork, failed opens (DESIGN §11, lifecycle)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

import torpor

pytest.importorskip("lmdb")
from torpor.plugins.lmdb import create_backend


def _open(path: Path, **options: Any) -> torpor.Manager:
    options.setdefault("sweeper", False)
    return torpor.open("lmdb", path=str(path), **options)


def _open_files(path: Path) -> list[str]:
    """This process's open file descriptors on the store's files."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path.resolve())):
            found.append(target)
    return found


# -- one store, one configuration ------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "first", "second"),
    [
        ("durability", "sync", "nosync"),
        ("map_size", 64 << 20, 128 << 20),
        ("max_readers", 126, 200),
        ("max_dbs", 128, 64),
    ],
)
def test_a_second_configuration_of_an_open_store_is_refused(
    tmp_path: Path, option: str, first: object, second: object
) -> None:
    with _open(tmp_path / "env", **{option: first}) as mgr:
        with pytest.raises(torpor.ConfigError, match=option) as info:
            _open(tmp_path / "env", **{option: second})
        assert "already open" in str(info.value)
        mgr.create({})  # the first manager is unharmed
    with _open(tmp_path / "env", **{option: second}) as again:  # closed: now it may
        assert len(again) == 1


def test_every_differing_option_is_named(tmp_path: Path) -> None:
    with _open(tmp_path / "env"), pytest.raises(torpor.ConfigError) as info:
        _open(tmp_path / "env", durability="nosync", max_readers=10, namespace="other")
    message = str(info.value)
    assert "durability" in message and "max_readers" in message
    assert "map_size" not in message.split("options:")[1].split(".")[0]


def test_identical_options_share_the_environment(tmp_path: Path) -> None:
    a = create_backend(path=str(tmp_path / "env"), durability="nometasync", max_dbs=40)
    b = create_backend(path=str(tmp_path / "env"), durability="nometasync", max_dbs=40)
    assert a.shared is b.shared
    a.torpor_close(urgent=False)
    a.torpor_close(urgent=False)  # idempotent: the second does not drop b's reference
    assert b.shared.env.info()["map_size"] > 0
    b.torpor_close(urgent=True)
    assert _open_files(tmp_path / "env") == []


def test_max_dbs_is_an_option(tmp_path: Path) -> None:
    with pytest.raises(torpor.ConfigError, match="max_dbs"):
        _open(tmp_path / "env", max_dbs=5)  # fewer than one namespace needs
    with _open(tmp_path / "env", max_dbs=11) as mgr:
        mgr.create({})
        with pytest.raises(torpor.ConfigError, match="max_dbs"):
            _open(tmp_path / "env", max_dbs=11, namespace="second")  # no room left


# -- the path option ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [None, "", 123, b"env", 1.5, ["env"], "a\x00b"])
def test_a_path_that_is_not_a_path_is_an_invalid_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: object
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(torpor.InvalidArgument) as info:
        torpor.open("lmdb", path=bad, sweeper=False)
    assert info.value.argument == "path"
    assert list(tmp_path.iterdir()) == []  # nothing was created in the working folder


def test_a_path_like_is_accepted(tmp_path: Path) -> None:
    with torpor.open("lmdb", path=tmp_path / "env", sweeper=False) as mgr:
        mgr.create({})
    assert (tmp_path / "env" / "data.mdb").exists()


# -- opening while another closes --------------------------------------------------------
def test_opens_and_closes_race_on_one_path(tmp_path: Path) -> None:
    path = tmp_path / "env"
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def churn() -> None:
        start.wait()
        try:
            for _ in range(60):
                with _open(path, durability="nosync") as mgr:
                    mgr.create({})
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    with _open(path) as mgr:
        assert len(mgr) == 360
    assert _open_files(path) == []


# -- fork ----------------------------------------------------------------------------------
def test_a_forked_child_opens_its_own_manager_on_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "env"
    mgr = _open(path)
    parent_session = mgr.create({"by": "parent"}, timeout_ms=None)
    pid = os.fork()
    if pid == 0:  # the child, like a gunicorn worker forked after --preload
        code = 1
        try:
            with _open(path) as own:
                assert own.peek(parent_session.id) is not None
                own.create({"by": "child"}, session_id="from-child", timeout_ms=None)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_session = mgr.get("from-child")
    assert child_session is not None and child_session.data == {"by": "child"}
    mgr.update(parent_session.id, lambda d: {**d, "after": "fork"})  # still writes
    assert mgr.peek(parent_session.id).data["after"] == "fork"  # type: ignore[union-attr]
    mgr.close()
    with _open(path) as again:
        assert len(again) == 2


def test_a_child_forked_mid_transaction_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "env"
    mgr = _open(path)
    s = mgr.create({}, timeout_ms=None)
    outcome: list[int] = []

    def fork_inside_update(data: dict[str, Any]) -> dict[str, Any]:
        pid = os.fork()  # inside the write transaction: the child may not reopen
        if pid == 0:
            code = 1
            try:
                # The backend itself (the child is still inside update(), where a
                # manager call, torpor.open included, is a ReentrantCall).
                create_backend(path=str(path))
            except torpor.BackendUnavailable as exc:
                code = 0 if "forked while" in str(exc) else 2
            finally:
                os._exit(code)
        outcome.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        return data

    import torpor.plugins.lmdb._envs as env_module

    waited = env_module.FORK_WAIT_S
    env_module.FORK_WAIT_S = 0.05  # the transaction in flight is this thread's own
    try:
        mgr.update(s.id, fork_inside_update)
    finally:
        env_module.FORK_WAIT_S = waited
    assert outcome == [0]
    mgr.close()


# -- failed opens --------------------------------------------------------------------------
class _BadPlugin:
    def torpor_no_such_hook(self) -> None:
        """Not a torpor hook: the manager refuses the plugin after the backend is built."""


def test_a_failed_open_leaves_no_environment_open(tmp_path: Path) -> None:
    path = tmp_path / "env"
    with pytest.raises(torpor.ConfigError):
        _open(path, plugins=[_BadPlugin()])
    assert _open_files(path) == []
    with _open(path, durability="nosync") as mgr:  # other options: nothing holds the old
        mgr.create({})


def test_a_failed_layout_check_releases_the_environment(tmp_path: Path) -> None:
    import lmdb

    path = tmp_path / "env"
    with _open(path) as mgr:
        mgr.create({})
    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=True) as txn:
        txn.drop(env.open_db(b"torpor.idle", txn=txn), delete=True)
    with pytest.raises(torpor.BackendUnavailable, match=r"torpor\.idle"):
        _open(path)
    assert _open_files(path) == []


# -- an urgent close never waits for a transaction (DESIGN §7, §11) -----------------------
class _HeldUpdate:
    """An update whose function waits, inside its write transaction, until released."""

    def __init__(self, mgr: torpor.Manager, sid: str) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.outcome: list[str] = []

        def hold(data: dict[str, Any]) -> dict[str, Any]:
            self.inside.set()
            self.release.wait()
            return {**data, "written": "by the held update"}

        def run() -> None:
            try:
                mgr.update(sid, hold)
                self.outcome.append("committed")
            except torpor.ManagerClosed:
                self.outcome.append("refused")

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.inside.wait(30)

    def finish(self) -> None:
        self.release.set()
        self.thread.join()


def _close_urgently(mgr: torpor.Manager, order: list[str]) -> None:
    """close(urgent=True) in a thread; returns once it did, or (failure guard, so a
    close that waits for the held transaction fails the test instead of hanging it)
    after 30 s."""
    closer = threading.Thread(target=lambda: (mgr.close(urgent=True), order.append("closed")))
    closer.start()
    closer.join(30)


def test_an_urgent_close_returns_while_a_write_transaction_is_held(tmp_path: Path) -> None:
    path = tmp_path / "env"
    mgr = _open(path)
    s = mgr.create({"n": 0}, timeout_ms=None)
    held = _HeldUpdate(mgr, s.id)
    order: list[str] = []
    try:
        _close_urgently(mgr, order)
        order.append("released")
    finally:
        held.finish()
    assert order == ["closed", "released"]  # close returned before the transaction ended
    assert held.outcome == ["refused"]  # the straggler did not commit: not acknowledged
    assert _open_files(path) == []  # it closed the environment as it left
    with _open(path) as again:
        assert again.peek(s.id).data == {"n": 0}  # type: ignore[union-attr]


def test_an_open_with_the_same_options_takes_back_a_closing_store(tmp_path: Path) -> None:
    path = tmp_path / "env"
    mgr = _open(path)
    s = mgr.create({"n": 0}, timeout_ms=None)
    held = _HeldUpdate(mgr, s.id)
    order: list[str] = []
    try:
        _close_urgently(mgr, order)
        # LMDB allows one handle per process: the new manager reuses the one still open,
        # without waiting for the straggler.  (Its writes would wait: the straggler
        # holds LMDB's writer lock until it ends.)
        again = _open(path)
        assert again.peek(s.id).data == {"n": 0}  # type: ignore[union-attr]
        order.append("reopened")
    finally:
        held.finish()
    assert order == ["closed", "reopened"]
    assert held.outcome == ["refused"]  # its manager is closed, so it still fails
    assert again.peek(s.id).data == {"n": 0}  # type: ignore[union-attr]
    created = again.create({"after": "reopen"}, timeout_ms=None)
    assert again.peek(created.id) is not None
    again.close()
    assert _open_files(path) == []


def test_an_open_with_other_options_waits_for_a_closing_store(tmp_path: Path) -> None:
    path = tmp_path / "env"
    mgr = _open(path)
    s = mgr.create({"n": 0}, timeout_ms=None)
    held = _HeldUpdate(mgr, s.id)
    order: list[str] = []
    opened: list[torpor.Manager] = []
    try:
        _close_urgently(mgr, order)
        opener = threading.Thread(target=lambda: opened.append(_open(path, durability="nosync")))
        opener.start()
        opener.join(0.2)  # it cannot finish before the straggler leaves (nor fail)
        assert opener.is_alive() and not opened
        order.append("released")
    finally:
        held.finish()
    opener.join(30)
    assert order == ["closed", "released"] and len(opened) == 1
    with opened[0] as again:  # a fresh environment, with the new options
        assert again.peek(s.id).data == {"n": 0}  # type: ignore[union-attr]
        again.create({})


_HOLD_THE_WRITER = """
import sys
import torpor

with torpor.open("lmdb", path=sys.argv[1], sweeper=False) as mgr:
    def hold(data):
        print("holding", flush=True)
        sys.stdin.readline()
        return data

    mgr.update(sys.argv[2], hold)
print("done", flush=True)
"""


def test_an_urgent_close_does_not_wait_for_another_process_writer(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "env"
    backend = create_backend(path=str(path))
    mgr = torpor.open(backend, sweeper=False)
    s = mgr.create({}, timeout_ms=None)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_WRITER, str(path), s.id],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    order: list[str] = []
    outcome: list[str] = []
    try:
        assert holder.stdout.readline() == "holding\n"  # it has LMDB's writer lock

        def create() -> None:
            try:
                mgr.create({})
                outcome.append("created")
            except torpor.ManagerClosed:
                outcome.append("refused")

        writer = threading.Thread(target=create)
        writer.start()
        while backend.shared.gate.active == 0 and writer.is_alive():
            writer.join(0.001)  # until it is inside its transaction, queued for the lock
        _close_urgently(mgr, order)
        order.append("released")
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
    writer.join()
    assert holder.stdout.readline() == "done\n"
    assert holder.wait(30) == 0
    assert order == ["closed", "released"]
    assert outcome == ["refused"]
    assert _open_files(path) == []
    with _open(path) as again:
        assert len(again) == 1


def test_a_map_grown_by_another_process_is_adopted_by_an_open(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "env"
    mgr = _open(path, map_size=1 << 16)
    mgr.create({"a": 1}, timeout_ms=None)
    grow = (
        "import sys, torpor\n"
        "with torpor.open('lmdb', path=sys.argv[1], map_size=1 << 16, sweeper=False) as m:\n"
        "    for _ in range(300):\n"
        "        m.create({'x': 'y' * 2000}, timeout_ms=None)\n"
    )
    subprocess.run(
        [sys.executable, "-c", grow, str(path)],
        check=True, cwd=Path(__file__).resolve().parent.parent, timeout=120,
    )  # fmt: skip
    # Opening a namespace takes a write transaction, which meets MDB_MAP_RESIZED.
    with _open(path, map_size=1 << 16, namespace="other") as other:
        other.create({})
        assert len(other) == 1
    assert len(mgr) == 301
    mgr.close()


def test_a_path_like_with_a_bad_fspath_is_an_invalid_argument(tmp_path: Path) -> None:
    class Odd:
        def __fspath__(self) -> int:
            return 123

    with pytest.raises(torpor.InvalidArgument) as caught:
        torpor.open("lmdb", path=Odd(), sweeper=False)  # type: ignore[arg-type]
    assert caught.value.argument == "path"
