"""``placement = "folder"``: a sidebar folder named after the course, the module threads in
it and not archived; changing placement moves existing threads; exactly once throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course, parse_course
from provisioner.folders import Folder, folder_name, folder_tag, plan_folder
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.threads import MARKER_KEY, build_chat
from tests.provisioner.cli_helpers import run
from tests.provisioner.conftest import COURSE_TOML
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock
from tests.provisioner.test_budget import shapes

EMAIL = "ada@example.edu"


def placed(placement: str, course_id: str = "demo") -> Course:
    text = COURSE_TOML.replace('id = "demo"', f'id = "{course_id}"')
    text = text.replace('model = "tutor"', f'model = "tutor"\nplacement = "{placement}"', 1)
    return parse_course(text, f"{course_id}.toml")


def course_folders(fake: FakeOpenWebUI, course_id: str = "demo") -> list[Any]:
    tag = folder_tag(course_id, "hidden")
    return [f for f in fake.folders_of(EMAIL) if tag in f.name]


def where(fake: FakeOpenWebUI) -> dict[str, list[tuple[bool, str | None]]]:
    """Each module's threads: (archived, folder id)."""
    found: dict[str, list[tuple[bool, str | None]]] = {}
    for chat in fake.chats_of(EMAIL):
        module = chat.chat.get(MARKER_KEY, {}).get("module")
        if module is not None:
            found.setdefault(module, []).append((chat.archived, chat.folder_id))
    return found


async def test_folder_placement_makes_the_course_folder_with_the_threads_inside(
    provisioner: Provisioner, fake: FakeOpenWebUI
) -> None:
    course = placed("folder")
    results = await provisioner.provision_user([course], EMAIL)

    (folder,) = course_folders(fake)
    assert folder.name == folder_name(course, "hidden")
    assert folder.name.startswith("Demo course ")
    assert folder.parent_id is None
    assert folder.meta == {"owui_gate": {"course": "demo"}}
    assert where(fake) == {"intro": [(False, folder.id)], "next": [(False, folder.id)]}
    assert [(r.status, r.archived, r.folder_id, r.placed) for r in results] == [
        ("created", False, folder.id, True),
        ("created", False, folder.id, True),
    ]
    assert "folder_id" in results[0].as_json()
    assert fake.count("POST", r"/api/v1/chats/[^/]+/archive") == 0

    again = await provisioner.provision_user([course], EMAIL)
    assert [r.status for r in again] == ["existing", "existing"]
    assert len(fake.folders_of(EMAIL)) == 1
    assert len(fake.chats_of(EMAIL)) == 2


async def test_budget_of_a_folder_course(provisioner: Provisioner, fake: FakeOpenWebUI) -> None:
    """New: sign-in, a look (chats and folders), the folder, one create a module in it (no
    archive), the final look: 6 + 1 a module, as many as archived threads for 3 modules.
    Provisioned: sign-in and one look (chats and folders)."""
    course = placed("folder")
    await provisioner.provision_user([course], "first@example.edu")  # the run's config read
    await provisioner.provision_user([course], EMAIL)
    new = shapes([f"{c.method} {c.path}" for c in fake.calls if c.act_as == EMAIL])
    before = len(fake.calls)
    await provisioner.provision_user([course], EMAIL)
    again = shapes([f"{c.method} {c.path}" for c in fake.calls[before:]])

    look = ["GET /api/v1/chats/all", "GET /api/v1/folders/"]
    assert new == [
        "POST /api/v1/auths/signin",
        *look,
        "POST /api/v1/folders/",
        "POST /api/v1/chats/new",  # made in the folder just made
        "POST /api/v1/chats/new",
        *look,
    ]
    assert again == ["POST /api/v1/auths/signin", *look]


@pytest.mark.parametrize(
    ("first", "then"), [("archived", "folder"), ("folder", "archived")], ids=["to-folder", "back"]
)
async def test_changing_placement_moves_the_existing_threads(
    provisioner: Provisioner, fake: FakeOpenWebUI, first: str, then: str
) -> None:
    before = await provisioner.provision_user([placed(first)], EMAIL)
    after = await provisioner.provision_user([placed(then)], EMAIL)

    assert [r.chat_id for r in after] == [r.chat_id for r in before]
    assert [r.status for r in after] == ["existing", "existing"]
    folders = course_folders(fake)
    assert len(folders) == 1  # made once; moving back leaves it (empty) for the person
    expected = (False, folders[0].id) if then == "folder" else (True, None)
    assert where(fake) == {"intro": [expected], "next": [expected]}


async def test_a_thread_the_person_moved_elsewhere_goes_back_into_the_course_folder(
    provisioner: Provisioner, fake: FakeOpenWebUI
) -> None:
    """As an un-archived thread goes back to Archived Chats: the place is the end state."""
    course = placed("folder")
    await provisioner.provision_user([course], EMAIL)
    theirs = fake.add_folder(fake.users[EMAIL], "My notes")
    intro = next(c for c in fake.chats_of(EMAIL) if c.chat[MARKER_KEY]["module"] == "intro")
    intro.folder_id = theirs.id
    nxt = next(c for c in fake.chats_of(EMAIL) if c.chat[MARKER_KEY]["module"] == "next")
    nxt.archived, nxt.folder_id = True, None

    results = await provisioner.provision_user([course], EMAIL)

    (folder,) = course_folders(fake)
    assert where(fake) == {"intro": [(False, folder.id)], "next": [(False, folder.id)]}
    assert [r.status for r in results] == ["existing", "existing"]
    assert theirs.id in fake.folders  # the person's folder is theirs


async def test_a_folder_the_person_named_like_the_course_is_theirs(
    provisioner: Provisioner, fake: FakeOpenWebUI
) -> None:
    """No tag, not ours: never used, moved into or deleted."""
    course = placed("folder")
    user = fake.add_user(EMAIL)
    theirs = fake.add_folder(user, "Demo course")
    mine = fake.add_chat(user, {"title": "my own chat", "history": {}})
    mine.folder_id = theirs.id

    await provisioner.provision_user([course], EMAIL)

    (folder,) = course_folders(fake)
    assert folder.id != theirs.id
    assert theirs.id in fake.folders
    assert mine.folder_id == theirs.id
    assert where(fake) == {"intro": [(False, folder.id)], "next": [(False, folder.id)]}


async def test_two_course_folders_from_a_race_become_one(
    provisioner: Provisioner, fake: FakeOpenWebUI
) -> None:
    """The oldest (then smallest id) wins; the other's threads move and it is deleted with
    delete_contents=false, so nothing in it is lost; one holding a folder is kept."""
    course = placed("folder")
    user = fake.add_user(EMAIL)
    name = folder_name(course, "hidden")
    winner = fake.add_folder(user, name, created_at=10, folder_id="00000000-aaaa")
    loser = fake.add_folder(user, name, created_at=10, folder_id="ffffffff-aaaa")
    keeper = fake.add_folder(user, name, created_at=11, folder_id="11111111-aaaa")
    fake.add_folder(user, "inside", parent_id=keeper.id)
    thread = fake.add_chat(user, build_chat(course, course.modules[0]), created_at=12)
    thread.folder_id = loser.id
    stray = fake.add_chat(user, {"title": "a chat of theirs", "history": {}})
    stray.folder_id = loser.id

    results = await provisioner.provision_user([course], EMAIL)

    assert loser.id not in fake.folders
    assert keeper.id in fake.folders
    assert stray.id in fake.chats
    assert stray.folder_id is None
    assert where(fake) == {"intro": [(False, winner.id)], "next": [(False, winner.id)]}
    assert [r.status for r in results] == ["existing", "created"]


async def test_concurrent_coroutines_leave_one_folder_and_one_thread_a_module(
    settings: Settings, fake: FakeOpenWebUI
) -> None:
    """Slow folder creation widens the window in which every run finds none and makes one."""
    course = placed("folder")
    fake.slow("POST", "/api/v1/folders/", 0.05)
    clock = FastClock(100)
    fake.clock = clock

    async def one() -> list[Any]:
        async with make_http_client(settings) as http:
            api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
            return await Provisioner(api, settings, sleep=clock.sleep).provision_user(
                [course], EMAIL
            )

    runs = await asyncio.gather(*(one() for _ in range(5)))

    (folder,) = course_folders(fake)
    assert where(fake) == {"intro": [(False, folder.id)], "next": [(False, folder.id)]}
    reported = {r.chat_id for results in runs for r in results}
    assert reported == {c.id for c in fake.chats_of(EMAIL)}


def test_plan_folder_ranks_by_creation_then_id_and_keeps_parents() -> None:
    course = placed("folder")
    name = folder_name(course, "visible")
    a = Folder("b", name, None, 5)
    b = Folder("a", name, None, 6)
    c = Folder("c", name, None, 5)
    child = Folder("d", "x", "c", 1)
    nested = Folder("e", name, "d", 1)  # not top-level: not the course folder
    found = plan_folder([b, child, c, a, nested], "demo")
    assert found is not None
    assert found.winner == a
    assert found.delete == (b,)  # c holds a folder: kept
    assert plan_folder([Folder("x", "Demo course", None, 1)], "demo") is None
    assert plan_folder([Folder("x", folder_name(course, "hidden"), None, 1)], "demo-2") is None


async def test_check_names_the_placement_and_refuses_a_wrong_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(
        COURSE_TOML.replace('model = "tutor"', 'model = "tutor"\nplacement = "folder"', 1)
    )
    bad.write_text(
        COURSE_TOML.replace('id = "demo"', 'id = "other"').replace(
            'model = "tutor"', 'model = "tutor"\nplacement = "sidebar"', 1
        )
    )
    result = await run(env, "check", str(good), str(bad))
    assert result.rc == 1
    assert f"ok   {good}: course demo, 2 module(s), for everyone, in a sidebar folder" in result.out
    assert (
        f'FAIL {bad}:6: course.placement: must be "archived" (under Archived Chats) or "folder"'
        in result.out
    )
