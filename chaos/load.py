"""Tasks through the REST API at a steady rate, each with an Idempotency-Key so a create
retried after a 503 or a dropped connection is never a second task."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

GIVE_UP_SECONDS = 90.0  # a create still unanswered after this counts as not acknowledged


@dataclass
class Sent:
    """One task we asked for, and what we expect of it."""

    n: int
    type: str
    body: dict[str, Any]
    expect: str  # "completed" or "failed"
    address: str | None = None  # email tasks: the one recipient
    expect_result: Any = None
    task_id: str | None = None
    acknowledged_at: float | None = None
    created_status: int | None = None
    tries: int = 0
    queue: str = "default"  # the named queue it was sent to (SPEC section 9)


@dataclass
class Answer:
    at: float
    status: int  # 0 for a transport error
    path: str


@dataclass
class Load:
    base_url: str
    seed: int
    queues: list[str] = field(default_factory=list)  # named queues, in turn ([]: the default)
    sent: list[Sent] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # bodies of 5xx answers other than 503
    started_at: float = 0.0  # wall time the load began

    def plan(self, n: int, rng: random.Random) -> Sent:
        """The task mix: email, image, sum, sleep, flaky that recovers, flaky that fails."""
        roll = rng.random()
        if roll < 0.40:
            address = f"c{self.seed}-{n}@chaos.test"
            payload: Any = {"to": address, "subject": f"chaos {n}", "text": f"task {n}"}
            sent = Sent(n, "email", {"type": "email", "payload": payload}, "completed", address)
        elif roll < 0.65:
            sent = Sent(n, "image", {"type": "image", "payload": {"n": n}}, "completed")
        elif roll < 0.75:
            sent = Sent(n, "sum", {"type": "sum", "payload": [n, 0.5]}, "completed")
            sent.expect_result = n + 0.5
        elif roll < 0.85:
            sent = Sent(n, "sleep", {"type": "sleep", "payload": {"seconds": 2}}, "completed")
        elif roll < 0.95:
            body: dict[str, Any] = {"type": "flaky", "payload": {"fail_attempts": 1}}
            body["max_retries"] = 2
            sent = Sent(n, "flaky", body, "completed")
        else:
            body = {"type": "flaky", "payload": {"fail_attempts": 9}, "max_retries": 1}
            sent = Sent(n, "flaky-fails", body, "failed")
        sent.body["priority"] = rng.randint(1, 5)
        if rng.random() < 0.15:
            due = datetime.now(UTC) + timedelta(seconds=rng.uniform(1, 8))
            sent.body["scheduled_for"] = due.isoformat()
        return sent

    async def run(self, seconds: float, rate: float) -> None:
        """Send `rate` tasks a second for `seconds`, on a fixed clock (not paced by answers)."""
        rng = random.Random(self.seed)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, limits=limits) as http:
            start, jobs = time.monotonic(), []
            self.started_at = time.time()
            for n in range(int(seconds * rate)):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                sent = self.plan(n, rng)
                if self.queues:
                    sent.queue = sent.body["queue"] = self.queues[n % len(self.queues)]
                self.sent.append(sent)
                jobs.append(asyncio.create_task(self._create(http, sent)))
            await asyncio.gather(*jobs)

    async def _create(self, http: httpx.AsyncClient, sent: Sent) -> None:
        headers = {"Idempotency-Key": f"chaos-{self.seed}-{sent.n}"}
        deadline, pause = time.monotonic() + GIVE_UP_SECONDS, 0.2
        while time.monotonic() < deadline:
            sent.tries += 1
            try:
                response = await http.post("/api/tasks", json=sent.body, headers=headers)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            self.answers.append(Answer(time.time(), status, "POST /api/tasks"))
            if status in (200, 201):
                sent.task_id = response.json()["id"]
                sent.created_status = status
                sent.acknowledged_at = time.time()
                return
            if status != 0 and status < 500:
                raise RuntimeError(f"create {sent.n} answered {status}: {response.text[:300]}")
            if status >= 500 and status != 503:  # a bug (counted as such), retried as a 503
                at = time.time() - self.started_at
                self.errors.append(
                    f"POST /api/tasks {status}: at {at:.1f} s: {response.text[:300]}"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    def status_counts(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers)
