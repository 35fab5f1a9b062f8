"""Server-Sent Events for the api's and the dashboard's streams: frames, the response, the cap.

Frames are built once by FastAPI's `format_sse_event` and sent as bytes: a frame goes to every
open stream of a process, so it is encoded once per process, not once per stream. FastAPI's
generator mode (a route yielding `ServerSentEvent`s) would frame each event again for each
stream and pass it through two memory streams and a timer: measured on `GET /api/events`, it
took twice to three times the CPU per delivered event, so the streams keep their own small loop
(keep-alives included) and return an `EventSourceResponse`. The loop needs no disconnect check:
the response watches for the client going away and cancels it. A route takes its stream slot
in a dependency with `yield`: FastAPI runs it before the response starts (so a full process
answers 429) and ends it after the stream ends, however it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.sse import EventSourceResponse, format_sse_event

from shared.errors import TaskQueueError

RETRY_MS = 2000
RETRY = format_sse_event(retry=RETRY_MS)  # every stream's first frame: how soon to reconnect
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = format_sse_event(comment="keep-alive")
NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(name: str, data: str) -> bytes:
    """One event frame whose data is JSON already (compact JSON never holds a newline)."""
    return format_sse_event(event=name, data_str=data)


def closed(reason: str) -> bytes:
    """The comment that ends a stream on purpose: the client reconnects and re-reads."""
    return format_sse_event(comment=f"closed: {reason}; reconnect and re-read")


def response(frames: AsyncIterator[bytes]) -> EventSourceResponse:
    """A `text/event-stream` answer that no proxy buffers."""
    return EventSourceResponse(frames, headers=NO_BUFFERING)


class TooManyStreams(TaskQueueError):
    """The process already serves its limit of open event streams (a 429 with Retry-After)."""

    retry_after_seconds = 5

    def __init__(self, limit: int, what: str = "event streams", per: str = "API instance") -> None:
        super().__init__(
            f"too many open {what} (limit {limit} per {per}); close one or retry later"
        )
