"""Emails per second through one notifier to a local aiosmtpd sink.

    .venv/bin/python -m benchmarks.notifier_email [--emails 2000] [--connections 4]

Uses REDIS_URL when set, else starts a throwaway redis-server (as the tests do). The notifier
runs in-process with its production settings apart from the SMTP target; the sink is aiosmtpd's
own `Sink` handler in a separate process (in a thread it would share our GIL and halve the
figure). Measures from the first enqueue (batches of 1000) until every task is completed,
i.e. accepted by the SMTP server and recorded in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack

from services.notifier.runner import run_notifier
from shared import plugins, queries, transitions
from shared.models import TaskCreate
from shared.redis import create_redis
from shared.settings import Settings
from tests.support import redis_server as rs


def start_sink(port: int) -> subprocess.Popen[bytes]:
    argv = ["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"]
    process = subprocess.Popen([sys.executable, *argv])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def bench(redis_url: str, emails: int, connections: int, concurrency: int) -> None:
    port = rs.free_port()
    sink = start_sink(port)
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        smtp_connections=connections,
        notifier_concurrency=concurrency,
    )
    plugins.load_task_modules(settings)
    conn = create_redis(settings)
    await conn.redis.flushdb()
    await conn.load_scripts()
    stop = asyncio.Event()
    notifier = asyncio.create_task(run_notifier(conn, settings, stop))
    try:
        creates = [TaskCreate(type="email", payload=f"user{n}@example.com") for n in range(emails)]
        started = time.perf_counter()
        for first in range(0, emails, 1000):
            await transitions.enqueue(conn, creates[first : first + 1000], settings)
        enqueued = time.perf_counter()
        # Polls Redis: completions happen in the notifier, there is no local event to wait on.
        while (await queries.get_stats(conn, dead_after_seconds=5)).completed_count < emails:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        finished = time.perf_counter()
    finally:
        stop.set()
        await notifier
        await conn.aclose()
        sink.terminate()
        sink.wait()
    elapsed = finished - started
    print(
        f"{emails} emails, {connections} SMTP connections, {concurrency} slots: "
        f"{elapsed:.2f}s ({emails / elapsed:.0f} emails/s); enqueue {enqueued - started:.2f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        if not url:
            server, _ = stack.enter_context(rs.run_binary(rs.redis_binaries()[0]))
            url = server.url
        asyncio.run(bench(url, args.emails, args.connections, args.concurrency))


if __name__ == "__main__":
    main()
