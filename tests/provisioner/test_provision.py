"""The convergence algorithm against the fake OpenWebUI, in-process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course
from provisioner.errors import (
    AccountCannotSignIn,
    ApiError,
    EndpointNotAllowed,
    NotTrustedHeaderMode,
    Onboarding,
    PendingUser,
    ServiceTokenRefused,
)
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.threads import MARKER_KEY, build_chat, tag
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock

EMAIL = "ada@example.edu"


def threads(fake: FakeOpenWebUI, module: str) -> list[Any]:
    return [c for c in fake.chats_of(EMAIL) if c.chat.get(MARKER_KEY, {}).get("module") == module]


def only_archived_thread(fake: FakeOpenWebUI, module: str) -> Any:
    found = threads(fake, module)
    assert len(found) == 1, [(c.id, c.archived) for c in found]
    assert found[0].archived
    return found[0]


async def test_creates_one_archived_thread_per_module(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """Each module becomes one archived chat shaped like docs/openwebui.md's example."""
    results = await provisioner.provision_user([course], EMAIL, "Ada Lovelace")

    assert [(r.module, r.status, r.archived) for r in results] == [
        ("intro", "created", True),
        ("next", "created", True),
    ]
    assert fake.users[EMAIL].name == "Ada Lovelace"
    for result, module in zip(results, course.modules, strict=True):
        chat = only_archived_thread(fake, module.id)
        assert chat.id == result.chat_id
        assert chat.title == f"{module.title} {tag('demo', module.id, 'hidden')}"
        body = chat.chat
        model = module.model or "tutor"
        assert body["models"] == [model]
        current = body["history"]["currentId"]
        message = body["history"]["messages"][current]
        assert message["role"] == "assistant"
        assert message["parentId"] is None
        assert message["content"] == module.first_message
        assert message["model"] == model
        assert message["done"] is True
        assert [m["id"] for m in body["messages"]] == [current]
        assert body[MARKER_KEY] == {"course": "demo", "module": module.id}
    assert len(fake.chats_of(EMAIL)) == 2


async def test_every_call_names_the_user_and_chat_calls_carry_their_token(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """/api/config names nobody; sign-in names the user; chat calls add the user's token."""
    await provisioner.provision_user([course], "Ada@Example.edu".lower())
    assert fake.calls[0].path == "/api/config"
    assert fake.calls[0].act_as is None
    assert fake.calls[1].path == "/api/v1/auths/signin"
    assert (fake.calls[1].act_as, fake.calls[1].bearer) == (EMAIL, False)
    chat_calls = [c for c in fake.calls if c.path.startswith("/api/v1/chats")]
    assert chat_calls
    assert all(c.act_as == EMAIL and c.bearer and c.status == 200 for c in chat_calls)


async def test_rerun_reports_existing_and_creates_nothing(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    first = await provisioner.provision_user([course], EMAIL)
    creates = fake.count("POST", "/api/v1/chats/new")
    second = await provisioner.provision_user([course], EMAIL)

    assert [r.chat_id for r in second] == [r.chat_id for r in first]
    assert {r.status for r in second} == {"existing"}
    assert fake.count("POST", "/api/v1/chats/new") == creates
    assert fake.count("POST", r"/api/v1/chats/[^/]+/archive") == 2  # only the first run's
    assert len(fake.chats_of(EMAIL)) == 2


async def test_crash_between_create_and_archive_converges(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """A marked chat left unarchived by a crashed run is archived, not duplicated."""
    user = fake.add_user(EMAIL)
    left = fake.add_chat(user, build_chat(course, course.modules[0]), archived=False)

    results = await provisioner.provision_user([course], EMAIL)

    assert (results[0].chat_id, results[0].status) == (left.id, "existing")
    assert only_archived_thread(fake, "intro").id == left.id
    only_archived_thread(fake, "next")


async def test_duplicates_are_deleted_keeping_the_oldest_then_smallest_id(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    user = fake.add_user(EMAIL)
    intro = course.modules[0]
    for chat_id, created_at, archived in [
        ("c-newest", 200, True),
        ("b-tie", 100, True),
        ("a-tie", 100, False),  # wins: oldest, then smallest id, whatever its state
        ("z-tie", 100, True),
    ]:
        fake.add_chat(
            user,
            build_chat(course, intro),
            archived=archived,
            created_at=created_at,
            chat_id=chat_id,
        )

    results = await provisioner.provision_user([course], EMAIL)

    assert (results[0].chat_id, results[0].status) == ("a-tie", "existing")
    assert only_archived_thread(fake, "intro").id == "a-tie"


async def test_a_duplicate_holding_user_messages_is_never_deleted(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    user = fake.add_user(EMAIL)
    intro = course.modules[0]
    fake.add_chat(user, build_chat(course, intro), archived=True, created_at=100, chat_id="winner")
    worked = build_chat(course, intro)
    worked["history"]["messages"]["u1"] = {"id": "u1", "role": "user", "content": "my notes"}
    fake.add_chat(user, worked, created_at=200, chat_id="users-own")

    await provisioner.provision_user([course], EMAIL)

    assert sorted(c.id for c in threads(fake, "intro")) == ["users-own", "winner"]


async def test_clones_and_lookalikes_are_not_threads_and_are_left_alone(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """A clone carries the marker but also originalChatId; a look-alike title has no marker."""
    user = fake.add_user(EMAIL)
    clone = build_chat(course, course.modules[0]) | {"originalChatId": "x", "title": "Clone"}
    clone["title"] = "Clone of Module 1: Intro [demo/intro]"
    fake.add_chat(user, clone, archived=True, created_at=1, chat_id="clone")
    fake.add_chat(user, {"title": "my own [demo/intro]"}, created_at=1, chat_id="lookalike")

    results = await provisioner.provision_user([course], EMAIL)

    assert results[0].status == "created"
    assert {"clone", "lookalike"} <= set(fake.chats)
    assert results[0].chat_id not in ("clone", "lookalike")


async def test_thread_found_on_a_later_archived_page(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """The archived list is paged by 60: a thread on page 2 is still found.

    (A user with a full export batch of chats or more is looked at through the title lists,
    which is when the archived list is read at all.)"""
    user = fake.add_user(EMAIL)
    intro = course.modules[0]
    for n in range(40):
        fake.add_chat(user, {"title": f"homework {n}"}, created_at=n, chat_id=f"own-{n:03}")
    for n in range(65):
        clone = build_chat(course, intro) | {"originalChatId": f"o{n}"}
        fake.add_chat(user, clone, archived=True, created_at=n, chat_id=f"clone-{n:03}")
    real = fake.add_chat(user, build_chat(course, intro), archived=True, created_at=1000)

    results = await provisioner.provision_user([course], EMAIL)

    assert (results[0].chat_id, results[0].status) == (real.id, "existing")
    pages = [c.query.get("page") for c in fake.calls if c.path == "/api/v1/chats/archived"]
    assert "2" in pages


async def test_pinned_or_foldered_unarchived_thread_is_found(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    user = fake.add_user(EMAIL)
    pinned = fake.add_chat(user, build_chat(course, course.modules[0]))
    pinned.pinned = True
    foldered = fake.add_chat(user, build_chat(course, course.modules[1]))
    foldered.folder_id = "folder-1"

    results = await provisioner.provision_user([course], EMAIL)

    assert [r.chat_id for r in results] == [pinned.id, foldered.id]
    assert all(c.archived for c in fake.chats_of(EMAIL))


async def test_double_toggle_race_still_ends_archived(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """Another process toggles at the same moment (net: unarchived); we notice and retry."""
    raced: list[str] = []

    def concurrent_toggle(chat: Any) -> None:
        if chat.id not in raced:
            raced.append(chat.id)
            chat.archived = not chat.archived

    fake.on_archive = concurrent_toggle
    results = await provisioner.provision_user([course], EMAIL)

    assert all(r.archived for r in results)
    for module in ("intro", "next"):
        only_archived_thread(fake, module)
    assert fake.count("POST", r"/api/v1/chats/[^/]+/archive") == 4


async def test_losing_a_create_race_keeps_the_other_thread(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """Another process created the same module in the same second with a smaller id."""

    def twin(chat: Any) -> None:
        if not chat.id.startswith("0000"):
            fake.add_chat(
                fake.users[EMAIL],
                chat.chat,
                created_at=chat.created_at,
                chat_id="0000" + chat.id[4:],
            )

    fake.on_create = twin
    results = await provisioner.provision_user([course], EMAIL)

    for result in results:
        assert result.chat_id.startswith("0000")
        assert result.status == "existing"
        assert only_archived_thread(fake, result.module).id == result.chat_id


async def test_the_reported_thread_is_the_one_that_survives_a_same_second_rival(
    settings: Settings, fake: FakeOpenWebUI, course: Course
) -> None:
    """``created_at`` has whole seconds: a rival created later in the same second, with a
    smaller id, outranks a winner. The provisioner waits out the second (``settle_s``, on
    the server's clock) before reporting, so the id it reports is the one that survives."""
    now = [1_800_000_000.0]
    fake.clock = lambda: now[0]
    rivals: list[str] = []

    async def sleep(seconds: float) -> None:
        if not rivals:  # meanwhile, another process made the same threads, same second
            for chat in list(fake.chats.values()):
                rival = "0000" + chat.id[4:]
                fake.add_chat(
                    fake.users[EMAIL], chat.chat, created_at=chat.created_at, chat_id=rival
                )
                rivals.append(rival)
        now[0] += seconds

    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        results = await Provisioner(api, settings, sleep=sleep).provision_user([course], EMAIL)

    assert len(rivals) == len(course.modules)
    for result in results:
        assert result.chat_id in rivals
        assert only_archived_thread(fake, result.module).id == result.chat_id


async def test_concurrent_coroutines_for_one_user(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    runs = await asyncio.gather(*(provisioner.provision_user([course], EMAIL) for _ in range(5)))

    assert all(r.archived for results in runs for r in results)
    for module in ("intro", "next"):
        only_archived_thread(fake, module)


async def test_archive_toggle_is_never_retried_blindly(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """A 503 on the toggle is not retried by the transport: the state is re-read first."""
    fake.fail("POST", r"/api/v1/chats/[^/]+/archive", 503)
    await provisioner.provision_user([course], EMAIL)

    only_archived_thread(fake, "intro")
    statuses = [c.status for c in fake.calls if c.path.endswith("/archive")]
    assert statuses[:2] == [503, 200]


# --- refusals: nothing created ------------------------------------------------------------------


async def test_refuses_while_onboarding_and_creates_no_account(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    fake.users.clear()
    with pytest.raises(Onboarding, match="first account created becomes admin"):
        await provisioner.provision_user([course], EMAIL)
    assert fake.users == {}
    assert fake.chats == {}
    assert fake.count("POST", "/api/v1/auths/signin") == 0


async def test_refuses_a_pending_user(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    fake.default_role = "pending"
    with pytest.raises(PendingUser, match="DEFAULT_USER_ROLE=user"):
        await provisioner.provision_user([course], EMAIL)
    assert fake.chats == {}
    assert fake.count("POST", "/api/v1/chats/new") == 0


async def test_an_account_openwebui_will_not_sign_in_gets_a_fix_not_retries(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """A user without its credentials record (what OpenWebUI on SQLite can leave behind when
    writes collide) answers every trusted sign-in with "email or password incorrect"."""
    fake.add_user(EMAIL, role="user")
    fake.without_credentials.add(EMAIL)
    with pytest.raises(AccountCannotSignIn, match="delete this user in Admin Panel > Users"):
        await provisioner.provision_user([course], EMAIL)
    assert fake.count("POST", "/api/v1/auths/signin") == 1
    assert fake.chats == {}


async def test_refuses_without_trusted_header_mode(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    fake.trusted_header = False
    with pytest.raises(NotTrustedHeaderMode, match="WEBUI_AUTH_TRUSTED_EMAIL_HEADER"):
        await provisioner.provision_user([course], EMAIL)
    assert fake.chats == {}
    assert EMAIL not in fake.users
    assert fake.count("POST", "/api/v1/auths/signin") == 0


# --- listener refusals and OpenWebUI errors ---------------------------------------------


async def test_wrong_service_token_is_a_clear_error(
    settings: Settings, fake: FakeOpenWebUI, course: Course, clock: FastClock
) -> None:
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, "x" * 40, http))
        with pytest.raises(ServiceTokenRefused, match="OWUI_PROXY_INTERNAL_TOKENS_FILE"):
            await Provisioner(api, settings, sleep=clock.sleep).provision_user([course], EMAIL)
    assert fake.chats == {}


async def test_endpoint_outside_the_allowlist_is_a_clear_error(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    fake.allow = [rule for rule in fake.allow if rule[0] != "DELETE"]
    user = fake.add_user(EMAIL)
    for chat_id in ("a", "b"):
        fake.add_chat(user, build_chat(course, course.modules[0]), created_at=1, chat_id=chat_id)
    with pytest.raises(
        EndpointNotAllowed, match=r"DELETE /api/v1/chats/b.*OWUI_PROXY_INTERNAL_ALLOW"
    ):
        await provisioner.provision_user([course], EMAIL)
    assert set(fake.chats) == {"a", "b"}


async def test_a_4xx_is_reported_at_once_with_openwebui_detail(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    fake.fail("POST", "/api/v1/chats/new", 400, body={"detail": "Chat title is too long"})
    with pytest.raises(ApiError, match=r"400 to POST /api/v1/chats/new: Chat title is too long"):
        await provisioner.provision_user([course], EMAIL)
    assert fake.count("POST", "/api/v1/chats/new") == 1


async def test_missing_delete_permission_is_reported(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    user = fake.add_user(EMAIL)
    user.can_delete = False
    for chat_id in ("a", "b"):
        fake.add_chat(user, build_chat(course, course.modules[0]), created_at=1, chat_id=chat_id)
    with pytest.raises(
        ApiError, match=r"401 to DELETE /api/v1/chats/b: You do not have permission"
    ):
        await provisioner.provision_user([course], EMAIL)
    assert set(fake.chats) == {"a", "b"}


async def test_name_travels_percent_encoded(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    await provisioner.provision_user([course], EMAIL, "Zoë Ångström")
    assert fake.users[EMAIL].name == "Zoë Ångström"
