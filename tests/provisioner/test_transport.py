"""Retries and error translation in :class:`provisioner.client.Transport`, against the fake."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.errors import ApiError, Unavailable
from provisioner.settings import Settings
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI


class Sleeps:
    """Records the delays asked for instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def config_with(settings: Settings, sleeps: Sleeps) -> dict[str, object]:
    async with make_http_client(settings) as http:
        return await OpenWebUI(Transport(settings, SERVICE_TOKEN, http, sleep=sleeps)).config()


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        pytest.param(503, {}, id="503"),
        pytest.param(502, {}, id="502 from the listener"),
        pytest.param(429, {"Retry-After": "0"}, id="429 with Retry-After"),
        pytest.param(0, {}, id="connection dropped"),
    ],
)
async def test_transient_failures_are_retried(
    settings: Settings, fake: FakeOpenWebUI, status: int, headers: dict[str, str]
) -> None:
    fake.fail("GET", "/api/config", status, times=2, headers=headers)
    sleeps = Sleeps()

    config = await config_with(settings, sleeps)

    assert config["status"] is True
    assert fake.count("GET", "/api/config") == 3
    assert len(sleeps.delays) == 2


async def test_retry_after_is_a_floor_for_the_delay(
    settings: Settings, fake: FakeOpenWebUI
) -> None:
    fake.fail("GET", "/api/config", 429, headers={"Retry-After": "7"})
    sleeps = Sleeps()
    await config_with(settings, sleeps)
    assert sleeps.delays == [7.0]


async def test_retry_after_beyond_the_limit_fails_at_once(
    settings: Settings, fake: FakeOpenWebUI
) -> None:
    fake.fail("GET", "/api/config", 429, headers={"Retry-After": "3600"})
    with pytest.raises(Unavailable, match="Retry-After asks for 3600 s"):
        await config_with(settings, Sleeps())
    assert fake.count("GET", "/api/config") == 1


async def test_retries_are_bounded(settings: Settings, fake: FakeOpenWebUI) -> None:
    fake.fail("GET", "/api/config", 503, times=100, body={"detail": "warming up"})
    sleeps = Sleeps()
    with pytest.raises(Unavailable, match="503 warming up; tried 5 times"):
        await config_with(settings, sleeps)
    assert fake.count("GET", "/api/config") == settings.max_attempts == 5
    assert len(sleeps.delays) == 4


async def test_connection_refused_is_retried_then_reported(token_file: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(url=f"http://127.0.0.1:{port}", token_file=token_file, max_attempts=3)
    sleeps = Sleeps()
    with pytest.raises(Unavailable, match=r"connection failed \(ConnectError\); tried 3 times"):
        await config_with(settings, sleeps)
    assert len(sleeps.delays) == 2


async def test_4xx_is_not_retried_and_carries_detail(
    settings: Settings, fake: FakeOpenWebUI
) -> None:
    fake.fail("GET", "/api/config", 400, body={"detail": "Bad things"})
    with pytest.raises(
        ApiError, match="OpenWebUI answered 400 to GET /api/config: Bad things"
    ) as info:
        await config_with(settings, Sleeps())
    assert info.value.detail == "Bad things"
    assert fake.count("GET", "/api/config") == 1


async def test_no_cookie_is_kept_between_users(settings: Settings, fake: FakeOpenWebUI) -> None:
    """OpenWebUI sets a token cookie at sign-in; one client serves many users, so none is kept."""
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        await api.signin("ada@example.edu", None)
        assert len(http.cookies.jar) == 0
