"""``ets_like``: the in-process backend, torpor's embedded default."""

from torpor import Capability, backend_factory
from torpor.plugins.ets_like._backend import EtsLikeBackend, create_backend

# Static metadata, read without building a backend (``torpor backends``, the kit):
# what every EtsLikeBackend claims, and no storage option (it keeps nothing on disk).
# The kit fails if these and ``EtsLikeBackend.torpor_capabilities`` ever disagree.
backend_factory(
    capabilities={
        Capability.NATIVE_ITERATION,
        Capability.NATIVE_HIBERNATION,
        Capability.NATIVE_EXPIRY,
    },
    storage_options={},
)(create_backend)

__all__ = ["EtsLikeBackend", "create_backend"]
