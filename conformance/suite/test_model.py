"""A hypothesis state machine: the backend against a plain model (docs/contract.md §12).

Run it longer with ``--torpor-examples N`` (default 25 examples of up to 40 steps).
After every step, ``len()``, ``ids()`` and ``stats()`` must agree with the model.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance._model import Model, check_counts
from torpor.conformance.helpers import expect_raises

IDS = [
    "a",
    "日本語",
    unicodedata.normalize("NFC", "é"),
    unicodedata.normalize("NFD", "é"),
    "👩\u200d👩\u200d👧",
    "x" * 200 + "語" * 18,
]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=20),
    st.binary(max_size=20), st.floats(allow_nan=False),
)  # fmt: skip
# Values that are == across types (and two that look alike but are not), so that
# find() meets what an index must fold together: see torpor.indexing.
EQUAL_VALUES: list[Any] = [
    0, False, -0.0, 1, 1.0, True, 2**63, float(2**63), 2**64 - 1, "a", b"a", [1, "a"],
    [True, "a"], {"x": 1, "y": [2]}, {"y": [2.0], "x": True},
]  # fmt: skip
EQUAL = st.sampled_from(EQUAL_VALUES)
QUERIES = EQUAL | st.sampled_from([float("nan"), (1.0, "a"), []])
FIELDS = ["k", "v"]  # what find() asks for; the model indexes the first from the start
DATA = st.builds(
    lambda fields, rest: {**rest, **fields},
    st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, EQUAL | VALUES)),
    st.dictionaries(st.text(max_size=6), VALUES | st.lists(VALUES, max_size=3), max_size=3),
)
TIMEOUTS = st.sampled_from([None, STEP_MS, 3 * STEP_MS])
ENDINGS = ["delete", "cancel", "expire"]
STEPS = st.sampled_from([1, STEP_MS // 2, STEP_MS, STEP_MS + 1, 2 * STEP_MS])


def _twin(value: Any, pick: int) -> Any:
    """``value``, or another value equal to it (perhaps of another type)."""
    twins = [v for v in EQUAL_VALUES if v == value] or [value]
    return twins[pick % len(twins)]


class SessionMachine(RuleBasedStateMachine):
    kit: Kit  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.kit.fresh_storage()
        self.mgr = self.kit.open()
        self.model = Model(self.mgr.touch_resolution_ms)
        # One index kept up to date by every write from the start; the create_index
        # rule builds the other over existing data.
        if torpor.Capability.SECONDARY_INDEX in self.mgr.capabilities:
            self.mgr.create_index(FIELDS[0])
        self.copies: list[tuple[torpor.Session, int]] = []  # with the model's life

    @property
    def now(self) -> int:
        return self.kit.clock()

    def _remember(self, session: torpor.Session | None) -> None:
        if session is not None:
            life = self.model.stored[session.id].life
            self.copies = [*self.copies[-4:], (session, life)]

    def _same(self, got: torpor.Session | None, sid: str) -> None:
        want = self.model.stored.get(sid)
        if got is None:
            assert want is None or want.expired(self.now), f"{sid!r} missing"
            return
        assert want is not None, f"{sid!r} should not exist"
        assert got.id == sid and got.data == want.data, sid
        assert (got.version, got.timeout_ms, got.hibernated) == (
            want.version, want.timeout_ms, want.hibernated,
        )  # fmt: skip
        assert (got.created_at, got.last_accessed) == (want.created_at, want.last_accessed)

    @rule(sid=st.sampled_from(IDS), data=DATA, timeout=TIMEOUTS)
    def create(self, sid: str, data: dict[str, Any], timeout: int | None) -> None:
        if self.model.create(sid, data, self.now, timeout):
            self._remember(self.mgr.create(data, session_id=sid, timeout_ms=timeout))
        else:
            expect_raises(
                torpor.SessionExists, self.mgr.create, data, session_id=sid, timeout_ms=timeout
            )

    @rule(sid=st.sampled_from(IDS), data=DATA, timeout=TIMEOUTS, how=st.sampled_from(ENDINGS))
    def reuse(self, sid: str, data: dict[str, Any], timeout: int | None, how: str) -> None:
        """End the session under ``sid`` (if any), then create a new one under that id."""
        if how == "expire":
            assert self.mgr.set_timeout(sid, 0) == self.model.set_timeout(sid, 0, self.now)
            self.kit.clock.advance(1)  # expired, not removed: the create replaces it
        else:
            removal = self.mgr.delete if how == "delete" else self.mgr.cancel
            assert removal(sid) == self.model.delete(sid, self.now), f"{how}({sid!r})"
        self.create(sid, data, timeout)

    @rule(sid=st.sampled_from(IDS))
    def get(self, sid: str) -> None:
        got = self.mgr.get(sid)
        self.model.get(sid, self.now)
        self._same(got, sid)
        self._remember(got)

    @rule(sid=st.sampled_from(IDS))
    def peek(self, sid: str) -> None:
        got = self.mgr.peek(sid)
        if self.model.live(sid, self.now) is None:
            assert got is None
        else:
            self._same(got, sid)

    @rule(sid=st.sampled_from(IDS), field=st.sampled_from(FIELDS), value=VALUES | EQUAL)
    def update(self, sid: str, field: str, value: Any) -> None:
        live = self.model.live(sid, self.now)
        if live is None:
            expect_raises(
                torpor.SessionNotFound,
                self.mgr.update, sid, lambda d: {**d, field: value},
                what=f"update({sid!r}) of a missing session",
            )  # fmt: skip
            self.model.drop_if_expired(sid, self.now)
            return
        self.model.write(sid, {**live.data, field: value}, self.now)
        got = self.mgr.update(sid, lambda d: {**d, field: value})
        self._same(got, sid)
        self._remember(got)

    @precondition(lambda self: bool(self.copies))
    @rule(index=st.integers(0, 4), value=VALUES)
    def save(self, index: int, value: Any) -> None:
        copy, life = self.copies[index % len(self.copies)]
        changed = dataclasses.replace(copy, data={**copy.data, "saved": value})
        live = self.model.live(copy.id, self.now)
        if live is None or live.life != life:  # gone, or a later session under the id
            expect_raises(
                torpor.SessionNotFound, self.mgr.save, changed,
                what=f"save() of a copy of {copy.id!r} from an ended session",
            )  # fmt: skip
            self.model.drop_if_expired(copy.id, self.now)
        elif live.version != copy.version:
            expect_raises(
                torpor.Conflict, self.mgr.save, changed,
                what=f"save() of a copy of {copy.id!r} at stale version {copy.version}",
            )  # fmt: skip
        else:
            self.model.write(copy.id, changed.data, self.now)
            got = self.mgr.save(changed)
            self._same(got, copy.id)
            self._remember(got)

    @rule(sid=st.sampled_from(IDS), cancel=st.booleans())
    def delete(self, sid: str, cancel: bool) -> None:
        removal = self.mgr.cancel if cancel else self.mgr.delete  # alike but for mail
        assert removal(sid) == self.model.delete(sid, self.now)

    @rule(sid=st.sampled_from(IDS))
    def touch(self, sid: str) -> None:
        assert self.mgr.touch(sid) == self.model.touch(sid, self.now)

    @rule(sid=st.sampled_from(IDS), timeout=TIMEOUTS)
    def set_timeout(self, sid: str, timeout: int | None) -> None:
        assert self.mgr.set_timeout(sid, timeout) == self.model.set_timeout(sid, timeout, self.now)

    @rule(field=st.sampled_from(FIELDS))
    def create_index(self, field: str) -> None:
        if torpor.Capability.SECONDARY_INDEX in self.mgr.capabilities:
            self.mgr.create_index(field)  # over existing data, and again: idempotent
        else:
            expect_raises(torpor.UnsupportedOperation, self.mgr.create_index, field)

    @rule(
        field=st.sampled_from(FIELDS), query=QUERIES, pick=st.none() | st.integers(0, 11),
        both=st.booleans(),
    )  # fmt: skip
    def find(self, field: str, query: Any, pick: int | None, both: bool) -> None:
        """``find(field=query)``; with ``pick``, the criteria are the values (of
        ``field``, or of every field if ``both``) of a live session or of a recent copy
        (perhaps of an ended session), each perhaps swapped for an equal value of
        another type (``True`` for ``1.0``), so that most finds have something to find
        or an old index entry to ignore."""
        criteria = {field: query}
        live = sorted(self.model.live_ids(self.now))
        pool = [copy.data for copy, _ in self.copies] + [self.model.stored[s].data for s in live]
        if pick is not None and pool:
            data = pool[pick % len(pool)]
            wanted = FIELDS if both else [field]
            criteria = {f: _twin(data[f], pick) for f in wanted if f in data} or criteria
        found = self.mgr.find(**criteria)
        ids = [s.id for s in found]
        assert len(ids) == len(set(ids)), f"find({criteria!r}) repeated a session: {ids}"
        assert set(ids) == self.model.find(criteria, self.now), f"find({criteria!r})"
        for session in found:
            self._same(session, session.id)

    @rule(threshold=st.sampled_from([0, STEP_MS // 2, STEP_MS, 2 * STEP_MS]))
    def hibernate(self, threshold: int) -> None:
        assert self.mgr.hibernate_idle(threshold) == self.model.hibernate(threshold, self.now)

    @rule(ms=STEPS)
    def advance(self, ms: int) -> None:
        self.kit.clock.advance(ms)

    @rule()
    def cleanup(self) -> None:
        assert self.mgr.cleanup_expired() == self.model.cleanup(self.now)

    @rule()
    def iterate(self) -> None:
        walked = list(self.mgr.ids(batch_size=2))
        assert len(walked) == len(set(walked))
        assert set(walked) == self.model.live_ids(self.now)
        for session in self.mgr.sessions(batch_size=3):
            self._same(session, session.id)

    @invariant()
    def counts_agree(self) -> None:
        """Counts agree (docs/contract.md §6) after every step, each transition included."""
        want = self.model.counts(self.now)
        check_counts(self.mgr, want, self.model.live_ids(self.now), "the last step")

    @precondition(lambda self: torpor.Capability.PERSISTENT in self.mgr.capabilities)
    @rule()
    def reopen(self) -> None:
        self.mgr = self.kit.reopen(self.mgr)

    def teardown(self) -> None:
        self.kit.close_all()


def test_backend_matches_the_model(kit: Kit, pytestconfig: pytest.Config) -> None:
    examples = int(pytestconfig.getoption("torpor_examples", 25) or 25)

    class Machine(SessionMachine):
        pass

    Machine.kit = kit
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


kit_module(globals(), "model")
