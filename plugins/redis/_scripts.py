"""The server-side steps: every change a hook makes (record, indexes, mailbox) is one call.

Loaded as a FUNCTION library when the user may load one; otherwise (ACLs without
``+function``) the same bodies run through EVALSHA, which needs only ``+@scripting``.
Every step works inside one bucket (``_keys.py``): its KEYS are that bucket's, and the
keys it derives from a prefix in ARGV carry the same hash tag, so they are in the
same slot on a Cluster.

A stored record is its *head* then ``Record.blob``: ``t1``, the incarnation and the
version (8 bytes each, signed big-endian), then the first 8 hex digits of the blob's
SHA-1 (``_items.py`` reads it).  The head is what the mailbox checks a session's
incarnation against, and the proof ``page_ids`` relies on; keeping it in the record
costs no key of its own (a hash entry per session cost ~100 bytes of server memory).

``commit``: KEYS ids, idle, exp, xs, fields, the attempt's token key, then one
record key per item; ARGV the token ('' for none), the fields version the entries were
computed for, the bucket prefix, then ten fields per item: id, the SHA-1 of the value
the caller read ('' if none, '*' for an unconditional write), op ('S' store, 'D'
delete), blob, idle score, expiry score ('' for none), incarnation, version (8 bytes
each), index entries ('=' to keep the stored ones: the data did not change; else hex entries
separated by spaces) and the reason of a removal (``Removal.reason``).  Every item is
checked before any is applied, so a batch applies whole or not at all.  Returns {1,
records removed}; {0, 0} when a record changed since it was read; {-2, 0} when entries
were computed for a stale fields version (``create_index`` ran meanwhile).  Nothing
is applied in the last two cases.  A conditional commit leaves its token for a minute:
when redis-py resends the call after a lost reply, the script finds it and answers as
the first time, instead of a conflict that would run the caller's function twice.

When an incarnation ends (a removal, or a store of another incarnation over it), its
mail goes in the same step: both lanes are deleted, each receiver blocked on it (the
``mq`` count) gets a wake-up holding the reason in ``mw``, and a cancellation leaves
``mc`` for a minute (see ``_mailbox.py``).

``page``: one batch of a bucket's ids walk with its records: KEYS ids; ARGV the ZRANGE
start ('-' or '(' .. last id), the batch size and the record key prefix.

``page_ids``: the same walk, returning only the ids that are intact and live: KEYS
ids, exp; ARGV start, batch size, record prefix, now.  Intact: a head whose proof is
the blob's (32 bits, as lmdb's crc32, against accidental damage).  Returns {last id
looked at or '', kept ids..., '', then (id, value) pairs of the values without a head
(written by something else), for the caller to check as the manager would}.

``find``: KEYS fields; ARGV the bucket prefix, the record prefix, then pairs of (field,
hex entry).  {0} if none of the fields is ready here, else {1, id, record, ...} for
the ids in every ready criterion's set.

``reindex``: a backfill batch of ``create_index``: KEYS xs, fields; ARGV the
prefix, the fields version, then triples of (id, incarnation and version as read (16
bytes), hex entries).  An id whose data changed since it was read is left alone: its writer
indexed it.  {1} or {-2} like ``commit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from torpor.plugins.redis._mailbox_lua import BODIES as MAILBOX_BODIES

__all__ = ["LIBRARY", "Scripts"]

# Every step reads records through read(): a key of another type (a foreign hash, say)
# is damaged data, handed over as b"" for the manager to skip and count, never a
# WRONGTYPE error that would stop a walk.
_READ_RECORD = """
local function read(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then return '' end
  return v
end
"""

# Shared by the writing steps.
_HELPERS = (
    _READ_RECORD
    + """
local function words(s)
  local t = {}
  for w in string.gmatch(s, '%S+') do t[#t + 1] = w end
  return t
end
local function unindex(prefix, xs, id)
  local old = redis.call('HGET', xs, id)
  if old then
    for _, e in ipairs(words(old)) do redis.call('SREM', prefix .. 'x:' .. e, id) end
    redis.call('HDEL', xs, id)
  end
end
local function index(prefix, xs, id, entries)
  if entries == '' then return end
  for _, e in ipairs(words(entries)) do redis.call('SADD', prefix .. 'x:' .. e, id) end
  redis.call('HSET', xs, id, entries)
end
"""
)

_COMMIT = (
    _HELPERS
    + """
local token, fv, prefix = ARGV[1], ARGV[2], ARGV[3]
if token ~= '' then
  local done = redis.call('GET', KEYS[6])
  if done then return {1, tonumber(done)} end
end
local stored_fv = redis.call('HGET', KEYS[5], '~version') or '0'
local F, n = 10, #KEYS - 6
for i = 1, n do
  local a = 3 + (i - 1) * F
  local expected = ARGV[a + 2]
  if expected ~= '*' then
    local value = read(KEYS[6 + i])
    local current = ''
    if value and value ~= '' then current = redis.sha1hex(value) end
    if current ~= expected then return {0, 0} end
  end
  if ARGV[a + 3] == 'S' and ARGV[a + 9] ~= '=' and fv ~= stored_fv then return {-2, 0} end
end
local function hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
local function ending(inc, id, reason)
  local tail = hex(inc) .. ':' .. id
  redis.call('DEL', prefix .. 'mp:' .. tail, prefix .. 'mn:' .. tail)
  local q = prefix .. 'mq:' .. tail
  local waiting = math.min(tonumber(redis.call('GET', q) or '0') or 0, 10000)
  if waiting > 0 then
    local w = prefix .. 'mw:' .. tail
    for _ = 1, waiting do redis.call('RPUSH', w, reason) end
    redis.call('PEXPIRE', w, 60000)
  end
  redis.call('DEL', q)
  if reason == 'cancelled' then
    redis.call('SET', prefix .. 'mc:' .. tail, '1', 'PX', 60000)
  end
end
local removed = 0
for i = 1, n do
  local a = 3 + (i - 1) * F
  local id, key = ARGV[a + 1], KEYS[6 + i]
  local head = read(key) and redis.pcall('GETRANGE', key, 0, 9)
  if type(head) ~= 'string' then head = '' end
  local held_inc = nil
  if #head == 10 and string.sub(head, 1, 2) == 't1' then held_inc = string.sub(head, 3, 10) end
  if ARGV[a + 3] == 'S' then
    local blob, inc, entries = ARGV[a + 4], ARGV[a + 7], ARGV[a + 9]
    if held_inc and held_inc ~= inc then
      ending(held_inc, id, 'replaced')
      unindex(prefix, KEYS[4], id)
    end
    local proof = string.sub(redis.sha1hex(blob), 1, 8)
    redis.call('SET', key, 't1' .. inc .. ARGV[a + 8] .. proof .. blob)
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
    if entries ~= '=' then
      unindex(prefix, KEYS[4], id)
      index(prefix, KEYS[4], id, entries)
    end
  else
    if held_inc then ending(held_inc, id, ARGV[a + 10]) end
    unindex(prefix, KEYS[4], id)
    removed = removed + redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
end
if token ~= '' then redis.call('SET', KEYS[6], removed, 'PX', 60000) end
return {1, removed}
"""
)

_PAGE = (
    _READ_RECORD
    + """
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for _, member in ipairs(members) do
  out[#out + 1] = member
  out[#out + 1] = read(ARGV[3] .. member)
end
return out
"""
)

_PAGE_IDS = (
    _READ_RECORD
    + """
local limit = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0, limit)
local out, unproved = {''}, {}
if #members >= limit then out[1] = members[#members] end
for _, member in ipairs(members) do
  local value = read(ARGV[3] .. member)
  if value and #value > 26 and string.sub(value, 1, 2) == 't1' then
    if string.sub(value, 19, 26) == string.sub(redis.sha1hex(string.sub(value, 27)), 1, 8) then
      local deadline = redis.call('ZSCORE', KEYS[2], member)
      if not deadline or tonumber(deadline) >= now then out[#out + 1] = member end
    end
  elseif value and value ~= '' then
    unproved[#unproved + 1] = member
    unproved[#unproved + 1] = value
  end
end
out[#out + 1] = ''
for _, item in ipairs(unproved) do out[#out + 1] = item end
return out
"""
)

_FIND = (
    _READ_RECORD
    + """
local prefix, records = ARGV[1], ARGV[2]
local sets = {}
for i = 3, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == 'ready' then
    sets[#sets + 1] = prefix .. 'x:' .. ARGV[i + 1]
  end
end
if #sets == 0 then return {0} end
local out = {1}
for _, id in ipairs(redis.call('SINTER', unpack(sets))) do
  local value = read(records .. id)
  if value then
    out[#out + 1] = id
    out[#out + 1] = value
  end
end
return out
"""
)

_REINDEX = (
    _HELPERS
    + """
local prefix, fv = ARGV[1], ARGV[2]
if fv ~= (redis.call('HGET', KEYS[2], '~version') or '0') then return {-2} end
for i = 3, #ARGV, 3 do
  local id, seen = ARGV[i], ARGV[i + 1]
  local head = redis.pcall('GETRANGE', prefix .. 'r:' .. id, 0, 17)
  if type(head) == 'string' and string.sub(head, 1, 2) == 't1'
      and string.sub(head, 3, 18) == seen then
    unindex(prefix, KEYS[1], id)
    index(prefix, KEYS[1], id, ARGV[i + 2])
  end
end
return {1}
"""
)

_READ = "flags = {'no-writes'}, "
_VERSION = 7
_BODIES: dict[str, tuple[str, str]] = {
    "commit": (_COMMIT, ""),
    "remove": (_COMMIT, "flags = {'allow-oom'}, "),  # commits of removals only
    "page": (_PAGE, _READ),
    "page_ids": (_PAGE_IDS, _READ),
    "find": (_FIND, _READ),
    "reindex": (_REINDEX, ""),
}
_BODIES.update(MAILBOX_BODIES)  # the mailbox's steps live beside the mailbox


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

    def __init__(self, client: Any, current: Callable[[], Any] | None = None) -> None:
        """``client`` loads the library now; ``current()`` gives the client of each
        later call (the backend's: it raises ManagerClosed once the backend is closed,
        so no step reaches the server after that)."""
        self._current: Callable[[], Any] = (lambda: client) if current is None else current
        self._evalsha: dict[str, Any] = {}
        self.functions = self._load(client)
        if not self.functions:
            self._register(client)

    def _register(self, client: Any) -> None:
        self._evalsha = {n: client.register_script(b) for n, (b, _) in _BODIES.items()}

    def reload(self) -> None:
        """After "function not found": a server restarted without persistence."""
        client = self._current()
        self.functions = self._load(client)
        if not self.functions:
            self._register(client)

    def _load(self, client: Any) -> bool:
        # REPLACE: idempotent, and on a Cluster every primary ends up with the library
        # even if some had it (a plain LOAD would fail on those and leave the rest).
        try:
            client.function_load(LIBRARY, replace=True)
        except redis.exceptions.NoPermissionError:
            return False
        except redis.exceptions.OutOfMemoryError:
            # A full server refuses the load; the library is most likely there from an
            # earlier open (if not, the first call says so and loads it again).
            return True
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith("NOPERM"):
                return False
            raise
        return True

    def call(
        self, name: str, keys: Sequence[bytes], args: Sequence[bytes | str], client: Any = None
    ) -> Any:
        """Run step ``name``; on ``client`` (a pipeline, say) if given."""
        target = self._current() if client is None else client
        if self.functions:
            function = f"torpor_{_VERSION}_{name}"
            try:
                return target.fcall(function, len(keys), *keys, *args)
            except redis.exceptions.ResponseError as exc:
                # A server restarted without persistence has lost the library.
                if "function not found" not in str(exc).lower():
                    raise
                self.reload()
                if self.functions:
                    return target.fcall(function, len(keys), *keys, *args)
        return self._evalsha[name](keys=list(keys), args=list(args), client=target)
