"""shared.client against the real API app on a real Redis (served by uvicorn on loopback):
every method of `Client` and `AsyncClient`, every error class from a real error answer, lists
paged by cursor, and `wait()` for tasks a real consumer runs. What a healthy API never does
on demand (a 503 then a 201) comes from a scripted loopback server; an answer lost after the
API acted, from a transport that drops it on the way back."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.api.app import create_app as create_api
from shared.client import (
    ApiError,
    AsyncClient,
    BatchResult,
    Client,
    Conflict,
    ConnectionFailed,
    CreateOptions,
    Health,
    NotFound,
    Queue,
    RateLimit,
    RetryAccepted,
    Schedule,
    TaskPage,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from shared.models import Stats, Task, TaskCreate, TaskDetails, TaskEvent
from shared.redis import Conn
from shared.registry import Permanent, TaskContext
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.services.test_consumer import running
from tests.support.api_server import serve
from tests.support.redis_server import free_port
from tests.support.scripted_http import Reply, Seen, scripted
from tests.support.seed import ensure_test_types
from tests.support.waiting import wait_until

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def app(conn: Conn, settings: Settings) -> Any:
    ensure_test_types()
    return create_api(settings)


@pytest.fixture
def api(app: Any) -> Iterator[str]:
    with serve(app) as base:
        yield base


async def _double(payload: Any, ctx: TaskContext) -> Any:
    if payload == "fail":
        raise Permanent("asked to fail")
    return payload["n"] * 2


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


# --- tasks ------------------------------------------------------------------------------------


def test_sync_client_creates_reads_cancels_retries_and_acts_in_bulk(api: str) -> None:
    with Client(api) as client:
        options: CreateOptions = {
            "priority": 5,
            "max_retries": 1,
            "queue": "media",
            "idempotency_key": "k-1",
        }
        task = client.enqueue("noop", {"n": 1}, **options)
        assert isinstance(task, Task)
        assert (task.status, task.priority, task.max_retries, task.queue) == (
            "pending",
            5,
            1,
            "media",
        )
        # The same Idempotency-Key replays the original task.
        assert client.enqueue("noop", {"n": 1}, **options).id == task.id
        assert client.get(task.id).id == task.id
        details = client.details(task.id)
        assert isinstance(details, TaskDetails) and details.task.id == task.id
        assert [e.event for e in details.events] == ["task.created"]

        scheduled = client.enqueue("noop", {"n": 2}, scheduled_for=_later())
        assert scheduled.status == "scheduled" and scheduled.scheduled_for is not None
        cancelled = client.cancel(scheduled.id)
        assert cancelled.status == "cancelled" and not cancelled.cancel_requested
        assert client.retry(scheduled.id) == RetryAccepted(task_id=scheduled.id)
        assert client.get(scheduled.id).status in ("pending", "scheduled")

        batch = client.enqueue_many(
            [
                {"type": "noop", "payload": {"n": 3}, "ref": "first"},
                TaskCreate(type="noop", payload={"n": 4}, ref="second", depends_on=["first"]),
            ]
        )
        assert isinstance(batch, BatchResult) and len(batch.tasks) == 2
        assert batch.refs == {"first": batch.tasks[0].id, "second": batch.tasks[1].id}
        assert batch.tasks[1].status == "waiting"
        assert batch.tasks[1].depends_on == [batch.tasks[0].id]
        third = client.enqueue("noop", {"n": 5}, depends_on=(batch.tasks[1].id,))
        assert third.status == "waiting" and third.depends_on == [batch.tasks[1].id]
        with pytest.raises(NotFound) as unknown_dependency:
            client.enqueue("noop", {"n": 6}, depends_on=[str(uuid.uuid4())])
        assert unknown_dependency.value.details[0]["msg"] == "unknown task"

        unknown = str(uuid.uuid4())
        done = client.bulk("cancel", ids=[scheduled.id, unknown])
        assert (done.action, done.acted, done.skipped["not_found"]) == ("cancel", 1, 1)
        assert client.get(scheduled.id).status == "cancelled"
        by_filter = client.bulk("purge", filter={"status": "cancelled"})
        assert by_filter.acted == 1 and by_filter.cursor is None
        with pytest.raises(NotFound):
            client.get(scheduled.id)


def test_iter_tasks_follows_the_cursors_across_pages(api: str) -> None:
    with Client(api) as client:
        created = client.enqueue_many([{"type": "noop", "payload": {"n": n}} for n in range(7)])
        client.enqueue("image", "other type")
        first = client.list_tasks(type="noop", limit=3)
        assert isinstance(first, TaskPage) and len(first) == 3 and first.next_cursor
        second = client.list_tasks(type="noop", limit=3, cursor=first.next_cursor)
        third = client.list_tasks(type="noop", limit=3, cursor=second.next_cursor)
        assert (len(second), len(third), third.next_cursor) == (3, 1, None)
        paged = [t.id for page in (first, second, third) for t in page]
        walked = [t.id for t in client.iter_tasks(type="noop", page_size=3)]
        assert walked == paged
        assert sorted(walked) == sorted(t.id for t in created.tasks)
        assert [t.type for t in client.iter_tasks(page_size=2)].count("image") == 1
        assert list(client.iter_tasks(status="failed")) == []


def test_every_error_class_comes_from_a_real_error_answer(api: str, settings: Settings) -> None:
    with Client(api) as client:
        with pytest.raises(NotFound) as missing:
            client.get(str(uuid.uuid4()))
        assert missing.value.status == 404 and "not found" in missing.value.message
        with pytest.raises(NotFound):
            client.get("not/an id")
        with pytest.raises(NotFound):
            client.queue("never-used")

        with pytest.raises(ValidationFailed) as invalid:
            client.enqueue("noop", 1, priority=9)
        assert invalid.value.status == 400 and invalid.value.details[0]["loc"][-1] == "priority"
        with pytest.raises(ValidationFailed, match="unknown task type"):
            client.enqueue("no-such-type", 1)

        holder = client.enqueue("noop", {"n": 1}, unique_key="only-one")
        with pytest.raises(Conflict) as taken:
            client.enqueue("noop", {"n": 1}, unique_key="only-one")
        assert taken.value.status == 409 and taken.value.details == [{"task_id": holder.id}]
        client.cancel(holder.id)
        with pytest.raises(Conflict):
            client.cancel(holder.id)

    keyed = make_settings(settings.redis_url, api_keys="admin-key", api_read_keys="read-key")
    with serve(create_api(keyed)) as base:
        with Client(base) as anonymous, pytest.raises(Unauthorized) as refused:
            anonymous.stats()
        assert refused.value.status == 401
        with Client(base, api_key="read-key") as reader:
            assert isinstance(reader.stats(), Stats)
            with pytest.raises(Unauthorized) as read_only:
                reader.enqueue("noop", 1)
            assert read_only.value.status == 403
        with Client(base, api_key="admin-key") as admin:
            assert admin.enqueue("noop", {"n": 1}).status == "pending"


def test_a_redis_outage_is_unavailable_with_retry_after() -> None:
    down = make_settings(f"redis://127.0.0.1:{free_port()}/0")
    with serve(create_api(down)) as base, Client(base, retries=0) as client:
        with pytest.raises(Unavailable) as outage:
            client.enqueue("noop", 1)
        assert outage.value.status == 503 and outage.value.retry_after == 1.0
        assert "redis unavailable" in outage.value.message
        # Retry-After (1 s) would end after the budget: raised at once, not waited for.
        started = time.monotonic()
        with Client(base, retries=5, retry_budget=0.5) as patient, pytest.raises(Unavailable):
            patient.get(str(uuid.uuid4()))
        assert time.monotonic() - started < 1.0
        health = client.health()  # a 503 that is an answer, not an error
        assert isinstance(health, Health) and health.status == "degraded" and health.reason


def test_an_api_that_is_not_there_is_a_connection_failure() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", retries=2, retry_budget=5) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as failed:
            client.stats()
    assert isinstance(failed.value, Unavailable) and failed.value.status == 0
    assert 0.5 < time.monotonic() - started < 5  # two retries after 0.2 s and 0.4 s


# --- wait -------------------------------------------------------------------------------------


async def test_sync_wait_follows_the_events_until_a_consumer_finishes(
    api: str, app: Any, conn: Conn, settings: Settings
) -> None:
    with Client(api) as client:
        task = client.enqueue("noop", {"n": 21})
        failing = client.enqueue("noop", "fail")
        waiting = asyncio.create_task(asyncio.to_thread(client.wait, task.id, 10))
        await wait_until(lambda: app.state.open_streams == 1, message="wait's stream")
        assert client.get(task.id).status == "pending"  # nothing ran before wait listened
        async with running(conn, settings, {"noop": _double}):
            done = await waiting
            failed = await asyncio.to_thread(client.wait, failing.id, 10)
        assert (done.status, done.result) == ("completed", 42)
        assert failed.status == "failed" and "asked to fail" in (failed.error or "")
        # A task already final: read once the stream is open, returned at once.
        assert (await asyncio.to_thread(client.wait, task.id, 5)).status == "completed"
        with pytest.raises(NotFound):
            await asyncio.to_thread(client.wait, str(uuid.uuid4()), 5)
        later = client.enqueue("noop", {"n": 1}, scheduled_for=_later())
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            await asyncio.to_thread(client.wait, later.id, 0.5)
        assert time.monotonic() - started < 3


class _CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.streams += request.url.path == "/api/events"
        return super().handle_request(request)


async def test_wait_reopens_a_stream_the_api_closed_and_reads_the_task_again(
    api: str, app: Any, conn: Conn, settings: Settings
) -> None:
    transport = _CountingTransport()
    with Client(api, transport=transport) as client:
        task = client.enqueue("noop", {"n": 5})
        waiting = asyncio.create_task(asyncio.to_thread(client.wait, task.id, 20))
        await wait_until(lambda: app.state.open_streams == 1, message="wait's stream")
        # The API's subscription drops: it closes the stream with `: closed: ...`.
        await conn.redis.client_kill_filter(_type="pubsub")
        await wait_until(lambda: transport.streams >= 2, message="a second stream")
        await wait_until(lambda: app.state.open_streams == 1, message="the second stream open")
        async with running(conn, settings, {"noop": _double}):
            done = await waiting
        assert (done.status, done.result) == ("completed", 10)


def _task_json(status: str = "pending", **fields: Any) -> bytes:
    now = datetime.now(UTC)
    task = Task(
        id=str(uuid.uuid4()),
        type="noop",
        payload=1,
        status=status,
        priority=3,
        max_retries=2,
        retry_count=0,
        created_at=now,
        updated_at=now,
        **fields,
    )
    return task.model_dump_json().encode()


def test_wait_reopens_after_a_closed_comment_and_rereads_the_task() -> None:
    reads = iter([_task_json("processing"), _task_json("completed", result=7)])

    def answer(request: Seen) -> Reply:
        if request.path.startswith("/api/events"):
            first = len([s for s in script.seen if s.path.startswith("/api/events")]) == 1
            tail = [": closed: lagging; reconnect and re-read\n\n"] if first else []
            return Reply(stream=["retry: 2000\n\n", *tail])
        return Reply(200, next(reads), {"Content-Type": "application/json"})

    with scripted(answer) as (url, script), Client(url) as client:
        done = client.wait("some-task", timeout=5)
    assert done.status == "completed" and done.result == 7
    assert script.paths() == [
        "GET /api/events?task_id=some-task",
        "GET /api/tasks/some-task",
        "GET /api/events?task_id=some-task",
        "GET /api/tasks/some-task",
    ]


# --- retries of 503 ---------------------------------------------------------------------------


def _unavailable(retry_after: str) -> Reply:
    body = json.dumps({"error": "redis unavailable: loading", "details": []}).encode()
    return Reply(503, body, {"Content-Type": "application/json", "Retry-After": retry_after})


def _then_created(retry_after: str) -> Any:
    replies = iter([_unavailable(retry_after), Reply(201, _task_json())])
    return lambda request: next(replies)


def _assert_one_key_after(seen: list[Seen], seconds: float) -> None:
    assert len(seen) == 2 and seen[0].path == seen[1].path == "/api/tasks"
    keys = [s.headers["idempotency-key"] for s in seen]
    assert keys[0] == keys[1] and UUID.match(keys[0])
    assert json.loads(seen[0].body) == json.loads(seen[1].body) == {"type": "noop", "payload": 1}
    assert seen[1].at - seen[0].at >= seconds - 0.05


def test_sync_503_is_retried_after_retry_after_with_the_same_idempotency_key() -> None:
    with scripted(_then_created("1")) as (url, script), Client(url) as client:
        assert client.enqueue("noop", 1).status == "pending"
    _assert_one_key_after(script.seen, 1.0)
    # Each create has a key of its own.
    with scripted(_then_created("0")) as (url, other), Client(url) as client:
        client.enqueue("noop", 1)
    assert other.seen[0].headers["idempotency-key"] != script.seen[0].headers["idempotency-key"]


async def test_async_503_is_retried_after_retry_after_with_the_same_idempotency_key() -> None:
    with scripted(_then_created("1")) as (url, script):
        async with AsyncClient(url) as client:
            assert (await client.enqueue("noop", 1)).status == "pending"
    _assert_one_key_after(script.seen, 1.0)


def test_503_retries_are_bounded_and_never_resend_a_trigger() -> None:
    with scripted(lambda request: _unavailable("30")) as (url, script):
        with Client(url, retry_budget=5) as client, pytest.raises(Unavailable) as late:
            client.enqueue("noop", 1)
        assert late.value.retry_after == 30 and len(script.seen) == 1
        with Client(url, retries=2) as client, pytest.raises(Unavailable):
            client.trigger_schedule("nightly")
        assert len(script.seen) == 2
    with scripted(lambda request: _unavailable("0")) as (url, script):
        with Client(url, retries=2) as client, pytest.raises(Unavailable):
            client.stats()
        assert len(script.seen) == 3  # the first attempt and two retries
        # Without automatic keys a create has none, and is never resent.
        with Client(url, idempotency_keys=False) as keyless, pytest.raises(Unavailable):
            keyless.enqueue("noop", 1)
        assert len(script.seen) == 4 and "idempotency-key" not in script.seen[3].headers
        with Client(url, idempotency_keys=False, retries=1) as keyless, pytest.raises(Unavailable):
            keyless.enqueue_many([{"type": "noop", "payload": 1}], idempotency_key="mine")
        assert [s.headers["idempotency-key"] for s in script.seen[4:]] == ["mine", "mine"]
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # in the past: retry at once
    with scripted(lambda request: _unavailable(date)) as (url, script):
        with Client(url, retries=1) as client, pytest.raises(Unavailable) as dated:
            client.stats()
        assert dated.value.retry_after == 0 and len(script.seen) == 2


# --- a resend after a lost answer -------------------------------------------------------------


class _Lose:
    """Loses the answer to the first `method` request; keeps every request in `seen`. `how`:
    "dropped" (it reaches the API, then the connection drops), "503" (it reaches the API, then
    a 503 comes in place of the answer, as when replicas did not confirm the write in time),
    "503-unsent" (the 503 alone: the API never sees it) or "refused" (no connection opens)."""

    def __init__(self, method: str, how: str) -> None:
        self.method, self.how = method, how
        self.seen: list[str] = []
        self.lost = False

    def intercepts(self, request: httpx.Request) -> bool:
        self.seen.append(f"{request.method} {request.url.path}")
        hit = request.method == self.method and not self.lost
        self.lost = self.lost or hit
        return hit

    def reaches_the_api(self) -> bool:
        return self.how in ("dropped", "503")

    def answer(self, request: httpx.Request) -> httpx.Response:
        if self.how == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if self.how == "dropped":
            raise httpx.ReadError("connection reset by peer", request=request)
        body = {"error": "redis unavailable: replicas did not confirm", "details": []}
        return httpx.Response(503, json=body, headers={"Retry-After": "0"})


class _LosingTransport(httpx.HTTPTransport):
    def __init__(self, lose: _Lose) -> None:
        super().__init__()
        self.lose = lose

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.lose.intercepts(request):
            return super().handle_request(request)
        if self.lose.reaches_the_api():
            acted = super().handle_request(request)
            acted.read()
            acted.close()
        return self.lose.answer(request)


class _AsyncLosingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, lose: _Lose) -> None:
        super().__init__()
        self.lose = lose

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.lose.intercepts(request):
            return await super().handle_async_request(request)
        if self.lose.reaches_the_api():
            acted = await super().handle_async_request(request)
            await acted.aread()
            await acted.aclose()
        return self.lose.answer(request)


def _resent_then_read(method: str, path: str, task_id: str) -> list[str]:
    return [f"{method} {path}", f"{method} {path}", f"GET /api/tasks/{task_id}"]


@pytest.mark.parametrize("how", ["dropped", "503"])
def test_sync_cancel_and_retry_whose_answer_was_lost_return_what_that_attempt_did(
    api: str, how: str
) -> None:
    with Client(api) as plain:
        task = plain.enqueue("noop", {"n": 1}, scheduled_for=_later())
    path = f"/api/tasks/{task.id}"
    # The first cancel cancels it; its resend is refused (409: final), the read settles it.
    lose = _Lose("DELETE", how)
    with Client(api, transport=_LosingTransport(lose)) as client:
        cancelled = client.cancel(task.id)
    assert (cancelled.id, cancelled.status) == (task.id, "cancelled")
    assert lose.seen == _resent_then_read("DELETE", path, task.id)
    lose = _Lose("POST", how)
    with Client(api, transport=_LosingTransport(lose)) as client:
        assert client.retry(task.id) == RetryAccepted(task_id=task.id)
        assert client.get(task.id).status in ("pending", "scheduled")
    assert lose.seen[:3] == _resent_then_read("POST", f"{path}/retry", task.id)


@pytest.mark.parametrize("how", ["dropped", "503"])
async def test_async_cancel_and_retry_whose_answer_was_lost_return_what_that_attempt_did(
    api: str, how: str
) -> None:
    async with AsyncClient(api) as plain:
        task = await plain.enqueue("noop", {"n": 1}, scheduled_for=_later())
    path = f"/api/tasks/{task.id}"
    lose = _Lose("DELETE", how)
    async with AsyncClient(api, transport=_AsyncLosingTransport(lose)) as client:
        cancelled = await client.cancel(task.id)
    assert (cancelled.id, cancelled.status) == (task.id, "cancelled")
    assert lose.seen == _resent_then_read("DELETE", path, task.id)
    lose = _Lose("POST", how)
    async with AsyncClient(api, transport=_AsyncLosingTransport(lose)) as client:
        assert await client.retry(task.id) == RetryAccepted(task_id=task.id)
        assert (await client.get(task.id)).status in ("pending", "scheduled")
    assert lose.seen[:3] == _resent_then_read("POST", f"{path}/retry", task.id)


async def test_a_resend_refused_for_a_reason_of_its_own_still_raises_conflict(
    api: str, conn: Conn, settings: Settings
) -> None:
    async with AsyncClient(api) as plain:
        done = await plain.enqueue("noop", {"n": 1})
        async with running(conn, settings, {"noop": _double}):
            assert (await plain.wait(done.id, 10)).status == "completed"
        held = await plain.enqueue("noop", {"n": 2}, unique_key="u", scheduled_for=_later())
        await plain.cancel(held.id)
        holder = await plain.enqueue("noop", {"n": 3}, unique_key="u", scheduled_for=_later())
    path = f"/api/tasks/{done.id}"
    # A 503 the API never sent leaves the first cancel in doubt, but the read finds the task
    # completed, not cancelled: the 409 stands.
    lose = _Lose("DELETE", "503-unsent")
    with Client(api, transport=_LosingTransport(lose)) as client, pytest.raises(Conflict):
        client.cancel(done.id)
    assert lose.seen == _resent_then_read("DELETE", path, done.id)
    lose = _Lose("DELETE", "503-unsent")
    async with AsyncClient(api, transport=_AsyncLosingTransport(lose)) as client:
        with pytest.raises(Conflict):
            await client.cancel(done.id)
    assert lose.seen == _resent_then_read("DELETE", path, done.id)
    # Both retries are refused because another task holds the unique_key; it stays cancelled.
    path = f"/api/tasks/{held.id}/retry"
    for how in ("dropped", "503"):
        lose = _Lose("POST", how)
        async with AsyncClient(api, transport=_AsyncLosingTransport(lose)) as client:
            with pytest.raises(Conflict) as taken:
                await client.retry(held.id)
        assert taken.value.details == [{"task_id": holder.id}]
        assert lose.seen == _resent_then_read("POST", path, held.id)
        lose = _Lose("POST", how)
        with Client(api, transport=_LosingTransport(lose)) as sync, pytest.raises(Conflict):
            sync.retry(held.id)
        assert lose.seen == _resent_then_read("POST", path, held.id)


async def test_without_an_attempt_that_may_have_acted_a_refusal_is_raised_as_it_came(
    api: str,
) -> None:
    # A connection that did not open never reached the API: the resend's answer is the truth,
    # even where the read would have settled it (cancelled; pending after a retry).
    with Client(api) as plain:
        cancelled = plain.enqueue("noop", {"n": 1}, scheduled_for=_later())
        plain.cancel(cancelled.id)
        pending = plain.enqueue("noop", {"n": 2})
    lose = _Lose("DELETE", "refused")
    with Client(api, transport=_LosingTransport(lose)) as client:
        with pytest.raises(Conflict):
            client.cancel(cancelled.id)
        with pytest.raises(NotFound) as missing:
            client.delete_schedule("never-made")
    assert "earlier attempt" not in missing.value.message
    assert lose.seen == [f"DELETE /api/tasks/{cancelled.id}"] * 2 + [
        "DELETE /api/schedules/never-made"
    ]
    lose = _Lose("POST", "refused")
    async with AsyncClient(api, transport=_AsyncLosingTransport(lose)) as client:
        with pytest.raises(Conflict):
            await client.retry(pending.id)
        with pytest.raises(NotFound) as missing:
            await client.delete_schedule("never-made")
    assert "earlier attempt" not in missing.value.message
    assert lose.seen == [f"POST /api/tasks/{pending.id}/retry"] * 2 + [
        "DELETE /api/schedules/never-made"
    ]


@pytest.mark.parametrize("how", ["dropped", "503"])
async def test_delete_schedule_whose_answer_was_lost_raises_not_found_saying_so(
    api: str, how: str
) -> None:
    """The schedule is gone, as asked, but the lost answer held it: NotFound, which says an
    earlier attempt may have deleted it (the documented behaviour)."""
    task = {"type": "noop", "payload": 1}
    lose = _Lose("DELETE", how)
    with Client(api, transport=_LosingTransport(lose)) as client:
        client.put_schedule("nightly", task, interval_seconds=3600)
        with pytest.raises(NotFound) as gone:
            client.delete_schedule("nightly")
        with pytest.raises(NotFound):
            client.schedule("nightly")
    assert gone.value.status == 404 and "earlier attempt" in gone.value.message
    assert lose.seen.count("DELETE /api/schedules/nightly") == 2
    lose = _Lose("DELETE", how)
    async with AsyncClient(api, transport=_AsyncLosingTransport(lose)) as client:
        await client.put_schedule("hourly", task, interval_seconds=3600)
        with pytest.raises(NotFound) as gone:
            await client.delete_schedule("hourly")
        assert [s.name for s in await client.schedules()] == []
    assert gone.value.status == 404 and "earlier attempt" in gone.value.message
    assert lose.seen.count("DELETE /api/schedules/hourly") == 2


# --- queues, monitoring, schedules ------------------------------------------------------------


def test_sync_client_queues_stats_health_metrics_and_schedules(api: str) -> None:
    with Client(f"{api}/api/") as client:  # a trailing /api is accepted
        client.enqueue("noop", {"n": 1}, queue="mail")
        names = [q.name for q in client.queues()]
        assert "mail" in names and all(isinstance(q, Queue) for q in client.queues())
        paused = client.pause_queue("mail")
        assert paused.paused and paused.name == "mail" and paused.pending_count == 1
        assert client.queue("mail").paused
        assert not client.resume_queue("mail").paused
        limited = client.set_queue_limits(
            "mail", rate_limit=RateLimit(tasks=10, per_seconds=1), max_concurrency=2
        )
        assert limited.rate_limit == RateLimit(tasks=10, per_seconds=1)
        assert limited.max_concurrency == 2
        assert client.set_queue_limits("mail", rate_limit={"tasks": 5, "per_seconds": 2})
        cleared = client.set_queue_limits("mail")
        assert cleared.rate_limit is None and cleared.max_concurrency is None

        stats = client.stats()
        assert isinstance(stats, Stats) and stats.total_tasks == 1 and "mail" in stats.queues
        assert client.stats("mail").pending_count == 1
        health = client.health()
        assert health.status == "ok" and health.redis == "ok" and "worker" in health.services
        assert "taskqueue_tasks_total" in client.metrics()

        made = client.put_schedule(
            "nightly", {"type": "noop", "payload": {"n": 1}}, interval_seconds=3600
        )
        assert isinstance(made, Schedule) and made.interval_seconds == 3600 and made.next_run_at
        assert [s.name for s in client.schedules()] == ["nightly"]
        assert client.schedule("nightly").task["type"] == "noop"
        assert client.pause_schedule("nightly").paused
        assert not client.resume_schedule("nightly").paused
        fired = client.trigger_schedule("nightly")
        assert fired.schedule == "nightly" and fired.type == "noop"
        assert client.schedule("nightly").last_task_id == fired.id
        with pytest.raises(ValidationFailed):
            client.put_schedule("bad", {"type": "noop", "payload": 1}, cron="not cron")
        assert client.delete_schedule("nightly").name == "nightly"
        with pytest.raises(NotFound):
            client.schedule("nightly")


# --- the async client -------------------------------------------------------------------------


async def test_async_client_covers_the_same_routes(
    api: str, app: Any, conn: Conn, settings: Settings
) -> None:
    async with AsyncClient(api) as client:
        task = await client.enqueue("noop", {"n": 4}, priority=4)
        assert (await client.get(task.id)).priority == 4
        assert (await client.details(task.id)).task.id == task.id
        batch = await client.enqueue_many([{"type": "noop", "payload": {"n": n}} for n in range(5)])
        page = await client.list_tasks(limit=2)
        assert len(page) == 2 and page.next_cursor
        walked = [t.id async for t in client.iter_tasks(page_size=2)]
        assert sorted(walked) == sorted([task.id, *(t.id for t in batch.tasks)])

        waiting = asyncio.create_task(client.wait(task.id, 10))
        await wait_until(lambda: app.state.open_streams == 1, message="wait's stream")
        async with running(conn, settings, {"noop": _double}):
            done = await waiting
            assert (done.status, done.result) == ("completed", 8)
            failing = await client.enqueue("noop", "fail")
            failed = await client.wait(failing.id, 10)
            assert failed.status == "failed"
        assert await client.retry(failing.id) == RetryAccepted(task_id=failing.id)
        later = await client.enqueue("noop", {"n": 1}, scheduled_for=_later())
        assert (await client.cancel(later.id)).status == "cancelled"
        with pytest.raises(WaitTimeout):
            await client.wait(failing.id, 0.3)  # pending again, and no consumer runs
        bulk = await client.bulk("retry", ids=[later.id])
        assert bulk.acted == 1

        assert (await client.stats()).total_tasks == 8
        assert (await client.health()).status == "ok"
        assert "taskqueue_queue_depth" in await client.metrics()
        assert [q.name for q in await client.queues()] == ["default"]
        assert (await client.pause_queue("default")).paused
        assert not (await client.resume_queue("default")).paused
        assert (await client.queue("default")).name == "default"
        limited = await client.set_queue_limits("default", max_concurrency=3)
        assert limited.max_concurrency == 3

        await client.put_schedule(
            "every-minute", TaskCreate(type="noop", payload=1), cron="* * * * *"
        )
        assert [s.cron for s in await client.schedules()] == ["* * * * *"]
        assert (await client.pause_schedule("every-minute")).paused
        assert not (await client.resume_schedule("every-minute")).paused
        assert (await client.trigger_schedule("every-minute")).schedule == "every-minute"
        assert (await client.schedule("every-minute")).name == "every-minute"
        assert (await client.delete_schedule("every-minute")).name == "every-minute"

        for call in (client.get(str(uuid.uuid4())), client.schedule("gone")):
            with pytest.raises(NotFound):
                await call
        with pytest.raises(ValidationFailed):
            await client.enqueue("noop", 1, max_retries=99)
        with pytest.raises(Conflict) as final:
            await client.cancel(task.id)  # completed: nothing to cancel
        assert isinstance(final.value, ApiError) and final.value.status == 409


async def test_events_stream_live_task_events(api: str, app: Any) -> None:
    seen: list[TaskEvent] = []
    async with AsyncClient(api) as client:

        async def read() -> None:
            async for event in client.events():
                seen.append(event)

        reader = asyncio.create_task(read())
        await wait_until(lambda: app.state.open_streams == 1, message="the stream")
        task = await client.enqueue("noop", {"n": 1})
        await wait_until(lambda: [e.event for e in seen] == ["task.created"], message="event")
        assert seen[0].task_id == task.id and seen[0].status == "pending"
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
    # The sync client, on one task's stream.
    with Client(api) as sync:
        later = sync.enqueue("noop", {"n": 1}, scheduled_for=_later())
        other = sync.enqueue("noop", {"n": 2}, scheduled_for=_later())
        events = sync.events(later.id)
        first = asyncio.create_task(asyncio.to_thread(next, events))
        await wait_until(lambda: app.state.open_streams == 1, message="the filtered stream")
        sync.cancel(other.id)
        sync.cancel(later.id)
        event = await first
        assert (event.task_id, event.event, event.status) == (
            later.id,
            "task.cancelled",
            "cancelled",
        )
        events.close()


def test_an_answer_that_is_not_the_api_s_json_is_still_an_api_error() -> None:
    """A proxy in front of the API answers in its own words: the status and its text."""
    page = Reply(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"})
    with (
        scripted(lambda request: page) as (url, script),
        Client(url) as client,
        pytest.raises(ApiError) as proxied,
    ):
        client.get(str(uuid.uuid4()))
    error = proxied.value
    assert type(error) is ApiError and error.status == 502 and error.details == []
    assert error.message == "<html>Bad Gateway</html>" and len(script.seen) == 1
