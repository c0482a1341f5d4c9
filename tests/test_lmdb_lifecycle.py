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
                _open(path)
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
