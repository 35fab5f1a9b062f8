-- Helpers prepended to every transition script by shared/redis.py (Lua has no includes).
-- Naming: `index_prefix .. status` is the index ZSET of one status, `ready_prefix .. lane ..
-- ':' .. priority` a ready LIST, `wake_prefix .. lane` a wake-token LIST. The prefixes come
-- from shared/keys.py through ARGV (scripts that can make a task ready get them all at once
-- as `L`, the decoded Keys.layout) and share the queue's hash tag, so every key stays in the
-- queue's slot.

-- The server's clock in epoch ms. Liveness (lease deadlines, heartbeats) is stamped and
-- judged with this one clock, never a caller's, so a host whose clock is off neither loses
-- its tasks to recovery nor keeps a dead consumer's (issue: each host's clock decided).
-- Read once per script call: Redis runs a script as one instant (keys expire by the time
-- it started), and a TIME per claimed task cost Redis CPU in every drain.
local script_clock = nil
local function server_clock()
  if not script_clock then script_clock = redis.call('TIME') end
  return script_clock
end

local function server_ms()
  local t = server_clock()
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A fencing token for one claim: the attempt number and the server's clock in microseconds.
-- An outcome must quote it: after a failover or power loss an attempt number can repeat
-- (the new primary never saw the last claim), this token does not.
local token_suffix = nil
local function claim_token(attempt)
  if not token_suffix then
    local t = server_clock()
    token_suffix = '.' .. t[1] .. string.format('%06d', tonumber(t[2]))
  end
  return attempt .. token_suffix
end

-- Lua's unpack() fails past ~8,000 values, and Redis does not roll back a script that
-- fails half-way: every variadic call whose size a caller decides goes through this.
local VARIADIC_CHUNK = 1000
local function call_chunked(command, key, values)
  local n = #values
  for first = 1, n, VARIADIC_CHUNK do
    redis.call(command, key, unpack(values, first, math.min(first + VARIADIC_CHUNK - 1, n)))
  end
end

-- Queue controls (SPEC section 9): configure_queue.lua writes them to the queue's config
-- HASH (Keys.config: paused, rate_tasks, rate_seconds, rate_tat, max_concurrency), claim.lua
-- and hand_over enforce them where tasks start, and changes go out on this channel as JSON
-- {"queue", "event"}: shared/keys.py QUEUE_CONTROL_CHANNEL.
local QUEUE_CONTROL_CHANNEL = 'tq:queue_control'

-- Keys.config of a queue, from its task prefix (Keys.prefix .. 'task:'): every script that
-- needs it already gets that prefix, so its callers pass nothing new.
local function config_key(task_prefix)
  return string.sub(task_prefix, 1, -6) .. 'config'
end

-- Tell the consumers of a queue (its name is its hash tag) to claim it again. lane: the lane
-- concerned, or nil for every lane.
local function publish_control(task_prefix, event, lane)
  local queue = string.match(task_prefix, '{(.*)}')
  redis.call('PUBLISH', QUEUE_CONTROL_CHANNEL, cjson.encode({queue = queue, event = event,
    lane = lane}))
end

-- A config field as a positive finite number, or nil: an absent (or hand-broken) field
-- means no such control.
local function positive(value)
  local n = tonumber(value)
  if n and n > 0 and n < math.huge then return n end
  return nil
end

-- The queue's controls, read with one HMGET at most per script call and kept in L (each call
-- decodes its own layout), so the hand-overs of make_ready_many share one read.
-- The rate limit is a GCRA: each start moves the theoretical arrival time (tat) one interval
-- (rate_seconds / rate_tasks) on, and a start is allowed once tat is due: starts are spread
-- one per interval, so no window of rate_seconds, wherever it falls, holds more than
-- rate_tasks (a burst allowance would let a window after an idle spell hold nearly twice
-- that, which a provider counting its own windows would refuse). tat is never behind now.
local function controls(L)
  if L.controls then return L.controls end
  local key = config_key(L.task)
  local f = redis.call('HMGET', key, 'paused', 'rate_tasks', 'rate_seconds', 'rate_tat',
    'max_concurrency')
  local c = {key = key, paused = f[1] == '1', max = positive(f[5])}
  local tasks, seconds = positive(f[2]), positive(f[3])
  if tasks and seconds then
    c.now = server_ms()
    c.interval = seconds * 1000 / tasks
    c.window = c.interval  -- the burst allowance: one start
    local tat = tonumber(f[4])
    if tat and tat > c.now then c.tat = tat else c.tat = c.now end
  end
  L.controls = c
  return c
end

-- How many more of the queue's tasks may start now: {by the rate limit, by max_concurrency},
-- math.huge where none is set. The processing count (of both lanes) is read once per call.
local function start_room(c, counts_key)
  local by_rate, by_cap = math.huge, math.huge
  if c.interval then
    -- The epsilon keeps float error from losing a whole start (1000 / 3 ms intervals).
    by_rate = math.max(math.floor((c.now + c.window - c.tat) / c.interval + 1e-9), 0)
  end
  if c.max then
    c.processing = c.processing or tonumber(redis.call('HGET', counts_key, 'processing')) or 0
    by_cap = math.max(c.max - c.processing, 0)
  end
  return by_rate, by_cap
end

-- Book n starts against the controls: tat moves n intervals on (stored at full precision, as
-- the limiter's only state), the processing count kept here moves with note_claims' HINCRBY.
local function book_starts(c, n)
  if n < 1 then return end
  if c.interval then
    c.tat = c.tat + n * c.interval
    redis.call('HSET', c.key, 'rate_tat', string.format('%.17g', c.tat))
  end
  if c.processing then c.processing = c.processing + n end
end

-- The server time (ms) at which the rate limit allows the next start.
local function next_start_ms(c)
  return math.ceil(c.tat + c.interval - c.window)
end

-- Tasks of a queue stop processing; `before` is its processing count before they did (read
-- when nil). A queue that was at its max_concurrency has room again: consumers waiting for it
-- (claim.lua sent them away until much later) hear "slot" and claim again. One HGET of the
-- config when the queue has no cap.
local function announce_slots(task_prefix, counts_key, before)
  local max = positive(redis.call('HGET', config_key(task_prefix), 'max_concurrency'))
  if not max then return end
  before = before or tonumber(redis.call('HGET', counts_key, 'processing')) or 0
  if before >= max then publish_control(task_prefix, 'slot') end
end

-- A task's history keeps its newest MAX_EVENTS events (manual retries can add without end).
local MAX_EVENTS = 1000

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
  if redis.call('RPUSH', events_key, encoded) > MAX_EVENTS then
    redis.call('LTRIM', events_key, -MAX_EVENTS, -1)
  end
  redis.call('PUBLISH', channel, encoded)
end

-- pending -> processing for one record, claimed by consumer `owner` (shown as `worker`).
-- `created` and `attempt` are the record's raw fields. A hand-edited record (a non-numeric
-- 'created' or 'attempt', an events key that is not a LIST) would make the script fail
-- half-way and strand ids already taken: what the scripts need is repaired and the record
-- marked 'corrupt', so the consumer fails it clearly. Returns the record (HGETALL, with the
-- claim's fencing 'token') and its created ms; the caller books the claim with note_claims. A task promoted ahead of its due
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
  redis.call('HSET', key, 'status', 'processing', 'attempt', n, 'token', claim_token(n),
    'started', started, 'updated', now, 'worker', worker, 'owner', owner)
  local event = cjson.encode({event = 'task.claimed', task_id = id, status = 'processing',
    attempt = n, worker = worker, at_ms = tonumber(now)})
  -- pcall: an events key that is not a LIST is replaced, not a script error half-way.
  local pushed = redis.pcall('RPUSH', key .. ':events', event)
  if type(pushed) == 'table' and pushed.err then
    redis.call('DEL', key .. ':events')
    redis.call('HSET', key, 'corrupt', 'events')
    redis.call('RPUSH', key .. ':events', event)
  elseif pushed > MAX_EVENTS then
    redis.call('LTRIM', key .. ':events', -MAX_EVENTS, -1)
  end
  redis.call('PUBLISH', channel, event)
  return redis.call('HGETALL', key), created or now
end

-- Book claims of one consumer: status index, lease deadlines, its held set and the counters,
-- one command each for the whole batch. by_created and leased are flat {score, id, ...}.
local function note_claims(L, owner, ids, by_created, leased)
  local n = #ids
  call_chunked('ZREM', L.index .. 'pending', ids)
  call_chunked('ZADD', L.index .. 'processing', by_created)
  call_chunked('ZADD', L.leases, leased)
  call_chunked('SADD', L.held .. owner, ids)
  redis.call('HINCRBY', L.counts, 'pending', -n)
  redis.call('HINCRBY', L.counts, 'processing', n)
end

-- Hand a pending task straight to a consumer that offered an idle slot: claimed for it and
-- pushed to its inbox, which it BLPOPs, so the task starts one round trip after this script
-- instead of a wake-up plus a claim. Offers exist only while the lane's ready lists are
-- empty (claim.lua offers what it could not fill), so this never jumps a queue.
-- Returns false when no consumer waits. An offer without its HASH entry belongs to a
-- consumer that withdrew or was declared dead: it is dropped.
-- The queue's controls hold as in claim.lua: no hand-over while it is paused, without a rate
-- token (a hand-over takes one) or at its max_concurrency. They are read only once an offer
-- is found, so a script that finds nobody idle (the busy case) pays nothing for them.
local function hand_over(L, key, id, lane, now)
  local idle, offers = L.wake .. lane .. ':idle', L.wake .. lane .. ':offers'
  while true do
    local owner = redis.call('LPOP', idle)
    if not owner then return false end
    local offer = redis.call('HGET', offers, owner)
    if offer then
      local c = controls(L)
      if c.paused or c.interval or c.max then
        local by_rate, by_cap = start_room(c, L.counts)
        if c.paused or by_rate < 1 or by_cap < 1 then
          -- The task goes to its ready list. The lane's offers (this one included) are
          -- withdrawn, or they would take a later task ahead of it once there is room again;
          -- their consumers hear 'offers' and claim, which re-syncs them and says when to
          -- come back.
          redis.call('DEL', idle)
          publish_control(L.task, 'offers', lane)
          return false
        end
      end
      local sep = string.find(offer, '|', 1, true)
      local lease_ms, worker = tonumber(string.sub(offer, 1, sep - 1)), string.sub(offer, sep + 1)
      local f = redis.call('HMGET', key, 'created', 'attempt', 'run_at')
      local record, created = claim_record(key, id, now, worker, owner, L.channel, f[1], f[2],
        f[3])
      note_claims(L, owner, {id}, {created, id}, {server_ms() + lease_ms, id})
      book_starts(c, 1)
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
-- their lane has offers (once a lane has none, it has none for the rest of the script; nor
-- does a queue's limit that held one back let a later one through), the rest appended to
-- their ready lists with one RPUSH per list. tasks: {{id, lane, priority}, ...}.
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
  for _, list in ipairs(lists) do call_chunked('RPUSH', list, ready[list]) end
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
