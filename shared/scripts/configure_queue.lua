-- configure_queue: pause, resume, or set the limits of one queue (SPEC section 9), and tell
-- every consumer on the queue control channel, so those waiting on the queue claim again.
-- claim.lua and hand_over (_lib.lua) enforce what this writes.
--
-- KEYS[1] -> tq:{q}:config             HASH  paused, rate_tasks, rate_seconds, rate_tat,
--                                             max_concurrency (absent field: no control)
-- KEYS[2..] -> tq:{q}:wake:<lane>:idle  LIST  each lane's hand-over offers
-- ARGV[1] -> 'pause' | 'resume' | 'limits'
-- ARGV[2] -> limits: starts per window (integer >= 1), or '' for no rate limit
-- ARGV[3] -> limits: the window (seconds, > 0), or '' for no rate limit
-- ARGV[4] -> limits: max_concurrency (integer >= 1), or '' for none
--
-- Returns {paused, rate_tasks, rate_seconds, max_concurrency} as stored afterwards (false
-- where absent), or an error reply for malformed limits (nothing written).
-- Side effects: pause withdraws every offer of the queue (a paused queue holds none, so no
-- task is handed over by one made before); a rate change keeps the share of the burst in use;
-- PUBLISH {"queue", "event": "paused" | "resumed" | "limits"} on every call, also when
-- nothing changed, so an operator's repeat reaches a consumer that missed the first message.
local Q = queue_keys(KEYS[1])
local op = ARGV[1]
local event

if op == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1')
  for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
  event = 'paused'
elseif op == 'resume' then
  redis.call('HDEL', KEYS[1], 'paused')
  event = 'resumed'
elseif op == 'limits' then
  local tasks, seconds, max = ARGV[2], ARGV[3], ARGV[4]
  local whole = function(v) return positive(v) and math.floor(tonumber(v)) == tonumber(v) end
  if (tasks == '') ~= (seconds == '') or (tasks ~= '' and not (whole(tasks) and positive(seconds)))
    or (max ~= '' and not whole(max)) then
    return redis.error_reply('invalid limits: ' .. tasks .. ' per ' .. seconds .. ' s, ' .. max)
  end
  if tasks == '' then
    redis.call('HDEL', KEYS[1], 'rate_tasks', 'rate_seconds', 'rate_tat')
  else
    local old = redis.call('HMGET', KEYS[1], 'rate_tasks', 'rate_seconds', 'rate_tat')
    local old_tasks, old_seconds = positive(old[1]), positive(old[2])
    if old_tasks ~= tonumber(tasks) or old_seconds ~= tonumber(seconds) then
      -- A new rate starts with the same share of its burst in use as the old one had, so
      -- changing the limit neither hands out a fresh burst nor keeps an old debt whole.
      local tat, now = tonumber(old[3]), server_ms()
      if old_seconds and tat and tat > now then
        local used = math.min((tat - now) / (old_seconds * 1000), 1)
        local new_tat = now + used * tonumber(seconds) * 1000
        redis.call('HSET', KEYS[1], 'rate_tat', string.format('%.17g', new_tat))
      else
        redis.call('HDEL', KEYS[1], 'rate_tat')
      end
    end
    redis.call('HSET', KEYS[1], 'rate_tasks', tasks, 'rate_seconds', seconds)
  end
  if max == '' then
    redis.call('HDEL', KEYS[1], 'max_concurrency')
  else
    redis.call('HSET', KEYS[1], 'max_concurrency', max)
  end
  event = 'limits'
else
  return redis.error_reply('unknown queue control: ' .. op)
end

publish_control(Q, event)
return redis.call('HMGET', KEYS[1], 'paused', 'rate_tasks', 'rate_seconds', 'max_concurrency')
