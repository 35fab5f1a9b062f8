"""Load for the failover tests: a client creating tasks over REST as SPEC section 8 tells
clients to (a 503 or a dropped connection retried with the same Idempotency-Key), keeping
what was acknowledged and when."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import httpx


@dataclass
class Acked:
    task_id: str
    queue: str
    # Monotonic time of the first request for it: the task may exist from then on (a 503 may
    # come after the create ran), so only what was first asked for later is "created after".
    sent: float
    acked: float  # monotonic time its acknowledgement arrived


class Load:
    """A client creating tasks round-robin over `queues` (None: no queue named, the type's
    own): a 503 (or a dropped connection) is
    retried with the same Idempotency-Key, as SPEC section 8 tells clients to; a 201 or a 200
    replay is an acknowledgement. On stop, the create in flight is retried to its answer, so
    every task the cluster holds is one the client knows about (the counts add up)."""

    def __init__(self, base_url: str, queues: list[str] | None = None) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=5)
        self.queues: list[str | None] = list(queues) if queues else [None]
        self.acknowledged: list[Acked] = []
        self.refused = 0
        self.unexpected: list[str] = []
        self.stop = threading.Event()
        self.abandon = False  # the test failed: leave the create in flight as it is
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        index = 0
        while not self.stop.is_set():
            queue = self.queues[index % len(self.queues)]
            index += 1
            self._create(queue, uuid.uuid4().hex, give_up=None)

    def _create(self, queue: str | None, key: str, give_up: float | None) -> None:
        first_sent = time.monotonic()
        while True:
            if self.stop.is_set() and give_up is None:
                give_up = time.monotonic() + 30  # finish the create in flight, within reason
            if self.abandon:
                return
            if give_up is not None and time.monotonic() > give_up:
                self.unexpected.append(f"create in {queue} unresolved after stop")
                return
            try:
                body = {"type": "sum", "payload": [1, 2]}
                response = self.client.post(
                    "/api/tasks",
                    json=body if queue is None else {**body, "queue": queue},
                    headers={"Idempotency-Key": key},
                )
            except httpx.HTTPError:
                self.refused += 1
                time.sleep(0.1)
                continue
            if response.status_code in (200, 201):
                task = response.json()
                assert queue in (None, task["queue"])
                self.acknowledged.append(
                    Acked(task["id"], task["queue"], first_sent, time.monotonic())
                )
                return
            if response.status_code != 503:
                self.unexpected.append(f"{response.status_code}: {response.text}")
                return
            self.refused += 1
            time.sleep(float(response.headers.get("Retry-After", "1")) / 10)

    def acked_after(self, moment: float) -> list[Acked]:
        return [a for a in list(self.acknowledged) if a.sent > moment]

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.abandon = exc_type is not None
        self.stop.set()
        self.thread.join(40)
        self.client.close()
