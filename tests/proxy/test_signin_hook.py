"""The first-sign-in hook: one signed ``user.seen`` event per identity and process, never on
the request path, retried with backoff, dropped (and counted) rather than ever blocking."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from provisioner.webhook import BadSignature, verify
from proxy.app import Runtime, create_admin_app, create_app
from proxy.identity import Identity
from proxy.metrics import Metrics
from proxy.settings import Settings, SettingsError, load_settings
from proxy.signin_hook import RETRY_AFTER_MAX_S, SeenMemory, SigninHook, backoff
from proxy.webhooks import new_secret, secret_key
from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE
from tests.proxy.test_jwt import eventually


@dataclass
class Receiver:
    """Verifies each delivery with the provisioner's own verifier and records it."""

    secret: str
    statuses: list[int] = field(default_factory=list)  # answered in turn; then 200
    retry_afters: list[str] = field(default_factory=list)  # sent with those, in turn
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)  # webhook-id of every attempt
    refused: int = 0

    def __post_init__(self) -> None:
        self.gate.set()

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                verify((secret_key(self.secret),), request.headers, body)
            except BadSignature:
                self.refused += 1
                return web.Response(status=401)
            self.attempts.append(request.headers["webhook-id"])
            await self.gate.wait()
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.events.append(json.loads(body))
            wait = {"Retry-After": self.retry_afters.pop(0)} if self.retry_afters else {}
            return web.Response(status=status, headers=wait)

        app = web.Application()
        app.router.add_post("/webhook", handle)
        return app


def secret_file(tmp_path: Path, secret: str, mode: int = 0o600) -> Path:
    path = tmp_path / "hook-secret"
    path.write_text(f"# the hook's signing secret\n{secret}\n", encoding="ascii")
    path.chmod(mode)
    return path


@pytest.fixture
async def receiver(aiohttp_server) -> tuple[Receiver, str]:
    rec = Receiver(new_secret())
    server = await aiohttp_server(rec.app())
    return rec, str(server.make_url("/webhook"))


@pytest.fixture
async def hooked(receiver, settings_for, aiohttp_client, tmp_path):
    """The public app and admin app of one runtime whose hook points at the receiver."""
    rec, url = receiver
    runtimes: list[Runtime] = []

    async def make(**overrides: Any):
        settings = settings_for(
            signin_hook_url=url,
            signin_hook_secret_file=secret_file(tmp_path, rec.secret),
            **overrides,
        )
        runtime = Runtime(settings)
        await runtime.start()
        runtimes.append(runtime)
        public = await aiohttp_client(create_app(settings, runtime))
        admin = await aiohttp_client(create_admin_app(settings, runtime))
        return public, admin

    yield rec, make
    for runtime in runtimes:
        await runtime.close()


async def signin(public: Any, cookie: dict[str, str]) -> Any:
    """OpenWebUI's trusted sign-in through the proxy, as the web UI makes it (its token
    cookie not kept: the next sign-in may be someone else's)."""
    response = await public.post("/api/v1/auths/signin", headers=cookie, json={})
    public.session.cookie_jar.clear()
    return response


async def test_only_a_sign_in_openwebui_accepted_announces_a_user(hooked, fake_upstream) -> None:
    """Other requests, and a sign-in OpenWebUI refused, announce nobody: the account must
    exist before a provisioner signs in as the person."""
    rec, make = hooked
    public, _ = await make()
    assert (await public.get("/api/models", headers=ALICE_COOKIE)).status == 200
    assert (await public.post("/status/400", headers=ALICE_COOKIE, json={})).status == 400
    await asyncio.sleep(0.3)
    assert rec.attempts == []
    assert (await signin(public, ALICE_COOKIE)).status == 200
    await eventually(lambda: len(rec.events) == 1)


async def test_first_sign_in_of_each_identity_sends_one_signed_event(hooked) -> None:
    rec, make = hooked
    public, admin = await make()
    for _ in range(3):
        assert (await signin(public, ALICE_COOKIE)).status == 200
    assert (await signin(public, BOB_COOKIE)).status == 200
    await eventually(lambda: len(rec.events) == 2)
    await asyncio.sleep(0.1)
    assert len(rec.events) == 2
    alice = next(e for e in rec.events if e["data"]["email"] == "alice@example.edu")
    assert alice["type"] == "user.seen"
    assert alice["data"] == {
        "email": "alice@example.edu",
        "name": "Alice Ängström",
        "groups": ["staff", "students"],
    }
    assert alice["timestamp"].endswith("Z")
    assert rec.refused == 0
    text = await (await admin.get("/metrics")).text()
    assert 'owui_proxy_signin_hook_events_total{outcome="sent"} 2.0' in text


async def test_the_request_never_waits_for_the_receiver(hooked, fake_upstream) -> None:
    rec, make = hooked
    rec.gate.clear()  # the receiver holds every delivery
    public, _ = await make()
    response = await signin(public, ALICE_COOKIE)
    assert response.status == 200  # answered while the delivery is still held
    await eventually(lambda: len(rec.attempts) == 1)
    assert rec.events == []
    rec.gate.set()
    await eventually(lambda: len(rec.events) == 1)


async def test_a_failing_receiver_is_retried_with_the_same_message_id(hooked) -> None:
    rec, make = hooked
    rec.statuses = [503, 500]
    public, admin = await make()
    await signin(public, ALICE_COOKIE)
    await eventually(lambda: len(rec.events) == 1, timeout=15)
    assert len(rec.attempts) == 3
    assert len(set(rec.attempts)) == 1  # receivers deduplicate on it
    text = await (await admin.get("/metrics")).text()
    assert 'owui_proxy_signin_hook_events_total{outcome="retried"} 2.0' in text


async def test_identities_refused_by_the_access_rules_are_never_announced(hooked) -> None:
    rec, make = hooked
    public, _ = await make(allowed_groups="staff")
    assert (await signin(public, BOB_COOKIE)).status == 403
    assert (await signin(public, ALICE_COOKIE)).status == 200
    await eventually(lambda: len(rec.events) == 1)
    await asyncio.sleep(0.1)
    assert [e["data"]["email"] for e in rec.events] == ["alice@example.edu"]


# --- the hook on its own: injected sleep, no waiting ------------------------------------------


def make_hook(tmp_path: Path, url: str, secret: str, **overrides: Any) -> tuple[SigninHook, Any]:
    settings = Settings(
        upstream="http://127.0.0.1:9",
        auth="forward",
        forward_auth_url="http://127.0.0.1:9/auth",
        signin_hook_url=url,
        signin_hook_secret_file=secret_file(tmp_path, secret),
        **overrides,
    )
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    session = aiohttp.ClientSession()
    hook = SigninHook(settings, session, Metrics(), sleep=sleep, rng=random.Random(7))
    return hook, slept


async def test_a_permanent_refusal_is_given_up_and_forgotten(receiver, tmp_path) -> None:
    rec, url = receiver
    rec.statuses = [400]
    hook, slept = make_hook(tmp_path, url, rec.secret)
    await hook.start()
    try:
        with capture_logs() as logs:
            hook.seen(Identity("kate@school.edu"))
            await eventually(lambda: any(e["event"] == "signin_hook_failed" for e in logs))
        assert len(rec.attempts) == 1  # 400 is not retried
        assert slept == []
        # Forgotten: the user's next request queues it again, and this time it goes through.
        hook.seen(Identity("kate@school.edu"))
        await eventually(lambda: len(rec.events) == 1)
    finally:
        await hook.close()
        await hook.session.close()


@pytest.mark.parametrize(
    ("retry_after", "at_least"),
    [
        pytest.param("5", 5.0, id="seconds"),
        pytest.param("120", 120.0, id="longer-than-the-backoff"),
        pytest.param("in 30 s", 28.0, id="http-date"),
    ],
)
async def test_retry_after_is_a_floor_on_the_wait(
    receiver, tmp_path, retry_after: str, at_least: float
) -> None:
    """A 429 asking for 5 s was retried after 0.72 s: the receiver's Retry-After is honoured
    (within RETRY_AFTER_MAX_S), as the provisioner's own client does."""
    if retry_after == "in 30 s":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    rec, url = receiver
    rec.statuses, rec.retry_afters = [429, 503], [retry_after, retry_after]
    hook, slept = make_hook(tmp_path, url, rec.secret)
    await hook.start()
    try:
        hook.seen(Identity("kate@school.edu"))
        await eventually(lambda: len(rec.events) == 1)
    finally:
        await hook.close()
        await hook.session.close()
    assert len(slept) == 2
    assert all(at_least <= s <= at_least + 32 for s in slept), slept


async def test_a_retry_after_beyond_the_bound_ends_the_event(receiver, tmp_path) -> None:
    rec, url = receiver
    rec.statuses, rec.retry_afters = [503], [str(int(RETRY_AFTER_MAX_S) + 1)]
    hook, slept = make_hook(tmp_path, url, rec.secret)
    await hook.start()
    try:
        with capture_logs() as logs:
            hook.seen(Identity("kate@school.edu"))
            await eventually(lambda: any(e["event"] == "signin_hook_failed" for e in logs))
        (failed,) = [e for e in logs if e["event"] == "signin_hook_failed"]
        assert "Retry-After asks for 301 s" in failed["why"]
        assert slept == []
        assert len(hook.memory) == 0  # forgotten: the user's next request tries again
    finally:
        await hook.close()
        await hook.session.close()


async def test_an_unreachable_receiver_is_tried_max_attempts_times(tmp_path) -> None:
    from tests.proxy.test_relay import _closed_port

    url = f"http://127.0.0.1:{_closed_port()}/webhook"
    hook, slept = make_hook(tmp_path, url, new_secret(), signin_hook_max_attempts=4)
    await hook.start()
    try:
        with capture_logs() as logs:
            hook.seen(Identity("kate@school.edu"))
            await eventually(lambda: any(e["event"] == "signin_hook_failed" for e in logs))
        assert len(slept) == 3  # between four attempts
        assert all(0.5 * 2**i <= s <= 2**i for i, s in enumerate(slept))
        assert len(hook.memory) == 0  # forgotten after giving up
    finally:
        await hook.close()
        await hook.session.close()


async def test_a_full_queue_drops_and_counts_never_blocks(receiver, tmp_path) -> None:
    rec, url = receiver
    rec.gate.clear()
    hook, _ = make_hook(tmp_path, url, rec.secret, signin_hook_queue_size=2, signin_hook_workers=1)
    await hook.start()
    try:
        hook.seen(Identity("first@school.edu"))
        await eventually(lambda: len(rec.attempts) == 1)  # the worker is busy with it
        with capture_logs() as logs:
            for i in range(5):
                hook.seen(Identity(f"u{i}@school.edu"))  # two fit, three are dropped
        dropped = [e for e in logs if e["event"] == "signin_hook_dropped"]
        assert [e["email"] for e in dropped] == ["u2@school.edu", "u3@school.edu", "u4@school.edu"]
        assert hook.events.labels("dropped")._value.get() == 3
        # A dropped identity is not remembered: its next request queues it once there is room.
        rec.gate.set()
        await eventually(lambda: len(rec.events) == 3)
        hook.seen(Identity("u2@school.edu"))
        await eventually(lambda: len(rec.events) == 4)
    finally:
        await hook.close()
        await hook.session.close()


def test_seen_memory_ttl_and_bound() -> None:
    now = [0.0]
    memory = SeenMemory(ttl_s=10, size=2, clock=lambda: now[0])
    assert memory.first_time("a@x.io")
    assert not memory.first_time("a@x.io")
    now[0] = 10.0
    assert memory.first_time("a@x.io")  # expired exactly at the TTL
    assert memory.first_time("b@x.io")
    assert memory.first_time("c@x.io")  # evicts a, the least recently seen
    assert len(memory) == 2
    assert memory.first_time("a@x.io")


@pytest.mark.parametrize("attempt", [1, 2, 5, 9, 20])
def test_backoff_doubles_with_jitter_up_to_five_minutes(attempt: int) -> None:
    ceiling = min(300.0, 2 ** (attempt - 1))
    delays = [backoff(attempt, random.Random(seed)) for seed in range(50)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        ("whsec_" + "A" * 40 + "\n", 0o644, "world-readable"),
        ("# only a comment\n", 0o600, "holds no secret"),
        ("not-a-secret\n", 0o600, "starts with 'whsec_'"),
    ],
)
def test_an_unusable_secret_file_stops_the_start(
    tmp_path: Path, content: str, mode: int, problem: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(content, encoding="ascii")
    path.chmod(mode)
    env = {
        "OWUI_PROXY_UPSTREAM": "http://127.0.0.1:9",
        "OWUI_PROXY_AUTH": "forward",
        "OWUI_PROXY_FORWARD_AUTH_URL": "http://127.0.0.1:9/auth",
        "OWUI_PROXY_SIGNIN_HOOK_URL": "http://127.0.0.1:9/hook",
        "OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE": str(path),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with pytest.raises(SettingsError) as info:
            load_settings()
    assert problem in str(info.value)
    assert "OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE" in str(info.value)


def test_the_url_needs_a_secret_file() -> None:
    with pytest.raises(Exception, match="SIGNIN_HOOK_SECRET_FILE"):
        Settings(
            upstream="http://127.0.0.1:9",
            auth="forward",
            forward_auth_url="http://127.0.0.1:9/auth",
            signin_hook_url="http://127.0.0.1:9/hook",
        )


async def test_every_outcome_is_counted_from_zero(hooked) -> None:
    """Alerts take increase() of ``dropped`` and ``failed``: a series born at 1 would hide
    the first one, so every outcome is there, at 0, before any event."""
    _rec, make = hooked
    _public, admin = await make()
    text = await (await admin.get("/metrics")).text()
    for outcome in ("queued", "sent", "retried", "dropped", "failed"):
        assert f'owui_proxy_signin_hook_events_total{{outcome="{outcome}"}} 0.0' in text


async def test_with_a_pseudonym_key_a_drop_names_the_person_as_the_access_line_does(
    receiver, tmp_path
) -> None:
    """A drop is logged on the request's path (its id on the line): by pseudonym, like the
    access line; the deliveries keep the email (the event itself carries it)."""
    from tests.proxy.test_logs import KEY, key_file, pseudonym_of

    rec, url = receiver
    rec.gate.clear()
    hook, _ = make_hook(
        tmp_path,
        url,
        rec.secret,
        signin_hook_queue_size=1,
        signin_hook_workers=1,
        log_pseudonym_key_file=key_file(tmp_path),
    )
    await hook.start()
    try:
        with capture_logs() as logs:
            hook.seen(Identity("first@school.edu"))
            await eventually(lambda: len(rec.attempts) == 1)  # the worker is busy with it
            hook.seen(Identity("second@school.edu"))  # fits
            hook.seen(Identity("third@school.edu"))  # dropped
            rec.gate.set()
            await eventually(lambda: len(rec.events) == 2)
            await eventually(
                lambda: len([e for e in logs if e["event"] == "signin_hook_sent"]) == 2
            )
        (dropped,) = [e for e in logs if e["event"] == "signin_hook_dropped"]
        assert dropped["pseudonym"] == pseudonym_of("third@school.edu")
        assert "third@school.edu" not in json.dumps(logs)
        sent = [e["email"] for e in logs if e["event"] == "signin_hook_sent"]
        assert sorted(sent) == ["first@school.edu", "second@school.edu"]
        assert KEY not in json.dumps(logs)
    finally:
        await hook.close()
        await hook.session.close()
