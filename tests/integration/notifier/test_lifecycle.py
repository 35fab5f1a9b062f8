"""The notifier as a service: heartbeat in /api/health, SIGTERM drain of in-flight deliveries."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient

from services.api.app import create_app
from services.notifier.runner import run_notifier
from shared import heartbeats, queries
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.notifier.helpers import StartNotifier, finish_task
from tests.integration.notifier.servers import Receiver
from tests.support.waiting import wait_until


async def test_notifier_heartbeat_counts_in_health(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    await start_notifier(settings)

    async def alive() -> bool:
        counts = await heartbeats.live_counts(conn, settings.dead_after_seconds)
        return counts["notifier"] == 1

    await wait_until(alive, message="a notifier heartbeat")
    body = await asyncio.to_thread(_health, settings)
    assert body["services"] == {**body["services"], "notifier": {"instances": 1}}


def _health(settings: Settings) -> dict[str, Any]:
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/health")
        assert response.status_code == 200
        return dict(response.json())


async def test_notifier_sigterm_records_interrupted_delivery_and_next_one_delivers(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    config = make_settings(settings.redis_url, shutdown_grace_seconds=0.2)
    async with Receiver(statuses=[None]).running() as receiver:
        stop = asyncio.Event()
        first = asyncio.create_task(run_notifier(conn, config, stop))
        task = await finish_task(conn, config, receiver.url)

        async def sent() -> bool:
            return bool(receiver.requests)

        await wait_until(sent, message="the first attempt")
        stop.set()
        await asyncio.wait_for(first, timeout=5)
        assert (await heartbeats.live_counts(conn, 5))["notifier"] == 0

        await start_notifier(config)

        async def delivered() -> list[str] | None:
            details = await queries.get_details(conn, task.id)
            outcomes = [r.outcome for r in details.webhook_deliveries]
            return outcomes if "delivered" in outcomes else None

        outcomes = await wait_until(delivered, message="delivery by the next notifier")

    assert outcomes == ["retrying", "delivered"]
    details = await queries.get_details(conn, task.id)
    assert details.webhook_deliveries[0].error == "interrupted: the notifier shut down"
    assert len(receiver.requests) == 2
