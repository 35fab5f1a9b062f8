"""Log set-up for every service: plain seed-style lines or one JSON object per line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from shared.settings import Settings


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id = getattr(record, "task_id", None)
        if task_id:
            entry["task_id"] = task_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class LoopBatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdout handler that writes once per event-loop iteration, not once per line.

    A worker logs three lines per task; writing and flushing each is a syscall per line (and
    with PYTHONUNBUFFERED, as containers often set, even more). Inside a running event loop
    the formatted lines are joined and written at the end of the current iteration, so they
    still appear within a millisecond and in order; outside a loop a line is written at once.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._lines.append(line)
            self.flush()
            return
        if not self._lines:
            loop.call_soon(self.flush)
        self._lines.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._lines:
                data, self._lines = "".join(self._lines), []
                try:
                    self.stream.write(data)
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": "log write failed"}))
            super().flush()


def configure_logging(service: str, settings: Settings) -> None:
    """Route all logging to stdout in the format LOG_FORMAT picks."""
    # No caller lookup, thread or process names: none is in the format, each costs per line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler: logging.Handler = LoopBatchingHandler(sys.stdout)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
