-- complete_claim: complete.lua then claim.lua in one call, for a consumer that reports its
-- finished runs and takes its next tasks of the same queue in one round trip (a single-slot
-- worker pays one call per task instead of two). Each part does exactly what its own script
-- does; the completions go first, so the slots and max_concurrency room they free count.
--
-- KEYS[1] -> tq:{q}:counts          HASH  (claim.lua's KEYS[1..14], in its order)
-- KEYS[2] -> tq:{q}:leases          ZSET  (complete.lua names these two first too)
-- KEYS[3] -> tq:{q}:held:<instance> SET
-- KEYS[4] -> tq:{q}:wake:<lane>:idle    LIST
-- KEYS[5] -> tq:{q}:wake:<lane>:offers  HASH
-- KEYS[6] -> tq:{q}:wake:inbox:<instance> LIST
-- KEYS[7..11] -> tq:{q}:ready:<lane>:5 .. :1   LISTs
-- KEYS[12] -> tq:{q}:ready:skip     HASH
-- KEYS[13] -> tq:{q}:config         HASH
-- KEYS[14] -> tq:{q}:parked         HASH
-- KEYS[15] -> tq:{q}:expiry          ZSET  final ids by purge time ms
-- KEYS[16] -> tq:{q}:outbox          ZSET  completion webhooks by due ms
-- KEYS[17] -> tq:{q}:tp:<minute>     HASH  throughput histogram (the minute of ARGV[9])
-- ARGV[1..8] -> claim.lua's ARGV
-- ARGV[9..] -> complete.lua's ARGV: now (ms), purge time (ms), then id, claim token and
--              result JSON per task
--
-- Returns {codes, claim reply}: complete.lua's reply, then claim.lua's.
-- The processing count moves once for the ends and the starts together (Q.net_processing).
local Q = queue_keys(KEYS[1])
Q.net_processing = true
local codes = complete_runs(Q, {KEYS[1], KEYS[2], KEYS[15], KEYS[16], KEYS[17]}, ARGV, 9)
local claimed = claim_tasks(Q, KEYS, ARGV)
settle_processing(Q)
return {codes, claimed}
