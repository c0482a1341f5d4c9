"""The seam between the manager and a backend: which callable serves each hook.

A manager talks to its backend through pluggy hooks (see ``torpor.hookspecs``), but
pluggy's dispatch costs about 1.5 µs a call, as much as a whole LMDB read.  So when the
manager opens, it resolves every hook once, into a plain Python callable:

* **fast path**: exactly one implementation and no wrapper around it (the usual case,
  a backend alone) -> the backend's bound method itself.  A call costs one Python call.
* **dispatch**: wrappers are registered (extension plugins that count or time calls),
  or ``fast_path=False`` -> a small adapter that calls ``pm.hook.<name>(...)``, so the
  wrappers run on every call.
* **missing** optional hook -> the core's fallback from ``torpor._fallbacks``, chosen
  here and nowhere else: ``transact``, ``transact_batch`` and ``walk`` are always
  callable, and ``native(area)`` says which kind serves each area.  ``iterate_ids``
  and ``expire`` are None without their hooks (``ids()`` then walks whole records,
  and expiry sweeps go through ``transact_batch``), and so are they when an extension
  plugin wraps the hooks they stand in for but not them.

The binding also checks the backend's claims: each optional data hook corresponds to
a capability, and claiming one without the other is refused, because the conformance
kit decides between native and fallback tests from the claims.  A capability the kit
the kit cannot test is refused outright: a claim has to be earned (docs/contract.md
§11).  ``DISTRIBUTED`` is earned in the kit's ``distributed`` area, ``TRANSACTIONS``
in its ``transactions`` area.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import pluggy

from torpor import hookspecs
from torpor._capabilities import Capability
from torpor._fallbacks import LockedTransact, Pair, each_transact, snapshot_walk
from torpor.errors import ConfigError
from torpor.hookspecs import BatchFn, Expired, TransactFn

if TYPE_CHECKING:
    from torpor._transaction import BackendTransaction

__all__ = ["CAPABILITY_HOOKS", "REQUIRED_HOOKS", "UNEARNED", "Binding", "make_plugin_manager"]

REQUIRED_HOOKS: Final = ("torpor_fetch", "torpor_store", "torpor_delete", "torpor_ids")
CAPABILITY_HOOKS: Final = {
    Capability.ATOMIC_UPDATE: "torpor_transact",
    Capability.NATIVE_ITERATION: "torpor_iterate",
    Capability.NATIVE_HIBERNATION: "torpor_idle_ids",
    Capability.NATIVE_EXPIRY: "torpor_expired_ids",
    Capability.SECONDARY_INDEX: "torpor_find",
    # (SECONDARY_INDEX also needs torpor_create_index; checked below.)
    Capability.SHARED_MAILBOX: "torpor_mailbox",
    Capability.TRANSACTIONS: "torpor_transaction",
}
UNEARNED: Final[frozenset[Capability]] = frozenset()
"""Capabilities no backend may claim yet: the conformance kit has no test for them
(none since the kit's ``transactions`` area)."""


class _PluginManager(pluggy.PluginManager):
    """Accepts undecorated ``torpor_*`` methods, as pytest accepts ``pytest_*`` ones, so
    a backend needs no pluggy import.  An unknown ``torpor_*`` name is reported by
    ``check_pending`` (it is almost always a typo)."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("torpor_") and callable(getattr(plugin, name, None)):
            return cast(pluggy.HookimplOpts, {})
        return opts


def make_plugin_manager(backend: object, plugins: Iterable[object]) -> pluggy.PluginManager:
    pm = _PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    try:
        pm.register(backend, name="backend")
        for plugin in plugins:
            pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {exc.plugin!r} does not fit torpor's hooks: {exc}") from None
    except ValueError as exc:  # the same plugin object registered twice
        raise ConfigError(str(exc)) from None
    return pm


class Binding:
    """The resolved callables of one backend, with fallbacks where hooks are missing."""

    def __init__(self, pm: pluggy.PluginManager, backend: object, *, fast_path: bool) -> None:
        self._pm = pm
        self._backend = backend
        self._fast_path = fast_path
        missing = [n for n in REQUIRED_HOOKS if not self._impls(n)]
        if missing:
            raise ConfigError(
                f"backend {type(backend).__name__} lacks the required hook(s) "
                f"{', '.join(missing)}; see torpor.hookspecs"
            )
        claimed = pm.hook.torpor_capabilities()
        try:
            self.capabilities = frozenset(Capability.parse(c) for c in (claimed or ()))
        except ValueError as exc:
            raise ConfigError(f"backend {type(backend).__name__}: {exc}") from None
        unearned = sorted(c.name for c in self.capabilities & UNEARNED)
        if unearned:
            raise ConfigError(
                f"backend {type(backend).__name__} claims {', '.join(unearned)}, which "
                "torpor's conformance kit cannot test yet; a capability must be earned "
                "by passing the kit, so drop the claim"
            )
        for needs_transact, why in (
            (Capability.SHARED_MAILBOX, "its mail changes in the same transaction as records"),
            (Capability.TRANSACTIONS, "single-session writes must be isolated from them"),
        ):  # fmt: skip
            if (
                needs_transact in self.capabilities
                and Capability.ATOMIC_UPDATE not in self.capabilities
            ):
                raise ConfigError(
                    f"backend {type(backend).__name__} claims {needs_transact.name} without "
                    f"ATOMIC_UPDATE; {why}, so it needs torpor_transact"
                )
        for capability, hook in CAPABILITY_HOOKS.items():
            has_hook = bool(self._backend_impls(hook))
            if has_hook != (capability in self.capabilities):
                raise ConfigError(
                    f"backend {type(backend).__name__} "
                    + (
                        f"implements {hook} but does not claim {capability.name}"
                        if has_hook
                        else f"claims {capability.name} but does not implement {hook}"
                    )
                )
        if (Capability.SECONDARY_INDEX in self.capabilities) != bool(
            self._backend_impls("torpor_create_index")
        ):
            raise ConfigError(
                f"backend {type(backend).__name__}: SECONDARY_INDEX goes with both "
                "torpor_find and torpor_create_index"
            )
        self.fetch: Callable[[str], Any] = self._bind("torpor_fetch")  # type: ignore[assignment]
        self.store: Callable[[Any], None] = self._bind("torpor_store")  # type: ignore[assignment]
        self.delete: Callable[[str], bool] = self._bind("torpor_delete")  # type: ignore[assignment]
        self.ids: Callable[[], Iterable[str | bytes]] = self._bind("torpor_ids")  # type: ignore[assignment]
        self.iterate = self._bind("torpor_iterate")
        if self._backend_impls("torpor_iterate_ids") and self.iterate is None:
            raise ConfigError(
                f"backend {type(backend).__name__} implements torpor_iterate_ids "
                "without torpor_iterate"
            )
        self.iterate_ids: Callable[[Any, int, int], tuple[Sequence[str | bytes], Any]] | None = (
            None
            if self.iterate is None
            else self._bind_shortcut("torpor_iterate_ids", ["torpor_iterate"])
        )
        self.idle_ids = self._bind("torpor_idle_ids")
        self.expired_ids = self._bind("torpor_expired_ids")
        self.count = self._bind("torpor_count")
        self.find = self._bind("torpor_find")
        self.create_index = self._bind("torpor_create_index")
        self.stats = self._bind("torpor_stats")
        self.mailbox = self._bind("torpor_mailbox")
        self.transaction: Callable[[], BackendTransaction] | None = self._bind("torpor_transaction")
        native_transact = self._bind("torpor_transact")
        self.native_transact = native_transact is not None
        if self._backend_impls("torpor_transact_batch") and not self.native_transact:
            raise ConfigError(
                f"backend {type(backend).__name__} implements torpor_transact_batch "
                "without torpor_transact"
            )
        native_batch = self._bind("torpor_transact_batch")
        self.native_batch = native_batch is not None
        self.transact: Callable[[str, TransactFn], None] = (
            native_transact
            if native_transact is not None
            else LockedTransact(self.fetch, self.store, self.delete)
        )
        self.transact_batch: Callable[[Sequence[str], BatchFn], None] = (
            native_batch if native_batch is not None else each_transact(self.transact)
        )
        if self._backend_impls("torpor_expire") and not (
            self.expired_ids is not None and self.native_transact
        ):
            raise ConfigError(
                f"backend {type(backend).__name__} implements torpor_expire without "
                "torpor_expired_ids and torpor_transact (its steps must be atomic with "
                "the backend's own transactions)"
            )
        self.expire: Callable[[int, int], Iterable[Expired]] | None = (
            None
            if self.expired_ids is None
            else self._bind_shortcut(
                "torpor_expire", ["torpor_expired_ids", "torpor_transact", "torpor_transact_batch"]
            )
        )
        self.observed = bool(self._impls("torpor_event"))

    def walk(self, batch_size: int) -> Iterator[Sequence[Pair]]:
        """Batches of ``(key, value)`` over the whole store: the native walk, or the
        id-snapshot fallback."""
        iterate = self.iterate
        if iterate is None:
            yield from snapshot_walk(self.ids, self.fetch, batch_size)
            return
        cursor: object = None
        while True:
            items, cursor = iterate(cursor, batch_size)
            if items:
                yield items
            del items  # not held while the next batch is read
            if cursor is None:
                return

    def _bind_shortcut(self, name: str, covers: Sequence[str]) -> Callable[..., Any] | None:
        """A hook that does in one step what the manager would otherwise do through
        the hooks ``covers`` (``torpor_iterate_ids`` for a walk, ``torpor_expire`` for a
        sweep), unless an extension plugin wraps one of those without wrapping
        ``name`` too: a plugin that observes or shapes them (a counter, a tracer) must
        still see every call that does their work."""

        def wrappers(hook: str) -> set[int]:
            return {id(i.plugin) for i in self._impls(hook) if i.wrapper or i.hookwrapper}

        wrapping = set().union(*(wrappers(hook) for hook in covers))
        if wrapping - wrappers(name):
            return None
        return self._bind(name)

    def native(self) -> dict[str, bool]:
        """Which areas the backend serves itself (True) and which the core's
        fallbacks serve (False)."""
        return {
            "iteration": self.iterate is not None,
            "hibernation": self.idle_ids is not None,
            "expiry": self.expired_ids is not None,
            "mailbox": self.mailbox is not None,
            "find": self.find is not None,
            "transact": self.native_transact,
        }

    def _impls(self, name: str) -> list[pluggy.HookImpl]:
        return list(getattr(self._pm.hook, name).get_hookimpls())

    def _backend_impls(self, name: str) -> list[pluggy.HookImpl]:
        return [i for i in self._impls(name) if i.plugin is self._backend and not i.wrapper]

    def _bind(self, name: str) -> Callable[..., Any] | None:
        caller = getattr(self._pm.hook, name)
        impls = caller.get_hookimpls()
        if not any(not (i.wrapper or i.hookwrapper) for i in impls):
            return None  # only wrappers: nothing to wrap, the core's fallback serves it
        argnames: tuple[str, ...] = tuple(caller.spec.argnames) if caller.spec else ()
        if self._fast_path and len(impls) == 1 and not (impls[0].wrapper or impls[0].hookwrapper):
            impl = impls[0]
            if tuple(impl.argnames) == argnames:
                return cast(Callable[..., Any], impl.function)
            # pluggy passes arguments by name: a method may take a subset of the
            # hookspec's parameters, in any order.
            order = [argnames.index(a) for a in impl.argnames]
            function = impl.function
            return lambda *args: function(*(args[i] for i in order))
        return _dispatcher(caller, argnames)

    def call_all(self, name: str, **kwargs: Any) -> None:
        """Call a non-data hook on every plugin (open, close, events)."""
        getattr(self._pm.hook, name)(**kwargs)


def _dispatcher(caller: pluggy.HookCaller, argnames: tuple[str, ...]) -> Callable[..., Any]:
    # One adapter per arity keeps the dispatch path free of per-call zip/dict work
    # beyond the keyword dict pluggy itself requires.
    if not argnames:
        return lambda: caller()
    if len(argnames) == 1:
        (a,) = argnames
        return lambda x: caller(**{a: x})
    if len(argnames) == 2:
        a, b = argnames
        return lambda x, y: caller(**{a: x, b: y})
    return lambda *args: caller(**dict(zip(argnames, args, strict=True)))
