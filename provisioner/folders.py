"""Where a course's threads live, and how its folder is recognised: pure functions.

A course chooses its threads' ``placement``: ``archived`` (under *Archived Chats*, the
default) or ``folder``: a top-level folder named after the course in the person's sidebar,
holding the module threads, not archived.

The folder is recognised by a tag in its name, like a thread by the tag in its title
(:mod:`provisioner.threads`): the course id, written after the course title in invisible
characters (or ``[course-id]`` with ``OWUI_PROVISION_TITLE_TAG=visible``). OpenWebUI 0.12.4's
folder list (``GET /api/v1/folders/``) returns id, name, parent and timestamps, and drops
``meta`` down to its icon, so the name is the one field that can carry the course where a
list shows it. A folder the person made and named like the course carries no tag and is
theirs: it is never used, moved or deleted.

OpenWebUI checks that a new folder's name is not taken and then inserts it, without a
constraint in the database, so two provisioners creating the course folder at once can
leave two. Like threads, the **winner** is the oldest by ``(created_at, id)``, values fixed
at creation, so every process picks the same one; threads are moved into it, and a
duplicate holding no folder of its own is deleted with ``delete_contents=false`` (anything
in it goes back to the top level, never deleted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner.course import Course
from provisioner.threads import TitleTag, hidden_id, tag_frame

FOLDER_FORMS: tuple[TitleTag, ...] = ("visible", "hidden")


def folder_tag(course_id: str, form: TitleTag = "hidden") -> str:
    """The course's tag in its folder's name: ``[welcome]``, or the same, invisible.

    The hidden form is framed like a thread's tag but holds no course/module separator, so
    neither kind of tag is a prefix of the other.
    """
    if form == "hidden":
        return f"{tag_frame()}{hidden_id(course_id)}{tag_frame()}"
    return f"[{course_id}]"


def folder_name(course: Course, form: TitleTag = "hidden") -> str:
    """The name a new course folder gets: the course title, then its tag."""
    return f"{course.course.title} {folder_tag(course.course.id, form)}"


def folder_marker(course_id: str) -> dict[str, Any]:
    """Stored in the folder's ``meta`` for people reading the database (lists drop it)."""
    return {"owui_gate": {"course": course_id}}


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder as OpenWebUI lists it (``FolderNameIdResponse``)."""

    id: str
    name: str
    parent_id: str | None
    created_at: int

    @property
    def rank(self) -> tuple[int, str]:
        return (self.created_at, self.id)


def as_folders(items: Iterable[dict[str, Any]]) -> list[Folder]:
    """The well-formed entries of a folder list."""
    folders = []
    for item in items:
        folder_id, name, created = item.get("id"), item.get("name"), item.get("created_at")
        parent = item.get("parent_id")
        if isinstance(folder_id, str) and isinstance(name, str) and isinstance(created, int):
            folders.append(
                Folder(folder_id, name, parent if isinstance(parent, str) else None, created)
            )
    return folders


def is_course_folder(folder: Folder, course_id: str) -> bool:
    """A top-level folder whose name carries the course's tag, in either form."""
    return folder.parent_id is None and any(
        folder_tag(course_id, form) in folder.name for form in FOLDER_FORMS
    )


def is_made_course_folder(folder: Folder, course: Course) -> bool:
    """A top-level folder named exactly as the provisioner names the course folder (either
    form): the only kind ever deleted when a course is removed. The name is the person's
    to write, so one merely carrying the tag (``Homework [demo]``) may be theirs, with a
    system prompt and files of theirs in it; it is left alone."""
    return folder.parent_id is None and folder.name in {
        folder_name(course, form) for form in FOLDER_FORMS
    }


@dataclass(frozen=True, slots=True)
class FolderPlan:
    """The course folder (the winner) and the duplicates that may be deleted."""

    winner: Folder
    delete: tuple[Folder, ...]


def plan_folder(folders: Sequence[Folder], course_id: str) -> FolderPlan | None:
    """The course's folder among a person's folders; ``None`` when there is none yet.

    A duplicate is only deleted when no folder lies inside it: deleting a folder deletes its
    sub-folders, which would be the person's. (Its chats move to the top level.) And only
    when it has the winner's very name: provisioners racing to make the folder give it the
    same name, while a folder of the person's that merely carries the tag (the name is
    theirs to write) may keep a system prompt and files of theirs: it is left alone.
    """
    ours = sorted((f for f in folders if is_course_folder(f, course_id)), key=lambda f: f.rank)
    if not ours:
        return None
    winner = ours[0]
    parents = {folder.parent_id for folder in folders}
    return FolderPlan(
        winner=winner,
        delete=tuple(f for f in ours[1:] if f.id not in parents and f.name == winner.name),
    )
