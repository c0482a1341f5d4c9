"""The namespace's zstd dictionary, kept at ``torpor:{ns}:dict`` (``Keys.dictionary``).

What ``torpor_shared_dictionary`` needs (see ``torpor.hookspecs``): read the stored
dictionary, or store a proposal unless one is stored and return whichever is.  The
proposal is one ``SET NX GET`` (Redis 7.0+): atomic on the server, so processes that
trained at once all get back the one that was stored first.  The key has no TTL
(torpor keys never do), and is never overwritten: sessions hibernated with the
dictionary cannot be read without it.  On a Cluster it sits in the namespace's own
slot (tag ``{<ns>}``), like ``torpor:{ns}:meta``.
"""

from __future__ import annotations

from typing import cast

import redis
import redis.cluster

from torpor.plugins.redis._errors import translated
from torpor.plugins.redis._keys import Keys

__all__ = ["shared_dictionary"]

Client = redis.Redis | redis.cluster.RedisCluster


def shared_dictionary(
    client: Client, keys: Keys, where: str, proposal: bytes | None
) -> bytes | None:
    """The ``torpor_shared_dictionary`` hook for the namespace of ``keys``.  ``where``
    describes the server for errors (redacted: never a password)."""
    with translated(where):
        if proposal is None:
            return cast("bytes | None", client.get(keys.dictionary))
        # GET makes SET answer with what was there: None when this proposal was stored.
        previous = cast("bytes | None", client.set(keys.dictionary, proposal, nx=True, get=True))
    return proposal if previous is None else previous
