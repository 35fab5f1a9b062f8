"""A steady stream of creates to the REST API, run as its own process until SIGTERM.

    python -m benchmarks.harness.steady --url http://127.0.0.1:8080/api/tasks --rate 200 \
        --queues q0,q1,q2 --out /tmp/steady.json

Open loop: a create is sent at every tick of the rate (in turn to each queue) whatever the
ones before it are doing, on an idle keep-alive connection or a new one, so a stalled
request delays no other. Each create is `bench.noop` with its send time as payload. On
SIGTERM it stops sending, waits for the answers still due (at most --timeout), writes every
request as [sent at, queue index, HTTP status (0: no answer), seconds] to --out and prints
a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections import Counter, deque
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.harness.loadgen import _one, _request

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def run(
    url: str, rate: float, queues: list[str], timeout: float, max_conns: int
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    idle: deque[Conn] = deque()
    open_conns = 0
    records: list[list[float]] = []
    skipped = 0

    async def one(sent: float, index: int, conn: Conn | None) -> None:
        nonlocal open_conns
        body = json.dumps({"type": "bench.noop", "payload": sent, "queue": queues[index]})
        raw = _request("POST", f"{host}:{port}", path, body.encode())
        status = 0
        try:
            if conn is None:
                conn = await _connect(host, port, timeout)
            status = await asyncio.wait_for(_one(conn[0], conn[1], raw), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            if conn is not None:
                conn[1].close()
            conn = None
        records.append([round(sent, 6), index, status, round(time.time() - sent, 6)])
        if conn is not None:
            idle.append(conn)
        else:
            open_conns -= 1

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    i = 0
    while not stop.is_set():
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        if not idle and open_conns >= max_conns:
            skipped += 1  # every connection busy: the client, not the server, is the limit
        else:
            conn = idle.popleft() if idle else None
            open_conns += conn is None
            task = asyncio.create_task(one(time.time(), i % len(queues), conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 1)
    while idle:
        idle.popleft()[1].close()
    statuses = Counter(int(r[2]) for r in records)
    return {
        "sent": len(records),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - start, 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "records": sorted(records),
    }


async def _connect(host: str, port: int, timeout: float) -> Conn:
    return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--queues", required=True, help="comma-separated, sent to in turn")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--max-conns", type=int, default=256)
    ns = parser.parse_args()
    result = asyncio.run(run(ns.url, ns.rate, ns.queues.split(","), ns.timeout, ns.max_conns))
    ns.out.write_text(json.dumps(result))
    print(json.dumps({k: v for k, v in result.items() if k != "records"}), flush=True)


if __name__ == "__main__":
    main()
