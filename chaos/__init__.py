"""`make chaos`: the stack under faults, and a count of what it lost, ran twice or lied about.

`python -m chaos --seconds 120 --rate 20 --seed 1` starts Redis (AOF) and the launcher's
stack, sends tasks through the REST API at a steady rate, and on a seeded schedule SIGKILLs
workers, the scheduler and the notifier and restarts Redis (once with SHUTDOWN, once with
SIGKILL). Then it waits for the queue to drain and checks every acknowledged task. See
docs/chaos.md for the latest figures; `python -m chaos.soak` is the long soak.

`--redis cluster` (6 nodes, tasks over three queues on three primaries) or `--redis sentinel`
replaces the Redis restarts with failovers: CLUSTER FAILOVER, primaries SIGKILLed (some after
their replica was cut off) and started again as replicas; `--wait-replicas N` sets
REDIS_WAIT_REPLICAS. Creates a killed primary had not replicated are counted apart: the loss
window with WAIT off (docs/chaos-cluster.md, docs/chaos-sentinel.md).
"""
