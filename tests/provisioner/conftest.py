"""Fixtures: the fake OpenWebUI served on a loopback port, settings pointing at it."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course, parse_course
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "welcome.toml"

COURSE_TOML = """
[course]
id = "demo"
title = "Demo course"
model = "tutor"

[[modules]]
id = "intro"
title = "Module 1: Intro"
first_message = "Hello **student**!"

[[modules]]
id = "next"
title = "Module 2: Next"
first_message = "Second module."
model = "other-model"
"""


def course_toml(course_id: str, groups: list[str] | None = None) -> str:
    """COURSE_TOML with another course id and, if given, the groups it is for."""
    text = COURSE_TOML.replace('id = "demo"', f'id = "{course_id}"')
    if groups is not None:
        listed = ", ".join(f'"{group}"' for group in groups)
        text = text.replace('model = "tutor"', f'model = "tutor"\ngroups = [{listed}]')
    return text


def course_named(course_id: str, groups: list[str] | None = None) -> Course:
    return parse_course(course_toml(course_id, groups), f"{course_id}.toml")


# The ordinary account status, --dry-run and remove read the user directory as.
LOOKUP_EMAIL = "lookup@example.edu"

# Fast retries: the tests check how many tries happen, not how long they take.
FAST_BACKOFF_S, FAST_BACKOFF_MAX_S = 0.01, 0.05


@pytest.fixture
def course() -> Course:
    return parse_course(COURSE_TOML, "demo.toml")


@pytest.fixture
def course_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.toml"
    path.write_text(COURSE_TOML, encoding="utf-8")
    return path


# How much faster than real time the fake's clock runs (see FastClock).
CLOCK_SPEED = 100


@pytest.fixture
def clock() -> FastClock:
    return FastClock(CLOCK_SPEED)


@pytest.fixture
def fake(clock: FastClock) -> FakeOpenWebUI:
    owui = FakeOpenWebUI(clock=clock)
    owui.add_user("admin@example.edu", role="admin")  # onboarding is over
    return owui


@pytest.fixture
async def server(fake: FakeOpenWebUI, aiohttp_server: Any) -> TestServer:
    served: TestServer = await aiohttp_server(fake.app(), host="127.0.0.1")
    return served


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "service-token"
    path.write_text(f"# provisioner service token\n{SERVICE_TOKEN}\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def settings(server: TestServer, token_file: Path) -> Settings:
    return Settings(
        url=f"http://127.0.0.1:{server.port}",
        token_file=token_file,
        backoff_base_s=FAST_BACKOFF_S,
        backoff_max_s=FAST_BACKOFF_MAX_S,
    )


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Environment for running ``python -m provisioner`` against the fake."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OWUI_PROVISION_")}
    clean.update(
        OWUI_PROVISION_URL=settings.url,
        OWUI_PROVISION_TOKEN_FILE=str(settings.token_file),
        OWUI_PROVISION_BACKOFF_BASE_S=str(FAST_BACKOFF_S),
        OWUI_PROVISION_BACKOFF_MAX_S=str(FAST_BACKOFF_MAX_S),
        OWUI_PROVISION_LOOKUP_EMAIL=LOOKUP_EMAIL,
        PYTHONPATH=str(REPO),
    )
    return clean


@pytest.fixture
async def provisioner(settings: Settings, clock: FastClock) -> AsyncIterator[Provisioner]:
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        yield Provisioner(api, settings, sleep=clock.sleep)


PYTHON = sys.executable
