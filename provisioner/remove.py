"""``owui-provision remove``: take a course's threads away again (leavers, retired modules).

Only threads the provisioner made are touched: a chat counts only with the course's marker
in its JSON (a chat the person titled like ours, a clone or a fork never does), so nobody's
own chats are deleted. A thread the person has written in is theirs too: it is kept, and
reported, unless ``--including-replied``. With ``--module ID`` only that module's threads
go (the module may already be gone from the course file: the marker still names it).

Exactly once, in reverse: deleting is idempotent (a chat already gone answers 404, which is
what we wanted), so a person is done only once a look *after* the deletions finds nothing
left to delete; a repeated, interrupted or concurrent removal converges on the same end
state, whichever process deletes what.

A person without an account is never signed in as (that would create the account just to
find it empty): :mod:`provisioner.directory` says who has one. When whole courses go, the
course folder (``placement = "folder"``, now or earlier) is deleted too once it holds
nothing: no chat, no folder of the person's.

With ``--dry-run`` one look per person says what a removal would delete (``would delete``,
``would delete folder``) and keep, and nothing is deleted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from provisioner.bulk import courses_of
from provisioner.client import EXPORT_BATCH_SIZE, UserSession
from provisioner.course import Course
from provisioner.directory import Directory
from provisioner.errors import NotConverged, PendingUser, ProvisionError
from provisioner.folders import as_folders, is_made_course_folder
from provisioner.provision import Provisioner
from provisioner.threads import Thread
from provisioner.users import UserRow

log = structlog.get_logger("provisioner.remove")

Result = Literal[
    "deleted",
    "kept",
    "no account",
    "admin",
    "deleted folder",
    "would delete",
    "would delete folder",
    "failed",
]


@dataclass(frozen=True, slots=True)
class Removal:
    """One line of ``remove``'s output: a thread, a folder, or a person with nothing."""

    email: str
    result: Result
    course: str = ""
    module: str = ""
    chat_id: str = ""
    folder_id: str = ""
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {"email": self.email, "result": self.result}
        for key in ("course", "module", "chat_id", "folder_id", "detail"):
            if getattr(self, key):
                line[key] = getattr(self, key)
        return line


KEPT = "the person has written in it: kept (--including-replied deletes it too)"


class Remover:
    """Removal through a :class:`Provisioner`'s client and reads, and a :class:`Directory`."""

    def __init__(
        self,
        provisioner: Provisioner,
        directory: Directory,
        *,
        including_replied: bool = False,
        module_id: str | None = None,
        rounds: int = 10,
        dry_run: bool = False,
    ) -> None:
        self._provisioner = provisioner
        self._directory = directory
        self._including_replied = including_replied
        self._module_id = module_id
        self._rounds = rounds
        self._dry_run = dry_run

    async def prepare(self, emails: Sequence[str]) -> None:
        await self._provisioner.preflight()
        await self._directory.prefetch(emails)

    def _goes(self, thread: Thread, text: str | None) -> bool:
        """``text``: the module's current first message (``None`` for a retired module)."""
        return self._including_replied or thread.ours_with(text)

    async def remove_user(self, courses: Sequence[Course], email: str) -> list[Removal]:
        """Delete the courses' threads of ``email`` until a look finds none left to delete."""
        account = await self._directory.account(email)
        if account is None:
            return [Removal(email, "no account", detail="has no OpenWebUI account: nothing")]
        if account.role == "admin":
            detail = "an admin: the internal listener never acts as admins, so no threads"
            return [Removal(email, "admin", detail=detail)]
        if account.role == "pending":
            raise PendingUser(email)
        session = await self._provisioner.api.signin(email, None)
        course_ids = [course.course.id for course in courses]
        texts = {(c.course.id, m.id): m.first_message for c in courses for m in c.modules}
        deleted: dict[str, Removal] = {}
        for _ in range(self._rounds):
            found = await self._provisioner.look_at_courses(session, course_ids, self._module_id)
            doomed = [
                (key, thread)
                for key, threads in found.items()
                for thread in threads
                if self._goes(thread, texts.get(key))
            ]
            if self._dry_run:
                return await self._would(session, courses, found, doomed)
            if not doomed:
                kept = [
                    Removal(email, "kept", key[0], key[1], thread.id, detail=KEPT)
                    for key, threads in sorted(found.items())
                    for thread in threads
                ]
                folders = []
                if self._module_id is None:
                    folders = await self._empty_course_folders(session, courses)
                return [*deleted.values(), *kept, *folders]
            for (course_id, module_id), thread in doomed:
                await session.delete_chat(thread.id)
                log.info(
                    "deleted", email=email, course=course_id, module=module_id, chat_id=thread.id
                )
                deleted[thread.id] = Removal(email, "deleted", course_id, module_id, thread.id)
        raise NotConverged(f"{email}: threads still there after {self._rounds} rounds; run again")

    async def _would(
        self,
        session: UserSession,
        courses: Sequence[Course],
        found: dict[tuple[str, str], list[Thread]],
        doomed: list[tuple[tuple[str, str], Thread]],
    ) -> list[Removal]:
        """``--dry-run``: what this look would delete and keep, and the course folders that
        would then hold nothing; nothing is deleted."""
        email = session.email
        going = {thread.id for _, thread in doomed}
        would = [
            Removal(email, "would delete", key[0], key[1], thread.id) for key, thread in doomed
        ]
        kept = [
            Removal(email, "kept", key[0], key[1], thread.id, detail=KEPT)
            for key, threads in sorted(found.items())
            for thread in threads
            if thread.id not in going
        ]
        folders = []
        if self._module_id is None:
            folders = await self._empty_course_folders(session, courses, going=going)
        return [*would, *kept, *folders]

    async def _empty_course_folders(
        self,
        session: UserSession,
        courses: Sequence[Course],
        going: AbstractSet[str] = frozenset(),
    ) -> list[Removal]:
        """Delete the courses' folders that now hold nothing (known only for a person below
        100 chats, whose chats are read in one snapshot; others keep the folder). Only a
        folder named exactly as the provisioner names it: one the person named with the
        course's tag is theirs (:func:`is_made_course_folder`). With ``--dry-run`` the chats
        in ``going`` (they would be deleted) do not count, and nothing is deleted."""
        folders = as_folders(await session.list_folders())
        ours = [(f, c.course.id) for f in folders for c in courses if is_made_course_folder(f, c)]
        if not ours:
            return []
        chats = await session.list_all()
        if len(chats) >= EXPORT_BATCH_SIZE:
            return []
        used = {chat.get("folder_id") for chat in chats if chat.get("id") not in going}
        used |= {f.parent_id for f in folders}
        removed = []
        for folder, course_id in ours:
            if folder.id not in used:
                if not self._dry_run:
                    await session.delete_folder(folder.id)
                removed.append(
                    Removal(
                        email=session.email,
                        result="would delete folder" if self._dry_run else "deleted folder",
                        course=course_id,
                        folder_id=folder.id,
                    )
                )
        return removed


async def run_remove(
    remover: Remover,
    courses: Sequence[Course],
    rows: Sequence[UserRow],
    *,
    concurrency: int,
    found: dict[int, list[Removal]],
    emit: Callable[[Removal], None],
) -> None:
    """Every person, ``concurrency`` at once; their lines into ``found`` by roster line."""
    gate = asyncio.Semaphore(concurrency)
    await remover.prepare([row.email for row in rows])

    async def one(row: UserRow) -> None:
        async with gate:
            chosen = courses_of(row, courses)
            if not chosen:
                return
            try:
                lines = await remover.remove_user(chosen, row.email)
            except ProvisionError as exc:
                lines = [Removal(row.email, "failed", detail=str(exc))]
            found[row.line] = lines
            for line in lines:
                emit(line)

    await asyncio.gather(*(one(row) for row in rows))


def removal_summary(found: dict[int, list[Removal]], people: int, dry_run: bool = False) -> str:
    count = Counter(line.result for person in found.values() for line in person)
    if dry_run:
        done = [
            f"{count['would delete']} thread(s) would be deleted",
            f"{count['kept']} kept (written in; --including-replied deletes them)",
            f"{count['would delete folder']} empty course folder(s) would be deleted",
        ]
    else:
        done = [
            f"{count['deleted']} thread(s) deleted",
            f"{count['kept']} kept (written in; --including-replied deletes them)",
            f"{count['deleted folder']} empty course folder(s) deleted",
        ]
    parts = [*done, f"{count['no account']} without an account"]
    if count["admin"]:
        parts.append(f"{count['admin']} admin(s) skipped")
    parts.append(f"{count['failed']} failed")
    return f"{len(found)} of {people} people done: " + ", ".join(parts)
