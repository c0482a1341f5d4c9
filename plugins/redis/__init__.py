"""``redis``: sessions in a Redis (7.0+) or Valkey server, shared by processes and hosts.

Every torpor semantic is native here: records, their idle/expiry/secondary indexes
and their mailboxes live in the server, each write one server-side function over one
hash-tagged bucket (``_keys.py``, ``_scripts.py``).  docs/guide.md ("redis") is the
user's guide: topologies, durability, failover, eviction and ACLs.

Options (``torpor.open("redis", ...)``), exactly one topology:

``url``                     ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS)
                            or ``unix://``; with ``cluster=True``, any node of a Cluster
``sentinels``,              Sentinel addresses ``[(host, port), ...]`` and the service
``service_name``            they monitor (``sentinel_username``/``sentinel_password``,
                            ``ssl`` for the sentinels themselves)
``client``                  an existing ``redis.Redis`` or ``RedisCluster`` (responses not
                            decoded); torpor uses it as it is and leaves it open on close

and for all of them:

``namespace``               separates stores on one server (default ``torpor``)
``buckets``                 hash-tag buckets of a namespace: 1, or 16 on a Cluster; fixed
                            at the namespace's first open
``touch_resolution_ms``     reads refresh ``last_accessed`` at most this often (1000)
``wait_replicas``,          after each write, WAIT for this many replicas (0), up to
``wait_timeout_ms``         this long (1000); fewer is ``BackendUnavailable``
``socket_timeout``,         seconds (5.0, 2.0): redis-py's own defaults changed in 8.0,
``socket_connect_timeout``  so torpor sets them
``retries``                 reconnection retries on connection errors and timeouts (3)
``max_connections``         pool bound (32); past it callers wait ``pool_timeout`` (5.0 s)
``username``, ``password``, ``credential_provider``, ``ssl_*``, ``client_name``
                            passed to redis-py; the password never appears in a repr,
                            an error or a log line

At open torpor refuses servers older than 7.0 (``ConfigError``) and warns when
``maxmemory-policy`` is not ``noeviction`` (an evicting server drops sessions silently).
"""

import redis as _engine  # noqa: F401  (a missing extra fails here, with a clear hint)

from torpor.plugins.redis._backend import RedisBackend
from torpor.plugins.redis._factory import create_backend

__all__ = ["RedisBackend", "create_backend"]
