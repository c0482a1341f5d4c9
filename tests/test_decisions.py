"""The rules as pure functions (torpor._decisions): no backend, no lock, no clock."""

from __future__ import annotations

import pytest

from torpor import CANCEL, DELETE, EXPIRE, Record, codec
from torpor._decisions import (
    MISSING,
    decide_create,
    decide_expire,
    decide_hibernate,
    decide_read,
    decide_remove,
    decide_rewrite,
    decide_save,
    needs_write,
)
from torpor.errors import Conflict, SessionExists, SessionNotFound

NOW = 1_000_000
LIMIT = 1 << 20


def record(
    *, accessed: int = NOW, timeout: int | None = 100, hibernated: bool = False, inc: int = 7
) -> Record:
    payload = codec.encode_data({"k": "v"})
    if hibernated:
        payload = codec.compress(payload)
    return Record("s", NOW - 5000, accessed, timeout, 3, hibernated, inc, payload)


def test_create_refuses_a_live_session_and_replaces_an_expired_one() -> None:
    new = record(inc=8)
    assert decide_create(None, new, NOW) == (new, (new, None, None, False))
    with pytest.raises(SessionExists):
        decide_create(record(), new, NOW)
    old = record(accessed=NOW - 101)
    change, outcome = decide_create(old, new, NOW)
    assert change is new and outcome.gone is old and outcome.removal is EXPIRE


def test_expiry_is_strict() -> None:
    assert decide_read(record(accessed=NOW - 100), NOW, LIMIT)[1].record is not None
    change, outcome = decide_read(record(accessed=NOW - 101), NOW, LIMIT)
    assert change is EXPIRE and outcome.record is None and outcome.removal is EXPIRE


def test_read_wakes_and_touches_without_changing_the_version() -> None:
    change, outcome = decide_read(record(accessed=NOW - 50, hibernated=True), NOW, LIMIT)
    assert isinstance(change, Record) and not change.hibernated and outcome.woke
    assert change.last_accessed == NOW and change.version == 3 and change.incarnation == 7
    assert decide_read(None, NOW, LIMIT) == (None, MISSING)


def test_a_clock_that_went_back_never_moves_last_accessed_back() -> None:
    change, _ = decide_read(record(accessed=NOW), NOW - 10, LIMIT)
    assert isinstance(change, Record) and change.last_accessed == NOW


@pytest.mark.parametrize(
    ("idle", "timeout", "resolution", "hibernated", "expected"),
    [
        (0, None, 0, False, True),  # resolution 0: every read writes
        (999, None, 1000, False, False),
        (1000, None, 1000, False, True),
        (10, None, 1000, True, True),  # waking always writes
        (450, 900, 1000, False, True),  # capped at half the timeout
        (449, 900, 1000, False, False),
        (901, 900, 1000, False, True),  # expired: removed
    ],
)
def test_when_a_read_writes(
    idle: int, timeout: int | None, resolution: int, hibernated: bool, expected: bool
) -> None:
    r = record(accessed=NOW - idle, timeout=timeout, hibernated=hibernated)
    assert needs_write(r, NOW, resolution) is expected


def test_rewrite_of_a_missing_or_expired_session() -> None:
    assert decide_rewrite(None, NOW, lambda r: r) == (None, MISSING)
    old = record(accessed=NOW - 101)
    change, outcome = decide_rewrite(old, NOW, lambda r: r)
    assert change is EXPIRE and outcome.gone is old
    same = record()
    assert decide_rewrite(same, NOW, lambda r: None) == (None, (same, None, None, False))


def test_save_checks_the_incarnation_before_the_version() -> None:
    check = decide_save(copy_incarnation=7, copy_version=3)
    assert check(record()) == record()
    with pytest.raises(SessionNotFound):
        check(record(inc=8))  # same version, another life of the id
    with pytest.raises(Conflict):
        decide_save(7, 2)(record())


def test_remove_says_how_the_session_went() -> None:
    assert decide_remove(None, NOW, DELETE) == (None, MISSING)
    live = record()
    assert decide_remove(live, NOW, CANCEL) == (CANCEL, (None, live, CANCEL, False))
    dead = record(accessed=NOW - 101)
    assert decide_remove(dead, NOW, CANCEL) == (EXPIRE, (None, dead, EXPIRE, False))


def test_sweep_decisions() -> None:
    assert decide_hibernate(None, NOW) is None
    assert decide_hibernate(record(accessed=NOW), NOW) is None  # not idle long enough
    compact = decide_hibernate(record(accessed=NOW - 1), NOW)
    assert compact is not None and compact.hibernated and compact.last_accessed == NOW - 1
    assert decide_hibernate(compact, NOW + 10) is None  # already hibernated
    assert decide_expire(record(accessed=NOW - 101), NOW) is EXPIRE
    assert decide_expire(record(accessed=NOW - 100), NOW) is None
    assert decide_expire(record(timeout=None, accessed=0), NOW) is None
