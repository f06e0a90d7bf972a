"""Exactly once under faults the earlier tests did not stage (review round 3b)."""

from __future__ import annotations

import pytest

from provisioner.course import Course
from provisioner.errors import Unavailable
from provisioner.provision import Provisioner
from provisioner.threads import MARKER_KEY
from tests.provisioner.fake_owui import Call, FakeOpenWebUI, FastClock

EMAIL = "ada@example.edu"
ARCHIVE = r"/api/v1/chats/[^/]+/archive"


def only_archived(fake: FakeOpenWebUI, module: str) -> None:
    found = [c for c in fake.chats_of(EMAIL) if c.chat.get(MARKER_KEY, {}).get("module") == module]
    assert [c.archived for c in found] == [True], [(c.id, c.archived) for c in found]


async def test_a_429_on_the_archive_toggle_waits_out_its_retry_after(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course, clock: FastClock
) -> None:
    """The toggle is never retried by the transport, but the next toggle still honours the
    server's Retry-After: asking again sooner only earns another 429."""
    arrivals: list[tuple[Call, float]] = []  # each call, and the server time it came in
    fake.on_call = lambda call: arrivals.append((call, clock()))
    fake.fail("POST", ARCHIVE, 429, times=1, headers={"Retry-After": "20"})

    await provisioner.provision_user([course], EMAIL)

    only_archived(fake, "intro")
    only_archived(fake, "next")
    toggles = [(call.status, at) for call, at in arrivals if call.path.endswith("/archive")]
    refused = next(i for i, (status, _) in enumerate(toggles) if status == 429)
    gap = toggles[refused + 1][1] - toggles[refused][1]
    assert gap >= 20, f"the next toggle came {gap:.2f} server seconds after the 429"


async def test_a_retry_after_beyond_the_limit_on_the_toggle_fails_the_user(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """As for every other call: a Retry-After above OWUI_PROVISION_RETRY_AFTER_MAX_S is a
    failure (the next run finishes), not a reason to toggle again at once."""
    fake.fail("POST", ARCHIVE, 429, times=1, headers={"Retry-After": "3600"})

    with pytest.raises(Unavailable, match="Retry-After asks for 3600 s"):
        await provisioner.provision_user([course], EMAIL)

    assert [c.status for c in fake.calls if c.path.endswith("/archive")] == [429]
