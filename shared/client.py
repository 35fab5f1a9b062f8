"""HTTP client of the REST API (SPEC section 13): `Client` (sync) and `AsyncClient` (async).

Both clients share everything but the sending: each method builds a `_Call` (the request and
how to decode its answer) once, `_decode` turns an answer into a typed result or one of the
exceptions below, `_Attempts` decides whether and when a 503 (or a connection that never
opened) is tried again, `_Settle` tells a refused resend from an action the lost first
attempt already took, and `_WaitState` reads the event stream for `wait()`. A create
carries an `Idempotency-Key` (a fresh uuid unless given), kept across its attempts, so a
retried create never makes two tasks.

It needs no handler modules and no Redis: only httpx and the models of `shared.models`.

    with Client("http://127.0.0.1:8080", api_key="...") as client:
        task = client.enqueue("sum", [1, 2, 3.5], priority=5)
        done = client.wait(task.id, timeout=30)
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field, TypeAdapter
from pydantic_core import to_jsonable_python

from shared.models import (
    FINAL_STATUSES,
    RETRYABLE_STATUSES,
    QueueStats,
    Stats,
    Task,
    TaskCreate,
    TaskDetails,
    TaskEvent,
    TaskStatus,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "AsyncClient",
    "BatchResult",
    "BulkResult",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CreateOptions",
    "Health",
    "NotFound",
    "Queue",
    "RateLimit",
    "RetryAccepted",
    "Schedule",
    "TaskPage",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WaitTimeout",
]

DEFAULT_URL = "http://127.0.0.1:8080"
USER_AGENT = "taskqueue-client/0.1"
# The API sends `: keep-alive` after 15 s without events; a stream silent for longer is dead.
STREAM_SILENCE_SECONDS = 30.0

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# --- errors ------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the API (`{"error", "details"}`): its HTTP `status`, `message` and
    `details`. `status` is 0 when no answer came (ConnectionFailed)."""

    def __init__(self, status: int, message: str, details: list[Any] | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.details = details or []


class NotFound(ApiError):
    """404: no such task, queue or schedule."""


class Conflict(ApiError):
    """409: not allowed in the task's current state, a unique_key a live task holds (its id
    in `details`), or an Idempotency-Key whose tasks were purged."""


class ValidationFailed(ApiError):
    """400 (or 422): the request breaks the contract; `details` says where."""


class Unauthorized(ApiError):
    """401 (missing or wrong API key) or 403 (a read-only key used to write, or refused by
    the request guard)."""


class Unavailable(ApiError):
    """503 (Redis unavailable) or 429 (too many open event streams), after the client's own
    retries; `retry_after` is the server's Retry-After in seconds, if it sent one."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, message, details)
        self.retry_after = retry_after


class ConnectionFailed(Unavailable):
    """The API could not be reached (refused, reset, timed out): no HTTP answer at all."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class WaitTimeout(TimeoutError):
    """`wait()` gave up: the task did not reach a final status in time."""

    def __init__(self, task_id: str, timeout: float) -> None:
        super().__init__(f"task {task_id} not finished after {timeout:g} s")
        self.task_id = task_id


_ERROR_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationFailed,
    422: ValidationFailed,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
}


def _error(response: httpx.Response) -> ApiError:
    """The exception for an error answer, from its JSON body (or its text, from a proxy)."""
    status = response.status_code
    message = response.text[:500] or response.reason_phrase
    details: list[Any] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        message = str(body["error"])
        found = body.get("details")
        details = found if isinstance(found, list) else []
    if status in (429, 503):
        return Unavailable(status, message, details, _retry_after(response))
    return _ERROR_BY_STATUS.get(status, ApiError)(status, message, details)


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _transport_error(exc: httpx.TransportError, base_url: str) -> ConnectionFailed:
    error = ConnectionFailed(f"cannot reach the API at {base_url}: {exc or type(exc).__name__}")
    error.__cause__ = exc
    return error


# --- results the shared models do not have -----------------------------------------------


class RetryAccepted(BaseModel):
    """The answer to `POST /api/tasks/{id}/retry`: the task goes back to pending."""

    status: str = "retrying"
    task_id: str


class BatchResult(BaseModel):
    """The answer to `POST /api/tasks/batch`: the tasks in order, and each item's ref -> id."""

    tasks: list[Task]
    refs: dict[str, str] = Field(default_factory=dict)


class RateLimit(BaseModel):
    """At most `tasks` starts per `per_seconds` (SPEC section 9)."""

    tasks: int
    per_seconds: float


class Queue(QueueStats):
    """A named queue as `GET /api/queues` shows it (SPEC section 9)."""

    name: str
    paused: bool = False
    rate_limit: RateLimit | None = None
    max_concurrency: int | None = None
    workers: int = 0
    unhandled_by_type: dict[str, int] = Field(default_factory=dict)


class BulkResult(BaseModel):
    """What `POST /api/tasks/bulk` did (SPEC section 10): `skipped` counts by reason, and a
    `cursor` when more tasks match a filter."""

    action: str
    acted: int
    cancel_requested: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    cursor: str | None = None


class Schedule(BaseModel):
    """A recurring schedule (SPEC section 12)."""

    name: str
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    task: dict[str, Any] = Field(default_factory=dict)
    paused: bool = False
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_task_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ServiceHealth(BaseModel):
    instances: int = 0


class Health(BaseModel):
    """`GET /api/health`: `status` is "ok", or "degraded" (a 503) with a `reason`."""

    status: str
    redis: str
    services: dict[str, ServiceHealth] = Field(default_factory=dict)
    redis_warnings: list[Any] = Field(default_factory=list)
    reason: str | None = None


@dataclass
class TaskPage:
    """One page of `GET /api/tasks`, newest first; `next_cursor` is None on the last one."""

    tasks: list[Task]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


class CreateOptions(TypedDict, total=False):
    """The optional fields of a create (SPEC sections 3, 9-11), and its Idempotency-Key."""

    priority: int
    max_retries: int
    scheduled_for: datetime | str
    webhook: str
    timeout_seconds: float
    queue: str
    unique_key: str
    depends_on: Sequence[str]
    idempotency_key: str


_TASKS = TypeAdapter(list[Task])
_QUEUES = TypeAdapter(list[Queue])
_SCHEDULES = TypeAdapter(list[Schedule])
BulkAction = Literal["retry", "cancel", "purge"]


# --- requests, built once for both clients -----------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request and how its answer becomes a result."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Sending it again after a 503 (or a dropped connection) does no harm.
    resend_safe: bool = True
    # Error statuses that are results, not exceptions (health's 503).
    accept: frozenset[int] = frozenset()
    # How a resend's refusal settles when an earlier attempt may have acted (see _Settle).
    settle: _Settle[T] | None = None


@dataclass(frozen=True)
class _Settle(Generic[T]):
    """How a call settles when an earlier attempt may have acted but its answer was lost (a
    dropped connection, or a 503 sent after the write) and a resend is refused with `status`,
    the refusal that action, once applied, causes itself. `read` (if any) fetches the state
    now; `result` turns the refusal and what was read into the call's result, or raises."""

    status: int
    result: Callable[[ApiError, Any], T]
    read: _Call[Any] | None = None

    def applies(self, refusal: ApiError, ambiguous: bool) -> bool:
        return ambiguous and refusal.status == self.status


def _cancelled(refusal: ApiError, task: Task) -> Task:
    """cancel: a 409 on a task that is cancelled means the earlier attempt cancelled it."""
    if task.status != TaskStatus.CANCELLED:
        raise refusal
    return task


def _retried(refusal: ApiError, task: Task) -> RetryAccepted:
    """retry: a 409 on a task no longer failed or cancelled means the earlier attempt moved
    it on (it may since have run)."""
    if task.status in RETRYABLE_STATUSES:
        raise refusal
    return RetryAccepted(task_id=task.id)


def _maybe_deleted(refusal: ApiError, _: None) -> Schedule:
    """delete_schedule: gone, as asked, but the schedule the lost answer held is lost too."""
    message = f"{refusal.message} (an earlier attempt, whose answer was lost, may have deleted it)"
    raise NotFound(refusal.status, message, refusal.details) from refusal


def _decode(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400 and response.status_code not in call.accept:
        raise _error(response)
    return call.decode(response)


def _model(kind: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: kind.model_validate_json(response.content)


def _list(adapter: TypeAdapter[Any]) -> Callable[[httpx.Response], Any]:
    return lambda response: adapter.validate_json(response.content)


def _seg(value: str) -> str:
    """A path segment, percent-escaped (ids and names never need it; other text stays text)."""
    return quote(value, safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


def _create_body(task_type: str, payload: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    body = {"type": task_type, "payload": payload}
    body.update({k: v for k, v in options.items() if k != "idempotency_key" and v is not None})
    return _jsonable(body)  # type: ignore[no-any-return]


def _item_body(item: TaskCreate | Mapping[str, Any]) -> Any:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", exclude_unset=True)
    return _jsonable(dict(item))


def _idempotency(key: str | None, auto: bool) -> dict[str, str]:
    """The create's Idempotency-Key header: the caller's, else a fresh uuid (if `auto`)."""
    if key is None and auto:
        key = str(uuid.uuid4())
    return {} if key is None else {"Idempotency-Key": key}


class _Calls:
    """Every route of SPEC section 3 and 9-12 as a `_Call`."""

    @staticmethod
    def enqueue(
        task_type: str, payload: Any, options: Mapping[str, Any], auto_key: bool
    ) -> _Call[Task]:
        headers = _idempotency(options.get("idempotency_key"), auto_key)
        return _Call(
            "POST",
            "/api/tasks",
            _model(Task),
            body=_create_body(task_type, payload, options),
            headers=headers,
            resend_safe=bool(headers),  # without a key, a resent create could make two
        )

    @staticmethod
    def enqueue_many(
        items: Sequence[TaskCreate | Mapping[str, Any]], key: str | None, auto_key: bool
    ) -> _Call[BatchResult]:
        headers = _idempotency(key, auto_key)
        return _Call(
            "POST",
            "/api/tasks/batch",
            _model(BatchResult),
            body={"tasks": [_item_body(item) for item in items]},
            headers=headers,
            resend_safe=bool(headers),
        )

    @staticmethod
    def get(task_id: str) -> _Call[Task]:
        return _Call("GET", f"/api/tasks/{_seg(task_id)}", _model(Task))

    @staticmethod
    def details(task_id: str) -> _Call[TaskDetails]:
        return _Call("GET", f"/api/tasks/{_seg(task_id)}/details", _model(TaskDetails))

    @staticmethod
    def list_tasks(
        status: str | None,
        task_type: str | None,
        queue: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> _Call[TaskPage]:
        def decode(response: httpx.Response) -> TaskPage:
            tasks = _TASKS.validate_json(response.content)
            return TaskPage(tasks, response.headers.get("x-next-cursor") or None)

        params = _params(status=status, type=task_type, queue=queue, limit=limit, cursor=cursor)
        return _Call("GET", "/api/tasks", decode, params=params)

    @staticmethod
    def retry(task_id: str) -> _Call[RetryAccepted]:
        path = f"/api/tasks/{_seg(task_id)}/retry"
        settle = _Settle(409, _retried, _Calls.get(task_id))
        return _Call("POST", path, _model(RetryAccepted), settle=settle)

    @staticmethod
    def cancel(task_id: str) -> _Call[Task]:
        settle = _Settle(409, _cancelled, _Calls.get(task_id))
        return _Call("DELETE", f"/api/tasks/{_seg(task_id)}", _model(Task), settle=settle)

    @staticmethod
    def bulk(
        action: str,
        ids: Sequence[str] | None,
        filter: Mapping[str, Any] | None,
        limit: int | None,
        cursor: str | None,
    ) -> _Call[BulkResult]:
        body = _params(
            action=action,
            ids=list(ids) if ids is not None else None,
            filter=dict(filter) if filter is not None else None,
            limit=limit,
            cursor=cursor,
        )
        return _Call("POST", "/api/tasks/bulk", _model(BulkResult), body=body)

    @staticmethod
    def stats(queue: str | None) -> _Call[Stats]:
        return _Call("GET", "/api/stats", _model(Stats), params=_params(queue=queue))

    @staticmethod
    def health() -> _Call[Health]:
        return _Call("GET", "/api/health", _model(Health), accept=frozenset({503}))

    @staticmethod
    def metrics() -> _Call[str]:
        return _Call("GET", "/metrics", lambda response: response.text)

    @staticmethod
    def queues() -> _Call[list[Queue]]:
        return _Call("GET", "/api/queues", _list(_QUEUES))

    @staticmethod
    def queue(name: str, action: str | None = None) -> _Call[Queue]:
        path = f"/api/queues/{_seg(name)}"
        if action is None:
            return _Call("GET", path, _model(Queue))
        return _Call("POST", f"{path}/{action}", _model(Queue))

    @staticmethod
    def set_queue_limits(
        name: str, rate_limit: RateLimit | Mapping[str, Any] | None, max_concurrency: int | None
    ) -> _Call[Queue]:
        body = {"rate_limit": _jsonable(rate_limit), "max_concurrency": max_concurrency}
        return _Call("PUT", f"/api/queues/{_seg(name)}/limits", _model(Queue), body=body)

    @staticmethod
    def schedules() -> _Call[list[Schedule]]:
        return _Call("GET", "/api/schedules", _list(_SCHEDULES))

    @staticmethod
    def schedule(name: str, action: str | None = None) -> _Call[Schedule]:
        path = f"/api/schedules/{_seg(name)}"
        if action is None:
            return _Call("GET", path, _model(Schedule))
        return _Call("POST", f"{path}/{action}", _model(Schedule))

    @staticmethod
    def put_schedule(name: str, body: dict[str, Any]) -> _Call[Schedule]:
        return _Call("PUT", f"/api/schedules/{_seg(name)}", _model(Schedule), body=body)

    @staticmethod
    def delete_schedule(name: str) -> _Call[Schedule]:
        settle = _Settle(404, _maybe_deleted)
        return _Call("DELETE", f"/api/schedules/{_seg(name)}", _model(Schedule), settle=settle)

    @staticmethod
    def trigger_schedule(name: str) -> _Call[Task]:
        # Each trigger fires a new task: a repeat after a 503 could fire twice.
        path = f"/api/schedules/{_seg(name)}/trigger"
        return _Call("POST", path, _model(Task), resend_safe=False)


def _schedule_body(
    task: TaskCreate | Mapping[str, Any],
    cron: str | None,
    interval_seconds: int | None,
    timezone: str,
    paused: bool,
) -> dict[str, Any]:
    return {
        "cron": cron,
        "interval_seconds": interval_seconds,
        "timezone": timezone,
        "task": _item_body(task),
        "paused": paused,
    }


# --- retries -------------------------------------------------------------------------------


class _Attempts:
    """The retry budget of one call: at most `retries` more attempts within `budget` seconds,
    each after the server's Retry-After (else a short exponential backoff)."""

    def __init__(self, retries: int, budget: float) -> None:
        self.left = retries
        self.deadline = time.monotonic() + budget
        self.done = 0

    def delay(self, error: Unavailable, resend_safe: bool) -> float | None:
        """Seconds to wait before the next attempt, or None to give up (raise `error`)."""
        if self.left <= 0 or not resend_safe:
            return None
        wait = error.retry_after
        if wait is None:
            wait = min(0.2 * 2**self.done, 5.0)
        if time.monotonic() + wait > self.deadline:
            return None
        self.left -= 1
        self.done += 1
        return wait


def _never_sent(exc: httpx.TransportError) -> bool:
    """The connection did not open: the server cannot have seen the request."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _after_transport_error(
    exc: httpx.TransportError, call: _Call[Any], base_url: str
) -> tuple[Unavailable, bool]:
    """The error to raise, and whether the request may be sent again: always when it never
    left (the connection did not open), else when it is resend-safe and did not time out."""
    safe = _never_sent(exc) or (call.resend_safe and not isinstance(exc, httpx.TimeoutException))
    return _transport_error(exc, base_url), safe


# --- the event stream ---------------------------------------------------------------------


@dataclass
class _Closed:
    """The server closed the stream and may have dropped events: reopen and re-read."""

    reason: str


@dataclass
class _Unknown:
    """An event this client cannot decode (from a newer server): it may be a final one."""

    data: str


class _SseParser:
    """Server-Sent Events, line by line: task events, and the server's `: closed:` notice."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.frames = 0  # frames ended so far; the first one means the stream is subscribed

    def feed(self, line: str) -> TaskEvent | _Closed | _Unknown | None:
        if line == "":
            self.frames += 1
            data, self.data = "\n".join(self.data), []
            if not data:
                return None
            try:
                return TaskEvent.model_validate_json(data)
            except ValueError:  # a newer server's event this client cannot read
                return _Unknown(data)
        if line.startswith(":"):
            comment = line[1:].strip()
            return _Closed(comment[7:].strip()) if comment.startswith("closed:") else None
        name, _, value = line.partition(":")
        if name == "data":
            self.data.append(value.removeprefix(" "))
        return None


_READ_TASK, _REOPEN = "read", "reopen"


class _WaitState:
    """What `wait()` does with each line of `/api/events?task_id=`: read the task once the
    stream is subscribed (so its final event cannot be missed) and again on a final event;
    reopen on `: closed:`."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        self.task_id, self.timeout = task_id, timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def open(self) -> _SseParser:
        self.check()
        return _SseParser()

    def feed(self, parser: _SseParser, line: str) -> str | None:
        frames = parser.frames
        item = parser.feed(line)
        self.check()
        if isinstance(item, _Closed):
            return _REOPEN
        if frames == 0 and parser.frames == 1:
            return _READ_TASK
        if isinstance(item, _Unknown) or (
            isinstance(item, TaskEvent) and item.status in FINAL_STATUSES
        ):
            return _READ_TASK
        return None

    def read_timeout(self) -> float:
        if self.deadline is None:
            return STREAM_SILENCE_SECONDS
        return max(0.05, min(STREAM_SILENCE_SECONDS, self.deadline - time.monotonic()))

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise WaitTimeout(self.task_id, self.timeout or 0.0)


def _stream_params(task_id: str | None) -> dict[str, Any]:
    return _params(task_id=task_id)


# --- the clients ----------------------------------------------------------------------------


def _base_url(url: str) -> str:
    """The server's root: accepts it with or without a trailing `/api`."""
    url = url.rstrip("/")
    return url.removesuffix("/api")


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class _Settings:
    """What both clients are configured with."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        timeout: float,
        retries: int,
        retry_budget: float,
        idempotency_keys: bool,
    ) -> None:
        self.base_url = _base_url(url)
        self.headers = _headers(api_key)
        self.timeout = timeout
        self.retries = retries
        self.retry_budget = retry_budget
        self.idempotency_keys = idempotency_keys

    def attempts(self) -> _Attempts:
        return _Attempts(self.retries, self.retry_budget)

    def stream_timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=read)


class Client:
    """The REST API, synchronously.

    Args:
        url: the API's root (`http://host:8080`; a trailing `/api` is accepted too).
        api_key: sent as `Authorization: Bearer <key>` (needed when API_KEYS is set).
        timeout: seconds for each request (connect, read, write).
        retries: attempts after the first on a 503 / 429 or a connection that did not open.
        retry_budget: seconds all attempts of one call may take; a Retry-After that would
            end after it is not waited for (the error is raised).
        idempotency_keys: give every create an Idempotency-Key (a uuid) unless the call
            names one, so it can be resent safely. The API keeps each key 24 h and takes a
            keyed create alone; False sends none, and a create is then never resent.
        transport: an httpx transport (tests, proxies, Unix sockets).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        retry_budget: float = 30.0,
        idempotency_keys: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._s = _Settings(url, api_key, timeout, retries, retry_budget, idempotency_keys)
        self._http = httpx.Client(
            base_url=self._s.base_url, headers=self._s.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        attempts = self._s.attempts()
        ambiguous = False  # an earlier attempt may have reached the server and acted
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.body, headers=call.headers
                )
            except httpx.TransportError as exc:
                error, safe = _after_transport_error(exc, call, self._s.base_url)
                ambiguous = ambiguous or not _never_sent(exc)
            else:
                try:
                    return _decode(call, response)
                except Unavailable as exc:
                    error, safe = exc, call.resend_safe
                    ambiguous = ambiguous or exc.status == 503
                except ApiError as refusal:
                    if call.settle is None or not call.settle.applies(refusal, ambiguous):
                        raise
                    read = None if call.settle.read is None else self._send(call.settle.read)
                    return call.settle.result(refusal, read)
            delay = attempts.delay(error, safe)
            if delay is None:
                raise error
            time.sleep(delay)

    # tasks

    def enqueue(self, type: str, payload: Any, **options: Unpack[CreateOptions]) -> Task:
        """Create a task (201); a replayed Idempotency-Key returns the original task."""
        return self._send(_Calls.enqueue(type, payload, options, self._s.idempotency_keys))

    def enqueue_many(
        self,
        items: Sequence[TaskCreate | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """Create 1..1000 tasks, all or none; items may carry `ref` and `depends_on`."""
        return self._send(_Calls.enqueue_many(items, idempotency_key, self._s.idempotency_keys))

    def get(self, task_id: str) -> Task:
        return self._send(_Calls.get(task_id))

    def details(self, task_id: str) -> TaskDetails:
        """The task with its attempts, events, webhook deliveries and dependencies."""
        return self._send(_Calls.details(task_id))

    def list_tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first; pass its `next_cursor` for the next."""
        return self._send(_Calls.list_tasks(status, type, queue, limit, cursor))

    def iter_tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Task]:
        """Every matching task, newest first, page after page (following X-Next-Cursor)."""
        cursor: str | None = None
        while True:
            page = self._send(_Calls.list_tasks(status, type, queue, page_size, cursor))
            yield from page.tasks
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def retry(self, task_id: str) -> RetryAccepted:
        """A failed or cancelled task runs again with a fresh retry budget.

        When an attempt's answer was lost and the resend is refused (409) because the task
        is no longer failed or cancelled, that earlier attempt retried it: accepted."""
        return self._send(_Calls.retry(task_id))

    def cancel(self, task_id: str) -> Task:
        """Cancel it; a running one comes back `processing` with `cancel_requested`.

        When an attempt's answer was lost and the resend is refused (409) on a task that is
        cancelled, that earlier attempt cancelled it: the task is returned."""
        return self._send(_Calls.cancel(task_id))

    def bulk(
        self,
        action: BulkAction,
        *,
        ids: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> BulkResult:
        """Retry, cancel or purge many tasks, by `ids` or by `filter` (status, queue, type).

        Each task moves by its own transition, so a call sent again after a lost answer (a
        dropped connection, a 503) moves nothing twice; the tasks the lost attempt moved are
        then counted in `skipped` (by reason) instead of `acted`."""
        return self._send(_Calls.bulk(action, ids, filter, limit, cursor))

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """The task once it is completed, failed or cancelled, following its events.

        Raises WaitTimeout after `timeout` seconds (None: no limit), NotFound for an
        unknown task."""
        state = _WaitState(task_id, timeout)
        attempts = self._s.attempts()
        while True:
            parser = state.open()
            try:
                with self._http.stream(
                    "GET",
                    "/api/events",
                    params=_stream_params(task_id),
                    headers={"Accept": "text/event-stream"},
                    timeout=self._s.stream_timeout(state.read_timeout()),
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        raise _error(response)
                    attempts = self._s.attempts()  # open: a later drop gets a fresh budget
                    for line in response.iter_lines():
                        action = state.feed(parser, line)
                        if action == _REOPEN:
                            break
                        if action == _READ_TASK:
                            task = self.get(task_id)
                            if task.status in FINAL_STATUSES:
                                return task
            except httpx.ReadTimeout:
                state.check()
            except httpx.TransportError as exc:
                error, _ = _after_transport_error(exc, _Calls.get(task_id), self._s.base_url)
                self._pause(attempts, state, error)
            except Unavailable as error:
                self._pause(attempts, state, error)

    @staticmethod
    def _pause(attempts: _Attempts, state: _WaitState, error: Unavailable) -> None:
        delay = attempts.delay(error, True)
        if delay is None:
            raise error
        state.check()
        time.sleep(delay)

    def events(self, task_id: str | None = None) -> Generator[TaskEvent, None, None]:
        """Live task events (all, or one task's) until the server closes the stream (it may
        have dropped events then: open it again and re-read); `close()` it to stop."""
        with self._http.stream(
            "GET",
            "/api/events",
            params=_stream_params(task_id),
            headers={"Accept": "text/event-stream"},
            timeout=self._s.stream_timeout(STREAM_SILENCE_SECONDS),
        ) as response:
            if response.status_code != 200:
                response.read()
                raise _error(response)
            parser = _SseParser()
            for line in response.iter_lines():
                item = parser.feed(line)
                if isinstance(item, _Closed):
                    return
                if isinstance(item, TaskEvent):
                    yield item

    # monitoring

    def stats(self, queue: str | None = None) -> Stats:
        """Exact counts over every queue (or of one)."""
        return self._send(_Calls.stats(queue))

    def health(self) -> Health:
        """Redis and live instances per service; a 503 comes back as status "degraded"."""
        return self._send(_Calls.health())

    def metrics(self) -> str:
        """`/metrics`, in the Prometheus text format."""
        return self._send(_Calls.metrics())

    # queues

    def queues(self) -> list[Queue]:
        return self._send(_Calls.queues())

    def queue(self, name: str) -> Queue:
        return self._send(_Calls.queue(name))

    def pause_queue(self, name: str) -> Queue:
        """Start none of its tasks (it still accepts them); running ones finish."""
        return self._send(_Calls.queue(name, "pause"))

    def resume_queue(self, name: str) -> Queue:
        return self._send(_Calls.queue(name, "resume"))

    def set_queue_limits(
        self,
        name: str,
        *,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
    ) -> Queue:
        """Replace both limits; None removes one."""
        return self._send(_Calls.set_queue_limits(name, rate_limit, max_concurrency))

    # schedules

    def schedules(self) -> list[Schedule]:
        return self._send(_Calls.schedules())

    def schedule(self, name: str) -> Schedule:
        return self._send(_Calls.schedule(name))

    def put_schedule(
        self,
        name: str,
        task: TaskCreate | Mapping[str, Any],
        *,
        cron: str | None = None,
        interval_seconds: int | None = None,
        timezone: str = "UTC",
        paused: bool = False,
    ) -> Schedule:
        """Create or replace a schedule: exactly one of `cron` and `interval_seconds`."""
        body = _schedule_body(task, cron, interval_seconds, timezone, paused)
        return self._send(_Calls.put_schedule(name, body))

    def delete_schedule(self, name: str) -> Schedule:
        """Remove it (the tasks it created stay); answers with it as it was.

        Raises NotFound when there is no such schedule. If an attempt's answer was lost
        (a dropped connection, a 503) and the resend finds none, the earlier attempt may
        have deleted it, and the schedule it answered with is lost: NotFound still, its
        message saying so. Either way the schedule is gone."""
        return self._send(_Calls.delete_schedule(name))

    def pause_schedule(self, name: str) -> Schedule:
        return self._send(_Calls.schedule(name, "pause"))

    def resume_schedule(self, name: str) -> Schedule:
        return self._send(_Calls.schedule(name, "resume"))

    def trigger_schedule(self, name: str) -> Task:
        """Fire it now: the task it creates (never resent after a 503)."""
        return self._send(_Calls.trigger_schedule(name))


class AsyncClient:
    """The REST API for asyncio; the same methods and arguments as `Client`, awaited."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        retry_budget: float = 30.0,
        idempotency_keys: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._s = _Settings(url, api_key, timeout, retries, retry_budget, idempotency_keys)
        self._http = httpx.AsyncClient(
            base_url=self._s.base_url, headers=self._s.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        attempts = self._s.attempts()
        ambiguous = False  # an earlier attempt may have reached the server and acted
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.body, headers=call.headers
                )
            except httpx.TransportError as exc:
                error, safe = _after_transport_error(exc, call, self._s.base_url)
                ambiguous = ambiguous or not _never_sent(exc)
            else:
                try:
                    return _decode(call, response)
                except Unavailable as exc:
                    error, safe = exc, call.resend_safe
                    ambiguous = ambiguous or exc.status == 503
                except ApiError as refusal:
                    if call.settle is None or not call.settle.applies(refusal, ambiguous):
                        raise
                    read = None if call.settle.read is None else await self._send(call.settle.read)
                    return call.settle.result(refusal, read)
            delay = attempts.delay(error, safe)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    # tasks

    async def enqueue(self, type: str, payload: Any, **options: Unpack[CreateOptions]) -> Task:
        return await self._send(_Calls.enqueue(type, payload, options, self._s.idempotency_keys))

    async def enqueue_many(
        self,
        items: Sequence[TaskCreate | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        return await self._send(
            _Calls.enqueue_many(items, idempotency_key, self._s.idempotency_keys)
        )

    async def get(self, task_id: str) -> Task:
        return await self._send(_Calls.get(task_id))

    async def details(self, task_id: str) -> TaskDetails:
        return await self._send(_Calls.details(task_id))

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        return await self._send(_Calls.list_tasks(status, type, queue, limit, cursor))

    async def iter_tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Task]:
        cursor: str | None = None
        while True:
            page = await self._send(_Calls.list_tasks(status, type, queue, page_size, cursor))
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def retry(self, task_id: str) -> RetryAccepted:
        return await self._send(_Calls.retry(task_id))

    async def cancel(self, task_id: str) -> Task:
        return await self._send(_Calls.cancel(task_id))

    async def bulk(
        self,
        action: BulkAction,
        *,
        ids: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> BulkResult:
        return await self._send(_Calls.bulk(action, ids, filter, limit, cursor))

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        state = _WaitState(task_id, timeout)
        attempts = self._s.attempts()
        while True:
            parser = state.open()
            try:
                async with self._http.stream(
                    "GET",
                    "/api/events",
                    params=_stream_params(task_id),
                    headers={"Accept": "text/event-stream"},
                    timeout=self._s.stream_timeout(state.read_timeout()),
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise _error(response)
                    attempts = self._s.attempts()
                    async for line in response.aiter_lines():
                        action = state.feed(parser, line)
                        if action == _REOPEN:
                            break
                        if action == _READ_TASK:
                            task = await self.get(task_id)
                            if task.status in FINAL_STATUSES:
                                return task
            except httpx.ReadTimeout:
                state.check()
            except httpx.TransportError as exc:
                error, _ = _after_transport_error(exc, _Calls.get(task_id), self._s.base_url)
                await self._pause(attempts, state, error)
            except Unavailable as error:
                await self._pause(attempts, state, error)

    @staticmethod
    async def _pause(attempts: _Attempts, state: _WaitState, error: Unavailable) -> None:
        delay = attempts.delay(error, True)
        if delay is None:
            raise error
        state.check()
        await asyncio.sleep(delay)

    async def events(self, task_id: str | None = None) -> AsyncGenerator[TaskEvent, None]:
        async with self._http.stream(
            "GET",
            "/api/events",
            params=_stream_params(task_id),
            headers={"Accept": "text/event-stream"},
            timeout=self._s.stream_timeout(STREAM_SILENCE_SECONDS),
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise _error(response)
            parser = _SseParser()
            async for line in response.aiter_lines():
                item = parser.feed(line)
                if isinstance(item, _Closed):
                    return
                if isinstance(item, TaskEvent):
                    yield item

    # monitoring

    async def stats(self, queue: str | None = None) -> Stats:
        return await self._send(_Calls.stats(queue))

    async def health(self) -> Health:
        return await self._send(_Calls.health())

    async def metrics(self) -> str:
        return await self._send(_Calls.metrics())

    # queues

    async def queues(self) -> list[Queue]:
        return await self._send(_Calls.queues())

    async def queue(self, name: str) -> Queue:
        return await self._send(_Calls.queue(name))

    async def pause_queue(self, name: str) -> Queue:
        return await self._send(_Calls.queue(name, "pause"))

    async def resume_queue(self, name: str) -> Queue:
        return await self._send(_Calls.queue(name, "resume"))

    async def set_queue_limits(
        self,
        name: str,
        *,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
    ) -> Queue:
        return await self._send(_Calls.set_queue_limits(name, rate_limit, max_concurrency))

    # schedules

    async def schedules(self) -> list[Schedule]:
        return await self._send(_Calls.schedules())

    async def schedule(self, name: str) -> Schedule:
        return await self._send(_Calls.schedule(name))

    async def put_schedule(
        self,
        name: str,
        task: TaskCreate | Mapping[str, Any],
        *,
        cron: str | None = None,
        interval_seconds: int | None = None,
        timezone: str = "UTC",
        paused: bool = False,
    ) -> Schedule:
        body = _schedule_body(task, cron, interval_seconds, timezone, paused)
        return await self._send(_Calls.put_schedule(name, body))

    async def delete_schedule(self, name: str) -> Schedule:
        return await self._send(_Calls.delete_schedule(name))

    async def pause_schedule(self, name: str) -> Schedule:
        return await self._send(_Calls.schedule(name, "pause"))

    async def resume_schedule(self, name: str) -> Schedule:
        return await self._send(_Calls.schedule(name, "resume"))

    async def trigger_schedule(self, name: str) -> Task:
        return await self._send(_Calls.trigger_schedule(name))
