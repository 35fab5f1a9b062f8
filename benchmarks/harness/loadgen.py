"""A small HTTP/1.1 load generator, run as its own process: N keep-alive connections.

    python -m benchmarks.harness.loadgen --url http://127.0.0.1:8080/api/tasks \
        --method POST --body '{"type": "bench.noop", "payload": 0}' --connections 64 \
        --requests 10000

Written on raw asyncio streams (uvloop) so that the client costs far less CPU than the
server it measures; prints one JSON line: requests/s, p50/p99 latency, status counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit


def _request(method: str, host: str, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def run(url: str, method: str, body: str, connections: int, requests: int, warmup: int):
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raw = _request(method, f"{host}:{port}", parts.path or "/", body.encode())
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    remaining = {"warm": warmup, "real": requests}

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                if remaining["warm"] > 0:
                    remaining["warm"] -= 1
                    await _one(reader, writer, raw)
                    continue
                if remaining["real"] <= 0:
                    return
                remaining["real"] -= 1
                began = time.perf_counter()
                status = await _one(reader, writer, raw)
                latencies.append(time.perf_counter() - began)
                statuses[status] += 1
        finally:
            writer.close()

    # Warm-up first, on every connection, then the measured requests.
    started = None
    tasks = [asyncio.create_task(client()) for _ in range(connections)]
    while remaining["warm"] > 0 and not all(t.done() for t in tasks):  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()
    done = len(latencies)
    return {
        "requests": done,
        "seconds": elapsed,
        "rps": done / elapsed if elapsed else 0.0,
        "p50_ms": latencies[done // 2] * 1000 if done else None,
        "p99_ms": latencies[min(done - 1, int(done * 0.99))] * 1000 if done else None,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": sum(v for k, v in statuses.items() if k >= 400),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    ns = parser.parse_args()
    job = run(ns.url, ns.method, ns.body, ns.connections, ns.requests, ns.warmup)
    try:
        import uvloop

        result = uvloop.run(job)
    except ImportError:
        result = asyncio.run(job)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
