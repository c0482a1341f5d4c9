"""``mnesia_like``: sessions in SQLite: embedded, transactional, queryable, no server.

Options (``torpor.open("mnesia_like", path=..., ...)``):

``path``                 the database file (a non-empty str or os.PathLike); its folder
                         is created 0700 if missing, the file and its ``-wal`` and
                         ``-shm`` companions 0600.  Required for ``disc`` and
                         ``disc_only``; in ``ram`` it names the in-memory database
                         (managers of this process giving the same path share it; no
                         file is touched), and without it each backend has its own.
``storage``              Mnesia's three storage modes:

                         ``disc`` (default): WAL, ``synchronous=NORMAL``.  A killed
                         process loses nothing it acknowledged; an OS crash or power
                         cut may lose the last transactions (never the file).
                         ``disc_only``: WAL, ``synchronous=FULL``, a 256 KiB page cache
                         per connection: every acknowledged write survives an OS crash.
                         ``ram``: a shared in-memory database of this process; gone
                         when its last manager closes.

``busy_timeout_ms``      how long a writer waits for another's lock before trying again
                         (default 5000); after 4 such waits a write fails with
                         ``BackendUnavailable`` naming the contention
``touch_resolution_ms``  reads refresh ``last_accessed`` at most this often (default 1000)

Capabilities: ``disc`` and ``disc_only`` claim ``ATOMIC_UPDATE``, ``NATIVE_ITERATION``,
``NATIVE_HIBERNATION``, ``NATIVE_EXPIRY``, ``SECONDARY_INDEX``, ``SHARED_MAILBOX``,
``TRANSACTIONS``, ``PERSISTENT`` and ``MULTI_PROCESS``; ``ram`` all but ``PERSISTENT``
and ``MULTI_PROCESS``.  The factory's static metadata (``torpor.describe_factory``)
declares the disc set, the ram set for ``storage=ram``
(``capabilities_by_option``) and ``path`` as the option naming the store, so ``torpor
backends`` lists both sets without opening anything, and the conformance kit checks
each mode against its own.

Housekeeping: the sweeper's passes checkpoint the WAL (``wal_checkpoint(TRUNCATE)``)
every 64 passes; closing runs ``PRAGMA optimize``; ``backend.backup(path)`` writes a
consistent, compacted copy through ``VACUUM INTO``.  The schema is versioned with
sqlite-utils migrations, applied under the write lock when a backend opens.
"""

import sqlite_utils as _engine  # noqa: F401  (a missing extra fails here, with a clear hint)

from torpor.plugins.mnesia_like._backend import SqliteBackend
from torpor.plugins.mnesia_like._factory import create_backend
from torpor.plugins.mnesia_like._transaction import SqliteTransaction

__all__ = ["SqliteBackend", "SqliteTransaction", "create_backend"]
