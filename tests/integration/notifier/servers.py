"""Real servers on loopback for the notifier tests: an aiosmtpd sink and an HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.redis_server import free_port


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    peer: Any


@dataclass
class SmtpSink:
    """Accepts mail; or refuses every message (`refuse`) or the first `defer` ones (451)."""

    refuse: str | None = None
    refuse_rcpt: str | None = None
    defer: int = 0
    received: list[Mail] = field(default_factory=list)
    tries: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.tries += 1
        if self.refuse:
            return self.refuse
        if self.defer > 0:
            self.defer -= 1
            return "451 4.3.0 Try again later"
        parsed = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        mail_from = envelope.mail_from or ""
        self.received.append(Mail(mail_from, list(envelope.rcpt_tos), parsed, session.peer))
        return "250 2.0.0 Ok: queued"


@dataclass
class Tls:
    """A throwaway CA and a server certificate for 127.0.0.1, trusted by `client`."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def make_tls() -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(server, client)


def check_login(username: str, password: str) -> Any:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


@contextmanager
def smtp_server(sink: SmtpSink, port: int | None = None, **kwargs: Any) -> Iterator[int]:
    """Run aiosmtpd on 127.0.0.1 (in its own thread) for the block; yields the port."""
    port = port or free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A minimal HTTP/1.1 server: records requests, answers scripted statuses in order.

    `statuses` are used up one per request, then `default`; None means never answer.
    """

    def __init__(self, statuses: list[int | None] | None = None, default: int | None = 200) -> None:
        self.statuses, self.default = list(statuses or []), default
        self.requests: list[Request] = []
        self.extra_headers: dict[str, str] = {}
        self.port = 0
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(method, path, headers, body))
                status = self.statuses.pop(0) if self.statuses else self.default
                if status is None:
                    await asyncio.Event().wait()  # never answer
                assert status is not None
                extra = "".join(f"{k}: {v}\r\n" for k, v in self.extra_headers.items())
                writer.write(
                    f"HTTP/1.1 {status} Status\r\nContent-Length: 2\r\n{extra}\r\nok".encode()
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._handlers.discard(task)
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port or 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()
