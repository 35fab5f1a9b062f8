"""`make run`'s topology on a real 6-node Redis Cluster, through HTTP only (SPEC section 8):
a manual CLUSTER FAILOVER and a SIGKILLed primary under load lose no acknowledged create,
leave none stuck, and every worker and an open event stream carry on; a shard fully down
stops only its own queue (creates there get 503 + Retry-After) while the others complete.

The load spreads creates over three named queues, one per primary. Workers serve all three
(WORKER_QUEUES, weighted). The failed-over shard in the first two tests is the one that also
holds the `task_events` channel's slot and `{_global}` (registry, heartbeats): the hardest
case, where the API's event subscription and the heartbeats go through the failover too.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.keys import EVENTS_CHANNEL, QUEUES
from tests.support.load import Acked, Load
from tests.support.redis_cluster import Cluster, Node, run_cluster
from tests.support.stack import Stack
from tests.support.waiting import wait_until_sync

# "Worker 2 started (worker-<host>-<pid>-<hex>, ...": the name tasks record, the process
WORKER_START = re.compile(r" INFO (Worker \d+) started \((worker-[^,]+),")
CLOSED_COMMENT = ": closed: "  # events.py: a stream that may have missed events says so


def _counts_key(queue: str) -> str:
    return f"tq:{{{queue}}}:counts"


@dataclass
class Connection:
    """One GET /api/events response, as the reader saw it."""

    opened: float  # monotonic time its first line (`retry:`) was read: events flow from here
    closed: float | None = None
    ending: str | None = None  # the closing comment, or the error that ended it
    events: int = 0  # how many it delivered


@dataclass
class EventReader:
    """An SSE client, as a browser's EventSource is: it reads events and, when a stream ends,
    waits the `retry:` delay and opens a new one (a 503 is retried the same way). The API
    sends no event ids, so there is no Last-Event-ID to resume from: the promise
    (services/api/routes/events.py) is that a stream that may have missed events is ended
    with a `: closed: <why>` comment, and that a new stream gets every event published after
    its first line was read."""

    base_url: str
    # (connection index, event name, event data), in the order received
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)  # status codes of refused opens
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(5, read=30))

    def _run(self) -> None:
        retry = 2.0
        while not self.stop.is_set():
            try:
                retry = self._read_one(retry)
            except httpx.HTTPError as exc:
                if self.connections and self.connections[-1].closed is None:
                    self.connections[-1].closed = time.monotonic()
                    self.connections[-1].ending = f"error: {exc!r}"
            self.stop.wait(retry)

    def _read_one(self, retry: float) -> float:
        with self.client.stream("GET", "/api/events") as response:
            if response.status_code != 200:
                self.refusals.append(response.status_code)
                return retry
            connection: Connection | None = None
            name, data = "", ""
            for line in response.iter_lines():
                if connection is None:
                    connection = Connection(opened=time.monotonic())
                    self.connections.append(connection)
                if self.stop.is_set():
                    break
                if line.startswith("retry:"):
                    retry = int(line.split(":", 1)[1]) / 1000
                elif line.startswith(CLOSED_COMMENT):
                    connection.ending = line
                elif line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data = line.split(":", 1)[1].strip()
                elif not line and name:
                    index = len(self.connections) - 1
                    self.events.append((index, name, json.loads(data)))
                    connection.events += 1
                    name, data = "", ""
            if connection is not None:
                connection.closed = time.monotonic()
                if connection.ending is None and not self.stop.is_set():
                    connection.ending = "ended without a closing comment"
        return retry

    def describe(self, since: float) -> str:
        """The connections so far, times in seconds from `since` (the failover)."""
        return (
            "; ".join(
                f"opened {c.opened - since:+.1f}s, "
                + (f"closed {c.closed - since:+.1f}s ({c.ending})" if c.closed else "open")
                + f", {c.events} events"
                for c in list(self.connections)
            )
            + f"; refused opens: {self.refusals}"
        )

    def completed_ids(self, connection: int | None = None) -> set[str]:
        """Tasks whose task.completed came (on connection number `connection`, or on any)."""
        return {
            e["task_id"]
            for index, name, e in list(self.events)
            if name == "task.completed" and connection in (None, index)
        }

    def __enter__(self) -> EventReader:
        self.thread.start()
        wait_until_sync(lambda: self.connections, timeout=15, message="an open event stream")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.client.close()  # ends a read in progress
        self.thread.join(10)


def _stack(folder: Path, cluster: Cluster, queues: list[str], **env: str) -> Stack:
    return Stack(
        folder,
        REDIS_URL=cluster.url,
        WORKER_QUEUES=",".join(f"{queue}:1" for queue in queues),
        **env,
    )


def _dump(stack: Stack, folder: Path) -> None:
    """On failure: the stack's whole output to a file, its end to the test's output."""
    (folder / "stack.log").write_text("\n".join(stack.lines) + "\n")
    print(f"stack output: {folder / 'stack.log'}")
    print("\n".join(stack.lines[-40:]))


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A cluster of each test's own: every test kills or fails over nodes."""
    with run_cluster() as running:
        yield running


def _queues_with_first_on(cluster: Cluster, shard: Node) -> list[str]:
    """Three queues on the three primaries, the one on `shard` first."""
    queues = cluster.queues_on_distinct_primaries(3)
    return sorted(queues, key=lambda q: cluster.primary_for_key(_counts_key(q)) is not shard)


def _workers(stack: Stack) -> dict[str, str]:
    """Worker name (what a task's attempts record) -> its process's instance id; a restarted
    worker would show under its name with a new id."""
    return {
        m.group(1): m.group(2) for line in list(stack.lines) if (m := WORKER_START.search(line))
    }


def _completed_in(stack: Stack, queue: str) -> set[str]:
    """Ids of every completed task of `queue`, read page by page."""
    found: set[str] = set()
    params: dict[str, Any] = {"queue": queue, "status": "completed", "limit": 500}
    while True:
        response = stack.api.get("/api/tasks", params=params)
        if response.status_code != 200:
            return set()  # a read during a failover: not yet
        found |= {task["id"] for task in response.json()}
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            return found
        params["cursor"] = cursor


def _wait_all_completed(stack: Stack, acked: list[Acked], timeout: float = 45) -> None:
    """Every acknowledged task reaches `completed`: none lost, none stuck."""
    by_queue: dict[str, set[str]] = {}
    for a in acked:
        by_queue.setdefault(a.queue, set()).add(a.task_id)

    def missing() -> dict[str, set[str]]:
        return {
            queue: left
            for queue, ids in by_queue.items()
            if (left := ids - _completed_in(stack, queue))
        }

    try:
        wait_until_sync(lambda: not missing(), timeout=timeout, message="all completed")
    except AssertionError:
        report = {}
        for queue, ids in missing().items():
            for task_id in sorted(ids)[:10]:
                answer = stack.api.get(f"/api/tasks/{task_id}")
                report[task_id] = (queue, answer.status_code, answer.text[:200])
        raise AssertionError(f"acknowledged tasks lost or stuck: {report}") from None


def _worker_of(stack: Stack, task_id: str, cache: dict[str, str]) -> str | None:
    if task_id not in cache:
        answer = stack.api.get(f"/api/tasks/{task_id}/details")
        if answer.status_code != 200:
            return None
        attempts = answer.json()["attempts"]
        if not attempts or attempts[-1]["outcome"] != "completed":
            return None
        cache[task_id] = attempts[-1]["worker"]
    return cache[task_id]


def _wait_every_worker_completes(
    stack: Stack, load: Load, since: float, workers: list[str], timeout: float = 40
) -> None:
    """Each worker process completes a task created after `since` (the failover)."""
    cache: dict[str, str] = {}

    def all_seen() -> bool:
        seen = set(cache.values())
        # A few lookups per round (the oldest and the newest), so that a round stays short
        # even when the API is slow.
        unknown = [a.task_id for a in load.acked_after(since) if a.task_id not in cache]
        for task_id in dict.fromkeys(unknown[:10] + unknown[-10:]):
            if seen >= set(workers):
                break
            if worker := _worker_of(stack, task_id, cache):
                seen.add(worker)
        return seen >= set(workers)

    wait_until_sync(
        all_seen,
        timeout=timeout,
        interval=0.3,
        message=f"each of {workers} to complete a task after the failover",
    )


def _assert_counts_add_up(stack: Stack, acked: list[Acked], queues: list[str]) -> None:
    """GET /api/queues and /api/stats per-queue counts are exactly what the client created."""
    created = Counter(a.queue for a in acked)
    assert len({a.task_id for a in acked}) == len(acked)  # a replay is the same task
    listed = {q["name"]: q for q in stack.api.get("/api/queues").json()}
    stats = stack.api.get("/api/stats").json()["queues"]
    for queue in queues:
        for view in (listed[queue], stats[queue]):
            assert view["total_tasks"] == view["completed_count"] == created[queue], (queue, view)


def _owed(reader: EventReader, load: Load, since: float = 0.0) -> tuple[set[str], set[str]]:
    """(tasks, completions): the tasks first asked for after both `since` and the moment the
    stream open now read its first line (it owes their events), and the task.completed it
    delivered. Nothing while no stream is open."""
    connections = list(reader.connections)
    if not connections or connections[-1].closed is not None:
        return set(), set()
    start = max(connections[-1].opened, since)
    owed = {a.task_id for a in list(load.acknowledged) if a.sent > start}
    return owed, reader.completed_ids(len(connections) - 1)


def _wait_stream_caught_up(reader: EventReader, load: Load) -> None:
    """The stream open now delivers task.completed for every task it owes (an event reaches
    it a moment after the task reads as completed over HTTP)."""

    def caught_up() -> bool:
        # A stream that opened after the last create owes nothing, and keeps the promise too.
        connections = list(reader.connections)
        if not connections or connections[-1].closed is not None:
            return False  # between two streams: the client reopens after `retry:`
        owed, delivered = _owed(reader, load)
        return not owed - delivered

    try:
        wait_until_sync(caught_up, timeout=10, message="every completion the stream owes")
    except AssertionError:
        owed, delivered = _owed(reader, load)
        raise AssertionError(
            f"the open event stream missed {len(owed - delivered)} of {len(owed)} completions "
            f"without closing: {reader.describe(0.0)}"
        ) from None


def _assert_stream_rode_through(reader: EventReader, load: Load, since: float) -> None:
    """The event stream opened before the failover still delivers after it, and keeps the
    API's promise: it ends only with a `: closed:` comment, and the stream open at the end
    delivered task.completed for every task created after its first line was read."""
    described = reader.describe(since)
    print(f"event stream: {described}")
    assert reader.connections[0].opened < since, described  # opened before the failover
    after = {a.task_id for a in load.acked_after(since)}
    assert reader.completed_ids() & after, f"no event after the failover: {described}"
    for connection in reader.connections[:-1]:
        assert connection.ending and connection.ending.startswith(CLOSED_COMMENT), described
    assert set(reader.refusals) <= {503}, described


def _run_failover(
    stack: Stack,
    queues: list[str],
    failover: Any,
) -> tuple[Load, EventReader, float]:
    """Start the load and the event stream, call `failover()` mid-load, and keep the load
    going until every worker has completed tasks created after it; returns when all the
    acknowledged creates have completed."""
    workers = _workers(stack)
    assert len(workers) == 3, workers
    base = f"http://127.0.0.1:{stack.api_port}"
    with EventReader(base) as reader:
        with Load(base, queues) as load:
            wait_until_sync(lambda: len(load.acknowledged) >= 60, timeout=20, message="creates")
            failed_over_at = time.monotonic()
            failover()
            print(f"failed over in {time.monotonic() - failed_over_at:.1f}s")
            wait_until_sync(
                lambda: (
                    Counter(a.queue for a in load.acked_after(failed_over_at)).keys() >= set(queues)
                ),
                timeout=30,
                message="creates in every queue after the failover",
            )
            _wait_every_worker_completes(stack, load, failed_over_at, list(workers))
            # Load goes on until the stream open now has delivered the completion of a task
            # created after it opened: streaming resumed (reconnecting if it had to).
            try:
                wait_until_sync(
                    lambda: set.intersection(*_owed(reader, load, failed_over_at)),
                    timeout=30,
                    interval=0.2,
                    message="a stream delivering events again after the failover",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {reader.describe(failed_over_at)}") from None
        assert not load.unexpected, load.unexpected
        _wait_all_completed(stack, load.acknowledged)
        _wait_stream_caught_up(reader, load)
    assert _workers(stack) == workers, "a worker was restarted"
    return load, reader, failed_over_at


@pytest.mark.parametrize("events_mode", ["classic", "sharded"])
def test_manual_cluster_failover_under_load_loses_nothing_and_every_worker_resumes(
    cluster: Cluster, tmp_path: Path, events_mode: str
) -> None:
    """CLUSTER FAILOVER is coordinated (the replica catches up before it takes over), so
    nothing is lost even with REDIS_WAIT_REPLICAS at its default 0."""
    shard = cluster.primary_for_key(EVENTS_CHANNEL)
    assert shard is cluster.primary_for_key(QUEUES)  # the hardest shard, see the docstring
    queues = _queues_with_first_on(cluster, shard)
    stack = _stack(tmp_path, cluster, queues, EVENTS_MODE=events_mode).start()
    try:
        replica = cluster.replica_of(shard)

        def failover() -> None:
            cluster.failover(replica)
            assert cluster.primary_for_key(_counts_key(queues[0])) is replica

        load, reader, at = _run_failover(stack, queues, failover)
        _assert_counts_add_up(stack, load.acknowledged, queues)
        _assert_stream_rode_through(reader, load, at)
    except BaseException:
        _dump(stack, tmp_path)
        raise
    finally:
        stack.stop()


@pytest.mark.parametrize("events_mode", ["classic", "sharded"])
def test_sigkilled_primary_under_load_loses_no_acknowledged_create(
    cluster: Cluster, tmp_path: Path, events_mode: str
) -> None:
    """A SIGKILLed primary takes with it what its replica had not copied yet, so a create is
    acknowledged only once a replica holds it (REDIS_WAIT_REPLICAS=1): none of those is lost.
    While the promoted replica has no replica of its own, creates in its queue get 503; the
    killed node restarts and rejoins as its replica, and they are acknowledged again."""
    shard = cluster.primary_for_key(EVENTS_CHANNEL)
    queues = _queues_with_first_on(cluster, shard)
    stack = _stack(
        tmp_path,
        cluster,
        queues,
        REDIS_WAIT_REPLICAS="1",
        REDIS_WAIT_TIMEOUT_MS="500",
        EVENTS_MODE=events_mode,
    ).start()
    try:
        replica = cluster.replica_of(shard)

        def kill_and_restart() -> None:
            cluster.kill(shard)
            wait_until_sync(
                lambda: replica.role == "master", timeout=15, message="the replica promoted"
            )
            cluster.restart(shard, timeout=20)
            assert shard.role == "slave"
            assert cluster.primary_for_key(_counts_key(queues[0])) is replica

        load, reader, at = _run_failover(stack, queues, kill_and_restart)
        assert load.refused > 0  # the client did see the failover
        _assert_counts_add_up(stack, load.acknowledged, queues)
        _assert_stream_rode_through(reader, load, at)
    except BaseException:
        _dump(stack, tmp_path)
        raise
    finally:
        stack.stop()


def test_a_shard_fully_down_refuses_its_queue_and_the_others_keep_completing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Primary and replica of one shard killed: its queue's creates get 503 with a JSON error
    and Retry-After; the queues on the other shards keep completing on every worker. Known
    limit (README, Scaling): the shard holding `{_global}` (registry, heartbeats) is not the
    one taken down."""
    global_shard = cluster.primary_for_key(QUEUES)
    queues = cluster.queues_on_distinct_primaries(3)
    down = next(q for q in queues if cluster.primary_for_key(_counts_key(q)) is not global_shard)
    others = [q for q in queues if q != down]
    doomed = cluster.primary_for_key(_counts_key(down))
    doomed_replica = cluster.replica_of(doomed)
    stack = _stack(tmp_path, cluster, queues).start()
    base = f"http://127.0.0.1:{stack.api_port}"
    try:
        workers = _workers(stack)
        with Load(base, queues) as load:
            wait_until_sync(lambda: len(load.acknowledged) >= 30, timeout=20, message="creates")
        before = list(load.acknowledged)
        _wait_all_completed(stack, before)
        # Tasks running in the doomed queue when its shard dies: their workers cannot report
        # them (they wait for the shard, or for recovery) and must go on with the others.
        running = [
            stack.create(type="sleep", payload={"seconds": 1.0}, queue=down)["id"] for _ in range(6)
        ]

        def all_started() -> list[datetime] | None:
            tasks = [stack.task(task_id) for task_id in running]
            if any(task["status"] != "processing" for task in tasks):
                return None
            return [datetime.fromisoformat(task["started_at"]) for task in tasks]

        started = wait_until_sync(all_started, message="tasks running in the doomed queue")
        assert started is not None
        cluster.kill(doomed_replica)
        cluster.kill(doomed)
        # When those handlers are done (by this host's clock, as the stack's): tasks created
        # after that must complete on every worker, whatever became of those outcomes.
        handlers_done = time.monotonic() + max(started).timestamp() + 1.0 - time.time()

        def refused() -> httpx.Response | None:
            answer = stack.api.post(
                "/api/tasks", json={"type": "sum", "payload": [1], "queue": down}
            )
            assert answer.status_code in (201, 503), answer.text
            return answer if answer.status_code == 503 else None

        answer = wait_until_sync(refused, timeout=20, message="503 in the dead shard's queue")
        assert answer is not None
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"]
        assert int(answer.headers["Retry-After"]) > 0
        with Load(base, others) as load:
            # (Failed while redis-py's cluster client, left to itself, stopped serving every
            # shard once one was down: see _Cluster in shared/redis_url.py.)
            _wait_every_worker_completes(stack, load, handlers_done, list(workers), timeout=30)
            wait_until_sync(lambda: len(load.acknowledged) >= 60, timeout=30, message="creates")
        assert not load.unexpected, load.unexpected
        _wait_all_completed(stack, load.acknowledged)
        # Still refused, still no restart.
        assert refused() is not None
        assert _workers(stack) == workers, "a worker was restarted"
        for queue in others:
            view = stack.api.get(f"/api/queues/{queue}").json()
            expected = sum(1 for a in before + load.acknowledged if a.queue == queue)
            assert view["total_tasks"] == view["completed_count"] == expected, view
    except BaseException:
        _dump(stack, tmp_path)
        raise
    finally:
        stack.stop()
