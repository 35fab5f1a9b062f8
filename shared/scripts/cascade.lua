-- cascade: waiting -> cancelled, for the dependents (and theirs, down the graph) of tasks
-- that ended failed or cancelled, where the bounded cascade of fail.lua or cancel.lua
-- (cascade in _lib.lua, SPEC section 11) left work to do. The scheduler calls it until the
-- queue's cascade list is empty.
--
-- KEYS[1] -> tq:{q}:cascade         LIST  ids whose waiting dependents are still to cancel
-- ARGV[1] -> now (ms)   ARGV[2] -> purge time (ms) of the tasks it cancels
--
-- Returns how many ids are still to do (0: the list is empty).
-- Side effects: per cancelled task, its record, counters and indexes, expiry entry and a
-- task.cancelled event naming the dependency that ended it.
local Q = queue_keys(KEYS[1])
return cascade(Q, nil, ARGV[1], ARGV[2])
