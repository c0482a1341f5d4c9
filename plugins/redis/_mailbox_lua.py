"""The mailbox's server-side steps (merged into the library of ``_scripts.py``).

Every step takes its keys as KEYS, all in the bucket of one session (one slot), and
first checks the incarnation: KEYS[1] is the session's record, whose head (see
``_scripts.py``) holds its incarnation in 8 bytes, and a step is for incarnation ``I``
only if those bytes are ``I``'s (ARGV[2]).  Mail keys carry the incarnation
in their name, and the commit script deletes them in the step that ends it, so a list
that exists belongs to a live incarnation.

Whatever creates a mail key (a send, a receiver joining ``mq``) also files the id in
the bucket's ``mailed`` set, so that ending a session without mail (the common case)
costs one set lookup: see ``ending`` in ``_scripts.py``.

``send``: KEYS the record, the lane (``mp`` or ``mn``), the send's token key, mailed;
ARGV id, incarnation, message.  Returns 1 once appended, 0 (nothing appended) if the
incarnation is not stored.  The token key keeps the answer for a minute: a send that
redis-py resends after a lost reply gets the first answer instead of queueing the
message twice.

``take``: KEYS the record, mp, mn, mq, mc, mailed; ARGV id, incarnation, count, mode,
count TTL (ms).
Pops up to ``count`` messages, priority lane first, each lane FIFO.  Returns
``{status, p, m1, m2, ...}``: status 1 alive, 0 gone, 2 gone and cancelled (``mc``
set); the first ``p`` messages came from the priority lane.  ``mode`` says what to do
with the receiver's registration in ``mq`` (the count of receivers blocked on the
incarnation, read by the commit script to know how many wake-ups to push):

``n``  nothing (a receive that does not wait)
``j``  nothing taken: join (INCR), with the TTL
``r``  the receiver is registered: nothing taken, refresh the TTL (join again if the
       count vanished meanwhile); something taken, leave (DECR)
``l``  the receiver is registered and leaves (DECR), whatever was taken

A gone incarnation's ``mq`` is already deleted (by the commit script), so a gone
status leaves nothing to undo.

``leave``: KEYS mq.  DECR, deleting the count at 0; nothing if the count is gone (an
ended incarnation, or a TTL that lapsed): a DECR must never create a key.

``pending``: KEYS the record, mp, mn; ARGV id, incarnation.  LLEN of both lanes, 0 if gone.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BODIES"]

# The incarnation check opens every step: `v` is the stored value, or false.
_ALIVE = """
local head = redis.pcall('GETRANGE', KEYS[1], 0, 9)
local alive = type(head) == 'string' and #head == 10 and string.sub(head, 1, 2) == 't2'
  and string.sub(head, 3) == ARGV[2]
"""

_SEND = (
    _ALIVE
    + """
local done = redis.call('GET', KEYS[3])
if done then return tonumber(done) end
local sent = 0
if alive then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[1])
  sent = 1
end
redis.call('SET', KEYS[3], sent, 'PX', 60000)
return sent
"""
)

_TAKE = (
    _ALIVE
    + """
if not alive then
  if redis.call('EXISTS', KEYS[5]) == 1 then return {2, 0} end
  return {0, 0}
end
local out = {1, 0}
local want = tonumber(ARGV[3])
if want > 0 then
  local got = redis.call('LPOP', KEYS[2], want)
  if got then
    for _, m in ipairs(got) do out[#out + 1] = m end
    want = want - #got
  end
  out[2] = #out - 2
  if want > 0 then
    got = redis.call('LPOP', KEYS[3], want)
    if got then
      for _, m in ipairs(got) do out[#out + 1] = m end
    end
  end
end
local mode = ARGV[4]
local taken = #out - 2
if mode == 'l' or (mode == 'r' and taken > 0) then
  if redis.call('EXISTS', KEYS[4]) == 1 and redis.call('DECR', KEYS[4]) <= 0 then
    redis.call('DEL', KEYS[4])
  end
elseif taken == 0 and (mode == 'j' or mode == 'r') then
  if mode == 'j' or redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('INCR', KEYS[4])
    redis.call('SADD', KEYS[6], ARGV[1])
  end
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
return out
"""
)

_LEAVE = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECR', KEYS[1]) <= 0 then
  redis.call('DEL', KEYS[1])
end
return 1
"""

_PENDING = (
    _ALIVE
    + """
if not alive then return 0 end
return redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
"""
)

_NO_WRITES: Final = "flags = {'no-writes'}, "
# A server out of memory refuses a function that may write unless it allows OOM; a
# receive frees memory (its count in mq is a few bytes), so it must go on working.
_ALLOW_OOM: Final = "flags = {'allow-oom'}, "

BODIES: dict[str, tuple[str, str]] = {
    "send": (_SEND, ""),
    "take": (_TAKE, _ALLOW_OOM),
    "leave": (_LEAVE, _ALLOW_OOM),
    "pending": (_PENDING, _NO_WRITES),
}
"""Step name -> (Lua body seeing KEYS and ARGV, FUNCTION flags), as ``_scripts.py``."""
