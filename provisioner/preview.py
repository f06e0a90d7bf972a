"""``--dry-run``: what a run would do, per person and module, changing nothing.

A dry run reads exactly what a real run's first round reads (the person's chats, and their
folders for a course kept in a folder) and asks the same pure function
(:func:`provisioner.threads.decide`) what that round would do, then reports it instead of
doing it. It never creates a chat, a folder or an account: whether a person has an account
is read from OpenWebUI's user directory as the lookup account
(:mod:`provisioner.directory`), and only people who have one are signed in as (a sign-in
of an existing account creates nothing; OpenWebUI does note it as the person's last
activity). A person without an account gets "create" for every module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from provisioner.course import Course
from provisioner.directory import Directory
from provisioner.errors import AdminAccount, PendingUser
from provisioner.provision import Provisioner
from provisioner.threads import Action, decide

ALREADY = "already there"
# What each step of a real run is called in a dry run's output.
ACTION_LABELS: dict[Action, str] = {
    "create": "create",
    "archive": "archive",
    "move": "move into the course folder",
    "delete": "remove duplicates",
    "update": "update",
    "done": ALREADY,
}
LEFT_ALONE = "left alone"
NO_ACCOUNT = "no account yet: the run creates it at its first sign-in"


@dataclass(frozen=True, slots=True)
class PlannedModule:
    """What a run would do for one person and module (or a thread of a removed module)."""

    email: str
    course: str
    module: str
    action: str
    chat_id: str | None = None
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "email": self.email,
            "course": self.course,
            "module": self.module,
            "action": self.action,
            "dry_run": True,
        }
        if self.chat_id is not None:
            line["chat_id"] = self.chat_id
        if self.detail is not None:
            line["detail"] = self.detail
        return line


class Preview:
    """Dry runs through a :class:`Provisioner`'s reads and a :class:`Directory`."""

    def __init__(self, provisioner: Provisioner, directory: Directory) -> None:
        self._provisioner = provisioner
        self._directory = directory

    async def prepare(self, emails: Sequence[str]) -> None:
        """Learn who of ``emails`` has an account, in as few calls as the directory allows."""
        await self._directory.prefetch(emails)

    async def preview_user(self, courses: Sequence[Course], email: str) -> list[PlannedModule]:
        """Every module of every course for ``email``, in order, then threads of modules
        the courses no longer have. Raises what the real run would fail with for an admin
        or a pending account (without signing in as them)."""
        await self._provisioner.preflight()
        pairs = [(course, module) for course in courses for module in course.modules]
        account = await self._directory.account(email)
        if account is None:
            return [
                PlannedModule(email, c.course.id, m.id, "create", detail=NO_ACCOUNT)
                for c, m in pairs
            ]
        if account.role == "admin":
            raise AdminAccount(email)
        if account.role == "pending":
            raise PendingUser(email)
        session = await self._provisioner.api.signin(email, None)
        look = await self._provisioner.look(session, pairs)
        planned = []
        for course, module in pairs:
            folder = look.course_folder(course)
            decision = decide(
                look.threads[(course.course.id, module.id)],
                course,
                module,
                folder_id=folder.winner.id if folder else None,
                update_unreplied=self._provisioner.update_unreplied,
            )
            detail = None
            if course.course.placement == "folder" and folder is None:
                detail = "the run first makes the course folder"
            chat_id = decision.plan.winner.id if decision.plan else None
            planned.append(
                PlannedModule(
                    email,
                    course.course.id,
                    module.id,
                    ACTION_LABELS[decision.action],
                    chat_id,
                    detail,
                )
            )
        planned += [
            PlannedModule(
                email,
                course_id,
                module_id,
                LEFT_ALONE,
                chat_id,
                "its module is no longer in the course; the run leaves it alone",
            )
            for (course_id, module_id), chat_id in look.left
        ]
        return planned
