"""Every SMTP send of the system (the only aiosmtplib user): a small pool of reused connections.

A message counts as sent once the server accepted it; a refusal or an unreachable server is
raised as `SmtpFailure`, which fails the email task so the normal retry rules apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from shared.settings import Settings

logger = logging.getLogger(__name__)
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
IDLE_CHECK_SECONDS = 30.0  # a connection idle this long is probed with NOOP before reuse


class SmtpFailure(Exception):
    """The server refused the message or could not be reached; the text quotes its reply."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> str: ...

    async def aclose(self) -> None: ...


class SmtpMailer:
    """Sends over at most `connections` SMTP sessions, each kept open across messages."""

    def __init__(self, settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings, self.tls_context = settings, tls_context
        if settings.smtp_host:
            self.host, self.tls = settings.smtp_host, settings.smtp_tls
            self.port = settings.smtp_port or DEFAULT_PORTS[self.tls]
        else:  # SPEC section 2: unset means the local development catcher
            self.host, self.tls = "127.0.0.1", "none"
            self.port = settings.smtp_port or settings.dev_smtp_port
        self.slots = asyncio.Semaphore(settings.smtp_connections)
        self.idle: list[tuple[aiosmtplib.SMTP, float]] = []

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=s.smtp_username or None,
            password=s.smtp_password if s.smtp_username else None,
            use_tls=self.tls == "ssl",
            start_tls=self.tls == "starttls",  # required, never silently skipped
            tls_context=self.tls_context,
            timeout=s.smtp_timeout_seconds,
        )

    async def _connection(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A live pooled connection (reused=True) or a new one."""
        while self.idle:
            smtp, last_used = self.idle.pop()
            if not smtp.is_connected:
                continue
            if time.monotonic() - last_used > IDLE_CHECK_SECONDS:
                try:
                    await smtp.noop()
                except aiosmtplib.SMTPException:
                    await _close(smtp)
                    continue
            return smtp, True
        smtp = self._client()
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            await _close(smtp)
            raise SmtpFailure(f"SMTP authentication failed: {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            await _close(smtp)
            raise SmtpFailure(f"SMTP server {self.host}:{self.port} unreachable: {exc}") from exc
        return smtp, False

    async def send(self, message: EmailMessage) -> str:
        """Send one message; returns the server's acceptance reply."""
        async with self.slots:
            smtp, reused = await self._connection()
            try:
                _, reply = await smtp.send_message(message)
            except aiosmtplib.SMTPServerDisconnected:
                await _close(smtp)
                if not reused:
                    raise SmtpFailure("SMTP server closed the connection") from None
                # The server dropped an idle session between messages: one fresh try.
                smtp, _ = await self._connection()
                try:
                    _, reply = await smtp.send_message(message)
                except Exception as exc:
                    raise await self._failure(smtp, exc) from exc
            except Exception as exc:
                raise await self._failure(smtp, exc) from exc
            self.idle.append((smtp, time.monotonic()))
            return reply

    async def _failure(self, smtp: aiosmtplib.SMTP, exc: Exception) -> SmtpFailure:
        """Describe the failure; keep the session when a RSET brings it back to a clean state."""
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            refused = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            text = f"SMTP refused the recipient ({refused})"
        elif isinstance(exc, aiosmtplib.SMTPResponseException):
            text = f"SMTP refused the message: {exc.code} {exc.message}"
        elif isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            text = f"SMTP server timed out after {self.settings.smtp_timeout_seconds:g}s"
        else:
            text = f"SMTP send failed: {type(exc).__name__}: {exc}"
        kept = False
        if isinstance(exc, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused):
            with contextlib.suppress(Exception):
                await smtp.rset()
                kept = smtp.is_connected
        if kept:
            self.idle.append((smtp, time.monotonic()))
        else:
            await _close(smtp)
        return SmtpFailure(text)

    async def aclose(self) -> None:
        while self.idle:
            smtp, _ = self.idle.pop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(smtp.quit(), 2)
            await _close(smtp)


async def _close(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        smtp.close()
