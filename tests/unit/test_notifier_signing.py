"""Standard Webhooks signing, checked by the reference verifier (standardwebhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier import signing
from shared.settings import Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_" + base64.b64encode(b"another secret, 32 bytes long!!!").decode()


def test_signing_headers_verify_with_reference_verifier() -> None:
    body = b'{"event":"task.completed","task":{"id":"t1"}}'
    headers = signing.webhook_headers(signing.parse_secrets(SECRET), "msg_1", body)
    assert headers["webhook-id"] == "msg_1"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert Webhook(SECRET).verify(body, headers) == {
        "event": "task.completed",
        "task": {"id": "t1"},
    }


def test_signing_matches_the_spec_example() -> None:
    # The worked example of the Standard Webhooks reference implementation's tests.
    secrets = signing.parse_secrets(SECRET)
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.signature(secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_signing_tampered_body_fails_verification() -> None:
    headers = signing.webhook_headers(signing.parse_secrets(SECRET), "msg_1", b'{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b'{"a":2}', headers)


def test_signing_rotation_signs_with_every_secret() -> None:
    body = b"{}"
    headers = signing.webhook_headers(signing.parse_secrets(f"{SECRET}, {OTHER}"), "m", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(body, headers)
    Webhook(OTHER).verify(body, headers)


def test_signing_without_secret_sends_id_and_timestamp_only() -> None:
    headers = signing.webhook_headers(signing.parse_secrets(""), "msg_2", b"{}")
    assert set(headers) == {"webhook-id", "webhook-timestamp"}


def test_signing_malformed_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        signing.parse_secrets("whsec_not base64!")


def test_webhook_tasks_get_their_own_secret_or_none() -> None:
    """WEBHOOK_SECRET signs completion webhooks only; webhook tasks use WEBHOOK_TASK_SECRET."""
    completion, tasks = signing.secrets_from(Settings(webhook_secret=SECRET, _env_file=None))
    assert completion == signing.parse_secrets(SECRET) and tasks == []
    both = Settings(webhook_secret=SECRET, webhook_task_secret=OTHER, _env_file=None)
    expected = (signing.parse_secrets(SECRET), signing.parse_secrets(OTHER))
    assert signing.secrets_from(both) == expected


@pytest.mark.parametrize("task_secret", [SECRET, f"{OTHER} {SECRET}"])
def test_webhook_task_secret_sharing_a_key_with_webhook_secret_is_refused(task_secret: str) -> None:
    shared = Settings(webhook_secret=SECRET, webhook_task_secret=task_secret, _env_file=None)
    with pytest.raises(ValueError, match="WEBHOOK_TASK_SECRET"):
        signing.secrets_from(shared)


def test_malformed_webhook_task_secret_is_named() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_TASK_SECRET"):
        signing.secrets_from(Settings(webhook_task_secret="whsec_not base64!", _env_file=None))


def test_a_secret_that_decodes_to_nothing_is_refused() -> None:
    """`whsec_` alone would sign with an empty key (the reference package refuses one too)."""
    with pytest.raises(ValueError, match="whsec_"):
        signing.parse_secrets("whsec_")


def test_a_non_ascii_body_signs_its_utf8_bytes() -> None:
    """The package signs text: a UTF-8 body's text gives the HMAC of its bytes, unchanged."""
    [key] = signing.parse_secrets(SECRET)
    body = '{"name":"Zoë ✓","n":1}'.encode()
    mac = hmac.new(key, b"msg_u.1700000000." + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    assert signing.signature([key], "msg_u", 1700000000, body) == expected
