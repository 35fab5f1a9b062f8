-- enqueue: new -> pending | scheduled, for one or many tasks, all or nothing.
--
-- KEYS[1] -> tq:{q}:counts          HASH  per-status counters + total
-- KEYS[2] -> tq:{q}:index:all       ZSET  every id by created ms
-- KEYS[3] -> tq:{q}:delayed         ZSET  scheduled ids by due ms
-- KEYS[4] -> tq:{q}:idem:<key>      STRING id list for an Idempotency-Key (unused when ARGV[3] = '')
-- ARGV[1] -> now (ms)
-- ARGV[2] -> idempotency TTL (s)
-- ARGV[3] -> idempotency key in use: '1' or ''
-- ARGV[4..] -> one JSON spec per task: {id, queue, type, payload, priority, max_retries,
--              run_at, webhook, timeout, lane, unique_key}; payload is JSON text already
--
-- Returns {'created', ''} or {'replayed', 'id1,id2,...'} when the Idempotency-Key was seen,
-- {'duplicate', id} when an id exists, or {'unique', holder id} when a live task of the
-- queue holds a task's unique_key (nothing written in either case).
-- Side effects: HSET task, PUBLISH task.created and ZADD delayed (when scheduled) per task;
-- ZADD indexes, HINCRBY counts once; then hand-overs to idle consumers and RPUSH ready.
local Q = queue_keys(KEYS[1])
local now = tonumber(ARGV[1])

if ARGV[3] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then return {'replayed', seen} end
end

-- Guard first, so a rejected batch leaves nothing half-written.
local specs = {}
for i = 4, #ARGV do
  local spec = cjson.decode(ARGV[i])
  if redis.call('EXISTS', Q:task(spec.id)) == 1 then return {'duplicate', spec.id} end
  if spec.unique_key then
    local holder = unique_holder(Q, spec.unique_key, spec.id)
    if holder then return {'unique', holder} end
  end
  specs[#specs + 1] = spec
end

-- Per task: its record, its event and, when due now, a hand-over or its place in a ready
-- list; the indexes, counters and ready lists move with one call each for the whole batch.
local ids, all, indexed, counted, pending = {}, {}, {}, {}, {}
for _, spec in ipairs(specs) do
  local id = spec.id
  local key = Q:task(id)
  local run_at = tonumber(spec.run_at) or 0
  local status = 'pending'
  if run_at > now then status = 'scheduled' end
  local fields = {'id', id, 'queue', spec.queue, 'type', spec.type, 'payload', spec.payload,
    'status', status,
    'priority', spec.priority, 'max_retries', spec.max_retries, 'retry_count', 0,
    'attempt', 0, 'lane', spec.lane, 'created', now, 'updated', now}
  if run_at > 0 then table.insert(fields, 'run_at'); table.insert(fields, run_at) end
  if spec.webhook and spec.webhook ~= cjson.null then
    table.insert(fields, 'webhook'); table.insert(fields, spec.webhook)
  end
  if spec.unique_key then
    table.insert(fields, 'unique_key'); table.insert(fields, spec.unique_key)
    redis.call('SET', Q:unique(spec.unique_key), id)
  end
  if spec.timeout and spec.timeout ~= cjson.null then
    table.insert(fields, 'timeout'); table.insert(fields, spec.timeout)
  end
  redis.call('HSET', key, unpack(fields))
  all[#all + 1], all[#all + 2] = now, id
  indexed[status] = indexed[status] or {}
  table.insert(indexed[status], now)
  table.insert(indexed[status], id)
  counted[status] = (counted[status] or 0) + 1
  -- The created event is published but not stored: queries.py derives it from the record.
  -- Published before a hand-over, whose task.claimed must come after it.
  publish_event(Q, cjson.encode({event = 'task.created', task_id = id,
    status = status, type = spec.type, priority = spec.priority, at_ms = now}))
  if status == 'scheduled' then
    add_delayed(Q, run_at, id)
  else
    pending[#pending + 1] = {id, spec.lane, spec.priority, spec.type}
  end
  ids[#ids + 1] = id
end

call_chunked('ZADD', KEYS[2], all)
for status, members in pairs(indexed) do
  call_chunked('ZADD', Q:index(status), members)
  redis.call('HINCRBY', KEYS[1], status, counted[status])
end
redis.call('HINCRBY', KEYS[1], 'total', #ids)
make_ready_many(Q, pending, now)

if ARGV[3] == '1' then
  redis.call('SET', KEYS[4], table.concat(ids, ','), 'EX', ARGV[2])
end
return {'created', ''}
