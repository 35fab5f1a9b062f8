-- Helpers prepended to every transition script by shared/redis.py (Lua has no includes).

-- The key contract. Every key and channel a script names is built here, from the queue's
-- prefix, exactly as shared/keys.py builds it (tests/unit/test_key_contract.py runs both on a
-- real Redis and compares them). A script's KEYS[1] is always a key of its queue: queue_keys
-- takes the prefix from it, so every key a script builds carries that key's hash tag and
-- lives in the same Redis Cluster slot. KEYS declare the fixed keys a script touches; the
-- keys it learns while it runs (a popped task id's record, a consumer's inbox) are built here.
local EVENTS_CHANNEL = 'task_events'  -- keys.EVENTS_CHANNEL (SPEC section 6)
local QUEUE_CONTROL_CHANNEL = 'tq:queue_control'  -- keys.QUEUE_CONTROL_CHANNEL
local SCHEDULER_WAKE_CHANNEL = 'tq:scheduler_wake'  -- keys.SCHEDULER_WAKE_CHANNEL
-- Where task events go (EVENTS_MODE): 'classic' PUBLISHes on task_events, 'sharded'
-- SPUBLISHes on the queue's own channel (Redis 7), 'both' does both. shared/redis.py sets it
-- as it loads the scripts, so choosing costs nothing per call and no script takes it as ARGV.
local EVENTS_MODE = 'classic'

-- (Plain tables, no metatables: a Redis Functions library has no setmetatable.)
local QueueKeys = {}

-- Key builders of a queue (Q:task(id), ...). Each takes the queue's table as `self`.
function QueueKeys:task(id) return self.prefix .. 'task:' .. id end
function QueueKeys:events(id) return self.prefix .. 'task:' .. id .. ':events' end
function QueueKeys:deliveries(id) return self.prefix .. 'task:' .. id .. ':deliveries' end
function QueueKeys:dependents(id) return self.prefix .. 'task:' .. id .. ':dependents' end
function QueueKeys:index(status) return self.prefix .. 'index:' .. status end
function QueueKeys:ready(lane, priority) return self.prefix .. 'ready:' .. lane .. ':' .. priority end
function QueueKeys:parked(lane, priority, task_type)
  return self.prefix .. 'parked:' .. lane .. ':' .. priority .. ':' .. task_type
end
function QueueKeys:wake(lane) return self.prefix .. 'wake:' .. lane end
function QueueKeys:idle(lane) return self.prefix .. 'wake:' .. lane .. ':idle' end
function QueueKeys:offers(lane) return self.prefix .. 'wake:' .. lane .. ':offers' end
function QueueKeys:inbox(owner) return self.prefix .. 'wake:inbox:' .. owner end
function QueueKeys:held(owner) return self.prefix .. 'held:' .. owner end
function QueueKeys:delivery(id) return self.prefix .. 'delivery:' .. id end
function QueueKeys:idempotency(key) return self.prefix .. 'idem:' .. key end
function QueueKeys:unique(key) return self.prefix .. 'unique:' .. key end
function QueueKeys:throughput(minute) return self.prefix .. 'tp:' .. minute end
function QueueKeys:schedule_fence(name) return self.prefix .. 'schedule:' .. name end

-- The keys of the queue `key` belongs to (its prefix is 'tq:{<queue>}:'), and its key
-- builders: a queue name has no '}'. Every script call starts here, so the table is made by
-- one constructor, sized once: filled field by field (the builders copied in a loop), it
-- was rehashed six times, about a twentieth of a one-task complete-and-claim's time.
-- Every QueueKeys builder is listed (tests/unit/test_key_contract.py checks).
local function queue_keys(key)
  local prefix = string.match(key, '^tq:{[^}]+}:')
  local K = QueueKeys
  return {
    prefix = prefix, queue = string.sub(prefix, 5, -3),
    counts = prefix .. 'counts', leases = prefix .. 'leases', delayed = prefix .. 'delayed',
    expiry = prefix .. 'expiry', outbox = prefix .. 'outbox', config = prefix .. 'config',
    index_all = prefix .. 'index:all', skips = prefix .. 'ready:skip',
    parked_lists = prefix .. 'parked', cascade = prefix .. 'cascade',
    metrics = prefix .. 'metrics', events_channel = prefix .. 'events',
    task = K.task, events = K.events, deliveries = K.deliveries, dependents = K.dependents,
    index = K.index, ready = K.ready, parked = K.parked, wake = K.wake, idle = K.idle,
    offers = K.offers, inbox = K.inbox, held = K.held, delivery = K.delivery,
    idempotency = K.idempotency, unique = K.unique, throughput = K.throughput,
    schedule_fence = K.schedule_fence,
    -- Per-call state, set as the script runs (nil here, named for the reader):
    -- controls, offer_cache, processing_owed, net_processing.
  }
end

-- The keys of the recurring schedules (SPEC section 12), from any one of them (a schedule
-- script's KEYS[1]): they share the hash tag '{_schedules}', no queue's (keys.SCHEDULES_*).
local function schedule_keys(key)
  local prefix = string.match(key, '^tq:{_schedules}:')
  return {prefix = prefix, due = prefix .. 'due', all = prefix .. 'all',
    schedule = function(name) return prefix .. 'schedule:' .. name end}
end

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

-- Integers as command arguments. redis.call writes a Lua number with a float printf
-- ('%.17g'), which cost a one-task complete-and-claim a dozen formattings, about 4% of its
-- time: small integers (counts, increments, attempts) are formatted once and kept, and a
-- script formats its clock's ms once (now_text). Larger values are not kept: the table
-- lives as long as the library.
local INT_TEXT = {}
local function int_text(n)
  local text = INT_TEXT[n]
  if text then return text end
  text = string.format('%d', n)
  if n >= -1024 and n <= 1024 then INT_TEXT[n] = text end
  return text
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

-- LMPOP (Redis 7) pops from the first non-empty list of several in one call; Redis 6.2, which
-- has no redis.REDIS_VERSION_NUM either, pops list by list. Asked at call time: a Functions
-- library is loaded in a sandbox that has no redis.REDIS_VERSION_NUM.
local function has_lmpop()
  return (redis.REDIS_VERSION_NUM or 0) >= 0x070000
end

-- Queue controls (SPEC section 9): configure_queue.lua writes them to the queue's config
-- HASH (paused, rate_tasks, rate_seconds, rate_tat, max_concurrency), claim.lua and
-- hand_over enforce them where tasks start, and changes go out on QUEUE_CONTROL_CHANNEL as
-- JSON {"queue", "event"}.

-- Tell the consumers of a queue to claim it again. lane: the lane concerned, or nil for
-- every lane.
local function publish_control(Q, event, lane)
  redis.call('PUBLISH', QUEUE_CONTROL_CHANNEL, cjson.encode({queue = Q.queue, event = event,
    lane = lane}))
end

-- A config field as a positive finite number, or nil: an absent (or hand-broken) field
-- means no such control.
local function positive(value)
  local n = tonumber(value)
  if n and n > 0 and n < math.huge then return n end
  return nil
end

-- The queue's controls, read with one HMGET at most per script call and kept in Q, so the
-- hand-overs of make_ready_many share one read.
-- The rate limit is a GCRA: each start moves the theoretical arrival time (tat) one interval
-- (rate_seconds / rate_tasks) on, and a start is allowed once tat is due: starts are spread
-- one per interval, so no window of rate_seconds, wherever it falls, holds more than
-- rate_tasks (a burst allowance would let a window after an idle spell hold nearly twice
-- that, which a provider counting its own windows would refuse). tat is never behind now.
local function controls(Q)
  if Q.controls then return Q.controls end
  local f = redis.call('HMGET', Q.config, 'paused', 'rate_tasks', 'rate_seconds', 'rate_tat',
    'max_concurrency')
  local c = {paused = f[1] == '1', max = positive(f[5])}
  local tasks, seconds = positive(f[2]), positive(f[3])
  if tasks and seconds then
    c.now = server_ms()
    c.interval = seconds * 1000 / tasks
    c.window = c.interval  -- the burst allowance: one start
    local tat = tonumber(f[4])
    if tat and tat > c.now then c.tat = tat else c.tat = c.now end
  end
  Q.controls = c
  return c
end

-- How many more of the queue's tasks may start now: {by the rate limit, by max_concurrency},
-- math.huge where none is set. The processing count (of both lanes) is read once per call.
local function start_room(Q, c)
  local by_rate, by_cap = math.huge, math.huge
  if c.interval then
    -- The epsilon keeps float error from losing a whole start (1000 / 3 ms intervals).
    by_rate = math.max(math.floor((c.now + c.window - c.tat) / c.interval + 1e-9), 0)
  end
  if c.max then
    c.processing = c.processing or tonumber(redis.call('HGET', Q.counts, 'processing')) or 0
    by_cap = math.max(c.max - c.processing, 0)
  end
  return by_rate, by_cap
end

-- Book n starts against the controls: tat moves n intervals on (stored at full precision, as
-- the limiter's only state), the processing count kept here moves with note_claims' HINCRBY.
local function book_starts(Q, c, n)
  if n < 1 then return end
  if c.interval then
    c.tat = c.tat + n * c.interval
    redis.call('HSET', Q.config, 'rate_tat', string.format('%.17g', c.tat))
  end
  if c.processing then c.processing = c.processing + n end
end

-- The server time (ms) at which the rate limit allows the next start.
local function next_start_ms(c)
  return math.ceil(c.tat + c.interval - c.window)
end

-- Tasks of a queue stop processing; `before` is its processing count before they did (read
-- when nil). A queue that was at its max_concurrency has room again: consumers waiting for it
-- (claim.lua sent them away until much later) hear "slot" and claim again. One HMGET of the
-- config (controls) when the queue has no cap.
local function announce_slots(Q, before)
  local max = controls(Q).max  -- the read a claim in the same call then reuses
  if not max then return end
  before = before or tonumber(redis.call('HGET', Q.counts, 'processing')) or 0
  if before >= max then publish_control(Q, 'slot') end
end

-- A task's history keeps its newest MAX_EVENTS events (manual retries can add without end).
local MAX_EVENTS = 1000

-- Move one task between statuses: index sets, counters and the status field, together.
local function move_status(Q, id, from, to)
  local task_key = Q:task(id)
  local created = redis.call('HGET', task_key, 'created')
  redis.call('ZREM', Q:index(from), id)
  redis.call('ZADD', Q:index(to), created, id)
  redis.call('HINCRBY', Q.counts, from, -1)
  redis.call('HINCRBY', Q.counts, to, 1)
  redis.call('HSET', task_key, 'status', to)
end

-- Unique tasks (SPEC section 10): Q:unique(key) names the task holding a unique_key while it
-- is not final. The id of a live holder other than `id`, else nil: an entry whose task is
-- final or gone (purged, deleted by hand) holds nothing.
local FINAL = {completed = true, failed = true, cancelled = true}
local function unique_holder(Q, key, id)
  local holder = redis.call('GET', Q:unique(key))
  if not holder or holder == id then return nil end
  local status = redis.call('HGET', Q:task(holder), 'status')
  if status and not FINAL[status] then return holder end
  return nil
end

-- A task holding `key` ended (or is deleted): the key is free for the next create.
local function release_unique(Q, id, key)
  if key and key ~= '' and redis.call('GET', Q:unique(key)) == id then
    redis.call('DEL', Q:unique(key))
  end
end

-- Whether retention must keep task `id` (it has dependents): one of them is not final, so it
-- still waits for it or will read its result when it runs (ctx.dependency_results).
local function still_awaited(Q, id)
  for _, dep in ipairs(redis.call('SMEMBERS', Q:dependents(id))) do
    local status = redis.call('HGET', Q:task(dep), 'status')
    if status and not FINAL[status] then return true end
  end
  return false
end

-- Delete a final task and everything that is its: the record, its history lists, its index
-- entries and expiry entry, and its unique_key if that still names it; the counters go down
-- with it, so stats keep adding up. Retention (purge_expired.lua) and a bulk purge
-- (purge.lua) both delete through here. Returns true and the status it had; false and the
-- status (nil when there is no record) with nothing written when it is not final.
-- A dependency that a task not final yet still needs is kept (SPEC section 11): false, its
-- status and 'awaited'.
local function purge_final(Q, id)
  local key = Q:task(id)
  local f = redis.call('HMGET', key, 'status', 'unique_key', 'has_dependents')
  local status = f[1]
  if not (status and FINAL[status]) then return false, status end
  if f[3] == '1' and still_awaited(Q, id) then return false, status, 'awaited' end
  release_unique(Q, id, f[2])  -- released when it ended; kept from ever dangling
  redis.call('DEL', key, Q:events(id), Q:deliveries(id), Q:dependents(id))
  redis.call('ZREM', Q.index_all, id)
  redis.call('ZREM', Q:index(status), id)
  redis.call('ZREM', Q.expiry, id)
  redis.call('HINCRBY', Q.counts, status, -1)
  redis.call('HINCRBY', Q.counts, 'total', -1)
  return true, status
end

-- Publish an encoded event where EVENTS_MODE says: task_events (SPEC section 6), which a
-- cluster forwards to every node, and/or the queue's sharded channel, which stays on the
-- queue's shard.
local function publish_event(Q, encoded)
  if EVENTS_MODE ~= 'sharded' then redis.call('PUBLISH', EVENTS_CHANNEL, encoded) end
  if EVENTS_MODE ~= 'classic' then redis.call('SPUBLISH', Q.events_channel, encoded) end
end

-- Append an event to the task's history and publish it (SPEC section 6).
local function emit(Q, id, event)
  local encoded = cjson.encode(event)
  if redis.call('RPUSH', Q:events(id), encoded) > MAX_EVENTS then
    redis.call('LTRIM', Q:events(id), -MAX_EVENTS, -1)
  end
  publish_event(Q, encoded)
end

-- How long before its scheduled_for a consumer waits for a task it claimed (its
-- MAX_EARLY_SECONDS): the scheduler promotes tasks SCHEDULE_LEAD_SECONDS early.
local MAX_EARLY_MS = 1000

-- pending -> processing for one record, claimed by consumer `owner` (shown as `worker`).
-- `created` and `attempt` are the record's raw fields. A hand-edited record (a non-numeric
-- 'created' or 'attempt', an events key that is not a LIST) would make the script fail
-- half-way and strand ids already taken: what the scripts need is repaired and the record
-- marked 'corrupt', so the consumer fails it clearly. Returns the record (HGETALL, with the
-- claim's fencing 'token') and its created ms; the caller books the claim with note_claims.
-- A task promoted ahead of its due time (SCHEDULE_LEAD_SECONDS) is started by its consumer
-- at that time, so that is its 'started'; one further ahead than MAX_EARLY_MS is not waited
-- for (a task retried by hand before its time, a skewed clock), so it starts now.
local function claim_record(Q, id, now, worker, owner, created, attempt, run_at)
  local key, events, now_text = Q:task(id), Q:events(id), int_text(tonumber(now))
  if created and not string.match(created, '^%d+$') then
    created = now_text
    redis.call('HSET', key, 'created', now_text, 'corrupt', 'created')
  end
  if attempt and not string.match(attempt, '^%d+$') then
    attempt = '0'
    redis.call('HSET', key, 'corrupt', 'attempt')
  end
  local n = (tonumber(attempt) or 0) + 1
  local started = now_text
  local early = (tonumber(run_at) or 0) - tonumber(now)
  if early > 0 and early <= MAX_EARLY_MS then started = run_at end
  local attempt_text = int_text(n)
  redis.call('HSET', key, 'status', 'processing', 'attempt', attempt_text, 'token',
    claim_token(attempt_text), 'started', started, 'updated', now_text, 'worker', worker,
    'owner', owner)
  local event = cjson.encode({event = 'task.claimed', task_id = id, status = 'processing',
    attempt = n, worker = worker, at_ms = tonumber(now)})
  -- pcall: an events key that is not a LIST is replaced, not a script error half-way.
  local pushed = redis.pcall('RPUSH', events, event)
  if type(pushed) == 'table' and pushed.err then
    redis.call('DEL', events)
    redis.call('HSET', key, 'corrupt', 'events')
    redis.call('RPUSH', events, event)
  elseif pushed > MAX_EVENTS then
    redis.call('LTRIM', events, -MAX_EVENTS, -1)
  end
  publish_event(Q, event)
  return redis.call('HGETALL', key), created or now_text
end

-- Book claims of one consumer: status index, lease deadlines, its held set and the counters,
-- one command each for the whole batch. by_created and leased are flat {score, id, ...}.
local function note_claims(Q, owner, ids, by_created, leased)
  local n = #ids
  call_chunked('ZREM', Q:index('pending'), ids)
  call_chunked('ZADD', Q:index('processing'), by_created)
  call_chunked('ZADD', Q.leases, leased)
  call_chunked('SADD', Q:held(owner), ids)
  redis.call('HINCRBY', Q.counts, 'pending', int_text(-n))
  local change = n + (Q.processing_owed or 0)
  Q.processing_owed = nil
  if change ~= 0 then redis.call('HINCRBY', Q.counts, 'processing', int_text(change)) end
end

-- The processing count's decrement that complete_runs left to the claim of the same call
-- (complete_claim.lua), written now if no claim took it up.
local function settle_processing(Q)
  local owed = Q.processing_owed
  Q.processing_owed = nil
  if owed and owed ~= 0 then redis.call('HINCRBY', Q.counts, 'processing', int_text(owed)) end
end

-- Which task types a consumer runs: a set from its comma-separated list (a type name has no
-- comma), the form claims and offers carry it in; '*' (no type's name) is every type.
local EVERY_TYPE = {}
local function type_set(list)
  if list == '*' then return EVERY_TYPE end
  local set = {}
  for name in string.gmatch(list, '[^,]+') do set[name] = true end
  return set
end

local function runs_type(set, task_type)
  return set == EVERY_TYPE or set[task_type] == true
end

-- An offer (the offers HASH value): "<lease ms>|<types it runs>|<worker name>", decoded once
-- per script call and owner.
local function offer_of(Q, lane, owner)
  Q.offer_cache = Q.offer_cache or {}
  local cached = Q.offer_cache[owner]
  if cached ~= nil then return cached end
  local raw = redis.call('HGET', Q:offers(lane), owner)
  local offer = false
  if raw then
    local a = string.find(raw, '|', 1, true)
    local b = string.find(raw, '|', a + 1, true)
    offer = {lease_ms = tonumber(string.sub(raw, 1, a - 1)),
      types = type_set(string.sub(raw, a + 1, b - 1)), worker = string.sub(raw, b + 1)}
  end
  Q.offer_cache[owner] = offer
  return offer
end

-- The first idle consumer of `lane` that runs `task_type`, taken off the idle list; nil when
-- none is. An owner that cannot run it keeps its offers (they are put back at the front, in
-- their order), and is passed over with one LREM for all its slots. An offer without its
-- HASH entry belongs to a consumer that withdrew or was declared dead: it is dropped.
local function take_offer(Q, lane, task_type)
  local idle = Q:idle(lane)
  local passed = {}
  local found
  while true do
    local owner = redis.call('LPOP', idle)
    if not owner then break end
    local offer = offer_of(Q, lane, owner)
    if offer then
      -- A record without a type is corrupt: any consumer takes it, to fail it clearly.
      if not task_type or task_type == '' or runs_type(offer.types, task_type) then
        found = {owner, offer}
        break
      end
      passed[#passed + 1] = {owner, 1 + redis.call('LREM', idle, 0, owner)}
    end
  end
  for i = #passed, 1, -1 do
    local slots = {}
    for j = 1, passed[i][2] do slots[j] = passed[i][1] end
    call_chunked('LPUSH', idle, slots)
  end
  if found then return found[1], found[2] end
  return nil, #passed > 0
end

-- Hand a pending task straight to a consumer that offered an idle slot: claimed for it and
-- pushed to its inbox, which it BLPOPs, so the task starts one round trip after this script
-- instead of a wake-up plus a claim. Offers exist only while the lane's ready lists are
-- empty (claim.lua offers what it could not fill), so this never jumps a queue; only a
-- consumer that runs the task's type takes it.
-- Returns true, or false and whether consumers that run other types still wait.
-- The queue's controls hold as in claim.lua: no hand-over while it is paused, without a rate
-- token (a hand-over takes one) or at its max_concurrency. They are read only once an offer
-- is found, so a script that finds nobody idle (the busy case) pays nothing for them.
local function hand_over(Q, id, lane, task_type, now)
  local owner, offer = take_offer(Q, lane, task_type)
  if not owner then return false, offer end
  local c = controls(Q)
  if c.paused or c.interval or c.max then
    local by_rate, by_cap = start_room(Q, c)
    if c.paused or by_rate < 1 or by_cap < 1 then
      -- The task goes to its ready list. The lane's offers (this one included) are
      -- withdrawn, or they would take a later task ahead of it once there is room again;
      -- their consumers hear 'offers' and claim, which re-syncs them and says when to
      -- come back.
      redis.call('DEL', Q:idle(lane))
      publish_control(Q, 'offers', lane)
      return false
    end
  end
  local f = redis.call('HMGET', Q:task(id), 'created', 'attempt', 'run_at')
  local record, created = claim_record(Q, id, now, offer.worker, owner, f[1], f[2], f[3])
  note_claims(Q, owner, {id}, {created, id}, {server_ms() + offer.lease_ms, id})
  book_starts(Q, c, 1)
  redis.call('RPUSH', Q:inbox(owner), cjson.encode(record))
  return true
end

-- A task cancelled while pending keeps its id in its ready or parked list (cancel.lua counts
-- it in the list's skips and names the list in the record's stale_in; a claim drops it when
-- it comes up). When that task is pending again and not handed over, the entry it left is
-- made live again instead of a second one pushed: of two entries of one task, a claim or a
-- park can take either first, and the skip then stays on a list that no longer holds the
-- stale one, so the ready depth (length - skips) drifts, below zero too. The entry keeps its
-- old place in its list.
local function revive(Q, id, list)
  if tonumber(redis.call('HGET', Q.skips, list) or 0) > 0 then
    redis.call('HINCRBY', Q.skips, list, -1)
  end
  redis.call('HDEL', Q:task(id), 'stale_in')
  if string.sub(list, #Q.prefix + 1, #Q.prefix + 7) == 'parked:' then
    redis.call('HSET', Q:task(id), 'parked', '1')  -- as claim.lua marks a parked task
  end
end

-- A task that just became pending (its status, index and counters already say so): hand it
-- to an idle consumer, or put it on its ready list (at the front to keep its place).
-- Callers emit their own event first, so the history reads in order.
local function make_ready(Q, id, at_front, now)
  local f = redis.call('HMGET', Q:task(id), 'lane', 'priority', 'type', 'stale_in')
  if hand_over(Q, id, f[1], f[3], now) then return end
  if f[4] then return revive(Q, id, f[4]) end
  local list = Q:ready(f[1], f[2])
  if at_front then redis.call('LPUSH', list, id) else redis.call('RPUSH', list, id) end
end

-- make_ready for several tasks that just became pending, in their order: handed over while
-- their lane has offers for their type (once a lane has none, or none for a type, it has none
-- for the rest of the script; nor does a queue's limit that held one back let a later one
-- through), the rest appended to their ready lists with one RPUSH per list (or, for one
-- cancelled while pending, its old entry revived).
-- tasks: {{id, lane, priority, type, stale_in}, ...}.
local function make_ready_many(Q, tasks, now)
  local no_offer, ready, lists = {}, {}, {}
  for _, t in ipairs(tasks) do
    local id, lane, priority, task_type = t[1], t[2], t[3], t[4] or ''
    local handed, others_idle = false, false
    if not (no_offer[lane] or no_offer[lane .. '|' .. task_type]) then
      handed, others_idle = hand_over(Q, id, lane, task_type, now)
      if not handed then
        if others_idle then no_offer[lane .. '|' .. task_type] = true else no_offer[lane] = true end
      end
    end
    if not handed and t[5] then
      revive(Q, id, t[5])
    elseif not handed then
      local list = Q:ready(lane, priority)
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
local function add_delayed(Q, due_ms, id)
  local head = redis.call('ZRANGE', Q.delayed, 0, 0, 'WITHSCORES')
  redis.call('ZADD', Q.delayed, due_ms, id)
  if head[2] == nil or tonumber(due_ms) < tonumber(head[2]) then
    redis.call('PUBLISH', SCHEDULER_WAKE_CHANNEL, due_ms)
  end
end

-- Workflows (SPEC section 11). A task created with depends_on waits in 'waiting' while its
-- record's deps_left (its dependencies not completed yet) is above 0. A dependency carries
-- the field has_dependents = '1' and the SET Q:dependents(id) of the tasks that name it, so
-- a task without dependents pays nothing when it ends: complete, fail and cancel read the
-- flag with the fields they read anyway, and only a flagged task looks at its SET.

-- A waiting task whose last dependency completed: pending (handed over or ready), or
-- scheduled when its scheduled_for has not come.
local function release_waiting(Q, id, now)
  local key = Q:task(id)
  local run_at = tonumber(redis.call('HGET', key, 'run_at')) or 0
  local to = 'pending'
  if run_at > tonumber(now) then to = 'scheduled' end
  move_status(Q, id, 'waiting', to)
  redis.call('HSET', key, 'updated', now)
  emit(Q, id, {event = 'task.released', task_id = id, status = to, at_ms = tonumber(now)})
  if to == 'scheduled' then add_delayed(Q, run_at, id) else make_ready(Q, id, false, now) end
end

-- Task `id` completed: each waiting dependent has one dependency less to wait for, and one
-- with none left is released. O(dependents). A dependent counted only the dependencies that
-- were not completed when it was created (or retried), and a task completes once.
local function release_dependents(Q, id, now)
  for _, dep in ipairs(redis.call('SMEMBERS', Q:dependents(id))) do
    local key = Q:task(dep)
    if redis.call('HGET', key, 'status') == 'waiting'
        and redis.call('HINCRBY', key, 'deps_left', -1) <= 0 then
      release_waiting(Q, dep, now)
    end
  end
end

-- Tasks one cascade call cancels at most: a script holds Redis while it runs.
local CASCADE_BUDGET = 1000

-- Task `id` (nil: none new) ended failed or cancelled: its waiting dependents end cancelled
-- with an error naming it, theirs in turn, and so on down the graph (breadth first). The ids
-- whose dependents are still to be seen wait in the Q.cascade LIST: one call cancels at most
-- CASCADE_BUDGET tasks, and the scheduler drains what is left with cascade.lua, so a graph
-- of any size is cancelled whole. A head that is no longer failed or cancelled (retried by
-- hand meanwhile) cancels nothing. Returns how many ids are left to do.
local function cascade(Q, id, now, purge_at)
  if id then redis.call('RPUSH', Q.cascade, id) end
  local budget = CASCADE_BUDGET
  while true do
    local head = redis.call('LINDEX', Q.cascade, 0)
    if not head then return 0 end
    local status = redis.call('HGET', Q:task(head), 'status')
    if status == 'failed' or status == 'cancelled' then
      local why = 'dependency ' .. head .. ' failed'
      if status == 'cancelled' then why = 'dependency ' .. head .. ' was cancelled' end
      for _, dep in ipairs(redis.call('SMEMBERS', Q:dependents(head))) do
        local key = Q:task(dep)
        local f = redis.call('HMGET', key, 'status', 'has_dependents', 'unique_key')
        if f[1] == 'waiting' then
          -- Out of budget: the head stays first in the list, its cancelled dependents are
          -- passed over next time.
          if budget == 0 then return redis.call('LLEN', Q.cascade) end
          budget = budget - 1
          move_status(Q, dep, 'waiting', 'cancelled')
          release_unique(Q, dep, f[3])
          redis.call('HSET', key, 'updated', now, 'error', why)
          redis.call('ZADD', Q.expiry, purge_at, dep)
          emit(Q, dep, {event = 'task.cancelled', task_id = dep, status = 'cancelled',
            error = why, at_ms = tonumber(now)})
          if f[2] == '1' then redis.call('RPUSH', Q.cascade, dep) end
        end
      end
    end
    redis.call('LPOP', Q.cascade)
  end
end

-- Queue a completion webhook (SPEC section 5) when the task has a webhook URL.
local function queue_webhook(Q, id, delivery_id, event_name, now)
  local url = redis.call('HGET', Q:task(id), 'webhook')
  if not url or url == '' then return end
  redis.call('HSET', Q:delivery(delivery_id), 'task_id', id, 'event', event_name, 'url', url,
    'attempt', 0, 'created', now)
  redis.call('ZADD', Q.outbox, now, delivery_id)
  -- Its own wake list: a token on wake:notify would be eaten by the notifier's task claim loop.
  local wake = Q:wake('outbox')
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 31)
end

-- Count n final outcomes ('c' completed, 'f' failed) in the per-second throughput histogram
-- the dashboard charts; key is Keys.throughput of the minute of `now` (ms).
-- The key's TTL is set by each second's first count (a new field), not by every call: the key
-- still outlives its minute's last count by an hour, less than a second.
local function count_throughput(key, now, outcome, n)
  local field = string.format('%d:%s', math.floor(now / 1000), outcome)
  if redis.call('HINCRBY', key, field, int_text(n)) == n then redis.call('EXPIRE', key, '3600') end
end

-- Prometheus histograms and counters (SPEC section 13), kept by the scripts that end a run in
-- the queue's Q.metrics HASH, so /metrics reads every worker's runs from one place, exact,
-- whatever restarts. Bucket upper bounds in ms (shared/metrics.py names them in seconds).
local METRIC_BOUNDS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
  300000}

-- A bucket's number as the field names carry it (a literal: a number in a concatenation
-- costs a float printf per use; and on Redis 6.2 the library's top level runs per call).
local BUCKET_TEXT = {'1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14',
  '15'}

local function metric_bucket(ms)
  for i, bound in ipairs(METRIC_BOUNDS_MS) do
    if ms <= bound then return BUCKET_TEXT[i] end
  end
  return BUCKET_TEXT[#METRIC_BOUNDS_MS + 1]  -- +Inf
end

local function tally_add(tally, field, n)
  tally[field] = (tally[field] or 0) + n
end

-- What one ended run adds to `tally` (field -> increment, written by flush_tally once per
-- call): its run time (started -> now) and the wait before it (due -> started, where due is
-- the latest of created, run_at and a re-run's due), by type and outcome.
local function tally_run(tally, task_type, outcome, now, created, run_at, due, started)
  local start = tonumber(started)
  if not start then return end
  local from = math.max(tonumber(created) or start, tonumber(run_at) or 0, tonumber(due) or 0)
  local run_ms, wait_ms = math.max(tonumber(now) - start, 0), math.max(start - from, 0)
  local labels = (task_type or '') .. '|' .. outcome
  tally_add(tally, 'run|' .. labels .. '|' .. metric_bucket(run_ms), 1)
  tally_add(tally, 'run_sum|' .. labels, run_ms)
  tally_add(tally, 'wait|' .. labels .. '|' .. metric_bucket(wait_ms), 1)
  tally_add(tally, 'wait_sum|' .. labels, wait_ms)
end

local function flush_tally(Q, tally)
  for field, n in pairs(tally) do redis.call('HINCRBY', Q.metrics, field, int_text(n)) end
end

-- complete.lua's work: processing -> completed for a batch of runs. K: {counts, leases,
-- expiry, outbox, throughput} (complete.lua's KEYS); A[first] is now (ms), A[first + 1] the
-- purge time, then (id, claim token, result JSON) per task. Returns one code per task.
local function complete_runs(Q, K, A, first)
  -- The times it writes (completed, and a released dependent's start) are the server's, as a
  -- claim's are: with the caller's clock, a dependency completed by a call that ran later but
  -- read its clock earlier could start its dependent before another dependency's completion.
  -- At least the caller's time, which names the throughput histogram's minute in KEYS.
  local now, purge_at = math.max(tonumber(A[first]), server_ms()), A[first + 1]
  local now_text = int_text(now)
  -- The sorted-set and held-set updates of the whole batch go in one variadic call each.
  local codes, done, by_created, purge, held = {}, {}, {}, {}, {}
  local awaited = {}  -- completed ids with dependents (has_dependents), released at the end
  local tally = {}  -- /metrics histograms of the batch (tally_run in _lib.lua)

  for i = 1, (#A - first - 1) / 3 do
    local a = first + 3 * i - 1
    local id, token, result = A[a], A[a + 1], A[a + 2]
    local task_key = Q:task(id)
    local f = redis.call('HMGET', task_key, 'status', 'token', 'owner', 'created', 'webhook',
      'attempt', 'unique_key', 'has_dependents', 'type', 'started', 'run_at', 'due')
    local attempt = f[6]
    if not f[1] then
      codes[i] = 'missing'
    elseif f[1] ~= 'processing' or f[2] ~= token then
      codes[i] = 'stale'
    elseif not tonumber(f[4]) then
      -- Checked before any write: an error half-way would leave the batch's counters behind.
      codes[i] = 'error: corrupt record (created)'
    else
      done[#done + 1] = id
      by_created[#by_created + 1] = f[4]
      by_created[#by_created + 1] = id
      purge[#purge + 1] = purge_at
      purge[#purge + 1] = id
      if f[3] then
        held[f[3]] = held[f[3]] or {}
        table.insert(held[f[3]], id)
      end
      -- An empty error and owner read as none (codec.py); cheaper than a second call to HDEL.
      redis.call('HSET', task_key, 'status', 'completed', 'completed', now_text, 'updated', now_text,
        'result', result, 'error', '', 'owner', '')
      release_unique(Q, id, f[7])
      if f[8] == '1' then awaited[#awaited + 1] = id end
      tally_run(tally, f[9], 'completed', now, f[4], f[11], f[12], f[10])
      if f[5] and f[5] ~= '' then
        queue_webhook(Q, id, 'msg_' .. id .. '_' .. attempt, 'task.completed', now)
      end
      emit(Q, id, {event = 'task.completed', task_id = id, status = 'completed',
        attempt = tonumber(attempt), at_ms = tonumber(now)})
      codes[i] = 'ok'
    end
  end

  if #done > 0 then
    call_chunked('ZREM', Q:index('processing'), done)
    call_chunked('ZADD', Q:index('completed'), by_created)
    call_chunked('ZREM', K[2], done)
    call_chunked('ZADD', K[3], purge)
    for owner, ids in pairs(held) do call_chunked('SREM', Q:held(owner), ids) end
    redis.call('HINCRBY', K[1], 'completed', int_text(#done))
    if Q.net_processing and not controls(Q).max then
      -- complete_claim.lua: the claim that follows writes processing once for its starts and
      -- these ends together (note_claims, settle_processing); with no cap, no slot to announce.
      Q.processing_owed = (Q.processing_owed or 0) - #done
    else
      local left = redis.call('HINCRBY', K[1], 'processing', int_text(-#done))
      announce_slots(Q, left + #done)
    end
    count_throughput(K[5], tonumber(A[first]), 'c', #done)
    flush_tally(Q, tally)
  end
  -- After the batch's own bookkeeping, so hand-overs see the queue's processing count exact.
  for _, id in ipairs(awaited) do release_dependents(Q, id, now) end
  return codes
end

-- The priorities 1 .. 5 as text, as ready and parked lists' names carry them.
local PRIORITY_TEXT = {'1', '2', '3', '4', '5'}

-- claim.lua's work (see its header for K, the KEYS, and A, the ARGV): pending -> processing
-- for up to A[2] tasks of lane A[7], the slots left unfilled offered. complete_claim.lua runs
-- it after a batch of completions, in the same call.
local function claim_tasks(Q, K, A)
  local now, lease_ms, wanted = server_ms(), tonumber(A[1]), tonumber(A[2])
  local worker, owner, lane, types = A[3], A[4], A[7], A[8]
  local runs = type_set(types)
  local lease_until = int_text(tonumber(now) + lease_ms)
  local withdrawn = redis.call('LREM', K[4], 0, owner)
  -- Without A[6], A[2] leaves out the caller's offers and the withdrawn ones are added.
  -- With it (a consumer of several queues offers the same slots in each), A[2] counts every
  -- slot not running, and the offers used since the caller last looked (A[6] - withdrawn)
  -- come off: their tasks are on the way to its inbox.
  if A[6] == '' then
    wanted = wanted + withdrawn
  else
    wanted = math.max(wanted - math.max(tonumber(A[6]) - withdrawn, 0), 0)
  end
  local reply, ids_taken, by_created, leased = {withdrawn, 0, redis.call('LLEN', K[6]), ''},
    {}, {}, {}
  local n = 0
  local c = controls(Q)
  if c.paused then
    reply[4] = 'paused'
    return reply
  end
  local by_rate, by_cap = start_room(Q, c)
  local limit = math.min(wanted, by_rate, by_cap)

  -- admit claims the ids just popped from one list (a ready list, or with `parked` the parked
  -- list of that name); take pops a list until `limit` are claimed or it runs dry. A list is
  -- popped again while dropped or parked ids took places in the last pop, so a lower priority
  -- never runs ahead of a task that sat behind them.
  local function admit(list, priority, parked, ids)
    for _, id in ipairs(ids) do
      local f = redis.call('HMGET', Q:task(id), 'status', 'created', 'attempt', 'run_at', 'type')
      if f[1] ~= 'pending' then
        -- Cancelled where it waited (and maybe purged since): dropped, not run, and no longer
        -- counted as skipped; its record no longer names a stale entry (see revive).
        if tonumber(redis.call('HGET', K[12], list) or 0) > 0 then
          redis.call('HINCRBY', K[12], list, -1)
        end
        if f[1] and redis.call('HGET', Q:task(id), 'stale_in') == list then
          redis.call('HDEL', Q:task(id), 'stale_in')
        end
      elseif f[5] and f[5] ~= '' and not runs_type(runs, f[5]) then
        -- (A record without a type is corrupt: claimed, so its consumer fails it clearly.)
        redis.call('RPUSH', Q:parked(lane, priority, f[5]), id)
        redis.call('HINCRBY', K[14], lane .. ':' .. priority .. ':' .. f[5], 1)
        redis.call('HSET', Q:task(id), 'parked', '1')
      else
        n = n + 1
        if parked then redis.call('HDEL', Q:task(id), 'parked') end
        local record, created = claim_record(Q, id, now, worker, owner, f[2], f[3], f[4])
        reply[n + 4] = record
        ids_taken[n] = id
        by_created[2 * n - 1], by_created[2 * n] = created, id
        leased[2 * n - 1], leased[2 * n] = lease_until, id
      end
    end
    if parked and redis.call('HINCRBY', K[14], parked, -#ids) <= 0 then
      redis.call('HDEL', K[14], parked)
    end
  end
  local function take(list, priority, parked)
    local ids = n < limit and redis.call('LPOP', list, limit - n)
    while ids do
      admit(list, priority, parked, ids)
      ids = n < limit and redis.call('LPOP', list, limit - n)
    end
  end

  -- Parked lists of this lane holding types this consumer runs, by priority (usually none).
  local parked_at = {}
  local directory = redis.call('HGETALL', K[14])
  for i = 1, #directory, 2 do
    local member = directory[i]
    local l, p, t = string.match(member, '^([^:]+):(%d):(.*)$')
    if l == lane and runs_type(runs, t) then
      parked_at[p] = parked_at[p] or {}
      table.insert(parked_at[p], {Q:parked(l, p, t), member})
    end
  end

  if next(parked_at) == nil and has_lmpop() then
    -- No parked list to look at first: one LMPOP takes from the most urgent ready list that
    -- has tasks, where an LPOP per priority paid a call for each empty list above it.
    local priority_of = {}
    for k = 7, 11 do priority_of[K[k]] = PRIORITY_TEXT[12 - k] end
    while n < limit do
      local popped = redis.call('LMPOP', '5', K[7], K[8], K[9], K[10], K[11], 'LEFT', 'COUNT',
        int_text(limit - n))
      if not popped then break end
      admit(popped[1], priority_of[popped[1]], nil, popped[2])
    end
  else
    for k = 7, 11 do
      local priority = PRIORITY_TEXT[12 - k]
      for _, entry in ipairs(parked_at[priority] or {}) do take(entry[1], priority, entry[2]) end
      take(K[k], priority, nil)
    end
  end

  if n > 0 then
    note_claims(Q, owner, ids_taken, by_created, leased)
    book_starts(Q, c, n)
  end
  if n < wanted and (by_rate <= n or by_cap <= n) then
    -- A limit has no room left for the rest: come back when it may have some. Checked even
    -- when nothing is ready, since no task could start before then anyway.
    local at = 0
    if by_cap <= n then at = now + lease_ms end
    if by_rate <= n then at = math.max(at, next_start_ms(c)) end
    reply[4] = string.format('%.0f', at)
  elseif A[5] == '1' and n < wanted then
    local slots = {}
    for i = 1, wanted - n do slots[i] = owner end
    call_chunked('RPUSH', K[4], slots)
    redis.call('HSET', K[5], owner, lease_ms .. '|' .. types .. '|' .. worker)
    reply[2] = wanted - n
  end
  return reply
end
