"""Log set-up for every service: plain seed-style lines or one JSON object per line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from shared.settings import Settings


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(record.created, record.levelname, record.name, record.getMessage())
        task_id = getattr(record, "task_id", None)
        if task_id:
            entry["task_id"] = task_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)

    def _entry(self, created: float, level: str, name: str, message: str) -> dict[str, str]:
        return {
            "time": datetime.fromtimestamp(created, tz=UTC).isoformat(),
            "level": level.lower(),
            "service": self.service,
            "logger": name,
            "message": message,
        }

    def step_line(self, created: float, name: str, message: str, task_id: str) -> str:
        """What format() makes of an INFO record with this task_id, without the record."""
        return json.dumps({**self._entry(created, "INFO", name, message), "task_id": task_id})


class PlainFormatter(logging.Formatter):
    """`<date time,ms> <service> <LEVEL> <message>`, the date-time text made once a second."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(message)s")
        self.service = service
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = (
                second,
                time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)),
            )
        return f"{self._text},{int((created - second) * 1000):03d}"

    def step_line(self, created: float, name: str, message: str, task_id: str) -> str:
        """What format() makes of an INFO record with this message, without the record."""
        return f"{self._time(created)} {self.service} INFO {message}"


# Inside an event loop, lines are written together at most this long after the first.
LOG_FLUSH_SECONDS = 0.005
LOG_FLUSH_LINES = 512  # or as soon as this many are waiting


class LoopBatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdout handler that writes lines in batches, not once per line.

    A worker logs three lines per task; writing and flushing each is a syscall per line (and
    with PYTHONUNBUFFERED, as containers often set, even more). Inside a running event loop
    the formatted lines are joined and written LOG_FLUSH_SECONDS after the first of them (a
    write per loop iteration still cost a single-slot worker 3% of its CPU), in order;
    outside a loop a line is written at once.
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
        self._queue(loop, line)

    def write_line(self, line: str) -> None:
        """Queue one formatted line as emit() does (the fast path of log_step)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._lines.append(line + self.terminator)
            self.flush()
            return
        self._queue(loop, line + self.terminator)

    def _queue(self, loop: asyncio.AbstractEventLoop, line: str) -> None:
        if not self._lines:
            loop.call_later(LOG_FLUSH_SECONDS, self.flush)
        self._lines.append(line)
        if len(self._lines) >= LOG_FLUSH_LINES:
            self.flush()  # the timer finds nothing left, or the lines queued since

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
    global _step_handler
    handler = LoopBatchingHandler(sys.stdout)
    formatter: JsonFormatter | PlainFormatter = (
        JsonFormatter(service) if settings.log_format == "json" else PlainFormatter(service)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _step_handler = (handler, formatter)


_step_handler: tuple[LoopBatchingHandler, JsonFormatter | PlainFormatter] | None = None


def log_step(logger: logging.Logger, message: str, task_id: str) -> None:
    """Log one INFO line for a step of a task ("Worker 1 received task ...").

    A consumer writes three such lines per task, and a LogRecord's creation, dispatch and
    formatting cost more than a no-op task's own work. With the handler configure_logging
    installed, the line is formatted exactly as that handler's formatter would and queued
    directly; otherwise (tests capturing logs, a host application's set-up) it goes
    through `logger.info` as usual.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    installed = _step_handler
    root = logging.getLogger()
    if installed is None or root.handlers != [installed[0]] or logger.handlers:
        logger.info(message, extra={"task_id": task_id})
        return
    handler, formatter = installed
    handler.write_line(formatter.step_line(time.time(), logger.name, message, task_id))
