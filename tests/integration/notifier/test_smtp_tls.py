"""SMTP transport security: STARTTLS, implicit TLS and AUTH against aiosmtpd on loopback."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from services.notifier.smtp import SmtpFailure, SmtpMailer
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.notifier.servers import SmtpSink, check_login, make_tls, smtp_server


def message(to: str = "tls@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "queue@example.com"
    msg["To"] = to
    msg["Subject"] = "secure"
    msg.set_content("over TLS")
    return msg


def mail_settings(port: int, tls: str, **overrides: object) -> Settings:
    return make_settings(
        "redis://127.0.0.1:1/0", smtp_host="127.0.0.1", smtp_port=port, smtp_tls=tls, **overrides
    )


async def test_smtp_starttls_with_trusted_self_signed_certificate() -> None:
    tls, sink = make_tls(), SmtpSink()
    with smtp_server(sink, tls_context=tls.server, require_starttls=True) as port:
        mailer = SmtpMailer(mail_settings(port, "starttls"), tls_context=tls.client)
        try:
            await mailer.send(message())
        finally:
            await mailer.aclose()
    assert [m.rcpt_tos for m in sink.received] == [["tls@example.com"]]


async def test_smtp_implicit_tls_with_trusted_self_signed_certificate() -> None:
    tls, sink = make_tls(), SmtpSink()
    with smtp_server(sink, ssl_context=tls.server) as port:
        mailer = SmtpMailer(mail_settings(port, "ssl"), tls_context=tls.client)
        try:
            await mailer.send(message())
            await mailer.send(message("second@example.com"))
        finally:
            await mailer.aclose()
    assert [m.rcpt_tos[0] for m in sink.received] == ["tls@example.com", "second@example.com"]


async def test_smtp_untrusted_certificate_is_refused() -> None:
    tls, sink = make_tls(), SmtpSink()
    with smtp_server(sink, tls_context=tls.server, require_starttls=True) as port:
        mailer = SmtpMailer(mail_settings(port, "starttls"))  # system trust store only
        with pytest.raises(SmtpFailure, match="unreachable"):
            await mailer.send(message())
        await mailer.aclose()
    assert sink.received == []


async def test_smtp_starttls_required_when_server_does_not_offer_it() -> None:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        mailer = SmtpMailer(mail_settings(port, "starttls"))
        with pytest.raises(SmtpFailure):
            await mailer.send(message())
        await mailer.aclose()
    assert sink.received == []  # never falls back to plain text


async def test_smtp_auth_with_username_and_password() -> None:
    tls, sink = make_tls(), SmtpSink()
    options = {
        "tls_context": tls.server,
        "require_starttls": True,
        "auth_required": True,
        "authenticator": check_login("api", "s3cret"),
    }
    with smtp_server(sink, **options) as port:
        good = SmtpMailer(
            mail_settings(port, "starttls", smtp_username="api", smtp_password="s3cret"),
            tls_context=tls.client,
        )
        bad = SmtpMailer(
            mail_settings(port, "starttls", smtp_username="api", smtp_password="wrong"),
            tls_context=tls.client,
        )
        anonymous = SmtpMailer(mail_settings(port, "starttls"), tls_context=tls.client)
        try:
            await good.send(message())
            with pytest.raises(SmtpFailure, match="authentication failed: 535"):
                await bad.send(message())
            with pytest.raises(SmtpFailure, match="530"):
                await anonymous.send(message())
        finally:
            for mailer in (good, bad, anonymous):
                await mailer.aclose()
    assert [m.rcpt_tos for m in sink.received] == [["tls@example.com"]]


async def test_smtp_refused_recipient_quotes_the_reply_and_keeps_the_session() -> None:
    sink = SmtpSink(refuse_rcpt="550 5.1.1 No such user")
    with smtp_server(sink) as port:
        mailer = SmtpMailer(mail_settings(port, "none", smtp_connections=1))
        try:
            with pytest.raises(SmtpFailure, match=r"nobody@example\.com: 550 5\.1\.1 No such user"):
                await mailer.send(message("nobody@example.com"))
            assert len(mailer.idle) == 1  # RSET kept the session for the next message
            sink.refuse_rcpt = None
            await mailer.send(message("somebody@example.com"))
        finally:
            await mailer.aclose()
    [mail] = sink.received
    assert mail.rcpt_tos == ["somebody@example.com"]
