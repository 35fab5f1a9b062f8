"""`GET /api/events`: live task events as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from services.api.deps import ConnDep
from services.api.schemas import ERROR_RESPONSES
from shared import codec
from shared.errors import RedisUnavailable
from shared.events import subscribe

router = APIRouter(tags=["events"], responses=ERROR_RESPONSES)
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 200


async def _stream(
    request: Request, source: AsyncIterator[str], task_id: str | None
) -> AsyncIterator[str]:
    request.app.state.open_streams += 1
    try:
        yield "retry: 2000\n\n"
        pending: asyncio.Task[str] | None = None
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
        request.app.state.open_streams -= 1
        if pending is not None:
            pending.cancel()
        with contextlib.suppress(Exception):
            await source.aclose()  # type: ignore[attr-defined]


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    request: Request, conn: ConnDep, task_id: Annotated[str | None, Query(max_length=64)] = None
) -> StreamingResponse:
    """Every transition as it happens (`event: task.completed`, `data: {...}`)."""
    if request.app.state.open_streams >= MAX_STREAMS:
        raise RedisUnavailable(f"too many open event streams (limit {MAX_STREAMS})")
    source = subscribe(conn)
    return StreamingResponse(
        _stream(request, source, task_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
