"""``remove`` deletes only a folder it would have made: named exactly as the provisioner
names the course folder (the course title, then its tag, in either form).

Folders are recognised by the course tag in their name, and the name is the person's to
write (``POST /api/v1/folders/{id}/update``): a person's own folder named, say,
``Homework [demo]`` carries the visible tag of course ``demo``. ``remove`` deleted every
such folder holding no chat and no folder, with whatever OpenWebUI keeps in a folder
besides chats (its system prompt and attached files, in ``data``): the person's folder,
gone by an admin's removal of a course.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.course import load_course
from provisioner.folders import Folder, folder_name, folder_tag, plan_folder
from tests.provisioner.cli_helpers import run
from tests.provisioner.conftest import COURSE_TOML, LOOKUP_EMAIL
from tests.provisioner.fake_owui import FakeOpenWebUI

EMAIL = "leaver@example.edu"


@pytest.fixture
def folder_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.toml"
    path.write_text(
        COURSE_TOML.replace('model = "tutor"', 'model = "tutor"\nplacement = "folder"', 1),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "name",
    [
        "Homework [demo]",
        "[demo]",
        f"My notes {folder_tag('demo', 'hidden')}",
        "Demo course [demo] (my copy)",
    ],
)
async def test_a_persons_folder_named_with_the_tag_stays(
    env: dict[str, str], fake: FakeOpenWebUI, folder_file: Path, name: str
) -> None:
    fake.add_user(LOOKUP_EMAIL)
    assert (await run(env, "user", str(folder_file), EMAIL)).rc == 0
    user = fake.users[EMAIL]
    own = fake.add_folder(user, name)

    result = await run(env, "remove", str(folder_file), EMAIL)

    assert result.rc == 0, result.err
    assert [f.id for f in fake.folders_of(EMAIL)] == [own.id]
    assert [line["result"] for line in result.lines()].count("deleted folder") == 1


@pytest.mark.parametrize("form", ["hidden", "visible"])
async def test_the_course_folder_in_either_form_still_goes(
    env: dict[str, str], fake: FakeOpenWebUI, folder_file: Path, form: str
) -> None:
    fake.add_user(LOOKUP_EMAIL)
    user = fake.add_user(EMAIL)
    fake.add_folder(user, folder_name(load_course(folder_file), form))  # type: ignore[arg-type]

    result = await run(env, "remove", str(folder_file), EMAIL)

    assert result.rc == 0, result.err
    assert fake.folders_of(EMAIL) == []


def test_a_persons_tagged_folder_is_no_duplicate_to_delete(folder_file: Path) -> None:
    """``bulk`` deletes duplicate course folders (two provisioners raced to make it): those
    have the winner's name, made by the same code. A person's folder that merely carries
    the tag is not one, and deleting it would drop what it keeps besides chats."""
    course = load_course(folder_file)
    ours = Folder("a", folder_name(course, "hidden"), None, 1)
    raced = Folder("b", folder_name(course, "hidden"), None, 2)
    theirs = Folder("c", "Homework [demo]", None, 3)
    hidden_copy = Folder("d", f"Notes {folder_tag('demo', 'hidden')}", None, 4)

    found = plan_folder([ours, raced, theirs, hidden_copy], "demo")

    assert found is not None
    assert found.winner == ours
    assert found.delete == (raced,)


async def test_bulk_leaves_a_persons_tagged_folder_alone(
    env: dict[str, str], fake: FakeOpenWebUI, folder_file: Path
) -> None:
    assert (await run(env, "user", str(folder_file), EMAIL)).rc == 0
    user = fake.users[EMAIL]
    own = fake.add_folder(user, "Homework [demo]")

    again = await run(env, "user", str(folder_file), EMAIL)

    assert again.rc == 0, again.err
    assert own.id in [f.id for f in fake.folders_of(EMAIL)]
