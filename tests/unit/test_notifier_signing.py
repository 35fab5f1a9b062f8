"""Standard Webhooks signing, checked by the reference verifier (standardwebhooks)."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier import signing

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
