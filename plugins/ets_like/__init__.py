"""``ets_like``: the in-process backend, torpor's embedded default."""

from torpor.plugins.ets_like._backend import EtsLikeBackend, create_backend

__all__ = ["EtsLikeBackend", "create_backend"]
