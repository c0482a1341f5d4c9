"""``ets_like``: the in-process backend, torpor's embedded default."""

from torpor import backend_factory
from torpor.plugins.ets_like._backend import CAPABILITIES, EtsLikeBackend, create_backend

# Static metadata, read without building a backend (``torpor backends``, the kit):
# what every EtsLikeBackend claims, and no storage option (it keeps nothing on disk).
backend_factory(capabilities=CAPABILITIES, storage_options={})(create_backend)

__all__ = ["EtsLikeBackend", "create_backend"]
