"""The signup webhook receiver: Standard Webhooks signatures, payload shapes, answers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from provisioner.course import Course
from provisioner.errors import ConfigError
from provisioner.provision import Provisioner
from provisioner.threads import MARKER_KEY, tag
from provisioner.webhook import BadSignature, create_app, load_secrets, sign, verify
from tests.provisioner.cli_helpers import finish, start
from tests.provisioner.conftest import course_named, course_toml
from tests.provisioner.fake_owui import FakeOpenWebUI

KEY = b"0123456789abcdef0123456789abcdef"
OLD_KEY = b"fedcba9876543210fedcba9876543210"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OLD_SECRET = "whsec_" + base64.b64encode(OLD_KEY).decode()
NOW = 1_767_225_600

CLERK = {
    "type": "user.created",
    "object": "event",
    "data": {
        "id": "user_2abc",
        "first_name": "Grace",
        "last_name": "Hopper",
        "primary_email_address_id": "idn_2",
        "email_addresses": [
            {"id": "idn_1", "email_address": "old@example.edu"},
            {"id": "idn_2", "email_address": "Grace@Example.EDU"},
        ],
    },
}


def headers(
    body: bytes, *, key: bytes = KEY, ts: int = NOW, msg_id: str = "msg_1"
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(key, msg_id, ts, body),
        "content-type": "application/json",
    }


@pytest.fixture
async def client(aiohttp_client: Any, provisioner: Provisioner, course: Course) -> Any:
    app = create_app([course], (OLD_KEY, KEY), provisioner, deadline_s=5, clock=lambda: NOW)
    return await aiohttp_client(app)


def module_threads(fake: FakeOpenWebUI, email: str) -> list[tuple[str, bool]]:
    return sorted((c.title, c.archived) for c in fake.chats_of(email))


async def test_valid_signup_answers_only_once_threads_exist(
    client: Any, fake: FakeOpenWebUI
) -> None:
    body = json.dumps({"email": "ada@example.edu", "name": "Ada"}).encode()
    response = await client.post("/webhooks/signup", data=body, headers=headers(body))
    # Checked right after the answer: the threads were made before it was sent.
    assert module_threads(fake, "ada@example.edu") == [
        (f"Module 1: Intro {tag('demo', 'intro', 'hidden')}", True),
        (f"Module 2: Next {tag('demo', 'next', 'hidden')}", True),
    ]
    assert response.status == 200
    answer = await response.json()
    assert [m["status"] for m in answer["modules"]] == ["created", "created"]


async def test_retried_delivery_creates_nothing_new(client: Any, fake: FakeOpenWebUI) -> None:
    body = json.dumps({"email": "ada@example.edu", "name": None}).encode()
    for _ in range(3):
        response = await client.post("/webhooks/signup", data=body, headers=headers(body))
        assert response.status == 200
    assert len(fake.chats_of("ada@example.edu")) == 2


async def test_clerk_user_created_uses_the_primary_address(
    client: Any, fake: FakeOpenWebUI
) -> None:
    body = json.dumps(CLERK).encode()
    response = await client.post("/webhooks/signup", data=body, headers=headers(body))
    assert response.status == 200
    assert fake.users["grace@example.edu"].name == "Grace Hopper"
    assert "old@example.edu" not in fake.users
    assert len(fake.chats_of("grace@example.edu")) == 2


async def test_other_clerk_events_are_acknowledged_and_ignored(
    client: Any, fake: FakeOpenWebUI
) -> None:
    body = json.dumps(CLERK | {"type": "user.updated"}).encode()
    response = await client.post("/webhooks/signup", data=body, headers=headers(body))
    assert response.status == 200
    assert await response.json() == {"ignored": "user.updated"}
    assert fake.chats == {}


def user_seen(email: str, name: str | None, groups: list[str]) -> bytes:
    """The proxy's event for an identity it sees for the first time."""
    data = {"email": email, "name": name, "groups": groups}
    return json.dumps(
        {"type": "user.seen", "timestamp": "2026-01-01T00:00:00Z", "data": data}
    ).encode()


@pytest.fixture
async def grouped(aiohttp_client: Any, provisioner: Provisioner) -> Any:
    """A receiver serving three course files: one for everyone, one each for two groups."""
    courses = [
        course_named("everyone"),
        course_named("year-9", ["year-9"]),
        course_named("staff", ["staff"]),
    ]
    return await aiohttp_client(
        create_app(courses, (KEY,), provisioner, deadline_s=5, clock=lambda: NOW)
    )


def courses_of(fake: FakeOpenWebUI, email: str) -> list[str]:
    return sorted({c.chat[MARKER_KEY]["course"] for c in fake.chats_of(email)})


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        pytest.param([], ["everyone"], id="no groups"),
        pytest.param(["year-9"], ["everyone", "year-9"], id="one group"),
        pytest.param(["staff", "year-9", "other"], ["everyone", "staff", "year-9"], id="several"),
    ],
)
async def test_user_seen_gets_the_courses_its_groups_choose(
    grouped: Any, fake: FakeOpenWebUI, groups: list[str], expected: list[str]
) -> None:
    body = user_seen("Kate@School.edu", "Kate", groups)
    response = await grouped.post("/webhooks/signup", data=body, headers=headers(body))
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert sorted(answer["courses"]) == expected
    assert courses_of(fake, "kate@school.edu") == expected
    assert len(answer["modules"]) == 2 * len(expected)
    assert all(m["archived"] for m in answer["modules"])
    assert fake.count("POST", "/api/v1/auths/signin") == 1  # one sign-in for every course
    assert fake.users["kate@school.edu"].name == "Kate"


async def test_user_seen_resent_after_a_restart_creates_nothing_new(
    grouped: Any, fake: FakeOpenWebUI
) -> None:
    body = user_seen("kate@school.edu", None, ["year-9"])
    for msg_id in ("msg_a", "msg_b"):
        response = await grouped.post(
            "/webhooks/signup", data=body, headers=headers(body, msg_id=msg_id)
        )
        assert response.status == 200
    assert len(fake.chats_of("kate@school.edu")) == 4


async def test_signup_without_groups_gets_the_courses_for_everyone(
    grouped: Any, fake: FakeOpenWebUI
) -> None:
    body = json.dumps(CLERK).encode()
    response = await grouped.post("/webhooks/signup", data=body, headers=headers(body))
    assert response.status == 200
    assert (await response.json())["courses"] == ["everyone"]
    assert courses_of(fake, "grace@example.edu") == ["everyone"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(
            user_seen("kate@school.edu", None, ["year-10"]),
            "no course is for everyone or for any of the groups year-10",
            id="user.seen in no course's group",
        ),
        pytest.param(
            json.dumps({"email": "kate@school.edu"}).encode(),
            "no course is for everyone, and this identity has no groups",
            id="signup without groups",
        ),
    ],
)
async def test_a_user_in_no_course_gets_a_clear_200_and_nothing_happens(
    aiohttp_client: Any,
    provisioner: Provisioner,
    fake: FakeOpenWebUI,
    body: bytes,
    reason: str,
) -> None:
    courses = [course_named("year-9", ["year-9"]), course_named("staff", ["staff"])]
    client = await aiohttp_client(
        create_app(courses, (KEY,), provisioner, deadline_s=5, clock=lambda: NOW)
    )
    response = await client.post("/webhooks/signup", data=body, headers=headers(body))
    assert response.status == 200
    assert await response.json() == {
        "email": "kate@school.edu",
        "courses": [],
        "modules": [],
        "nothing_to_provision": reason,
    }
    assert fake.calls == []  # no account is created either


def tampered_body(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"ada", b"eve"), headers(body)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(tampered_body, id="tampered body"),
        pytest.param(lambda b: (b, headers(b, ts=NOW - 301)), id="timestamp too old"),
        pytest.param(lambda b: (b, headers(b, ts=NOW + 301)), id="timestamp in the future"),
        pytest.param(lambda b: (b, headers(b, key=b"x" * 32)), id="wrong secret"),
        pytest.param(lambda b: (b, headers(b) | {"webhook-id": "msg_2"}), id="other message id"),
        pytest.param(
            lambda b: (b, {k: v for k, v in headers(b).items() if k != "webhook-signature"}),
            id="no signature",
        ),
        pytest.param(
            lambda b: (
                b,
                headers(b)
                | {"webhook-signature": headers(b)["webhook-signature"].replace("v1,", "v2,")},
            ),
            id="unknown version",
        ),
    ],
)
async def test_bad_signatures_are_401_and_nothing_happens(
    client: Any, fake: FakeOpenWebUI, forge: Any
) -> None:
    body, sent = forge(json.dumps({"email": "ada@example.edu"}).encode())
    response = await client.post("/webhooks/signup", data=body, headers=sent)
    assert response.status == 401
    assert fake.calls == []  # not even /api/config


async def test_rotation_old_secret_and_several_signatures(client: Any, fake: FakeOpenWebUI) -> None:
    body = json.dumps({"email": "ada@example.edu"}).encode()
    old = headers(body, key=OLD_KEY)
    response = await client.post("/webhooks/signup", data=body, headers=old)
    assert response.status == 200
    wrong = "v1," + base64.b64encode(b"n" * 32).decode()
    several = headers(body) | {"webhook-signature": f"{wrong} {headers(body)['webhook-signature']}"}
    response = await client.post("/webhooks/signup", data=body, headers=several)
    assert response.status == 200


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        pytest.param(b"not json", 422, id="not JSON"),
        pytest.param(b"[]", 422, id="not an object"),
        pytest.param(b'{"email": "nope"}', 422, id="bad email"),
        pytest.param(
            b'{"type": "user.created", "data": {"email_addresses": []}}',
            422,
            id="clerk without primary",
        ),
        pytest.param(b'{"type": "user.seen"}', 422, id="user.seen without data"),
        pytest.param(
            user_seen("\u212aate@school.edu", None, []), 422, id="user.seen non-ASCII email"
        ),
        pytest.param(
            json.dumps(
                CLERK
                | {
                    "data": CLERK["data"]
                    | {
                        "email_addresses": [
                            {"id": "idn_2", "email_address": "\u212aate@school.edu"}
                        ]
                    }
                }
            ).encode(),
            422,
            id="clerk non-ASCII email",
        ),
        pytest.param(
            json.dumps({"email": "\u212aate@school.edu"}).encode(), 422, id="plain non-ASCII email"
        ),
        pytest.param(
            b'{"type": "user.seen", "data": {"email": "a@b.cd", "groups": "staff"}}',
            422,
            id="user.seen groups not a list",
        ),
        pytest.param(
            b'{"type": "user.seen", "data": {"email": "a@b.cd", "groups": [1]}}',
            422,
            id="user.seen group not a string",
        ),
        pytest.param(
            b'{"type": "user.seen", "data": {"email": "a@b.cd", "groups": ["a,b"]}}',
            422,
            id="user.seen group with a comma",
        ),
    ],
)
async def test_bad_payloads_are_refused(
    client: Any, fake: FakeOpenWebUI, payload: bytes, status: int
) -> None:
    response = await client.post("/webhooks/signup", data=payload, headers=headers(payload))
    assert response.status == status
    assert fake.chats == {}
    assert "kate@school.edu" not in fake.users


async def test_refusal_is_non_2xx_so_the_sender_retries(client: Any, fake: FakeOpenWebUI) -> None:
    fake.users.clear()
    body = json.dumps({"email": "ada@example.edu"}).encode()
    response = await client.post("/webhooks/signup", data=body, headers=headers(body))
    assert response.status == 503
    assert "onboarding" in (await response.json())["error"]
    assert fake.chats == {}


async def test_deadline_passed_is_non_2xx(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.slow("POST", "/api/v1/chats/new", 2)
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=0.3, clock=lambda: NOW)
    )
    body = json.dumps({"email": "ada@example.edu"}).encode()
    response = await client.post("/webhooks/signup", data=body, headers=headers(body))
    assert response.status == 503


def test_verify_uses_the_raw_body_and_tolerance_both_ways() -> None:
    body = b'{"email":"a@b.cd"}'
    verify((KEY,), headers(body), body, now=NOW + 300)
    verify((KEY,), headers(body), body, now=NOW - 300)
    with pytest.raises(BadSignature):
        verify((KEY,), headers(body), body + b" ", now=NOW)


def test_signatures_are_separated_by_spaces_only() -> None:
    """Standard Webhooks separates signatures with a space; a Unicode space is no separator."""
    body = b'{"email":"a@b.cd"}'
    signed = headers(body)
    good = signed["webhook-signature"]
    verify((KEY,), {**signed, "webhook-signature": f"v1,bm90LWl0 {good}"}, body, now=NOW)
    with pytest.raises(BadSignature):
        verify((KEY,), {**signed, "webhook-signature": f"v1,bm90LWl0\u00a0{good}"}, body, now=NOW)


def test_known_vector() -> None:
    """The Standard Webhooks reference example (same secret, id, timestamp and body)."""
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"# current\n{SECRET}\n\n{OLD_SECRET}\n", 2),
        ("not-a-secret\n", "starts with 'whsec_'"),
        ("whsec_%%%\n", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "shorter than 16"),
        ("# nothing\n", "holds no whsec_"),
    ],
)
def test_secret_file(tmp_path: Path, content: str, expected: int | str) -> None:
    path = tmp_path / "secrets"
    path.write_text(content, encoding="utf-8")
    path.chmod(0o600)
    if isinstance(expected, int):
        assert len(load_secrets(path)) == expected
    else:
        with pytest.raises(ConfigError, match=expected):
            load_secrets(path)


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_webhook_command_serves_until_sigterm(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path, family: str
) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(SECRET + "\n", encoding="utf-8")
    secrets.chmod(0o600)
    staff = tmp_path / "staff.toml"
    staff.write_text(course_toml("staff", ["staff"]), encoding="utf-8")
    if family == "unix":
        listen, base = f"unix:{tmp_path / 'hook.sock'}", "http://receiver"
        transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "hook.sock"))
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        listen, base = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        transport = httpx.AsyncHTTPTransport()
    process = await start(
        env,
        "webhook",
        str(course_file),
        str(staff),
        "--listen",
        listen,
        "--secret-file",
        str(secrets),
    )
    try:
        body = user_seen("ada@example.edu", "Ada", ["staff"])
        async with httpx.AsyncClient(transport=transport, base_url=base) as http:
            for _ in range(200):  # wait for it to listen
                try:
                    health = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the receiver never listened")
            assert health.status_code == 200
            response = await http.post(
                "/webhooks/signup", content=body, headers=headers(body, ts=int(time.time()))
            )
            assert response.status_code == 200
            assert courses_of(fake, "ada@example.edu") == ["demo", "staff"]
            scraped = (await http.get("/metrics")).text
        assert 'owui_provision_webhook_deliveries_total{outcome="provisioned"} 1.0' in scraped
    finally:
        process.send_signal(signal.SIGTERM)
        result = await finish(process, timeout=30)
    assert result.rc == 0, result.err
    assert "webhook receiver listening" in result.err
    assert os.fsencode(SECRET) not in result.err.encode()


async def test_webhook_command_on_a_taken_port_says_so_in_one_line(
    env: dict[str, str], course_file: Path, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(SECRET + "\n", encoding="utf-8")
    secrets.chmod(0o600)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        listen = f"127.0.0.1:{held.getsockname()[1]}"
        process = await start(
            env, "webhook", str(course_file), "--listen", listen, "--secret-file", str(secrets)
        )
        result = await finish(process, timeout=30)
    assert result.rc == 1
    assert result.err.splitlines() == [
        f"owui-provision: --listen {listen}: cannot listen (Address already in use): "
        "another process holds it; stop that one or choose another --listen"
    ]


async def test_healthz_and_metrics(client: Any, fake: FakeOpenWebUI) -> None:
    """Every delivery counts once, by outcome; modules by course and status; no email."""
    assert (await client.get("/healthz")).status == 200
    body = json.dumps({"email": "ada@example.edu"}).encode()
    for msg_id in ("msg_1", "msg_2"):
        await client.post("/webhooks/signup", data=body, headers=headers(body, msg_id=msg_id))
    await client.post("/webhooks/signup", data=body, headers=headers(b"other"))
    bad = b"not json"
    await client.post("/webhooks/signup", data=bad, headers=headers(bad, msg_id="msg_3"))

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    for line in (
        'owui_provision_webhook_deliveries_total{outcome="provisioned"} 2.0',
        'owui_provision_webhook_deliveries_total{outcome="bad_signature"} 1.0',
        'owui_provision_webhook_deliveries_total{outcome="bad_payload"} 1.0',
        'owui_provision_webhook_deliveries_total{outcome="deadline"} 0.0',
        'owui_provision_webhook_modules_total{course="demo",status="created"} 2.0',
        'owui_provision_webhook_modules_total{course="demo",status="existing"} 2.0',
        "owui_provision_webhook_provision_seconds_count 2.0",
    ):
        assert line in text.splitlines(), line
    assert "ada@example.edu" not in text
