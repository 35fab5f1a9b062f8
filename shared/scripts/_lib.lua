-- Helpers prepended to every transition script by shared/redis.py (Lua has no includes).
-- Naming: `index_prefix .. status` is the index ZSET of one status, `ready_prefix .. lane ..
-- ':' .. priority` a ready LIST, `wake_prefix .. lane` a wake-token LIST. The prefixes come
-- from shared/keys.py through ARGV and share the queue's hash tag, so every key stays in the
-- queue's slot.

-- Move one task between statuses: index sets, counters and the status field, together.
local function move_status(task_key, index_prefix, counts_key, id, from, to)
  local created = redis.call('HGET', task_key, 'created')
  redis.call('ZREM', index_prefix .. from, id)
  redis.call('ZADD', index_prefix .. to, created, id)
  redis.call('HINCRBY', counts_key, from, -1)
  redis.call('HINCRBY', counts_key, to, 1)
  redis.call('HSET', task_key, 'status', to)
end

-- Append an event to the task's history and publish it on task_events (SPEC section 6).
local function emit(events_key, channel, event)
  local encoded = cjson.encode(event)
  redis.call('RPUSH', events_key, encoded)
  redis.call('PUBLISH', channel, encoded)
end

-- Put a task id on its ready list and leave a wake token for a sleeping consumer.
local function make_ready(task_key, ready_prefix, wake_prefix, id, at_front)
  local lane = redis.call('HGET', task_key, 'lane')
  local list = ready_prefix .. lane .. ':' .. redis.call('HGET', task_key, 'priority')
  if at_front then redis.call('LPUSH', list, id) else redis.call('RPUSH', list, id) end
  redis.call('LPUSH', wake_prefix .. lane, '1')
  redis.call('LTRIM', wake_prefix .. lane, 0, 31)
end

-- Add to the delayed ZSET; tell the scheduler when this is now the earliest due time.
local function add_delayed(delayed_key, wake_channel, due_ms, id)
  local head = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
  redis.call('ZADD', delayed_key, due_ms, id)
  if head[2] == nil or tonumber(due_ms) < tonumber(head[2]) then
    redis.call('PUBLISH', wake_channel, due_ms)
  end
end

-- Queue a completion webhook (SPEC section 5) when the task has a webhook URL.
local function queue_webhook(task_key, outbox_key, delivery_prefix, wake_prefix, delivery_id, id, event_name, now)
  local url = redis.call('HGET', task_key, 'webhook')
  if not url or url == '' then return end
  redis.call('HSET', delivery_prefix .. delivery_id, 'task_id', id, 'event', event_name, 'url', url, 'attempt', 0, 'created', now)
  redis.call('ZADD', outbox_key, now, delivery_id)
  -- Its own wake list: a token on wake:notify would be eaten by the notifier's task claim loop.
  redis.call('LPUSH', wake_prefix .. 'outbox', '1')
  redis.call('LTRIM', wake_prefix .. 'outbox', 0, 31)
end

-- Count a final outcome in the per-second throughput histogram the dashboard charts.
local function count_throughput(tp_key, tp_field)
  redis.call('HINCRBY', tp_key, tp_field, 1)
  redis.call('EXPIRE', tp_key, 3600)
end
