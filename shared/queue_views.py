"""What `GET /api/queues` and the dashboard show of each queue: its counts, its controls and
the live workers serving it (SPEC section 9)."""

from __future__ import annotations

from collections.abc import Sequence

from shared import heartbeats, queries, queue_control, queues
from shared.errors import TaskQueueError
from shared.models import QueueStats
from shared.queue_control import RateLimit
from shared.redis import Conn


class UnknownQueue(TaskQueueError):
    """No task was ever created in this queue, and it has no controls."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown queue {name!r}")
        self.name = name


class QueueView(QueueStats):
    """One queue as the API shows it."""

    name: str
    paused: bool = False
    rate_limit: RateLimit | None = None
    max_concurrency: int | None = None
    workers: int = 0  # live workers (and notifiers) serving it
    # Ready tasks, by type, that no live worker (or notifier) serving the queue has a handler
    # for: they wait, unclaimed, until one that has starts (SPEC section 9).
    unhandled_by_type: dict[str, int] = {}


async def views(
    conn: Conn, *, dead_after_seconds: float, names: Sequence[str] | None = None
) -> list[QueueView]:
    """Every queue there is (or `names`), sorted by name: three round trips for all."""
    wanted = list(names) if names is not None else await queues.known(conn)
    stats = await queries.get_stats(conn, dead_after_seconds=dead_after_seconds, names=wanted)
    configs = await queue_control.get_configs(conn, wanted)
    serving: dict[str, int] = dict.fromkeys(wanted, 0)
    runnable: dict[str, set[str]] = {name: set() for name in wanted}
    for service in ("worker", "notifier"):
        for info in await heartbeats.instances(conn, service, dead_after_seconds):
            for name in info.get("queues") or []:
                if name in serving:
                    serving[name] += 1
                    runnable[name].update(info.get("types") or [])
    return [
        QueueView(
            name=name,
            **stats.queues[name].model_dump(),
            **configs[name].model_dump(),
            workers=serving[name],
            unhandled_by_type={
                task_type: n
                for task_type, n in stats.queues[name].parked_by_type.items()
                if task_type not in runnable[name]
            },
        )
        for name in wanted
    ]


async def view(conn: Conn, name: str, *, dead_after_seconds: float) -> QueueView:
    """One queue; UnknownQueue (a 404) for a name never used."""
    if name not in await queues.known(conn):
        raise UnknownQueue(name)
    [one] = await views(conn, dead_after_seconds=dead_after_seconds, names=[name])
    return one
