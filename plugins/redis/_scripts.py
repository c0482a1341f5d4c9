"""The server-side steps: every change a hook makes (record and indexes) is one call.

Loaded as a FUNCTION library when the user may load one; otherwise (ACLs without
``+function``) the same bodies run through EVALSHA, which needs only ``+@scripting``.

``commit``: KEYS ids, idle, expiry, the attempt's token key, then one record key per
item; ARGV the token ('' for none), then six fields per item: id, the SHA-1 of the
value the caller read ('' if none, '*' for an unconditional write), op ('S' store, 'D'
delete), blob, idle score, expiry score ('' for none).  Every item is checked
before any is applied, so a batch applies whole or not at all.  Returns {1, records
removed}, or {0, 0} on a conflict.  A conditional commit leaves its token for a minute:
when redis-py resends the call after a lost reply, the script finds it and answers as
the first time, instead of a conflict that would run the caller's function twice.

``page``: one batch of the ids walk with its records: KEYS ids; ARGV the ZRANGE start
('-' or '(' .. last id), the batch size and the record key prefix.  Records live in the
ids' hash tag, so the keys it derives are in the same slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

__all__ = ["LIBRARY", "Scripts"]

_COMMIT = """
local token = ARGV[1]
if token ~= '' then
  local done = redis.call('GET', KEYS[4])
  if done then return {1, tonumber(done)} end
end
local n = #KEYS - 4
for i = 1, n do
  local a = (i - 1) * 6 + 1
  local expected = ARGV[a + 2]
  if expected ~= '*' then
    local value = redis.call('GET', KEYS[4 + i])
    local current = ''
    if value then current = redis.sha1hex(value) end
    if current ~= expected then
      return {0, 0}
    end
  end
end
local removed = 0
for i = 1, n do
  local a = (i - 1) * 6 + 1
  local id = ARGV[a + 1]
  if ARGV[a + 3] == 'S' then
    redis.call('SET', KEYS[4 + i], ARGV[a + 4])
    redis.call('ZADD', KEYS[1], 0, id)
    if ARGV[a + 5] == '' then
      redis.call('ZREM', KEYS[2], id)
    else
      redis.call('ZADD', KEYS[2], ARGV[a + 5], id)
    end
    if ARGV[a + 6] == '' then
      redis.call('ZREM', KEYS[3], id)
    else
      redis.call('ZADD', KEYS[3], ARGV[a + 6], id)
    end
  else
    removed = removed + redis.call('DEL', KEYS[4 + i])
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
end
if token ~= '' then redis.call('SET', KEYS[4], removed, 'PX', 60000) end
return {1, removed}
"""

_PAGE = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for _, member in ipairs(members) do
  out[#out + 1] = member
  out[#out + 1] = redis.call('GET', ARGV[3] .. member)
end
return out
"""

_VERSION = 2
_BODIES = {"commit": (_COMMIT, ""), "page": (_PAGE, "flags = {'no-writes'}, ")}


def _library() -> str:
    parts = [f"#!lua name=torpor_{_VERSION}"]
    for name, (body, flags) in _BODIES.items():
        parts.append(
            f"redis.register_function{{function_name = 'torpor_{_VERSION}_{name}', {flags}"
            f"callback = function(KEYS, ARGV)\n{body}\nend}}"
        )
    return "\n".join(parts)


LIBRARY = _library()


class Scripts:
    """Calls the steps by name, through FCALL or EVALSHA (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._evalsha: dict[str, Any] = {}
        self.functions = self._load()
        if not self.functions:
            self._evalsha = {name: client.register_script(body) for name, (body, _) in
                             _BODIES.items()}  # fmt: skip

    def _load(self) -> bool:
        try:
            self._client.function_load(LIBRARY)
        except redis.exceptions.NoPermissionError:
            return False
        except redis.exceptions.ResponseError as exc:
            if "already exists" in str(exc):
                return True  # another manager loaded this version first
            if str(exc).startswith("NOPERM"):
                return False
            raise
        return True

    def call(self, name: str, keys: Sequence[bytes], args: Sequence[bytes | str]) -> Any:
        if self.functions:
            function = f"torpor_{_VERSION}_{name}"
            try:
                return self._client.fcall(function, len(keys), *keys, *args)
            except redis.exceptions.ResponseError as exc:
                # A server restarted without persistence has lost the library.
                if "function not found" not in str(exc).lower():
                    raise
                self.functions = self._load()
                if self.functions:
                    return self._client.fcall(function, len(keys), *keys, *args)
                self._evalsha = {n: self._client.register_script(b) for n, (b, _) in
                                 _BODIES.items()}  # fmt: skip
        return self._evalsha[name](keys=list(keys), args=list(args))
