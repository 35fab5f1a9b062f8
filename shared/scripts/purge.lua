-- purge: completed | failed | cancelled -> deleted, now (a bulk purge, SPEC section 10).
--
-- KEYS[1] -> tq:{q}:task:<id>             HASH
-- KEYS[2] -> tq:{q}:task:<id>:events      LIST
-- KEYS[3] -> tq:{q}:task:<id>:deliveries  LIST
-- KEYS[4] -> tq:{q}:counts                HASH
-- KEYS[5] -> tq:{q}:index:all             ZSET
-- KEYS[6] -> tq:{q}:expiry                ZSET
-- ARGV[1] -> task id
--
-- Returns {'ok'} | {'missing'} | {'invalid', status} (a task not final) | {'awaited', status}
-- (a waiting task still needs its result, SPEC section 11); nothing written but for 'ok'.
-- Deletes exactly what retention (purge_expired.lua) deletes when the task's
-- RESULT_TTL_SECONDS passes, through the same purge_final (_lib.lua), so counts stay exact.
-- Publishes nothing, as retention does: the task is gone, and so is its history.
local Q = queue_keys(KEYS[1])
local purged, status, why = purge_final(Q, ARGV[1])
if purged then return {'ok'} end
if not status then return {'missing'} end
if why == 'awaited' then return {'awaited', status} end
return {'invalid', status}
