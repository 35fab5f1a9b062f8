"""`GET /api/events`: live task events as Server-Sent Events, all streams on one subscription.

Every open stream reads from the process's one `task_events` subscription (`Fanout`, built in
the app's lifespan) through a bounded `Feed`. A stream is ready before its first line is sent,
so every event published after a client has read that line reaches it. A stream that may have
missed events (it fell STREAM_BACKLOG events behind, or the subscription was lost) is closed
with a comment saying why: the client reconnects (after the `retry:` delay) and re-reads.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.api.errors import TooManyStreams
from services.api.schemas import ERROR_RESPONSES, ErrorBody
from shared import codec, queues
from shared.events import Fanout, Feed, task_events
from shared.redis import Conn

logger = logging.getLogger(__name__)

router = APIRouter(tags=["events"], responses=ERROR_RESPONSES)
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 200
STREAM_BACKLOG = 1000  # events a stream may lag behind before it is closed
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
# cjson escapes these in the published JSON, so an id holding one is not found verbatim there.
_ESCAPED = frozenset('"\\/')


def make_fanout(conn: Conn) -> Fanout:
    """The process's one subscription to task events (for the app's lifespan), held while at
    least one stream is open: an API with no open stream receives no events."""
    return task_events(conn, on_demand=True)


async def _stream(request: Request, feed: Feed, task_id: str | None) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        try:
            raw = await feed.get(timeout=KEEPALIVE_SECONDS)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if raw is None:
            yield f": closed: {feed.reason}; reconnect and re-read\n\n"
            return
        decoded = _frame(raw)
        if decoded is not None and (task_id is None or decoded[0] == task_id):
            yield decoded[1]


@functools.lru_cache(maxsize=1024)
def _frame(raw: str) -> tuple[str, str] | None:
    """(task id, SSE frame) of one raw event, or None when it is not an event. Every open stream
    gets the same message object, so this decodes each one once per process, not per stream."""
    try:
        event = codec.decode_event(raw)
    except (ValueError, KeyError, TypeError):
        logger.warning("skipping a message on task_events that is not an event: %.200s", raw)
        return None
    return event.task_id, f"event: {event.event}\ndata: {codec.event_to_json(event)}\n\n"


def _match(task_id: str | None) -> str | None:
    """What a filtered stream's events must contain, verbatim, to be worth decoding."""
    if task_id is None or not task_id.isprintable() or _ESCAPED.intersection(task_id):
        return None
    return task_id


class _CountedStream(StreamingResponse):
    """Gives its slot and its feed back when the response ends, however it ends (even unstarted)."""

    def __init__(self, request: Request, feed: Feed, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app_state, self.feed = request.app.state, feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.app_state.open_streams -= 1
            self.app_state.events.close(self.feed)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        429: {"model": ErrorBody, "description": "too many open event streams; see Retry-After"},
    },
)
async def events(
    request: Request, task_id: Annotated[str | None, Query(max_length=64)] = None
) -> StreamingResponse:
    """Every transition as it happens (`event: task.completed`, `data: {...}`)."""
    state = request.app.state
    limit: int = getattr(state, "max_streams", MAX_STREAMS)
    if state.open_streams >= limit:
        raise TooManyStreams(limit)
    state.open_streams += 1  # no await since the check: the cap is exact
    feed = Feed(_match(task_id), getattr(state, "stream_backlog", STREAM_BACKLOG))
    fanout: Fanout = state.events
    try:
        queue = None
        if task_id is not None and state.conn.events_mode == "sharded":
            # The task's queue has a channel of its own: subscribed before the stream starts.
            queue = (await queues.locate(state.conn, task_id)).queue
        await fanout.open(feed, SUBSCRIBE_TIMEOUT_SECONDS, queue)  # RedisUnavailable: a 503
    except BaseException:
        state.open_streams -= 1
        raise
    return _CountedStream(
        request,
        feed,
        _stream(request, feed, task_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
