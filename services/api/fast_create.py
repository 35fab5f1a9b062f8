"""The hot route, `POST /api/tasks` (and `/tasks`), answered in plain ASGI when it can be.

Through FastAPI a single create spends more Python on the framework than on the task: the
dependency graph is solved, the body parsed and validated, and the returned Task validated
again against `response_model` before it is serialised. This middleware takes only the plain
success path of that route: a JSON body that validates as a TaskCreate and no
Idempotency-Key. Every other request, valid or not, goes on to the FastAPI route unchanged,
so the answers to bad requests are still FastAPI's and the routes' own. The API key was
checked in front of it (services/api/auth.py), so a request that reaches it may write.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response
from pydantic import TypeAdapter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import http_errors, tracing
from shared.errors import TaskQueueError
from shared.models import Task, TaskCreate
from shared.producer import Producer
from shared.settings import Settings

PATHS = frozenset({"/api/tasks", "/tasks"})
# What FastAPI serialises a `response_model=Task` answer with: the same bytes.
_TASK_JSON = TypeAdapter(Task)


class FastCreate:
    """Creates a task straight from the ASGI messages; hands anything else to `app`.

    Sits inside BodyLimit, which hands the whole body over as one message.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in PATHS:
            return await self.app(scope, receive, send)
        message = await receive()
        plain = self._plain_create(scope, message)
        if plain is None:
            return await self.app(scope, _replay(message, receive), send)
        create, traceparent = plain
        producer: Producer = scope["app"].state.producer
        response: Response
        try:
            with tracing.create_span("api", traceparent, create.type) as trace:
                task = await producer.submit(create, traceparent=trace)
        except TaskQueueError as exc:  # the same answers as the FastAPI route
            response = http_errors.domain_error(exc)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            response = http_errors.redis_down(exc)
        else:
            response = Response(_TASK_JSON.dump_json(task), 201, media_type="application/json")
        await response(scope, receive, send)

    def _plain_create(
        self, scope: Scope, message: Message
    ) -> tuple[TaskCreate, bytes | None] | None:
        """The body as a TaskCreate, with the request's traceparent header (SPEC section 13),
        when this request takes the plain path, else None."""
        if message["type"] != "http.request":
            return None
        content_type = traceparent = None
        for name, value in scope["headers"]:  # the first of repeated headers, as Starlette
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"idempotency-key":
                return None
            elif name == b"traceparent" and traceparent is None:
                traceparent = value
        # FastAPI parses application/json (parameters allowed) and nothing else by default.
        if content_type is None or content_type.partition(b";")[0].strip().lower() != (
            b"application/json"
        ):
            return None
        try:
            # The stdlib parser, as FastAPI's: orjson reads big integers and some numbers
            # differently, and the stored payload must not depend on the route taken.
            data: Any = json.loads(message.get("body", b""))
            if isinstance(data, dict):
                return TaskCreate.model_validate(data), traceparent
            return None
        except Exception:  # not JSON, too deep, or invalid: the route gives its own answer
            return None


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive that hands `first` over again, then the rest of the connection's messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return first

    return replay
