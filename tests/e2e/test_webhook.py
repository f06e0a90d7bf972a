"""Signed signup events reach the provisioner's webhook receiver; tampered ones do nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import httpx
import pytest

from demo.stack import Stack
from tests.e2e.conftest import assert_course_threads, find_user, fresh_email

pytestmark = pytest.mark.e2e


def standard_webhooks_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    """Sign like Svix/Clerk do (written here independently of proxy/webhooks.py)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    timestamp = str(int(time.time()))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


def clerk_user_created(email: str, first: str, last: str) -> bytes:
    """Clerk's `user.created` event, trimmed to the fields a receiver reads."""
    event = {
        "type": "user.created",
        "object": "event",
        "data": {
            "id": "user_" + secrets.token_hex(8),
            "object": "user",
            "first_name": first,
            "last_name": last,
            "primary_email_address_id": "idn_primary",
            "email_addresses": [
                {"id": "idn_other", "email_address": "other-" + email},
                {"id": "idn_primary", "email_address": email},
            ],
        },
    }
    return json.dumps(event).encode()


def test_signed_signup_creates_threads_and_a_tampered_one_creates_nothing(webhook: Stack) -> None:
    secret = webhook.webhook_secret_file.read_text().strip()
    email = fresh_email("signup")
    body = clerk_user_created(email, "Grace", "Hopper")
    headers = standard_webhooks_headers(secret, "msg_" + secrets.token_hex(8), body)

    # Tampered: the signature is for another body (someone swapped the email in transit).
    forged_email = fresh_email("forged")
    tampered = body.replace(email.encode(), forged_email.encode())
    response = httpx.post(webhook.webhook_url, content=tampered, headers=headers, timeout=60)
    assert response.status_code == 401, response.text
    # Signed with a secret the receiver does not know.
    wrong = standard_webhooks_headers(
        "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(), "msg_x1", body
    )
    response = httpx.post(webhook.webhook_url, content=body, headers=wrong, timeout=60)
    assert response.status_code == 401, response.text
    # Nothing happened: neither user exists in OpenWebUI.
    assert find_user(webhook, forged_email) is None
    assert find_user(webhook, email) is None

    response = httpx.post(webhook.webhook_url, content=body, headers=headers, timeout=120)
    assert 200 <= response.status_code < 300, response.text
    # 2xx only once the threads exist: checked right away, no polling.
    user = find_user(webhook, email)
    assert user is not None
    assert user["role"] == "user"
    assert user["name"] == "Grace Hopper"
    assert_course_threads(webhook, email)

    # The sender retries (same message id): still exactly one thread per module.
    headers = standard_webhooks_headers(secret, headers["webhook-id"], body)
    response = httpx.post(webhook.webhook_url, content=body, headers=headers, timeout=120)
    assert 200 <= response.status_code < 300, response.text
    assert_course_threads(webhook, email)
