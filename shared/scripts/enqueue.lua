-- enqueue: new -> pending | scheduled, for one or many tasks, all or nothing.
--
-- KEYS[1] -> tq:{q}:counts          HASH  per-status counters + total
-- KEYS[2] -> tq:{q}:index:all       ZSET  every id by created ms
-- KEYS[3] -> tq:{q}:delayed         ZSET  scheduled ids by due ms
-- KEYS[4] -> tq:{q}:idem:<key>      STRING id list for an Idempotency-Key (unused when ARGV[3] = '')
-- KEYS[4..] -> when ARGV[3] = 'tick': tq:{q}:schedule:<name> STRING "<tick ms>:<id>", the fence
--            of each task's schedule (SPEC section 12), one per ARGV[4..] spec, in order
-- ARGV[1] -> now (ms)
-- ARGV[2] -> idempotency TTL (s)
-- ARGV[3] -> idempotency key in use: '1' or ''; 'tick': each task (its spec has schedule
--            and tick) is a schedule's tick, created once however often it is sent
-- ARGV[4..] -> one JSON spec per task: {id, queue, type, payload, priority, max_retries,
--              run_at, webhook, timeout, lane, unique_key, depends_on, purge_ms,
--              traceparent}; payload is JSON text already; depends_on (ids of this queue's
--              tasks, or of earlier tasks of this call) and purge_ms (RESULT_TTL in ms) only
--              for a task with dependencies; traceparent (W3C, checked by the caller) only
--              when the create had one: the claim's HGETALL hands it to the worker
--
-- A task with dependencies (SPEC section 11) is 'waiting' while one is not completed yet,
-- 'cancelled' at once (its error naming it) when one already failed or was cancelled, else
-- pending or scheduled as any task. Each dependency gets has_dependents and the task in its
-- Q:dependents SET; deps_left counts the ones not completed yet.
--
-- Returns {'created', '', status, error, ...} (status and error of each task with
-- dependencies, in order) or {'replayed', 'id1,id2,...'} when the Idempotency-Key was seen,
-- {'duplicate', id} when an id exists, or {'unique', holder id} when a live task of the
-- queue holds a task's unique_key, or {'nodep', id} when a dependency is not a task of this
-- queue (nothing written in any of these cases). With ARGV[3] = 'tick': {'ticks', r, ...}, one
-- r per spec: its id when created now, '=<id>' for a tick its fence says was created before
-- (that id), 'stale' for a tick older than its fence's (nothing created for either).
-- Side effects: HSET task, PUBLISH task.created and ZADD delayed (when scheduled) per task;
-- ZADD indexes, HINCRBY counts once; then hand-overs to idle consumers and RPUSH ready.
local Q = queue_keys(KEYS[1])
local now = tonumber(ARGV[1])
local now_text = int_text(now)  -- as the records and indexes take it (int_text in _lib.lua)

if ARGV[3] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then return {'replayed', seen} end
end
-- The specs to create, by ARGV index: all of them, less (with 'tick') the ticks a second
-- scheduler, or one retrying after a crash, sends again: their fence answers for them.
-- decoded: specs already decoded here (a tick's, to compare with its fence), by ARGV index.
local todo, fenced, decoded = {}, {}, {}
for i = 4, #ARGV do
  if ARGV[3] == 'tick' then
    local seen = redis.call('GET', KEYS[i])
    if seen then
      local tick, id = string.match(seen, '^(%d+):(.*)$')
      decoded[i] = cjson.decode(ARGV[i])
      local wanted = tonumber(decoded[i].tick)
      if tonumber(tick) == wanted then fenced[i] = '=' .. id end
      if tonumber(tick) > wanted then fenced[i] = 'stale' end
    end
  end
  if not fenced[i] then todo[#todo + 1] = i end
end
if ARGV[3] == 'tick' and #todo == 0 then
  local reply = {'ticks'}
  for i = 4, #ARGV do reply[#reply + 1] = fenced[i] end
  return reply
end

-- Guard first, so a rejected batch leaves nothing half-written.
local specs = {}
local made = {}  -- id -> the status this call gives it (for later tasks' depends_on)
for _, i in ipairs(todo) do
  local spec = decoded[i] or cjson.decode(ARGV[i])
  spec.at = i
  if redis.call('EXISTS', Q:task(spec.id)) == 1 then return {'duplicate', spec.id} end
  if spec.unique_key then
    local holder = unique_holder(Q, spec.unique_key, spec.id)
    if holder then return {'unique', holder} end
  end
  if spec.depends_on then
    local left = 0
    for _, dep in ipairs(spec.depends_on) do
      local status = made[dep] or redis.call('HGET', Q:task(dep), 'status')
      if not status then return {'nodep', dep} end
      if status == 'failed' or status == 'cancelled' then
        if not spec.ended then
          spec.ended = 'dependency ' .. dep .. ' failed'
          if status == 'cancelled' then spec.ended = 'dependency ' .. dep .. ' was cancelled' end
        end
      elseif status ~= 'completed' then
        left = left + 1
      end
    end
    spec.deps_left = left
    if spec.ended then spec.status = 'cancelled' elseif left > 0 then spec.status = 'waiting' end
  end
  if not spec.status then
    spec.status = 'pending'
    if (tonumber(spec.run_at) or 0) > now then spec.status = 'scheduled' end
  end
  made[spec.id] = spec.status
  specs[#specs + 1] = spec
end

-- Per task: its record, its event and, when due now, a hand-over or its place in a ready
-- list; the indexes, counters and ready lists move with one call each for the whole batch.
local ids, all, indexed, counted, pending, reply = {}, {}, {}, {}, {}, {'created', ''}
for _, spec in ipairs(specs) do
  local id = spec.id
  local key = Q:task(id)
  local run_at = tonumber(spec.run_at) or 0
  local status = spec.status
  local fields = {'id', id, 'queue', spec.queue, 'type', spec.type, 'payload', spec.payload,
    'status', status,
    'priority', spec.priority, 'max_retries', spec.max_retries, 'retry_count', '0',
    'attempt', '0', 'lane', spec.lane, 'created', now_text, 'updated', now_text}
  if run_at > 0 then table.insert(fields, 'run_at'); table.insert(fields, run_at) end
  if spec.webhook and spec.webhook ~= cjson.null then
    table.insert(fields, 'webhook'); table.insert(fields, spec.webhook)
  end
  if spec.unique_key then
    table.insert(fields, 'unique_key'); table.insert(fields, spec.unique_key)
    if status ~= 'cancelled' then redis.call('SET', Q:unique(spec.unique_key), id) end
  end
  if spec.depends_on then
    table.insert(fields, 'depends_on'); table.insert(fields, table.concat(spec.depends_on, ','))
    table.insert(fields, 'deps_left'); table.insert(fields, spec.deps_left)
    if spec.ended then table.insert(fields, 'error'); table.insert(fields, spec.ended) end
  end
  if spec.timeout and spec.timeout ~= cjson.null then
    table.insert(fields, 'timeout'); table.insert(fields, spec.timeout)
  end
  if spec.schedule then table.insert(fields, 'schedule'); table.insert(fields, spec.schedule) end
  if spec.traceparent then
    table.insert(fields, 'traceparent'); table.insert(fields, spec.traceparent)
  end
  redis.call('HSET', key, unpack(fields))
  if spec.depends_on then
    for _, dep in ipairs(spec.depends_on) do
      redis.call('SADD', Q:dependents(dep), id)
      redis.call('HSET', Q:task(dep), 'has_dependents', '1')
    end
    reply[#reply + 1], reply[#reply + 2] = status, spec.ended or ''
  end
  all[#all + 1], all[#all + 2] = now_text, id
  indexed[status] = indexed[status] or {}
  table.insert(indexed[status], now_text)
  table.insert(indexed[status], id)
  counted[status] = (counted[status] or 0) + 1
  -- The created event is published but not stored: queries.py derives it from the record.
  -- Published before a hand-over, whose task.claimed must come after it.
  publish_event(Q, cjson.encode({event = 'task.created', task_id = id,
    status = status, type = spec.type, priority = spec.priority, at_ms = now}))
  if spec.schedule then
    publish_event(Q, cjson.encode({event = 'schedule.fired', task_id = id, status = status,
      type = spec.type, schedule = spec.schedule, tick_ms = tonumber(spec.tick), at_ms = now}))
  end
  if status == 'scheduled' then
    add_delayed(Q, run_at, id)
  elseif status == 'pending' then
    pending[#pending + 1] = {id, spec.lane, spec.priority, spec.type}
  elseif status == 'cancelled' then
    redis.call('ZADD', Q.expiry, now + tonumber(spec.purge_ms), id)
    emit(Q, id, {event = 'task.cancelled', task_id = id, status = 'cancelled',
      error = spec.ended, at_ms = now})
  end
  ids[#ids + 1] = id
end

call_chunked('ZADD', KEYS[2], all)
for status, members in pairs(indexed) do
  call_chunked('ZADD', Q:index(status), members)
  redis.call('HINCRBY', KEYS[1], status, int_text(counted[status]))
end
redis.call('HINCRBY', KEYS[1], 'total', int_text(#ids))
make_ready_many(Q, pending, now)

if ARGV[3] == '1' then
  redis.call('SET', KEYS[4], table.concat(ids, ','), 'EX', ARGV[2])
elseif ARGV[3] == 'tick' then
  reply = {'ticks'}
  for _, spec in ipairs(specs) do
    redis.call('SET', KEYS[spec.at], spec.tick .. ':' .. spec.id, 'EX', ARGV[2])
    fenced[spec.at] = spec.id
  end
  for i = 4, #ARGV do reply[#reply + 1] = fenced[i] end
end
return reply
