"""`GET /api/events`: live task events as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.api.deps import ConnDep
from services.api.errors import TooManyStreams
from services.api.schemas import ERROR_RESPONSES, ErrorBody
from shared import codec
from shared.events import subscribe

router = APIRouter(tags=["events"], responses=ERROR_RESPONSES)
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 200


async def _stream(
    request: Request, source: AsyncIterator[str], task_id: str | None
) -> AsyncIterator[str]:
    pending: asyncio.Task[str] | None = None
    try:
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            pending = pending or asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
            if not done:
                yield ": keep-alive\n\n"
                continue
            raw, pending = pending.result(), None
            event = codec.decode_event(raw)
            if task_id is None or event.task_id == task_id:
                yield f"event: {event.event}\ndata: {codec.event_to_json(event)}\n\n"
    finally:
        if pending is not None:
            pending.cancel()
        with contextlib.suppress(Exception):
            await source.aclose()  # type: ignore[attr-defined]


class _CountedStream(StreamingResponse):
    """Gives its slot back when the response ends, however it ends (even unstarted)."""

    def __init__(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app_state = request.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.app_state.open_streams -= 1


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        429: {"model": ErrorBody, "description": "too many open event streams; see Retry-After"},
    },
)
async def events(
    request: Request, conn: ConnDep, task_id: Annotated[str | None, Query(max_length=64)] = None
) -> StreamingResponse:
    """Every transition as it happens (`event: task.completed`, `data: {...}`)."""
    limit: int = getattr(request.app.state, "max_streams", MAX_STREAMS)
    if request.app.state.open_streams >= limit:
        raise TooManyStreams(limit)
    request.app.state.open_streams += 1  # no await since the check: the cap is exact
    source = subscribe(conn)
    return _CountedStream(
        request,
        _stream(request, source, task_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
