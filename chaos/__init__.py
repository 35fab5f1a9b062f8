"""`make chaos`: the stack under faults, and a count of what it lost, ran twice or lied about.

`python -m chaos --seconds 120 --rate 20 --seed 1` starts Redis (AOF) and the launcher's
stack, sends tasks through the REST API at a steady rate, and on a seeded schedule SIGKILLs
workers, the scheduler and the notifier and restarts Redis (once with SHUTDOWN, once with
SIGKILL). Then it waits for the queue to drain and checks every acknowledged task. See
docs/chaos.md for the latest figures; `python -m chaos.soak` is the long soak.
"""
