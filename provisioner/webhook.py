"""Signup webhooks: Standard Webhooks signatures (as Svix, Clerk and the proxy send them).

Verification is written out here rather than taken from a library because it is short
and every step matters:

- ``webhook-signature`` holds one or more space-separated ``v1,<base64>`` signatures;
  each is an HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{raw body}`` keyed with
  the base64-decoded part of a ``whsec_...`` secret. Any secret of the file may match
  (rotation), and every comparison is constant-time.
- ``webhook-timestamp`` must be within five minutes of now, either way: an old delivery
  replayed later is refused. A delivery replayed *within* those five minutes is not run
  again: the ids of deliveries answered 2xx are remembered until their timestamp leaves
  the window (:class:`Deliveries`), and a replay gets ``200 {"duplicate": true}`` (409 while
  the first is still running). The memory is per process: with several receiver processes
  behind one name a replay may run once in each, which costs work, never a duplicate,
  since provisioning is idempotent.
- The signature covers the raw bytes: the body is verified before it is parsed.
- Bad input is a 4xx, never a 500: every header is bounded before it is parsed (400), the
  body may be at most 256 KiB (413) and must keep arriving (408 after the proxy's body
  timeout), and the connection gets the proxy's head and keep-alive timeouts
  (:func:`make_runner`, ``proxy/connections.py``).

Events: the proxy's ``user.seen`` (an identity with its groups, sent the first time a
proxy process sees it, so again after a restart), Clerk's ``user.created``, or a plain
``{"email", "name"}``. The groups choose the courses (:mod:`provisioner.catalog`).

The receiver answers 2xx only once the user's threads exist (or when there is nothing to
provision), so a sender that retries on anything else never loses a signup;
provisioning is idempotent, so retries and repeated ``user.seen`` events are harmless.
Every "retry later" answer (503, and the 409 of a replay still running) carries
``Retry-After``.

A storm of deliveries (term start) is bounded (:class:`Admission`): at most
``concurrency`` people are provisioned at once (a person waiting out the settle pause
gives up their place meanwhile), at most ``queue`` more wait for a place, and anything
beyond is answered ``503`` with ``Retry-After`` at once, before any call to OpenWebUI.
So is a delivery that, by what the receiver has seen of how fast its queue drains, would
not end within its deadline: it would only wait the deadline out for the same 503.
A person back from the settle pause gets a place before any delivery not yet started.
Deliveries naming the same person (Clerk's ``user.created`` and the proxy's ``user.seen``,
or ``user.seen`` from several proxy processes) run one after the other, so the second
finds the first one's threads instead of creating its own to be deleted. Waiting counts
towards the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from provisioner.catalog import courses_for, no_course_reason
from provisioner.course import Course
from provisioner.errors import (
    ActAsDenied,
    AdminAccount,
    ApiError,
    BadInput,
    ConfigError,
    ProvisionError,
    Refused,
)
from provisioner.metrics import WebhookMetrics
from provisioner.provision import Provisioner
from provisioner.slots import Lease, Slots
from provisioner.users import checked_identity
from proxy import webhooks
from proxy.connections import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, KEEPALIVE_TIMEOUT_S, GuardedRunner
from proxy.errors import BodyStalled, BodyTooLarge
from proxy.identity import OWS, InvalidIdentity, parse_groups
from proxy.relay import read_body
from proxy.secretfile import SecretFileError, read_secret_lines
from proxy.webhooks import TOLERANCE_S, BadHeaders, BadSignature, verify

log = structlog.get_logger("provisioner.webhook")

MAX_BODY_BYTES = 256 * 1024
# Delivery ids remembered at most (per process): far above any signup rate over five minutes;
# past it the oldest are forgotten, and a replay of one of those runs again (idempotently).
MAX_REMEMBERED = 50_000
# What an event type or a refusal reason may show of attacker-chosen text.
_MAX_SHOWN = 100
# People provisioned at once, and deliveries that may wait for a place (see Admission).
DEFAULT_CONCURRENCY = 4
DEFAULT_QUEUE = 256
# Weight of the latest delivery in the receiver's moving averages of how long one takes.
_SMOOTHING = 0.2
# How many ends, while deliveries waited, the receiver's drain rate is measured over.
_GAP_WINDOW = 16
# The share of the deadline an expected end may take: the estimate is a mean, and a
# delivery near the line waits out the deadline half the time.
_EXPECTED_SHARE = 0.8


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


class Deliveries:
    """The deliveries this process is handling or has handled: replays are not run again.

    A delivery answered 2xx is remembered until its signed timestamp leaves the tolerance
    window (after that a replay fails :func:`proxy.webhooks.verify`); one answered otherwise
    is forgotten, because the sender retries it with the same id and that retry must run.
    """

    def __init__(self, size: int = MAX_REMEMBERED, clock: Callable[[], float] = time.time):
        self.size = size
        self.clock = clock
        self._handled: OrderedDict[str, float] = OrderedDict()  # id -> forgotten after
        self._running: set[str] = set()

    def state(self, msg_id: str) -> str | None:
        """``"handled"``, ``"running"`` or None (not seen, or seen too long ago)."""
        if msg_id in self._running:
            return "running"
        until = self._handled.get(msg_id)
        if until is None:
            return None
        if self.clock() > until:
            del self._handled[msg_id]
            return None
        return "handled"

    def begin(self, msg_id: str) -> None:
        self._running.add(msg_id)

    def end(self, msg_id: str, *, timestamp: int, handled: bool) -> None:
        self._running.discard(msg_id)
        if not handled:
            return
        self._handled[msg_id] = timestamp + TOLERANCE_S
        self._handled.move_to_end(msg_id)
        now = self.clock()
        while self._handled and (
            len(self._handled) > self.size or next(iter(self._handled.values())) < now
        ):
            self._handled.popitem(last=False)

    def __len__(self) -> int:
        return len(self._handled)


class Busy(Exception):
    """More deliveries are waiting than the receiver queues: the sender should retry later."""


class Admission:
    """How many deliveries reach OpenWebUI at once, and that one person's run one at a time.

    :meth:`person` first waits for the deliveries of the same email before it (no slot is
    held meanwhile), then for one of ``concurrency`` slots. A delivery that would make more
    than ``concurrency + queue`` of them admitted at once is refused (:class:`Busy`) rather
    than queued, so a storm costs bounded memory and connections.

    The slots are :class:`provisioner.slots.Slots`: a person back from the settle pause gets
    the next free slot before any delivery not yet started. With a first-come semaphore
    they queued behind every waiting delivery, so under a full queue people whose threads
    were already made ran out of their deadline (a 503 after the work, which the sender's
    retry then repeated in part) while fresh deliveries started; now the deliveries that
    run out of time are mostly those that never started, which cost nothing.
    """

    def __init__(self, concurrency: int, queue: int, deadline_s: float | None = None) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be at least 1 and queue at least 0")
        self.slot = Slots(concurrency)
        self.concurrency = concurrency
        self.limit = concurrency + queue
        self.deadline_s = deadline_s
        self.admitted = 0
        self.waiting = 0  # admitted, and not yet holding a slot
        # What the receiver has seen (moving averages over deliveries that ended within
        # their deadline): the time between two of them ending while deliveries waited (how
        # fast the queue drains, whatever holds the slots), and one's time from slot to end.
        self.run_s: float | None = None
        self._ends: deque[float] = deque(maxlen=_GAP_WINDOW)  # while deliveries kept waiting
        self._running: dict[object, float] = {}  # when each delivery under way got its slot
        self._people: dict[str, tuple[asyncio.Lock, int]] = {}

    def expected_s(self) -> float | None:
        """When a delivery admitted now would end, as far as the receiver has seen; ``None``
        before it has seen enough, or when a slot may be free at once."""
        if self.waiting == 0:
            return None
        run_s = self.run_s
        if run_s is None:  # none has ended yet: one takes at least as long as the oldest
            if not self._running:
                return None
            run_s = time.monotonic() - min(self._running.values())
        return (self.waiting + 1) * self.gap_s(run_s) + run_s

    def gap_s(self, run_s: float) -> float:
        """The mean time between two deliveries ending while others waited, over the last
        few (ends come in bursts: a mean over a window, not a moving average of gaps);
        before enough are seen, a slot per delivery for its whole run (the settle pause
        lends it out, so the queue drains at least this fast)."""
        if len(self._ends) < _GAP_WINDOW // 2:
            return run_s / self.concurrency
        return (self._ends[-1] - self._ends[0]) / (len(self._ends) - 1)

    def _ended(self, run_s: float) -> None:
        self.run_s = _average(self.run_s, run_s)
        if self.waiting > 0:
            self._ends.append(time.monotonic())

    def _left_queue(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self._ends.clear()  # the next gap may hold idle time

    @contextlib.asynccontextmanager
    async def person(self, email: str) -> AsyncIterator[Lease]:
        """Hold ``email``'s turn and a slot (yielded: the provisioner may lend it out while
        it waits); :class:`Busy` at once when the queue is full, or when the deliveries
        waiting ahead would keep this one from ending within the deadline (it would only
        wait the deadline out for its 503, holding a connection)."""
        if self.admitted >= self.limit:
            raise Busy()
        expected = self.expected_s()
        if (
            expected is not None
            and self.deadline_s is not None
            and expected > _EXPECTED_SHARE * self.deadline_s
        ):
            raise Busy()
        self.admitted += 1
        self.waiting += 1
        held = self._people.get(email)
        lock, users = held if held is not None else (asyncio.Lock(), 0)
        self._people[email] = (lock, users + 1)
        started: float | None = None
        token = object()
        try:
            async with lock, self.slot.lease() as lease:
                self._left_queue()
                started = self._running[token] = time.monotonic()
                yield lease
        except asyncio.CancelledError:
            raise  # its deadline: how long it would have taken is not known
        except BaseException:
            if started is not None:  # a failure ends it as surely as a success
                self._ended(time.monotonic() - started)
            raise
        else:
            if started is not None:
                self._ended(time.monotonic() - started)
        finally:
            self.admitted -= 1
            self._running.pop(token, None)
            if started is None:
                self._left_queue()
            lock, users = self._people[email]
            if users == 1:
                del self._people[email]
            else:
                self._people[email] = (lock, users - 1)


def _average(average: float | None, sample: float) -> float:
    return sample if average is None else average + _SMOOTHING * (sample - average)


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
            raise Ignored(str(payload["type"])[:_MAX_SHOWN])
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
    body_timeout_s: float = BODY_TIMEOUT_S,
    deliveries: Deliveries | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    queue: int = DEFAULT_QUEUE,
) -> web.Application:
    """The receiver: ``POST /webhooks/signup``. Read, verify, skip a replay, parse, choose
    courses, provision, answer.

    Also ``GET /healthz`` (the receiver is up) and ``GET /metrics`` (Prometheus).

    ``courses`` are every course file the receiver serves; each event gets those its
    groups choose (:func:`provisioner.catalog.courses_for`). ``concurrency`` and ``queue``
    bound a storm of deliveries (:class:`Admission`).
    """

    metrics = WebhookMetrics([course.course.id for course in courses])
    seen = deliveries if deliveries is not None else Deliveries(clock=clock)
    admission = Admission(concurrency, queue, deadline_s)
    retry_after = str(max(1, round(deadline_s)))

    def answer(outcome: str, status: int, **body: Any) -> web.Response:
        metrics.deliveries.labels(outcome).inc()
        # Every "retry later" says when: the busy queue, the deadline, OpenWebUI down or
        # refusing for now (503), and a replay of a delivery still running (409).
        headers = {"Retry-After": retry_after} if status in (409, 503) else None
        return web.json_response(body, status=status, headers=headers)

    async def signup(request: web.Request) -> web.Response:
        try:
            body = await read_body(request, MAX_BODY_BYTES, body_timeout_s)
        except BodyTooLarge:
            return answer("too_large", 413, error=f"the body exceeds {MAX_BODY_BYTES} bytes")
        except BodyStalled:
            return answer("stalled", 408, error="the body stopped arriving")
        try:
            verify(secrets, request.headers, body, now=clock())
        except BadHeaders as exc:
            log.warning("webhook refused", reason=str(exc))
            return answer("bad_request", 400, error=str(exc))
        except BadSignature as exc:
            log.warning("webhook refused", reason=str(exc))
            return answer("bad_signature", 401, error="invalid signature")
        # Verified: both are bounded, and the id is visible ASCII.
        msg_id = request.headers["webhook-id"]
        timestamp = int(request.headers["webhook-timestamp"])
        state = seen.state(msg_id)
        if state == "handled":
            log.info("webhook replayed", webhook_id=msg_id)
            return answer("duplicate", 200, duplicate=True)
        if state == "running":
            return answer("in_progress", 409, error="this delivery is being handled; retry later")
        seen.begin(msg_id)
        status = 500  # what a cancelled handler leaves: not handled, a retry must run
        try:
            response = await handle(msg_id, body)
            status = response.status
            return response
        finally:
            seen.end(msg_id, timestamp=timestamp, handled=200 <= status < 300)

    async def handle(msg_id: str, body: bytes) -> web.Response:
        try:
            signup = parse_signup(json.loads(body))
        except Ignored as exc:
            log.info("webhook ignored", webhook_id=msg_id, type=str(exc))
            return answer("ignored", 200, ignored=str(exc))
        except RecursionError:  # nesting deeper than the JSON decoder goes
            log.warning("webhook payload refused", webhook_id=msg_id, reason="nested too deep")
            return answer("bad_payload", 422, error="the JSON is nested too deep")
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
            async with asyncio.timeout(deadline_s), admission.person(signup.email) as slot:
                with metrics.seconds.time():
                    results = await provisioner.provision_user(
                        chosen, signup.email, signup.name, slot=slot
                    )
        except Busy:
            log.warning("webhook refused: too many deliveries waiting", webhook_id=msg_id)
            return answer("busy", 503, error="the receiver is busy with other signups; retry later")
        except TimeoutError:
            log.warning("webhook deadline passed", webhook_id=msg_id, email=signup.email)
            return answer("deadline", 503, error="provisioning is taking too long; retry later")
        except AdminAccount as exc:
            # Permanent and expected (the operator signing in at the IdP): a 2xx stops the
            # sender's retries; the answer says nothing was provisioned.
            log.info("webhook skipped an admin", webhook_id=msg_id, email=signup.email)
            return answer("admin_skipped", 200, email=signup.email, skipped=str(exc))
        except ActAsDenied as exc:
            # Permanent until the operator changes the proxy's access rules (and then the
            # person's own first sign-in provisions them): a retry cannot succeed, so a
            # 2xx stops the sender's; the answer says why nothing was provisioned.
            log.warning(
                "webhook refused by the access rules", webhook_id=msg_id, email=signup.email
            )
            return answer("access_denied", 200, email=signup.email, skipped=str(exc))
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


def make_runner(
    app: web.Application,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
) -> web.AppRunner:
    """The receiver's runner: a request head must arrive in time and an idle connection is
    closed, with the proxy listeners' own timeouts (the body's is :func:`create_app`'s)."""
    return GuardedRunner(
        app,
        header_timeout_s=header_timeout_s,
        keepalive_timeout=keepalive_timeout_s,
        access_log=None,
    )
