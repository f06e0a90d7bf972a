"""Signup webhooks: Standard Webhooks signatures (as Svix, Clerk and the proxy send them).

Verification is written out here rather than taken from a library because it is short
and every step matters:

- ``webhook-signature`` holds one or more space-separated ``v1,<base64>`` signatures;
  each is an HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{raw body}`` keyed with
  the base64-decoded part of a ``whsec_...`` secret. Any secret of the file may match
  (rotation), and every comparison is constant-time.
- ``webhook-timestamp`` must be within five minutes of now, either way: an old delivery
  replayed later is refused.
- The signature covers the raw bytes: the body is verified before it is parsed.

Events: the proxy's ``user.seen`` (an identity with its groups, sent the first time a
proxy process sees it, so again after a restart), Clerk's ``user.created``, or a plain
``{"email", "name"}``. The groups choose the courses (:mod:`provisioner.catalog`).

The receiver answers 2xx only once the user's threads exist (or when there is nothing to
provision), so a sender that retries on anything else never loses a signup;
provisioning is idempotent, so retries and repeated ``user.seen`` events are harmless.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from provisioner.catalog import courses_for, no_course_reason
from provisioner.course import Course
from provisioner.errors import (
    AdminAccount,
    ApiError,
    BadInput,
    ConfigError,
    ProvisionError,
    Refused,
)
from provisioner.metrics import WebhookMetrics
from provisioner.provision import Provisioner
from provisioner.users import checked_identity
from proxy import webhooks
from proxy.identity import OWS, InvalidIdentity, parse_groups
from proxy.secretfile import SecretFileError, read_secret_lines
from proxy.webhooks import BadSignature, verify

log = structlog.get_logger("provisioner.webhook")

MAX_BODY_BYTES = 256 * 1024


# A Svix/Clerk secret may carry 16 bytes of key; ours (proxy.webhooks.new_secret) carry 32.
MIN_KEY_BYTES = 16


def load_secrets(path: Path) -> tuple[bytes, ...]:
    """The ``whsec_...`` secrets in ``path``, one a line (blank and ``#`` lines skipped)."""
    try:
        lines = read_secret_lines(path)
    except SecretFileError as exc:
        raise ConfigError(f"--secret-file {exc}") from exc
    keys: list[bytes] = []
    for number, value in lines:
        try:
            keys.append(webhooks.secret_key(value, MIN_KEY_BYTES))
        except webhooks.BadSecret as exc:
            raise ConfigError(f"--secret-file {path}:{number}: {exc}") from exc
    if not keys:
        raise ConfigError(f"--secret-file {path}: holds no whsec_ secret")
    return tuple(keys)


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature (what a sender computes; tests use it too)."""
    return webhooks.signature(key, msg_id, timestamp, body)


@dataclass(frozen=True, slots=True)
class Signup:
    email: str
    name: str | None
    groups: tuple[str, ...] = ()  # only the proxy's user.seen carries groups


class Ignored(Exception):
    """A well-formed event that is not a signup (e.g. Clerk's ``user.updated``)."""


def parse_signup(payload: Any) -> Signup:
    """The proxy's ``user.seen``, Clerk's ``user.created``, or ``{"email", "name"}``; validated."""
    if not isinstance(payload, dict):
        raise BadInput("the body is not a JSON object")
    if "type" in payload:
        if payload["type"] == "user.seen":
            return _seen_user(payload.get("data"))
        if payload["type"] != "user.created":
            raise Ignored(str(payload["type"]))
        return _clerk_user(payload.get("data"))
    email, name = payload.get("email"), payload.get("name")
    if not isinstance(email, str) or (name is not None and not isinstance(name, str)):
        raise BadInput('expected {"email": string, "name": string or null}')
    return Signup(*checked_identity(email, name))


def _seen_user(data: Any) -> Signup:
    """The proxy's first sight of an identity: ``{"email", "name", "groups"}``."""
    if not isinstance(data, dict):
        raise BadInput("user.seen without a 'data' object")
    email, name, groups = data.get("email"), data.get("name"), data.get("groups")
    if (
        not isinstance(email, str)
        or (name is not None and not isinstance(name, str))
        or (groups is not None and not isinstance(groups, list))
    ):
        raise BadInput(
            'user.seen: expected data {"email": string, "name": string or null, '
            '"groups": list of strings}'
        )
    email, name = checked_identity(email, name)
    try:
        return Signup(email, name, parse_groups(groups))
    except InvalidIdentity as exc:
        raise BadInput(f"user.seen: {exc.reason}") from exc


def _clerk_user(data: Any) -> Signup:
    if not isinstance(data, dict):
        raise BadInput("user.created without a 'data' object")
    primary = data.get("primary_email_address_id")
    addresses = data.get("email_addresses")
    if not isinstance(addresses, list):
        raise BadInput("user.created without 'email_addresses'")
    email = next(
        (
            item.get("email_address")
            for item in addresses
            if isinstance(item, dict) and item.get("id") == primary
        ),
        None,
    )
    if not isinstance(email, str):
        raise BadInput("user.created: no email address matches 'primary_email_address_id'")
    parts = [data.get("first_name"), data.get("last_name")]
    name = " ".join(part.strip(OWS) for part in parts if isinstance(part, str) and part.strip(OWS))
    return Signup(*checked_identity(email, name or None))


def create_app(
    courses: Sequence[Course],
    secrets: tuple[bytes, ...],
    provisioner: Provisioner,
    *,
    deadline_s: float,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The receiver: ``POST /webhooks/signup``. Verify, parse, choose courses, provision, answer.

    Also ``GET /healthz`` (the receiver is up) and ``GET /metrics`` (Prometheus).

    ``courses`` are every course file the receiver serves; each event gets those its
    groups choose (:func:`provisioner.catalog.courses_for`).
    """

    metrics = WebhookMetrics([course.course.id for course in courses])

    def answer(outcome: str, status: int, **body: Any) -> web.Response:
        metrics.deliveries.labels(outcome).inc()
        return web.json_response(body, status=status)

    async def signup(request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        try:
            verify(secrets, request.headers, body, now=clock())
        except BadSignature as exc:
            log.warning("webhook refused", webhook_id=msg_id, reason=str(exc))
            return answer("bad_signature", 401, error="invalid signature")
        try:
            signup = parse_signup(json.loads(body))
        except Ignored as exc:
            log.info("webhook ignored", webhook_id=msg_id, type=str(exc))
            return answer("ignored", 200, ignored=str(exc))
        except (ValueError, BadInput) as exc:
            # json.JSONDecodeError is a ValueError. Permanent, but a non-2xx keeps the
            # delivery in the sender's failed list where an operator will see it.
            log.warning("webhook payload refused", webhook_id=msg_id, reason=str(exc))
            return answer("bad_payload", 422, error=str(exc))
        chosen = courses_for(courses, signup.groups)
        if not chosen:
            # Permanent for this identity: a 2xx stops the sender's retries. No call to
            # OpenWebUI is made, so no account is created either.
            log.info(
                "webhook: nothing to provision",
                webhook_id=msg_id,
                email=signup.email,
                groups=list(signup.groups),
            )
            return answer(
                "nothing_to_provision",
                200,
                email=signup.email,
                courses=[],
                modules=[],
                nothing_to_provision=no_course_reason(signup.groups),
            )
        course_ids = [course.course.id for course in chosen]
        try:
            with metrics.seconds.time():
                async with asyncio.timeout(deadline_s):
                    results = await provisioner.provision_user(chosen, signup.email, signup.name)
        except TimeoutError:
            log.warning("webhook deadline passed", webhook_id=msg_id, email=signup.email)
            return answer("deadline", 503, error="provisioning is taking too long; retry later")
        except AdminAccount as exc:
            # Permanent and expected (the operator signing in at the IdP): a 2xx stops the
            # sender's retries; the answer says nothing was provisioned.
            log.info("webhook skipped an admin", webhook_id=msg_id, email=signup.email)
            return answer("admin_skipped", 200, email=signup.email, skipped=str(exc))
        except Refused as exc:
            log.error(
                "webhook refused by OpenWebUI state",
                webhook_id=msg_id,
                email=signup.email,
                reason=str(exc),
            )
            return answer("refused", 503, error=str(exc))
        except ApiError as exc:
            log.error("webhook failed", webhook_id=msg_id, email=signup.email, reason=str(exc))
            return answer("openwebui_error", 502, error=str(exc))
        except ProvisionError as exc:
            log.error("webhook failed", webhook_id=msg_id, email=signup.email, reason=str(exc))
            return answer("failed", 503, error=str(exc))
        for result in results:
            metrics.modules.labels(result.course, result.status).inc()
        log.info("webhook provisioned", webhook_id=msg_id, email=signup.email, courses=course_ids)
        return answer(
            "provisioned",
            200,
            email=signup.email,
            courses=course_ids,
            modules=[result.as_json() for result in results],
        )

    async def healthz(request: web.Request) -> web.Response:
        # Liveness of the receiver itself; `owui-provision check` looks further.
        return web.json_response({"status": "ok"})

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/webhooks/signup", signup)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", scrape)
    return app
