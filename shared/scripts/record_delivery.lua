-- record_delivery: one completion-webhook attempt settled -> history, then done or rescheduled.
--
-- KEYS[1] -> tq:{q}:delivery:<id>             HASH  the pending delivery
-- KEYS[2] -> tq:{q}:outbox                    ZSET  delivery ids by due ms
-- KEYS[3] -> tq:{q}:task:<task id>:deliveries LIST  JSON attempts shown by /details
-- KEYS[4] -> tq:{q}:wake:outbox               LIST  wake tokens for sleeping outbox loops
-- KEYS[5] -> tq:{q}:task:<task id>            HASH  the task record (only checked for existence)
-- ARGV[1] -> delivery id
-- ARGV[2] -> claim number the caller holds (the `claims` value its claim returned)
-- ARGV[3] -> action: 'retry' (redeliver at ARGV[4]) | 'done' (delivered, refused or given up)
-- ARGV[4] -> next attempt (ms), for 'retry'
-- ARGV[5] -> request body JSON, kept so every retry sends the same bytes; '' to keep as is
-- ARGV[6] -> how many attempt records a task keeps at most
-- ARGV[7..] -> attempt records (JSON in the shape of shared.models.WebhookDelivery)
--
-- Returns {'ok'} | {'missing'} (another notifier already finished it) | {'stale'} (claimed
-- again meanwhile, so the newer holder decides the schedule).
-- The records are appended whatever the reply (the attempts did happen), but only while the
-- task exists: history of a task that retention purged is dropped.
local id, claim, action = ARGV[1], ARGV[2], ARGV[3]
-- Every attempt counts for /metrics (taskqueue_webhook_deliveries_total), by its outcome.
local Q = queue_keys(KEYS[1])
for k = 7, #ARGV do
  local outcome = cjson.decode(ARGV[k]).outcome
  if type(outcome) == 'string' then
    redis.call('HINCRBY', Q.metrics, 'deliveries|' .. outcome, 1)
  end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  for k = 7, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[k]) end
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
else
  -- purge_expired deleted the list with the record; one written now would never be deleted
  -- (a delivery in flight, or retried with its kept body, outlives its task). DEL clears
  -- any such list an earlier version left behind.
  redis.call('DEL', KEYS[3])
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], id)
  return {'missing'}
end
-- A final outcome ends the delivery whoever holds it now: sending it again helps no one.
if action == 'done' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], id)
  return {'ok'}
end
if redis.call('HGET', KEYS[1], 'claims') ~= claim then return {'stale'} end

redis.call('HSET', KEYS[1], 'settled', claim, 'attempt', claim)
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[1], 'body', ARGV[5]) end
redis.call('ZADD', KEYS[2], ARGV[4], id)
-- Wake a sleeping loop so it re-reads the earliest due time, which may now be this retry.
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 31)
return {'ok'}
