"""Email tasks end to end through the notifier, against a real aiosmtpd on loopback."""

from __future__ import annotations

from shared import queries
from shared.models import TaskStatus
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.notifier.helpers import StartNotifier, create, wait_final
from tests.integration.notifier.servers import SmtpSink, smtp_server
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until


def smtp_settings(settings: Settings, port: int, **overrides: object) -> Settings:
    return make_settings(
        settings.redis_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        smtp_from="Queue <queue@example.com>",
        **overrides,
    )


async def test_email_message_arrives_with_envelope_subject_and_body(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        config = smtp_settings(settings, port)
        await start_notifier(config)
        full = await create(
            conn,
            config,
            type="email",
            payload={"to": "ada@example.com", "subject": "Hi", "text": "Plain", "html": "<b>B</b>"},
        )
        bare = await create(conn, config, type="email", payload="bob@example.com")
        done = [await wait_final(conn, full.id), await wait_final(conn, bare.id)]

    assert [t.status for t in done] == [TaskStatus.COMPLETED, TaskStatus.COMPLETED]
    assert done[0].result["smtp_reply"].startswith("2.0.0 Ok")
    mails = {mail.rcpt_tos[0]: mail for mail in sink.received}
    assert set(mails) == {"ada@example.com", "bob@example.com"}
    ada = mails["ada@example.com"]
    assert ada.mail_from == "queue@example.com"
    assert ada.message["Subject"] == "Hi"
    assert ada.message["To"] == "ada@example.com"
    assert ada.message["X-Task-Id"] == full.id
    assert ada.message.get_body(("plain",)).get_content().strip() == "Plain"  # type: ignore[union-attr]
    assert ada.message.get_body(("html",)).get_content().strip() == "<b>B</b>"  # type: ignore[union-attr]
    bob = mails["bob@example.com"].message
    assert bare.id in bob["Subject"]
    assert bare.id in bob.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_email_refused_with_550_fails_after_every_attempt(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    sink = SmtpSink(refuse="550 5.1.1 Mailbox unavailable")
    with smtp_server(sink) as port:
        config = smtp_settings(settings, port)
        await start_notifier(config)
        task = await create(conn, config, type="email", payload="nobody@example.com", max_retries=2)
        done = await wait_final(conn, task.id)

    assert done.status == TaskStatus.FAILED
    assert sink.tries == 3  # 1 + max_retries
    assert done.retry_count == 2
    assert done.error is not None
    assert "550" in done.error and "Mailbox unavailable" in done.error
    details = await queries.get_details(conn, task.id)
    assert [a.outcome for a in details.attempts] == ["retrying", "retrying", "failed"]


async def test_email_refused_first_tries_then_completed(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    sink = SmtpSink(defer=2)
    with smtp_server(sink) as port:
        config = smtp_settings(settings, port)
        await start_notifier(config)
        task = await create(conn, config, type="email", payload="eve@example.com", max_retries=3)
        done = await wait_final(conn, task.id)

    assert done.status == TaskStatus.COMPLETED
    assert done.retry_count == 2
    assert sink.tries == 3
    assert [m.rcpt_tos for m in sink.received] == [["eve@example.com"]]


async def test_email_smtp_down_then_up_completes_within_budget(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    port = free_port()
    config = smtp_settings(settings, port, retry_backoff_seconds=0.2, retry_backoff_max_seconds=1.0)
    await start_notifier(config)
    task = await create(conn, config, type="email", payload="late@example.com", max_retries=10)

    async def failed_twice() -> bool:
        current = await queries.get_task(conn, task.id)
        return current.retry_count >= 2

    await wait_until(failed_twice, message="two failed attempts while SMTP is down")
    down = await queries.get_task(conn, task.id)
    assert down.error is not None and "unreachable" in down.error
    sink = SmtpSink()
    with smtp_server(sink, port=port):
        done = await wait_final(conn, task.id)

    assert done.status == TaskStatus.COMPLETED
    assert 2 <= done.retry_count < 10
    assert [m.rcpt_tos for m in sink.received] == [["late@example.com"]]


async def test_email_reuses_one_connection_across_messages(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        config = smtp_settings(settings, port, smtp_connections=1)
        await start_notifier(config)
        tasks = [
            await create(conn, config, type="email", payload=f"u{n}@example.com") for n in range(5)
        ]
        for task in tasks:
            assert (await wait_final(conn, task.id)).status == TaskStatus.COMPLETED

    assert len(sink.received) == 5
    assert len({mail.peer for mail in sink.received}) == 1
