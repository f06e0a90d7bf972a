"""The archived list is read page by page, by offset (round 4).

OpenWebUI 0.12.4 pages ``GET /chats/archived`` 60 at a time with ``OFFSET``. A matching
chat that leaves the list (deleted, or un-archived) between two page reads shifts every
later chat one place towards the start: the first chat of the next page is then on the page
already read, and is seen by neither read. For a user with 100 chats or more and a course
of more than 60 modules, the look could miss a thread; when the one missed was a module's
winner and its duplicate was seen, the duplicate was taken for the winner, reported, and
the round ended with two threads for that module.
"""

from __future__ import annotations

from provisioner.client import ARCHIVED_PAGE_SIZE
from provisioner.course import parse_course
from provisioner.provision import Provisioner
from provisioner.threads import MARKER_KEY, build_chat
from tests.provisioner.fake_owui import Call, FakeOpenWebUI

MODULES = ARCHIVED_PAGE_SIZE + 2  # two pages of archived threads


def _course_toml() -> str:
    text = '[course]\nid = "big"\ntitle = "Big course"\nmodel = "tutor"\n'
    for n in range(MODULES):
        text += f'\n[[modules]]\nid = "m{n}"\ntitle = "Module {n}"\nfirst_message = "Hi {n}"\n'
    return text


async def test_a_thread_leaving_the_archived_list_between_two_pages_hides_no_other(
    provisioner: Provisioner, fake: FakeOpenWebUI
) -> None:
    course = parse_course(_course_toml(), "big.toml")
    user = fake.add_user("ada@example.edu")
    for n in range(40):  # 100 chats or more: the look goes through the title lists
        fake.add_chat(user, {"title": f"Own chat {n}"}, created_at=900)
    for n, module in enumerate(course.modules):
        chat = build_chat(course, module)
        fake.add_chat(user, chat, archived=True, created_at=1000 + n, chat_id=f"t{n:03d}")
    # Duplicates: of m0 (on page 1) and of the module whose winner opens page 2; each
    # ranks right after its winner (same second, larger id).
    boundary = ARCHIVED_PAGE_SIZE - 1  # t000, t000z, t001 ... t058 fill page 1
    for n in (0, boundary):
        chat = build_chat(course, course.modules[n])
        fake.add_chat(user, chat, archived=True, created_at=1000 + n, chat_id=f"t{n:03d}z")
    deleted: list[str] = []

    def someone_deletes_between_pages(call: Call) -> None:
        # The person (or a provisioner that then dies) deletes m0's duplicate while this
        # look is between page 1 and page 2.
        page_two = call.path == "/api/v1/chats/archived" and call.query.get("page") == "2"
        if page_two and "t000z" in fake.chats and not deleted:
            deleted.append(fake.chats.pop("t000z").id)

    fake.on_call = someone_deletes_between_pages
    results = await provisioner.provision_user([course], "ada@example.edu")

    assert deleted == ["t000z"]
    by_module: dict[str, list[str]] = {}
    for chat in fake.chats_of("ada@example.edu"):
        mark = chat.chat.get(MARKER_KEY)
        if mark:
            by_module.setdefault(mark["module"], []).append(chat.id)
    assert {m: ids for m, ids in by_module.items() if len(ids) != 1} == {}
    reported = {r.module: r.chat_id for r in results}
    assert reported[f"m{boundary}"] == f"t{boundary:03d}"  # the winner, not its duplicate


async def test_a_list_of_several_pages_that_stays_put_is_read_twice_and_no_more(
    provisioner: Provisioner, fake: FakeOpenWebUI
) -> None:
    course = parse_course(_course_toml(), "big.toml")
    user = fake.add_user("ada@example.edu")
    for n in range(40):
        fake.add_chat(user, {"title": f"Own chat {n}"}, created_at=900)
    for n, module in enumerate(course.modules):
        chat = build_chat(course, module)
        fake.add_chat(user, chat, archived=True, created_at=1000 + n, chat_id=f"t{n:03d}")

    results = await provisioner.provision_user([course], "ada@example.edu")

    assert [r.status for r in results] == ["existing"] * MODULES
    # Hidden tags: two reads of two pages; visible tags: one short page.
    assert fake.count("GET", "/api/v1/chats/archived") == 2 * 2 + 1
