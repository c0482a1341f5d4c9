"""A hypothesis state machine: the backend against a plain model (DESIGN §9).

Run it longer with ``--torpor-examples N`` (default 25 examples of up to 40 steps).
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance._model import Model

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
DATA = st.dictionaries(st.text(max_size=6), VALUES | st.lists(VALUES, max_size=3), max_size=4)
TIMEOUTS = st.sampled_from([None, STEP_MS, 3 * STEP_MS])
STEPS = st.sampled_from([1, STEP_MS // 2, STEP_MS, STEP_MS + 1, 2 * STEP_MS])


class SessionMachine(RuleBasedStateMachine):
    kit: Kit  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.kit.fresh_storage()
        self.mgr = self.kit.open()
        self.model = Model(self.mgr.touch_resolution_ms)
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
            with pytest.raises(torpor.SessionExists):
                self.mgr.create(data, session_id=sid, timeout_ms=timeout)

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

    @rule(sid=st.sampled_from(IDS), value=VALUES)
    def update(self, sid: str, value: Any) -> None:
        live = self.model.live(sid, self.now)
        if live is None:
            with pytest.raises(torpor.SessionNotFound):
                self.mgr.update(sid, lambda d: {**d, "v": value})
            self.model.drop_if_expired(sid, self.now)
            return
        self.model.write(sid, {**live.data, "v": value}, self.now)
        got = self.mgr.update(sid, lambda d: {**d, "v": value})
        self._same(got, sid)
        self._remember(got)

    @precondition(lambda self: bool(self.copies))
    @rule(index=st.integers(0, 4), value=VALUES)
    def save(self, index: int, value: Any) -> None:
        copy, life = self.copies[index % len(self.copies)]
        changed = dataclasses.replace(copy, data={**copy.data, "saved": value})
        live = self.model.live(copy.id, self.now)
        if live is None or live.life != life:  # gone, or a later session under the id
            with pytest.raises(torpor.SessionNotFound):
                self.mgr.save(changed)
            self.model.drop_if_expired(copy.id, self.now)
        elif live.version != copy.version:
            with pytest.raises(torpor.Conflict):
                self.mgr.save(changed)
        else:
            self.model.write(copy.id, changed.data, self.now)
            got = self.mgr.save(changed)
            self._same(got, copy.id)
            self._remember(got)

    @rule(sid=st.sampled_from(IDS))
    def delete(self, sid: str) -> None:
        assert self.mgr.delete(sid) == self.model.delete(sid, self.now)

    @rule(sid=st.sampled_from(IDS))
    def touch(self, sid: str) -> None:
        assert self.mgr.touch(sid) == self.model.touch(sid, self.now)

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
        assert len(self.mgr) == len(walked)  # counts agree (DESIGN §11)
        for session in self.mgr.sessions(batch_size=3):
            self._same(session, session.id)

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
