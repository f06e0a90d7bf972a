"""Exactly once under faults the earlier tests did not stage (review round 3b)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from provisioner.course import Course
from provisioner.errors import Unavailable
from provisioner.provision import Provisioner
from provisioner.threads import MARKER_KEY, build_chat
from tests.provisioner.fake_owui import Call, FakeOpenWebUI, FastClock

EMAIL = "ada@example.edu"
ARCHIVE = r"/api/v1/chats/[^/]+/archive"


def lose_answers(times: int, what: str) -> Callable[[object], None]:
    """A hook for the fake that lets the first ``times`` calls land, then loses each answer
    (raises ``RuntimeError``: the answer is lost after ``what``)."""
    left = times

    def fail_after_landing(_: object) -> None:
        nonlocal left
        if left:
            left -= 1
            raise RuntimeError(f"the answer is lost after {what}")

    return fail_after_landing


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


async def test_a_toggle_that_landed_but_whose_answer_was_lost_is_not_undone(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """The archive endpoint toggles: after a failed answer the chat is read, and a toggle
    that did land is never made again (which would un-archive the thread)."""
    # both modules' first toggles land, and then the answer fails
    fake.on_archive = lose_answers(2, "the toggle landed")
    results = await provisioner.provision_user([course], EMAIL)

    assert all(result.archived for result in results)
    only_archived(fake, "intro")
    only_archived(fake, "next")
    assert fake.count("POST", ARCHIVE) == 2  # one toggle a module: none repeated


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/auths/signin"),
        ("GET", "/api/v1/chats/all"),
        ("POST", "/api/v1/chats/new"),
        ("POST", ARCHIVE),
        ("GET", r"/api/v1/chats/[0-9a-f-]+"),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
async def test_a_busy_answer_at_any_step_still_ends_in_one_archived_thread(
    provisioner: Provisioner,
    fake: FakeOpenWebUI,
    course: Course,
    method: str,
    path: str,
    status: int,
) -> None:
    fake.add_chat(fake.add_user(EMAIL), build_chat(course, course.modules[1]), created_at=1)
    fake.fail(method, path, status, headers={"Retry-After": "1"})

    await provisioner.provision_user([course], EMAIL)

    only_archived(fake, "intro")
    only_archived(fake, "next")


async def test_a_create_that_landed_but_whose_answer_was_lost_leaves_one_thread(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    fake.on_create = lose_answers(2, "the chat was made")
    await provisioner.provision_user([course], EMAIL)

    only_archived(fake, "intro")
    only_archived(fake, "next")
