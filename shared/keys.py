"""The Redis key schema: the only Python module that formats a key or channel name.

Every key of one queue carries the hash tag `{<queue>}`, so all keys one script touches live
in one Redis Cluster slot (SPEC section 8). More queues spread over more slots. What belongs
to no queue (service heartbeats, the registry of queues) carries the tag `{_global}`, which
no queue can have (a queue name starts with a letter or digit).

The Lua scripts build the same names with `queue_keys` in `shared/scripts/_lib.lua`, from the
queue key each script gets as KEYS[1]; tests/unit/test_key_contract.py runs both and compares
every name, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

EVENTS_CHANNEL = "task_events"  # pub/sub; name fixed by SPEC section 6
# pub/sub: JSON {"queue", "event": "paused" | "resumed" | "limits" | "slot" | "offers"}: a
# queue's pause, limits or concurrency room changed, or (with "lane") a control kept a task
# from an idle consumer's offer and dropped the lane's offers: consumers claim it again.
# Also {"queue", "event": "cancel", "task_id", "token", "owner"} (cancel.lua, SPEC section 10):
# the consumer instance `owner` interrupts that run. Classic pub/sub whatever EVENTS_MODE: on
# a cluster it reaches the consumers subscribed on any node.
QUEUE_CONTROL_CHANNEL = "tq:queue_control"
# pub/sub: "the earliest due time of a queue moved" (the payload is the due ms).
SCHEDULER_WAKE_CHANNEL = "tq:scheduler_wake"
GLOBAL_PREFIX = "tq:{_global}:"
QUEUES = f"{GLOBAL_PREFIX}queues"  # SET: every queue that ever had a task (the registry)
PRIORITIES = (5, 4, 3, 2, 1)  # claim order: 5 is the most urgent
# Recurring schedules (SPEC section 12) share one hash tag of their own, so the scripts that
# read and advance them touch one slot; the tasks they create live in their queues' slots.
SCHEDULES_PREFIX = "tq:{_schedules}:"
SCHEDULES_DUE = f"{SCHEDULES_PREFIX}due"  # ZSET: active (not paused) names by next tick ms
SCHEDULES_ALL = f"{SCHEDULES_PREFIX}all"  # ZSET: every schedule name, score 0 (by name)


def schedule(name: str) -> str:
    """HASH: one schedule (shared/schedules.py writes its fields)."""
    return f"{SCHEDULES_PREFIX}schedule:{name}"


class Lane(StrEnum):
    """Who runs a task type: workers claim WORK, the notifier (SMTP, HTTP) claims NOTIFY."""

    WORK = "work"
    NOTIFY = "notify"


LANES = tuple(Lane)


@dataclass(frozen=True)
class Keys:
    """Key names for one queue."""

    queue: str = "default"

    @property
    def prefix(self) -> str:
        return f"tq:{{{self.queue}}}:"

    @property
    def task_prefix(self) -> str:
        """Prefix of task records, handed to scripts that learn ids while they run."""
        return f"{self.prefix}task:"

    def task(self, task_id: str) -> str:
        return f"{self.task_prefix}{task_id}"  # HASH: the task record (see codec.py)

    def task_events(self, task_id: str) -> str:
        return f"{self.task_prefix}{task_id}:events"  # LIST: JSON events, oldest first

    def task_deliveries(self, task_id: str) -> str:
        return f"{self.task_prefix}{task_id}:deliveries"  # LIST: JSON webhook attempts

    def task_dependents(self, task_id: str) -> str:
        # SET: ids of the tasks created with this one in their depends_on (SPEC section 11)
        return f"{self.task_prefix}{task_id}:dependents"

    @property
    def cascade(self) -> str:
        # LIST: ids that ended failed or cancelled whose waiting dependents are still to be
        # cancelled (cascade in _lib.lua: bounded per call, the scheduler drains the rest)
        return f"{self.prefix}cascade"

    @property
    def index_prefix(self) -> str:
        return f"{self.prefix}index:"

    def ready(self, lane: str, priority: int) -> str:
        return f"{self.prefix}ready:{lane}:{priority}"  # LIST: ready ids, FIFO (RPUSH/LPOP)

    def parked(self, lane: str, priority: int | str, task_type: str) -> str:
        # LIST: ready ids of a type that a consumer which does not run it took off a ready
        # list (claim.lua); only consumers that run the type look here.
        return f"{self.prefix}parked:{lane}:{priority}:{task_type}"

    @property
    def parked_lists(self) -> str:
        # HASH: "<lane>:<priority>:<type>" -> ids in that parked list (no field: none).
        return f"{self.prefix}parked"

    def unique(self, unique_key: str) -> str:
        # STRING: the id of the live task holding this unique_key (SPEC section 10)
        return f"{self.prefix}unique:{unique_key}"

    @property
    def events_channel(self) -> str:
        # sharded pub/sub (EVENTS_MODE sharded or both): this queue's task events, on its shard
        return f"{self.prefix}events"

    def ready_all(self, lane: str) -> list[str]:
        """Ready lists of one lane, most urgent first."""
        return [self.ready(lane, p) for p in PRIORITIES]

    @property
    def ready_skips(self) -> str:
        # HASH: ready (or parked) list name -> ids cancelled while in it (claim.lua drops
        # them later), so a cancel is O(1) and LLEN minus this is the list's exact depth.
        return f"{self.prefix}ready:skip"

    def wake(self, lane: str) -> str:
        return f"{self.prefix}wake:{lane}"  # LIST: wake tokens (the webhook outbox loop)

    # Hand-off (see _lib.lua hand_over): a consumer with idle slots offers them; a script that
    # makes a task ready claims it for the first offer and pushes the record to that
    # consumer's inbox, which the consumer BLPOPs: one round trip from enqueue to start.
    def idle(self, lane: str) -> str:
        return f"{self.prefix}wake:{lane}:idle"  # LIST: one instance id per offered slot

    def offers(self, lane: str) -> str:
        # HASH: instance id -> "<lease ms>|<types it runs, comma-separated>|<worker name>"
        return f"{self.prefix}wake:{lane}:offers"

    def inbox(self, instance_id: str) -> str:
        return f"{self.prefix}wake:inbox:{instance_id}"  # LIST: JSON records handed over

    @property
    def config(self) -> str:
        # HASH: the queue's controls: paused ("1"), rate_tasks + rate_seconds, rate_tat (the
        # rate limiter's state, ms), max_concurrency. Absent fields: no such control.
        return f"{self.prefix}config"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"  # ZSET: scheduled and retrying ids, scored by due ms

    @property
    def scheduler_wake(self) -> str:
        return SCHEDULER_WAKE_CHANNEL  # one channel for every queue's due times

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"  # ZSET: processing ids, scored by lease deadline ms

    def held(self, instance_id: str) -> str:
        return f"{self.prefix}held:{instance_id}"  # SET: ids one consumer instance holds

    @property
    def expiry(self) -> str:
        return f"{self.prefix}expiry"  # ZSET: final ids, scored by purge time ms

    @property
    def index_all(self) -> str:
        return f"{self.prefix}index:all"  # ZSET: every id, scored by created ms

    def index_status(self, status: str) -> str:
        return f"{self.index_prefix}{status}"  # ZSET: ids in one status, scored by created ms

    @property
    def counts(self) -> str:
        return f"{self.prefix}counts"  # HASH: one field per status + "total" + "done:<status>"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"  # STRING EX 24 h: task id for an Idempotency-Key

    @property
    def idempotency_prefix(self) -> str:
        return f"{self.prefix}idem:"

    def schedule_fence(self, name: str) -> str:
        # STRING "<tick ms>:<task id>": the last tick of schedule `name` that created a task
        # in this queue (enqueue.lua's fence: one task per tick, however often it is sent)
        return f"{self.prefix}schedule:{name}"

    # Services are not a queue's: their keys are global.
    def heartbeats(self, service: str) -> str:
        return f"{GLOBAL_PREFIX}hb:{service}"  # ZSET: instance ids scored by last beat ms

    def instance(self, service: str, instance_id: str) -> str:
        return f"{GLOBAL_PREFIX}instance:{service}:{instance_id}"  # STRING PX: JSON info

    @property
    def outbox(self) -> str:
        return f"{self.prefix}outbox"  # ZSET: completion-webhook delivery ids, by due ms

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}delivery:{delivery_id}"  # HASH: one pending completion webhook

    def throughput(self, epoch_minute: int) -> str:
        return f"{self.prefix}tp:{epoch_minute}"  # HASH: "<second>:<c|f>" -> count, EX 1 h

    @property
    def metrics(self) -> str:
        # HASH: the /metrics histograms and counters the outcome scripts keep (shared/metrics.py
        # reads it): "run|<type>|<outcome>|<bucket>" -> runs, "run_sum|<type>|<outcome>" -> ms,
        # the same for "wait", "retries|<type>", "recoveries|<type>", "deliveries|<outcome>"
        return f"{self.prefix}metrics"


def client_idempotency_key(api_key: str, key: str) -> str:
    """An Idempotency-Key as one API key's own (`Keys.idempotency` names its record): a short
    hash of the API key goes in front, so two clients sending the same key never meet, and
    the API key itself is never stored."""
    digest = hashlib.sha256(b"tq-idempotency|" + api_key.encode()).hexdigest()[:16]
    return f"k{digest}:{key}"
