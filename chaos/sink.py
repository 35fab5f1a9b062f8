"""An SMTP sink on loopback that counts deliveries per recipient (one address per task)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class _Counting:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.deliveries: Counter[str] = Counter()
        self.first_at: dict[str, float] = {}
        self.times: dict[str, list[float]] = {}  # every delivery's wall time, per address
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)  # a real server takes a moment: sends are in flight
        now = time.time()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                address = rcpt.lower()
                self.deliveries[address] += 1
                self.first_at.setdefault(address, now)
                self.times.setdefault(address, []).append(now)
        return "250 OK"


class MailSink:
    """`with MailSink(port) as sink:` ... `sink.deliveries["c1@chaos.test"]`."""

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.port = port
        self.handler = _Counting(delay)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    @property
    def deliveries(self) -> Counter[str]:
        with self.handler.lock:
            return Counter(self.handler.deliveries)

    @property
    def delivery_times(self) -> dict[str, list[float]]:
        with self.handler.lock:
            return {address: list(times) for address, times in self.handler.times.items()}

    def __enter__(self) -> MailSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()
