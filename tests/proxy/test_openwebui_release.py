"""OpenWebUI releases: the pure policy (tables) and the proxy refusing the unsafe ones.

The releases and their boundaries are the ones docs/compatibility.md records; the e2e side
(``tests/e2e/test_release.py``) checks the same policy against real releases.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.app import Runtime, create_admin_app, create_app
from proxy.errors import ConfigProblems, UpstreamUnavailable
from proxy.openwebui_release import assess, parse_release, provisioner_refusal, signup_trap
from proxy.release_watch import RECHECK_S, ReleaseWatch, UnsafeRelease
from proxy.upstream import Upstream
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.test_relay import _closed_port


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("0.12.4", (0, 12, 4)),
        ("0.6.13", (0, 6, 13)),
        (" v0.6.14 ", (0, 6, 14)),
        ("0.7.2-dev", (0, 7, 2)),
        ("1.0.0rc1", (1, 0, 0)),
        ("0.6", None),
        ("", None),
        ("latest", None),
        (None, None),
        (612, None),
        # Other scripts' digits are not a release: int() would read "0.6.\u0661\u0664" as 0.6.14.
        ("0.6.\u0661\u0664", None),
        ("\u0660.\u0661\u0662.\u0664", None),
    ],
)
def test_parse_release(raw: object, parsed: tuple[int, int, int] | None) -> None:
    assert parse_release(raw) == parsed


SIGNUPS_OFF = {"features": {"enable_signup": False}}
SIGNUPS_ON = {"features": {"enable_signup": True}}


@pytest.mark.parametrize(
    ("version", "refused", "warned_about"),
    [
        ("0.5.20", True, set()),
        ("0.6.5", True, set()),
        ("0.6.13", True, set()),  # the last release without the "User mismatch" check
        ("0.6.14", False, {"sign-up", "name", "pinned"}),
        ("0.6.33", False, {"sign-up", "name", "pinned"}),
        ("0.6.34", False, {"sign-up", "name"}),
        ("0.6.36", False, {"sign-up", "name"}),
        ("0.6.37", False, {"sign-up"}),
        ("0.7.2", False, {"sign-up"}),
        ("0.8.0", False, set()),
        ("0.12.4", False, set()),
        ("1.0.0", False, set()),
        (None, True, set()),
        ("nightly", True, set()),
    ],
)
def test_assess_with_signups_off(
    version: str | None, refused: bool, warned_about: set[str]
) -> None:
    assessment = assess({"version": version, **SIGNUPS_OFF})
    assert (assessment.refusal is not None) is refused
    topics = {
        topic
        for warning in assessment.warnings
        for topic, word in (("sign-up", "Sign Ups"), ("name", "URL-decode"), ("pinned", "pinned"))
        if word in warning
    }
    assert topics == warned_about
    assert len(assessment.warnings) == len(warned_about)


def test_refusal_names_the_release_the_gap_and_the_way_out() -> None:
    refusal = assess({"version": "0.6.13"}).refusal
    assert refusal is not None
    assert "0.6.13" in refusal
    assert "User mismatch" in refusal
    assert "upgrade OpenWebUI to 0.6.14 or later" in refusal


@pytest.mark.parametrize(
    ("config", "trap"),
    [
        ({"version": "0.7.2", **SIGNUPS_OFF}, True),
        ({"version": "0.7.2", "features": {}}, True),  # not said: assume the default (off)
        ({"version": "0.7.2"}, True),
        ({"version": "0.7.2", **SIGNUPS_ON}, False),  # the fix applied
        ({"version": "0.6.20", **SIGNUPS_OFF}, True),
        ({"version": "0.8.0", **SIGNUPS_OFF}, False),  # sign-in creates users regardless
        ({"version": "0.12.4", **SIGNUPS_OFF}, False),
        ({"features": {"enable_signup": False}}, False),  # unknown release: refused elsewhere
    ],
)
def test_signup_trap(config: dict[str, Any], trap: bool) -> None:
    assert signup_trap(config) is trap


def test_the_signup_fix_never_opens_password_signup_to_the_world() -> None:
    (warning,) = assess({"version": "0.7.2", **SIGNUPS_OFF}).warnings
    assert "Enable New Sign Ups" in warning
    assert "refuses password sign-up" in warning
    assert "0.8.0" in warning
    assert assess({"version": "0.7.2", **SIGNUPS_ON}).warnings == ()


@pytest.mark.parametrize(
    ("version", "refused"),
    [
        ("0.6.10", True),  # archived list ignores page and query, too
        ("0.6.13", True),
        ("0.6.33", True),  # pinned chats missing from /chats/list
        ("0.6.34", False),
        ("0.7.2", False),
        ("0.12.4", False),
        (None, True),
    ],
)
def test_provisioner_refusal(version: str | None, refused: bool) -> None:
    refusal = provisioner_refusal({"version": version})
    assert (refusal is not None) is refused
    if refused and version is not None:
        assert version in str(refusal)
        assert "0.6.34" in str(refusal)


TRUSTED = {"auth": True, "auth_trusted_header": True}


@pytest.mark.parametrize(
    ("features", "refused"),
    [
        pytest.param(TRUSTED, None, id="trusted-header-mode"),
        pytest.param({**TRUSTED, "auth_trusted_header": False}, "trusted-header", id="unset"),
        pytest.param({**TRUSTED, "auth_trusted_header": None}, "trusted-header", id="null"),
        pytest.param({**TRUSTED, "auth_trusted_header": "true"}, "trusted-header", id="a-string"),
        pytest.param({**TRUSTED, "auth_trusted_header": 1}, "trusted-header", id="one"),
        pytest.param({**TRUSTED, "auth": False}, "without authentication", id="webui-auth-off"),
        pytest.param({"auth": False}, "without authentication", id="auth-off-alone"),
        pytest.param({"enable_signup": True}, None, id="fields-not-said"),
        pytest.param({}, None, id="no-features"),
    ],
)
def test_an_openwebui_not_in_trusted_header_mode_is_refused(
    features: dict[str, Any], refused: str | None
) -> None:
    """A typo in OpenWebUI's environment (``WEBUI_AUTH_TRUSTED_EMAIL_HEADER`` misspelt, or
    ``WEBUI_AUTH=False``) must stop the proxy: before, it relayed to OpenWebUI's own password
    sign-in, ignoring the identity it injected. (Every real release sends both fields.)"""
    for version in ("0.6.14", "0.12.4"):
        refusal = assess({"version": version, "features": features}).refusal
        if refused is None:
            assert refusal is None
        else:
            assert refusal is not None
            assert refused in refusal
    header_refusal = assess({"version": "0.12.4", "features": {"auth_trusted_header": False}})
    assert "WEBUI_AUTH_TRUSTED_EMAIL_HEADER" in str(header_refusal.refusal)
    assert "OWUI_PROXY_EMAIL_HEADER" in str(header_refusal.refusal)


# --- the proxy -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.6.13", "0.5.20", None])
async def test_the_proxy_refuses_to_start_against_an_unsafe_release(
    settings_for, fake_upstream, version
) -> None:
    fake_upstream.version = version
    runtime = Runtime(settings_for())
    with pytest.raises(ConfigProblems) as refused:
        await runtime.start()
    (problem,) = refused.value.problems
    assert problem.startswith("OWUI_PROXY_UPSTREAM: ")
    assert ("User mismatch" in problem) if version else ("names no release" in problem)
    assert fake_upstream.seen == []


@pytest.mark.parametrize(
    "features",
    [{"auth": True, "auth_trusted_header": False}, {"auth": False, "auth_trusted_header": True}],
)
async def test_the_proxy_refuses_to_start_against_an_openwebui_not_in_trusted_header_mode(
    settings_for, fake_upstream, features
) -> None:
    fake_upstream.features = features
    runtime = Runtime(settings_for())
    with pytest.raises(ConfigProblems) as refused:
        await runtime.start()
    (problem,) = refused.value.problems
    assert problem.startswith("OWUI_PROXY_UPSTREAM: OpenWebUI ")
    assert fake_upstream.seen == []


async def test_a_safe_release_starts_and_relays(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy()
    assert (await proxy.get("/x", headers=ALICE_COOKIE)).status == 200
    assert fake_upstream.release_reads == 1  # at start; not again per request


@pytest.fixture
async def running(aiohttp_client, settings_for):
    runtimes: list[Runtime] = []

    async def make(**overrides: Any) -> tuple[Any, Any]:
        runtime = Runtime(settings_for(**overrides))
        await runtime.start()
        runtimes.append(runtime)
        public = await aiohttp_client(create_app(runtime.settings, runtime))
        admin = await aiohttp_client(
            create_admin_app(runtime.settings, runtime, check_every_s=0.05)
        )
        return public, admin

    yield make
    for runtime in runtimes:
        await runtime.close()


async def test_an_unsafe_release_found_later_is_refused_and_not_ready(
    running, fake_upstream
) -> None:
    public, admin = await running()
    fake_upstream.version = "0.6.13"  # OpenWebUI replaced by an old release meanwhile
    ready = await until_ready_is(admin, 503)
    (problem,) = (await ready.json())["problems"]
    assert problem.startswith("upstream: OpenWebUI 0.6.13 has no 'User mismatch' check")
    answer = await public.get("/api/v1/auths/", headers=ALICE_COOKIE)
    assert answer.status == 503
    body = await answer.json()
    assert body["code"] == "openwebui_release"
    assert "0.6.13" not in body["error"]  # anyone may ask: the reason is for the operator
    assert fake_upstream.seen == []  # nothing was relayed
    assert fake_upstream.health_reads > 0
    fake_upstream.version = "0.6.14"
    await until_ready_is(admin, 200)
    assert (await public.get("/x", headers=ALICE_COOKIE)).status == 200


async def until_ready_is(admin: Any, status: int) -> Any:
    """``/readyz`` once the background check has caught up (it never waits on OpenWebUI)."""
    for _ in range(100):
        ready = await admin.get("/readyz")
        if ready.status == status:
            return ready
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never answered {status}")


async def test_the_release_is_read_again_every_minute(settings_for, fake_upstream) -> None:
    now = [1000.0]
    upstream = Upstream.open(settings_for())
    watch = ReleaseWatch(upstream, clock=lambda: now[0])
    try:
        await watch.start()
        fake_upstream.version = "0.6.5"
        await watch.permit()  # read a moment ago: no new read
        assert fake_upstream.release_reads == 1
        now[0] += RECHECK_S
        await watch.permit()  # still safe as far as it knows; reads in the background
        assert watch._background is not None
        await watch._background
        assert fake_upstream.release_reads == 2
        with pytest.raises(UnsafeRelease):
            await watch.permit()
        fake_upstream.version = "0.12.4"
        with pytest.raises(UnsafeRelease):
            await watch.permit()  # refused a moment ago: read at most once a second
        now[0] += 1
        await watch.permit()  # while refused, every request reads first: back at once
        assert fake_upstream.release_reads == 3
    finally:
        await watch.close()
        await upstream.close()


async def test_openwebui_down_at_start_is_no_reason_to_stop_nor_to_relay_blind(
    settings_for,
) -> None:
    upstream = Upstream.open(settings_for(upstream=f"http://127.0.0.1:{_closed_port()}"))
    watch = ReleaseWatch(upstream)
    try:
        await watch.start()  # OpenWebUI often starts after the proxy
        with pytest.raises(UpstreamUnavailable, match="upstream unreachable"):
            await watch.permit()
    finally:
        await watch.close()
        await upstream.close()
