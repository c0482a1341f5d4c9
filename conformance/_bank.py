"""Bank transfers: the kit's workload for multi-session transactions.

Accounts are sessions holding ``{"balance": n}``.  A transfer moves an amount from one
to another in one transaction, or does nothing when the source cannot pay.  Whatever
the interleaving, the total never changes, and each account ends at its opening
balance plus what the transfers that happened (each reported by its caller) moved in
and out: a transfer applied half-way, twice, or lost breaks one of the two.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import torpor

__all__ = ["OPENING", "balances", "expected", "open_accounts", "transfer", "transfers"]

OPENING = 100
"""Each account's opening balance."""


def open_accounts(mgr: torpor.Manager, count: int) -> list[str]:
    return [mgr.create({"balance": OPENING}, timeout_ms=None).id for _ in range(count)]


def transfer(tx: torpor.Transaction, source: str, target: str, amount: int) -> bool:
    """Move ``amount`` from ``source`` to ``target`` if ``source`` can pay."""
    paying = tx.get(source)
    if paying is None or paying.data["balance"] < amount:
        return False
    tx.update(source, lambda d: {**d, "balance": d["balance"] - amount})
    tx.update(target, lambda d: {**d, "balance": d["balance"] + amount})
    return True


def transfers(
    mgr: torpor.Manager, accounts: Sequence[str], rounds: int, seed: int
) -> list[list[Any]]:
    """``rounds`` random transfers, each in its own ``mgr.transaction``; the ones that
    happened, as ``[source, target, amount]``."""
    rng = random.Random(seed)
    done: list[list[Any]] = []
    for _ in range(rounds):
        source, target = rng.sample(list(accounts), 2)
        amount = rng.randint(1, OPENING // 2)
        if mgr.transaction(lambda tx: transfer(tx, source, target, amount)):  # noqa: B023
            done.append([source, target, amount])
    return done


def balances(mgr: torpor.Manager, accounts: Iterable[str]) -> dict[str, int]:
    found = {sid: mgr.peek(sid) for sid in accounts}
    return {sid: -1 if s is None else int(s.data["balance"]) for sid, s in found.items()}


def expected(accounts: Iterable[str], done: Iterable[Sequence[Any]]) -> dict[str, int]:
    """Each account's balance after the transfers ``done``."""
    result = dict.fromkeys(accounts, OPENING)
    for source, target, amount in done:
        result[source] -= amount
        result[target] += amount
    return result
