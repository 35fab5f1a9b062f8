-- Helpers prepended to every transition script by shared/redis.py (Lua has no includes).
-- Naming: `index_prefix .. status` is the index ZSET of one status, `ready_prefix .. lane ..
-- ':' .. priority` a ready LIST, `wake_prefix .. lane` a wake-token LIST. The prefixes come
-- from shared/keys.py through ARGV (scripts that can make a task ready get them all at once
-- as `L`, the decoded Keys.layout) and share the queue's hash tag, so every key stays in the
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

-- pending -> processing for one record, claimed by consumer `owner` (shown as `worker`).
-- `created` and `attempt` are the record's raw fields. A hand-edited record (a non-numeric
-- 'created' or 'attempt', an events key that is not a LIST) would make the script fail
-- half-way and strand ids already taken: what the scripts need is repaired and the record
-- marked 'corrupt', so the consumer fails it clearly. Returns the record (HGETALL) and its
-- created ms; the caller books the claim with note_claims. A task promoted ahead of its due
-- time (SCHEDULE_LEAD_SECONDS) is started by its consumer at that time, so that is its
-- 'started'.
local function claim_record(key, id, now, worker, owner, channel, created, attempt, run_at)
  if created and not string.match(created, '^%d+$') then
    created = now
    redis.call('HSET', key, 'created', now, 'corrupt', 'created')
  end
  if attempt and not string.match(attempt, '^%d+$') then
    attempt = '0'
    redis.call('HSET', key, 'corrupt', 'attempt')
  end
  local n = (tonumber(attempt) or 0) + 1
  local started = now
  if tonumber(run_at) and tonumber(run_at) > tonumber(now) then started = run_at end
  redis.call('HSET', key, 'status', 'processing', 'attempt', n, 'started', started,
    'updated', now, 'worker', worker, 'owner', owner)
  local event = cjson.encode({event = 'task.claimed', task_id = id, status = 'processing',
    attempt = n, worker = worker, at_ms = tonumber(now)})
  -- pcall: an events key that is not a LIST is replaced, not a script error half-way.
  local pushed = redis.pcall('RPUSH', key .. ':events', event)
  if type(pushed) == 'table' and pushed.err then
    redis.call('DEL', key .. ':events')
    redis.call('HSET', key, 'corrupt', 'events')
    redis.call('RPUSH', key .. ':events', event)
  end
  redis.call('PUBLISH', channel, event)
  return redis.call('HGETALL', key), created or now
end

-- Book claims of one consumer: status index, lease deadlines, its held set and the counters,
-- one command each for the whole batch. by_created and leased are flat {score, id, ...}.
local function note_claims(L, owner, ids, by_created, leased)
  local n = #ids
  redis.call('ZREM', L.index .. 'pending', unpack(ids))
  redis.call('ZADD', L.index .. 'processing', unpack(by_created))
  redis.call('ZADD', L.leases, unpack(leased))
  redis.call('SADD', L.held .. owner, unpack(ids))
  redis.call('HINCRBY', L.counts, 'pending', -n)
  redis.call('HINCRBY', L.counts, 'processing', n)
end

-- Hand a pending task straight to a consumer that offered an idle slot: claimed for it and
-- pushed to its inbox, which it BLPOPs, so the task starts one round trip after this script
-- instead of a wake-up plus a claim. Offers exist only while the lane's ready lists are
-- empty (claim.lua offers what it could not fill), so this never jumps a queue.
-- Returns false when no consumer waits. An offer without its HASH entry belongs to a
-- consumer that withdrew or was declared dead: it is dropped.
local function hand_over(L, key, id, lane, now)
  local idle, offers = L.wake .. lane .. ':idle', L.wake .. lane .. ':offers'
  while true do
    local owner = redis.call('LPOP', idle)
    if not owner then return false end
    local offer = redis.call('HGET', offers, owner)
    if offer then
      local sep = string.find(offer, '|', 1, true)
      local lease_ms, worker = tonumber(string.sub(offer, 1, sep - 1)), string.sub(offer, sep + 1)
      local f = redis.call('HMGET', key, 'created', 'attempt', 'run_at')
      local record, created = claim_record(key, id, now, worker, owner, L.channel, f[1], f[2],
        f[3])
      note_claims(L, owner, {id}, {created, id}, {tonumber(now) + lease_ms, id})
      redis.call('RPUSH', L.wake .. 'inbox:' .. owner, cjson.encode(record))
      return true
    end
  end
end

-- A task that just became pending (its status, index and counters already say so): hand it
-- to an idle consumer, or put it on its ready list (at the front to keep its place).
-- Callers emit their own event first, so the history reads in order.
local function make_ready(L, task_key, id, at_front, now)
  local f = redis.call('HMGET', task_key, 'lane', 'priority')
  if hand_over(L, task_key, id, f[1], now) then return end
  local list = L.ready .. f[1] .. ':' .. f[2]
  if at_front then redis.call('LPUSH', list, id) else redis.call('RPUSH', list, id) end
end

-- make_ready for several tasks that just became pending, in their order: handed over while
-- their lane has offers (once a lane has none, it has none for the rest of the script), the
-- rest appended to their ready lists with one RPUSH per list. tasks: {{id, lane, priority}, ...}.
local function make_ready_many(L, tasks, now)
  local no_offer, ready, lists = {}, {}, {}
  for _, t in ipairs(tasks) do
    local id, lane, priority = t[1], t[2], t[3]
    if no_offer[lane] or not hand_over(L, L.task .. id, id, lane, now) then
      no_offer[lane] = true
      local list = L.ready .. lane .. ':' .. priority
      if not ready[list] then
        ready[list] = {}
        lists[#lists + 1] = list
      end
      table.insert(ready[list], id)
    end
  end
  for _, list in ipairs(lists) do redis.call('RPUSH', list, unpack(ready[list])) end
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
