"""The launcher's port check (services/stack/supervisor.py: taken_ports)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.stack.supervisor import taken_ports
from shared.settings import Settings
from tests.support.ports import taken_port
from tests.support.redis_server import free_port


@pytest.fixture
def listener() -> Iterator[int]:
    with taken_port() as port:
        yield port


def _settings(**ports: int) -> Settings:
    defaults = {
        "api_port": free_port(), "dashboard_port": free_port(),
        "embedded_redis_port": free_port(), "dev_smtp_port": free_port(),
        "dev_mail_http_port": free_port(),
    }  # fmt: skip
    return Settings(**{**defaults, **ports})


def test_free_ports_pass(listener: int) -> None:
    assert taken_ports(_settings(), redis_url_given=False, smtp_given=False) == []


def test_only_the_ports_of_parts_that_start_are_checked(listener: int) -> None:
    """With REDIS_URL given no embedded Redis starts, so its port may be in use (by that very
    Redis, often); with SMTP_HOST given no mail catcher starts."""
    redis_taken = _settings(embedded_redis_port=listener)
    assert taken_ports(redis_taken, redis_url_given=True, smtp_given=True) == []
    [line] = taken_ports(redis_taken, redis_url_given=False, smtp_given=True)
    assert f"port {listener} for the embedded Redis (EMBEDDED_REDIS_PORT)" in line
    mail_taken = _settings(dev_smtp_port=listener)
    assert taken_ports(mail_taken, redis_url_given=True, smtp_given=True) == []
    [line] = taken_ports(mail_taken, redis_url_given=True, smtp_given=False)
    assert "(DEV_SMTP_PORT)" in line and "set DEV_SMTP_PORT to another port" in line
