-- requeue: processing -> pending, handing a task back (SIGTERM drain) without spending budget.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:leases          ZSET
-- ARGV[1] -> task id   ARGV[2] -> claim token the caller holds   ARGV[3] -> now (ms)
-- ARGV[4] -> reason
--
-- Returns {'ok'} | {'missing'} | {'stale', status} | {'cancel_requested'} (nothing written:
-- its cancel was asked for, so the caller ends it with fail.lua, mode 'cancelled').
-- Side effects: LPUSH to the front of its ready list so it keeps its place (or a hand-over
-- to an idle consumer); when the queue has a max_concurrency it was at, a 'slot' message on
-- the queue control channel (announce_slots in _lib.lua).
local Q = queue_keys(KEYS[1])
local id, now = ARGV[1], ARGV[3]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
local held = redis.call('HMGET', KEYS[1], 'attempt', 'token', 'cancel_requested')
if status ~= 'processing' or held[2] ~= ARGV[2] then return {'stale', status} end
if held[3] == '1' then return {'cancel_requested'} end
local owner = redis.call('HGET', KEYS[1], 'owner')
announce_slots(Q)  -- its processing count still holds this task
redis.call('ZREM', KEYS[4], id)
if owner then redis.call('SREM', Q:held(owner), id) end
-- The next run reports its own progress.
redis.call('HDEL', KEYS[1], 'owner', 'progress', 'progress_message')
redis.call('HSET', KEYS[1], 'updated', now)
move_status(Q, id, 'processing', 'pending')
emit(Q, id, {event = 'task.requeued', task_id = id, status = 'pending',
  attempt = tonumber(held[1]), error = ARGV[4], at_ms = tonumber(now)})
make_ready(Q, id, true, now)
return {'ok'}
