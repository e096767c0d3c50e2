"""How a run queue is laid out in Redis: stream keys, entry fields, the consumer group, and the
Lua scripts that read and measure a queue's priority bands in one round trip."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler_infrastructure.queues.priorities import PRIORITIES

#: Errors that mean "Redis cannot be reached right now" (translated to ``Unavailable``).
DRIVER_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
GROUP = "workers"
PAYLOAD = b"m"
#: On an entry added again by ``nack(requeue=True)``: how often it was delivered before.
PRIOR_DELIVERIES = b"d"
#: The run's W3C trace context, beside the payload (which carries it too).
TRACEPARENT = b"traceparent"


def band_key(prefix: str, queue: str, priority: int) -> str:
    return f"{prefix}:{queue}:p{priority}"


def band_keys(prefix: str, queue: str) -> list[str]:
    """The queue's streams, highest priority first."""
    return [band_key(prefix, queue, priority) for priority in PRIORITIES]


def dead_letter_key(prefix: str, queue: str) -> str:
    return f"{prefix}:{queue}:dead"


# KEYS: band streams, highest priority first. ARGV: group, consumer, how many.
# Returns {band index, entry id, {field, value, ...}} in delivery order.
READ_BY_PRIORITY = """
local wanted = tonumber(ARGV[3])
local found = {}
for index, key in ipairs(KEYS) do
  if wanted <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', wanted,
                           'STREAMS', key, '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      found[#found + 1] = {index - 1, entry[1], entry[2]}
    end
    wanted = wanted - #reply[1][2]
  end
end
return found
"""
# KEYS: band streams. ARGV: group. Entries not yet delivered: length minus pending.
DEPTH = """
local total = 0
for _, key in ipairs(KEYS) do
  local length = redis.call('XLEN', key)
  if length > 0 then
    local summary = redis.pcall('XPENDING', key, ARGV[1])
    if type(summary) == 'table' and summary.err == nil then
      length = length - summary[1]
    end
  end
  total = total + length
end
return total
"""
# KEYS: band streams. ARGV: group, consumer. Forget the consumer where it holds nothing.
FORGET_CONSUMER = """
for _, key in ipairs(KEYS) do
  local held = redis.pcall('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2])
  if type(held) == 'table' and held.err == nil and #held == 0 then
    redis.pcall('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
  end
end
return 0
"""

# KEYS: band streams, then the dead-letter stream. Delete them all when every one is empty (an
# acked entry is deleted, so a stream's length counts the entries delivered and not yet acked
# too); 1 when they are gone, 0 when they were kept.
DELETE_IF_EMPTY = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('XLEN', key) > 0 then
    return 0
  end
end
redis.call('DEL', unpack(KEYS))
return 1
"""


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def id_order(entry_id: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition(b"-")
    return int(milliseconds), int(sequence or 0)
