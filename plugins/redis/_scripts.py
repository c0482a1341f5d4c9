"""The server-side steps: every change a hook makes (record, indexes, mailbox) is one call.

Loaded as a FUNCTION library when the user may load one; otherwise (ACLs without
``+function``) the same bodies run through EVALSHA, which needs only ``+@scripting``.
Every step works inside one bucket (``_keys.py``): its KEYS are that bucket's, and the
keys it derives from a prefix in ARGV carry the same hash tag, so they are in the
same slot on a Cluster.

A stored record is its *head* (34 bytes) then ``Record.blob``: ``t2``, the
incarnation, the version and the expiry deadline (8 bytes each, signed big-endian;
``MAX_SCORE`` for none), then the *proof*: the first 8 hex digits of the SHA-1 of
the id, those 26 bytes, the blob's length and its first 64 bytes.  Only ``commit``
writes a head, from a blob the manager encoded, so a value whose proof holds is a
record torpor wrote under this id: a copy under another id, a value cut or grown, or
an envelope damaged at its start all fail it.  The head is what the mailbox checks
an incarnation against, and what ``page_ids`` and ``expire`` read instead of the
blob (98 bytes, never 3 KB); it costs no key of its own (a hash entry per session
cost ~100 bytes of server memory).  What the proof does not cover: bytes changed
deep inside a blob without changing its length, which no Redis failure produces (a
``SET`` is whole, RDB and AOF files carry checksums) and a foreign ``SETRANGE``
would; reads decode and check every record, so such a session reads as damaged,
while ``ids()`` may list it and an expiry sweep may remove it.  (A SHA-1 of the
whole blob did cover it, at half the cost of an ``ids()`` walk and most of a
native sweep: docs/performance.md.)

``commit``: KEYS ids, idle, exp, xs, fields, the attempt's token key, then one
record key per item; ARGV the token ('' for none), the fields version the entries were
computed for, the bucket prefix, then ten fields per item: id, the SHA-1 of the value
the caller read ('' if none, '*' for an unconditional write), op ('S' store, 'D'
delete), blob, idle score, expiry score ('' for none), incarnation (8 bytes), version
and head deadline (16 bytes), index entries ('=' to keep the stored ones: the data did
not change; else hex entries separated by spaces) and the reason of a removal
(``Removal.reason``).  Every item is checked before any is applied, so a batch applies
whole or not at all.  Returns {1,
records removed}; {0, 0} when a record changed since it was read; {-2, 0} when entries
were computed for a stale fields version (``create_index`` ran meanwhile).  Nothing
is applied in the last two cases.  A conditional commit leaves its token for a minute:
when redis-py resends the call after a lost reply, the script finds it and answers as
the first time, instead of a conflict that would run the caller's function twice.

When an incarnation ends (a removal, or a store of another incarnation over it), its
mail goes in the same step: both lanes are deleted, each receiver blocked on it (the
``mq`` count) gets a wake-up holding the reason in ``mw``, and a cancellation leaves
``mc`` for a minute (see ``_mailbox.py``).  Only ids in the bucket's ``mailed`` set can
have mail keys (``_mailbox_lua.py``), so for the others this is one set lookup.

``page``: one batch of a bucket's ids walk with its records: KEYS ids; ARGV the ZRANGE
start ('-' or '(' .. last id), the batch size and the record key prefix.

``page_ids``: the same walk, returning only the ids that are intact and live: KEYS
ids, exp; ARGV start, batch size, record prefix, now.  Intact: a proved head; live:
its deadline is not before now.  Returns {last id looked at or '', kept ids..., '',
then (id, value) pairs of the values without a proved head (written by something
else, or damaged), for the caller to check as the manager would}.

``expire``: one batch of a native expiry sweep (``torpor_expire``): KEYS ids, idle,
exp, xs; ARGV the bucket prefix, now, the batch size, and how many more entries to
look at (the damaged ones the previous step met, which stay at the front of
``exp``).  Removes each record whose head is proved and whose own deadline is
before now, as a removal with reason ``expired`` does in ``commit``; puts back the
``exp`` entry of a proved record that is not due (the index was behind its record);
drops the entries of records that are gone; leaves the rest.  Returns {entries
looked at, records removed, then the ids of the damaged values left} (the mail is
ended here, so the manager needs no ids).

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
-- The end of an incarnation's mailbox keys: its 8 head bytes in hex, then the id.
local function tail_of(inc, id)
  return string.format('%02x%02x%02x%02x%02x%02x%02x%02x', string.byte(inc, 1, 8)) .. ':' .. id
end
-- End incarnation inc's mail: wake its receivers with the reason, drop its lanes.
-- filed: whether the id is in the bucket's mailed set (nil: look it up here).
local function ending(prefix, inc, id, reason, filed)
  local tail = tail_of(inc, id)
  if reason == 'cancelled' then
    redis.call('SET', prefix .. 'mc:' .. tail, '1', 'PX', 60000)
  end
  if filed == nil then filed = redis.call('SREM', prefix .. 'mailed', id) == 1
  elseif filed then redis.call('SREM', prefix .. 'mailed', id) end
  if not filed then return end  -- nothing ever created a mail key for it
  local mp, mn, q = prefix .. 'mp:' .. tail, prefix .. 'mn:' .. tail, prefix .. 'mq:' .. tail
  local waiting = math.min(tonumber(redis.call('GET', q) or '0') or 0, 10000)
  if waiting > 0 then
    local w = prefix .. 'mw:' .. tail
    for _ = 1, waiting do redis.call('RPUSH', w, reason) end
    redis.call('PEXPIRE', w, 60000)
  end
  redis.call('DEL', mp, mn, q)
end
-- The proof in a head: the first 8 hex digits of the SHA-1 of the id, the head's
-- fields, the blob's length and its first 64 bytes (see the module docstring).
local function proof_of(id, fields, size, start)
  return string.sub(redis.sha1hex(id .. fields .. string.format('%08x', size) .. start), 1, 8)
end
-- (incarnation, deadline) from the head of the record stored for id at key, if it is
-- one torpor wrote there; nil otherwise.  Reads 98 bytes, never the whole blob.
local function proved(key, id)
  local s = redis.pcall('GETRANGE', key, 0, 97)
  if type(s) ~= 'string' or #s < 35 or string.sub(s, 1, 2) ~= 't2' then return nil end
  local size = redis.call('STRLEN', key) - 34
  if proof_of(id, string.sub(s, 1, 26), size, string.sub(s, 35)) ~= string.sub(s, 27, 34) then
    return nil
  end
  return string.sub(s, 3, 10), struct.unpack('>i8', string.sub(s, 19, 26))
end
-- Run command name on key with the members of list, at most 1,000 a call (Lua's
-- stack holds 8,000 arguments).
local function each_chunk(name, key, list)
  for i = 1, #list, 1000 do
    local j = math.min(i + 999, #list)
    if key then
      redis.call(name, key, unpack(list, i, j))
    else
      redis.call(name, unpack(list, i, j))
    end
  end
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
local removed = 0
for i = 1, n do
  local a = 3 + (i - 1) * F
  local id, key = ARGV[a + 1], KEYS[6 + i]
  local head = read(key) and redis.pcall('GETRANGE', key, 0, 9)
  if type(head) ~= 'string' then head = '' end
  local held_inc = nil
  if #head == 10 and string.sub(head, 1, 2) == 't2' then held_inc = string.sub(head, 3, 10) end
  if ARGV[a + 3] == 'S' then
    local blob, inc, entries = ARGV[a + 4], ARGV[a + 7], ARGV[a + 9]
    if held_inc and held_inc ~= inc then
      ending(prefix, held_inc, id, 'replaced')
      unindex(prefix, KEYS[4], id)
    end
    local fields = 't2' .. inc .. ARGV[a + 8]
    redis.call('SET', key, fields .. proof_of(id, fields, #blob, string.sub(blob, 1, 64)) .. blob)
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
    if held_inc then ending(prefix, held_inc, id, ARGV[a + 10]) end
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
    _HELPERS
    + """
local limit = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0, limit)
local out, unproved = {''}, {}
if #members >= limit then out[1] = members[#members] end
for _, member in ipairs(members) do
  local key = ARGV[3] .. member
  local inc, deadline = proved(key, member)
  if inc then
    if deadline >= now then out[#out + 1] = member end
  else
    -- Written by something else, or a head that does not prove its record: the
    -- caller decides as the manager would.
    local value = read(key)
    if value and value ~= '' then
      unproved[#unproved + 1] = member
      unproved[#unproved + 1] = value
    end
  end
end
out[#out + 1] = ''
for _, item in ipairs(unproved) do out[#out + 1] = item end
return out
"""
)

_EXPIRE = (
    _HELPERS
    + """
local prefix, now = ARGV[1], tonumber(ARGV[2])
local members = redis.call('ZRANGE', KEYS[3], '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[3]) + tonumber(ARGV[4]))
local damaged, done, due, incs, records = {}, {}, {}, {}, {}
for _, id in ipairs(members) do
  local key = prefix .. 'r:' .. id
  local inc, deadline = proved(key, id)
  if inc and deadline < now then
    due[#due + 1] = id
    incs[#due] = inc
    records[#due] = key
  elseif inc then
    -- The index is behind its record (a foreign write into exp): the record is right.
    redis.call('ZADD', KEYS[3], deadline, id)
  elseif redis.call('EXISTS', key) == 0 then
    done[#done + 1] = id  -- the index entries of a record that is gone
  else
    damaged[#damaged + 1] = id  -- not a record torpor wrote here
  end
end
-- Whole-batch commands where one per record would do: a call from Lua costs about
-- half a microsecond, as much as most of what they do.
if #due > 0 then
  local mailed = prefix .. 'mailed'
  for i = 1, #due, 1000 do
    local filed = redis.call('SMISMEMBER', mailed, unpack(due, i, math.min(i + 999, #due)))
    for j, f in ipairs(filed) do
      if f == 1 then ending(prefix, incs[i + j - 1], due[i + j - 1], 'expired', true) end
    end
  end
  each_chunk('DEL', nil, records)
  for _, id in ipairs(due) do done[#done + 1] = id end
end
if #done > 0 then
  if redis.call('EXISTS', KEYS[4]) == 1 then
    for _, id in ipairs(done) do unindex(prefix, KEYS[4], id) end
  end
  each_chunk('ZREM', KEYS[1], done)
  each_chunk('ZREM', KEYS[2], done)
  each_chunk('ZREM', KEYS[3], done)
end
local out = {#members, #due}
for _, id in ipairs(damaged) do out[#out + 1] = id end
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
  if type(head) == 'string' and string.sub(head, 1, 2) == 't2'
      and string.sub(head, 3, 18) == seen then
    unindex(prefix, KEYS[1], id)
    index(prefix, KEYS[1], id, ARGV[i + 2])
  end
end
return {1}
"""
)

_READ = "flags = {'no-writes'}, "
_VERSION = 8
_BODIES: dict[str, tuple[str, str]] = {
    "commit": (_COMMIT, ""),
    "remove": (_COMMIT, "flags = {'allow-oom'}, "),  # commits of removals only
    "page": (_PAGE, _READ),
    "page_ids": (_PAGE_IDS, _READ),
    "find": (_FIND, _READ),
    "reindex": (_REINDEX, ""),
    "expire": (_EXPIRE, "flags = {'allow-oom'}, "),  # removals: how a full server empties
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
