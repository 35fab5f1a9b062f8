"""Liveness without Redis: a file whose mtime a process's own loop renews, and its check.

A liveness probe must fail only when the process itself is stuck (SPEC section 8): were it to
read heartbeats from Redis, a Redis outage would mark every container unhealthy and restart
every pod. So the loop that proves a process works calls `touch` on every iteration, whether
or not Redis answered, and `taskqueue-healthcheck <service> --live` reads only the file.

The directory is LIVENESS_DIR (default: the system temp dir). One file per service name: a
container (or pod) runs one process, and its /tmp is its own.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

MIN_MAX_AGE_SECONDS = 15.0
_unwritable: set[str] = set()  # directories already reported, so a failing dir logs once


def directory() -> Path:
    """Where liveness files live: LIVENESS_DIR, else the system temp dir."""
    # Read here, not from Settings: the healthcheck and every loop must agree without any
    # other configuration, and it costs a dict lookup per beat.
    return Path(os.environ.get("LIVENESS_DIR") or tempfile.gettempdir())


def path_for(service: str, where: str | os.PathLike[str] | None = None) -> Path:
    """The liveness file of `service` (in `where`, default `directory()`)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", service)
    folder = Path(where) if where is not None else directory()
    return folder / f"taskqueue-{name}.alive"


def max_age_for(heartbeat_seconds: float) -> float:
    """How old the file may be for the process to count as alive: three missed beats, and
    never less than 15 s (a busy host or a GC pause is no reason to restart)."""
    return max(3 * heartbeat_seconds, MIN_MAX_AGE_SECONDS)


def touch(service: str, where: str | os.PathLike[str] | None = None) -> None:
    """Renew this process's liveness file, creating it if missing. Never raises: a
    directory that cannot be written is logged once (at debug) and the caller goes on."""
    try:
        path = path_for(service, where)  # gettempdir() raises when no temp dir is usable
        path.touch()
    except Exception as exc:
        folder = str(where or os.environ.get("LIVENESS_DIR") or "the temp dir")
        if folder not in _unwritable:
            _unwritable.add(folder)
            logger.debug("liveness file of %s not written in %r: %s", service, folder, exc)


def is_alive(
    service: str, max_age_seconds: float, where: str | os.PathLike[str] | None = None
) -> bool:
    """True when `service`'s liveness file was touched within `max_age_seconds`."""
    try:
        modified = path_for(service, where).stat().st_mtime
    except OSError:
        return False
    return time.time() - modified <= max_age_seconds
