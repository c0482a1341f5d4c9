"""``lmdb``: sessions in an LMDB environment: embedded, persistent, multi-process.

Options (``torpor.open("lmdb", path=..., ...)``):

``path``                 folder of the environment (required: a non-empty str or
                         os.PathLike; created 0700, files 0600)
``map_size``             initial map size in bytes (default 64 MiB); grows on its own
``durability``           ``sync`` (default), ``nometasync`` or ``nosync``; see the guide
``max_readers``          concurrent read transactions, all processes (default 126); one
                         process uses at most half, further readers wait for a slot
``max_dbs``              named databases the environment can hold (default 128); each
                         namespace uses 11, so the default allows 11 namespaces
``namespace``            prefix of the named databases, so applications can share one
                         environment (default ``torpor``)
``touch_resolution_ms``  reads refresh ``last_accessed`` at most this often (default 1000)

``map_size``, ``durability``, ``max_readers`` and ``max_dbs`` are the storage options:
every manager of one environment in a process shares one LMDB handle, so a second
manager that asks for different ones is refused with ``ConfigError``.

The factory's static metadata (``torpor.describe_factory``) declares the capabilities
and ``path`` as the option naming the store's location, so ``torpor backends`` lists
lmdb without opening anything and ``torpor conformance lmdb`` needs no options.
"""

import lmdb as _engine  # noqa: F401  (a missing extra fails here, with a clear hint)

from torpor.plugins.lmdb._backend import LmdbBackend
from torpor.plugins.lmdb._factory import create_backend

__all__ = ["LmdbBackend", "create_backend"]
