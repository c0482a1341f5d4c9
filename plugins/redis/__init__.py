"""``redis``: sessions in a Redis (7.0+) or Valkey server, shared by processes and hosts.

In progress (issue 10): the standalone topology.  Sentinel, Cluster, a shared mailbox
and secondary indexes are not there yet.

Options (``torpor.open("redis", url=..., ...)``):

``url``                     ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS)
                            or ``unix://``; or
``client``                  an existing ``redis.Redis`` (not decoding responses); torpor
                            uses it as it is and leaves it open on close
``namespace``               separates stores on one server (default ``torpor``); every
                            key is ``torpor:{<namespace>}:...``
``touch_resolution_ms``     reads refresh ``last_accessed`` at most this often (1000)
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
