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
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from services.api.schemas import ERROR_RESPONSES, ErrorBody
from shared import codec, queues, sse
from shared.events import Fanout, Feed, task_events
from shared.redis import Conn

logger = logging.getLogger(__name__)

router = APIRouter(tags=["events"], responses=ERROR_RESPONSES)
KEEPALIVE_SECONDS = sse.KEEPALIVE_SECONDS
MAX_STREAMS = 200
STREAM_BACKLOG = 1000  # events a stream may lag behind before it is closed
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
# cjson escapes these in the published JSON, so an id holding one is not found verbatim there.
_ESCAPED = frozenset('"\\/')
TaskIdFilter = Annotated[str | None, Query(max_length=64)]


def make_fanout(conn: Conn) -> Fanout:
    """The process's one subscription to task events (for the app's lifespan), held while at
    least one stream is open: an API with no open stream receives no events."""
    return task_events(conn, on_demand=True)


async def _stream(feed: Feed, task_id: str | None) -> AsyncIterator[bytes]:
    yield sse.RETRY
    while True:
        try:
            raw = await feed.get(timeout=KEEPALIVE_SECONDS)
        except TimeoutError:
            yield sse.KEEPALIVE
            continue
        if raw is None:
            yield sse.closed(str(feed.reason))
            return
        framed = _frame(raw)
        if framed is not None and (task_id is None or framed[0] == task_id):
            yield framed[1]


@functools.lru_cache(maxsize=1024)
def _frame(raw: str) -> tuple[str, bytes] | None:
    """(task id, SSE frame) of one raw event, or None when it is not an event. Every open stream
    gets the same message object, so this decodes each one once per process, not per stream."""
    try:
        event = codec.decode_event(raw)
    except (ValueError, KeyError, TypeError):
        logger.warning("skipping a message on task_events that is not an event: %.200s", raw)
        return None
    return event.task_id, sse.event(event.event, codec.event_to_json(event))


def _match(task_id: str | None) -> str | None:
    """What a filtered stream's events must contain, verbatim, to be worth decoding."""
    if task_id is None or not task_id.isprintable() or _ESCAPED.intersection(task_id):
        return None
    return task_id


async def _open_feed(request: Request, task_id: TaskIdFilter = None) -> AsyncIterator[Feed]:
    """A slot and a subscribed feed, before the response starts (so a full API answers 429 and
    a Redis outage 503), given back when the stream ends, however it ends."""
    state = request.app.state
    limit: int = getattr(state, "max_streams", MAX_STREAMS)
    if state.open_streams >= limit:
        raise sse.TooManyStreams(limit)
    state.open_streams += 1  # no await since the check: the cap is exact
    feed = Feed(_match(task_id), getattr(state, "stream_backlog", STREAM_BACKLOG))
    fanout: Fanout = state.events
    try:
        queue = None
        if task_id is not None and state.conn.events_mode == "sharded":
            # The task's queue has a channel of its own: subscribed before the stream starts.
            queue = (await queues.locate(state.conn, task_id)).queue
        await fanout.open(feed, SUBSCRIBE_TIMEOUT_SECONDS, queue)  # RedisUnavailable: a 503
        try:
            yield feed
        finally:
            fanout.close(feed)
    finally:
        state.open_streams -= 1


@router.get(
    "/events",
    response_class=StreamingResponse,  # EventSourceResponse here would mean generator mode
    responses={
        200: {"content": {"text/event-stream": {}}},
        429: {"model": ErrorBody, "description": "too many open event streams; see Retry-After"},
    },
)
async def events(
    feed: Annotated[Feed, Depends(_open_feed)], task_id: TaskIdFilter = None
) -> StreamingResponse:
    """Every transition as it happens (`event: task.completed`, `data: {...}`)."""
    return sse.response(_stream(feed, task_id))
