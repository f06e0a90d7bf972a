"""A release number too long for ``int()``: OpenWebUI's ``/api/config`` is the upstream's
answer, and Python refuses to convert a string of more than 4,300 digits (ValueError). The
read of the release raised it: the start crashed with a traceback instead of its refusal,
and every request that read the release again was a 500. Such a version names no release
the proxy knows: it is "unknown", refused (fail closed), like any other unreadable one."""

from __future__ import annotations

import json

import pytest

from proxy.errors import ConfigProblems
from proxy.openwebui_release import assess, parse_release, provisioner_refusal
from tests.proxy.test_release_read_r3b import serving_config, started_watch

LONG = "1" * 5000
VERSIONS = [f"0.12.{LONG}", f"0.{LONG}.4", f"{LONG}.12.4", f"v0.12.{LONG}-dev"]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_release_number_past_int_is_no_release(version: str) -> None:
    assert parse_release(version) is None
    assessment = assess({"version": version})
    assert assessment.version == "unknown"
    assert assessment.refusal is not None
    assert provisioner_refusal({"version": version}) is not None


def test_ordinary_releases_still_read() -> None:
    assert parse_release("0.12.4") == (0, 12, 4)
    assert parse_release("v1.123456789.0-rc1") == (1, 123456789, 0)


async def test_the_start_refuses_it_cleanly(settings_for) -> None:
    body = json.dumps({"version": VERSIONS[0]}).encode()
    async with serving_config(body) as url:
        with pytest.raises(ConfigProblems, match="names no release"):
            async with started_watch(settings_for, url):
                pass  # pragma: no cover
