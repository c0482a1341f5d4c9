"""Helpers for tests of torpor backends: the ones the kit's own tests use, public so
that a plugin's test suite (and torpor's) can use them too.

* :func:`expect_raises` / :func:`expect_returns`: one call, one check, and a failure
  that names the call and what it did instead;
* :func:`blocked_consumer` / :func:`wait_for_waiter`: a consumer known to be blocked in
  ``receive``, without sleeping for a guessed duration;
* :func:`walk_peak_bytes`: the peak Python memory of a walk, by ``tracemalloc``;
* :func:`busy_switching`, :func:`switching_at_every_call` and :class:`RoundTrips`:
  make races between threads show within a few rounds, without sleeping and without
  changing the backend under test.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torpor

__all__ = [
    "RoundTrips",
    "blocked_consumer",
    "busy_switching",
    "expect_raises",
    "expect_returns",
    "switching_at_every_call",
    "wait_for_waiter",
    "walk_peak_bytes",
]

_E = TypeVar("_E", bound=BaseException)


def walk_peak_bytes(mgr: torpor.Manager, size: int, batch_size: int, data: dict[str, Any]) -> int:
    """Fill ``mgr`` up to ``size`` sessions of ``data``, then return the peak Python
    memory (tracemalloc) that walking ``sessions()`` once adds."""
    import tracemalloc

    for _ in range(size - len(mgr)):
        mgr.create(data, timeout_ms=None)
    tracemalloc.start()
    try:
        floor = tracemalloc.get_traced_memory()[0]
        walked = sum(1 for _ in mgr.sessions(batch_size=batch_size))
        peak = tracemalloc.get_traced_memory()[1] - floor
    finally:
        tracemalloc.stop()
    if walked != size:
        raise AssertionError(f"walked {walked} sessions, expected {size}")
    return peak


def wait_for_waiter(
    mgr: torpor.Manager,
    session_id: str,
    timeout_s: float = 10.0,
    consumer: threading.Thread | None = None,
) -> None:
    """Return once a consumer in this process is blocked in ``receive(session_id)``.

    It polls for that condition itself, never for a duration, so a slow machine makes
    it slower, not wrong.  Given the ``consumer`` thread, it fails at once if that
    thread ends before it is seen blocked (its ``receive`` returned or raised)."""
    deadline = time.monotonic() + timeout_s
    while mgr.waiters(session_id) < 1:
        if consumer is not None and not consumer.is_alive():
            raise AssertionError(f"the consumer of {session_id!r} ended without blocking")
        if time.monotonic() > deadline:
            raise AssertionError(f"no consumer blocked on {session_id!r} within {timeout_s} s")
        time.sleep(0.001)


def blocked_consumer(
    mgr: torpor.Manager,
    session_id: str,
    *,
    timeout: float = 30,
    received: list[list[Any]] | None = None,
) -> tuple[threading.Thread, list[BaseException]]:
    """Start a thread blocked in ``receive(session_id, timeout=timeout)`` and return
    once it is; the list receives whatever the receive raised (empty if it returned),
    and ``received``, if given, what it returned.  If the receive returns or raises
    before it blocks, fail at once, saying what it did."""
    outcome: list[BaseException] = []
    returned: list[list[Any]] = [] if received is None else received

    def consume() -> None:
        try:
            returned.append(mgr.receive(session_id, timeout=timeout))
        except BaseException as exc:  # handed to the test, which asserts on it
            outcome.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        wait_for_waiter(mgr, session_id, consumer=thread)
    except AssertionError:
        thread.join(timeout=10)
        did = f"raised {outcome[0]!r}" if outcome else f"returned {_short(returned)}"
        raise AssertionError(
            f"receive({session_id!r}, timeout={timeout!r}) {did} instead of blocking"
        ) from outcome[0] if outcome else None
    return thread, outcome


def expect_raises(
    expected: type[_E],
    call: Callable[..., Any],
    /,
    *args: Any,
    what: str | None = None,
    match: str | None = None,
    **kwargs: Any,
) -> _E:
    """Call ``call(*args, **kwargs)``, which must raise ``expected`` (with a message
    that ``match``, a regular expression, finds if given); return the exception.

    Otherwise raise ``AssertionError`` naming the call and what it did instead::

        mgr.save(copy read before the delete) returned Session(id='s', ...);
        expected it to raise SessionNotFound

    ``what`` names the call in that message (needed for a ``lambda``; by default the
    function and its arguments).  One call per check: unlike a ``pytest.raises``
    block around several calls, a failure always says which call it was.
    """
    label = what or _describe_call(call, args, kwargs)
    try:
        value = call(*args, **kwargs)
    except expected as exc:
        if match is not None and not re.search(match, str(exc)):
            raise AssertionError(
                f"{label} raised {type(exc).__name__}: {exc}; expected a message matching {match!r}"
            ) from exc
        return exc
    except Exception as exc:
        raise AssertionError(
            f"{label} raised {type(exc).__name__}: {exc}; expected it to raise {expected.__name__}"
        ) from exc
    raise AssertionError(
        f"{label} returned {_short(value)}; expected it to raise {expected.__name__}"
    )


def expect_returns(
    expected: Any, call: Callable[..., Any], /, *args: Any, what: str | None = None, **kwargs: Any
) -> Any:
    """Call ``call(*args, **kwargs)``, which must return a value equal to ``expected``;
    return that value.  Otherwise raise ``AssertionError`` naming the call (``what``, as
    for :func:`expect_raises`) and what it returned or raised instead."""
    label = what or _describe_call(call, args, kwargs)
    try:
        value = call(*args, **kwargs)
    except Exception as exc:
        raise AssertionError(
            f"{label} raised {type(exc).__name__}: {exc}; expected it to return {_short(expected)}"
        ) from exc
    if value != expected:
        raise AssertionError(f"{label} returned {_short(value)}; expected {_short(expected)}")
    return value


def _describe_call(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    owner = getattr(call, "__self__", None)
    name = getattr(call, "__name__", None) or repr(call)
    if owner is not None and not isinstance(owner, type):
        name = f"{type(owner).__name__}.{name}"
    params = [_short(a, 60) for a in args] + [f"{k}={_short(v, 60)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(params)})"


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def busy_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows (``sys.setswitchinterval(1e-6)``,
    for the whole process), restoring the interval after."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _yield_at_call(frame: object, event: str, arg: object) -> None:
    if event == "call":
        time.sleep(0)  # hand the GIL to another thread


@contextmanager
def switching_at_every_call() -> Iterator[None]:
    """In the calling thread, offer the GIL to other threads at every Python call, so
    that a race between a check and the write that relies on it shows in a few
    rounds.  (:func:`busy_switching` alone is a request the interpreter may honour
    only every few milliseconds on a busy machine.)"""
    sys.setprofile(_yield_at_call)
    try:
        yield
    finally:
        sys.setprofile(None)


class RoundTrips:
    """An extension plugin (``kit.open(plugins=[RoundTrips()])``) that hands the GIL
    to other threads after every fetch, delete, transaction and walk batch, as a
    network round trip would.  It widens the window between a check (or a batch read)
    and what depends on it, so check-then-act races and walks that read outside their
    lock show within a few rounds, without changing the backend."""

    @staticmethod
    def _round_trip() -> Generator[None, object, object]:
        result = yield
        time.sleep(0)
        return result

    @torpor.hookimpl(wrapper=True)
    def torpor_fetch(self, session_id: str) -> Generator[None, object, object]:
        return (yield from self._round_trip())

    @torpor.hookimpl(wrapper=True)
    def torpor_delete(self, session_id: str) -> Generator[None, object, object]:
        return (yield from self._round_trip())

    @torpor.hookimpl(wrapper=True)
    def torpor_transact(self, session_id: str, fn: object) -> Generator[None, object, object]:
        return (yield from self._round_trip())

    @torpor.hookimpl(wrapper=True)
    def torpor_iterate(self, cursor: object, batch_size: int) -> Generator[None, object, object]:
        return (yield from self._round_trip())

    @torpor.hookimpl(wrapper=True)
    def torpor_iterate_ids(
        self, cursor: object, batch_size: int, now_ms: int
    ) -> Generator[None, object, object]:
        return (yield from self._round_trip())
