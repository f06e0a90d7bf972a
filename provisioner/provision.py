"""Exactly one archived thread per (user, course, module), without a lock: convergence.

A user's modules are driven to their end state together, in rounds. A round *finds*
every thread the user has for them, in one call where it can (``GET /chats/all``: every
chat whole, so the chat JSON marker confirms each one without reading it again), and
then, module by module, does at most one kind of step:

1. none found          -> create one and archive it (the create's answer says it is not
                          archived, the toggle's answer says what it became), then look
                          again: another process may have created one too;
2. duplicates found    -> delete every one but the winner (oldest ``created_at``, then
                          smallest id), then look again; a duplicate holding the user's
                          own messages is never deleted, only logged;
3. winner not archived -> archive it (the endpoint flips, so the toggle's answer is read,
                          never assumed), then look again;
4. exactly the winner, archived, nothing to delete -> done.

Why this is safe with any number of processes at once (``docs/provisioner.md`` has the
long form): the winner rule uses only values fixed at creation, so processes that see
the same threads agree, and the thread ranked first among all that ever existed is never
deleted by anyone. A module only finishes after a round in which it changed nothing: the
winner archived and nothing to delete; every create, delete and toggle a process makes comes
before its own final round, so the last final round to start sees the settled state.
Two processes toggling the same thread at once cancel out; both read it still
unarchived and try again after a random pause, which breaks the tie.

One more rule makes the *reported* chat id final, not only the end state: OpenWebUI's
``created_at`` has whole-second resolution, so a thread another process creates later in
the same second, with a smaller id, would outrank (and delete) a winner already reported.
A winner is therefore reported only from a settled round that began once the server's
clock (its ``Date`` header) had passed the winner's second by ``settle_s``; any thread
created after that round began is younger and cannot outrank it, and any created before
was seen. So after creating, the next round waits for that moment: the look that confirms
a new user's threads is also the one that makes them final (sign-in, one look, create and
archive each module, one look).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from provisioner.client import EXPORT_BATCH_SIZE, OpenWebUI, UserSession
from provisioner.course import Course, Module
from provisioner.errors import (
    ApiError,
    NotConverged,
    NotTrustedHeaderMode,
    Onboarding,
    PendingUser,
    SignupsOff,
    Unavailable,
    UnsupportedRelease,
)
from provisioner.folders import (
    Folder,
    FolderPlan,
    as_folders,
    folder_marker,
    folder_name,
    plan_folder,
)
from provisioner.settings import Settings
from provisioner.slots import Lease
from provisioner.threads import (
    Key,
    Thread,
    as_thread,
    build_chat,
    course_threads,
    decide,
    left_behind,
    tag_prefixes,
    threads_by_module,
    title_matches,
    update_for,
)
from proxy.openwebui_release import (
    SIGNUP_FIX,
    provisioner_refusal,
    signup_trap,
    signup_trap_problem,
)

log = structlog.get_logger("provisioner")


@dataclass(frozen=True, slots=True)
class ModuleResult:
    """How one module ended for one user: the JSON line ``owui-provision user`` prints."""

    email: str
    course: str
    module: str
    chat_id: str
    status: Literal["created", "existing"]
    archived: bool
    folder_id: str | None = None  # the course folder holding it (placement "folder")

    @property
    def placed(self) -> bool:
        """In its place: archived, or in the course folder."""
        return self.archived or self.folder_id is not None

    def as_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "email": self.email,
            "course": self.course,
            "module": self.module,
            "chat_id": self.chat_id,
            "status": self.status,
            "archived": self.archived,
        }
        if self.folder_id is not None:
            line["folder_id"] = self.folder_id
        return line


@dataclass(frozen=True, slots=True)
class Look:
    """One look at a person's threads of some modules, and at their folders if needed."""

    threads: dict[Key, list[Thread]]
    # Threads of these courses whose module the course no longer has: (key, chat id). Only
    # known when every chat was read in one snapshot (below 100 chats).
    left: tuple[tuple[Key, str], ...] = ()
    # Every folder of the person; ``None`` when no course looked at uses folders.
    folders: tuple[Folder, ...] | None = None

    def course_folder(self, course: Course) -> FolderPlan | None:
        if self.folders is None or course.course.placement != "folder":
            return None
        return plan_folder(self.folders, course.course.id)


def _key(course: Course, module: Module) -> Key:
    return (course.course.id, module.id)


def check_config(config: dict[str, Any]) -> None:
    """Refuse when OpenWebUI's ``/api/config`` shows provisioning would be unsafe."""
    features = config.get("features")
    if not isinstance(features, dict) or features.get("auth_trusted_header") is not True:
        raise NotTrustedHeaderMode()
    if config.get("onboarding") is True:
        raise Onboarding()
    refusal = provisioner_refusal(config)
    if refusal is not None:
        raise UnsupportedRelease(refusal)


class Provisioner:
    """Provisions courses for users through one :class:`OpenWebUI` client."""

    def __init__(
        self,
        api: OpenWebUI,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        update_unreplied: bool = False,
    ) -> None:
        self._api = api
        # Bring threads the user has not replied to up to date with the course's messages.
        self._update_unreplied = update_unreplied
        self._settings = settings
        self._sleep = sleep
        self._rand = rand
        # Once OpenWebUI has a user it keeps having one (the proxy's internal listener
        # reasons the same way, and refuses an act-as sign-in during onboarding itself);
        # the config is read until it has passed once, so a run asks once, not per user.
        self._config_ok = False
        self._config: dict[str, Any] | None = None  # as read by preflight()
        self._config_lock = asyncio.Lock()
        # Sign-ins under way, by email: a caller cancelled meanwhile (a webhook deadline,
        # Ctrl-C) leaves its sign-in running, and the next caller for that email joins it.
        self._signins: dict[str, asyncio.Task[UserSession]] = {}

    @property
    def api(self) -> OpenWebUI:
        return self._api

    @property
    def update_unreplied(self) -> bool:
        return self._update_unreplied

    async def preflight(self) -> None:
        """Refuse when OpenWebUI's config makes provisioning unsafe; read once it has passed."""
        async with self._config_lock:  # users starting together wait for one read
            if not self._config_ok:
                self._config = await self._api.config()
                check_config(self._config)
                self._config_ok = True

    async def provision_user(
        self,
        courses: Sequence[Course],
        email: str,
        name: str | None = None,
        *,
        on_result: Callable[[ModuleResult], None] | None = None,
        slot: Lease | None = None,
    ) -> list[ModuleResult]:
        """Every module of every course in ``courses`` for ``email``: one archived thread each.

        Refuses before signing in when OpenWebUI is onboarding (the account would become
        admin), not in trusted-header mode or a release whose chat lists miss threads; says
        how to fix the sign-up trap of releases before 0.8.0; refuses before any chat call
        when the user is pending. ``email`` must already be validated and lower-cased.
        ``on_result`` hears about each module as soon as it is settled, so a later failure
        loses no report. ``slot``, held by the caller, is released while this user waits out
        the settle pause, so waiting users do not keep others from making calls.
        """
        await self.preflight()
        try:
            session = await self._signin(email, name, slot)
        except ApiError as exc:
            if exc.status == 403 and self._config is not None and signup_trap(self._config):
                version = str(self._config.get("version"))  # a new user, sign-ups off
                raise SignupsOff(email, signup_trap_problem(version), SIGNUP_FIX) from exc
            raise
        if session.role == "pending":
            raise PendingUser(email)
        pairs = [(course, module) for course in courses for module in course.modules]
        created: set[str] = set()  # chats this call created, across its rounds
        results: dict[Key, ModuleResult] = {}
        reported = 0
        seen: dict[Key, list[Thread]] = {}
        look_from: float | None = None  # server time the next look must not start before
        for round_number in range(self._settings.converge_rounds):
            # Every request of this round comes after ``looked_at``. The server's clock is
            # known from its last answer; a pause adds what was slept, since the last
            # answer may have come before it.
            looked_at = self._server_now()
            if look_from is not None and look_from > looked_at:
                await self._pause(look_from - looked_at, slot)
                looked_at = max(look_from, self._server_now())
            todo = [(c, m) for c, m in pairs if _key(c, m) not in results]
            look = await self.look(session, todo)
            if round_number == 0:
                self._report_left(session.email, look)
            seen = look.threads
            look_from = None
            folders = {
                course.course.id: await self._course_folder(session, course, look)
                for course in dict.fromkeys(course for course, _ in todo)
                if course.course.placement == "folder"
            }
            for course, module in todo:
                key = _key(course, module)
                folder = folders.get(course.course.id)
                step = await self._step(session, course, module, seen[key], created, folder)
                if isinstance(step, Thread):  # settled as this round saw it
                    # A same-second rival could still outrank the thread, or its folder.
                    born = max(step.created_at, folder.created_at if folder else 0)
                    final_at = born + self._settings.settle_s
                    if looked_at < final_at:  # could still be outranked: look again later
                        look_from = max(look_from or 0.0, final_at)
                        continue
                    results[key] = ModuleResult(
                        email=session.email,
                        course=key[0],
                        module=key[1],
                        chat_id=step.id,
                        status="created" if step.id in created else "existing",
                        archived=step.archived,
                        folder_id=step.folder_id,
                    )
                elif step is not None:  # created at that second: look once it is final
                    look_from = max(look_from or 0.0, step + self._settings.settle_s)
            # Reported in course order, each as soon as it and those before it are final.
            while reported < len(pairs) and _key(*pairs[reported]) in results:
                if on_result is not None:
                    on_result(results[_key(*pairs[reported])])
                reported += 1
            if reported == len(pairs):
                return [results[_key(course, module)] for course, module in pairs]
        left = [key for key in (_key(c, m) for c, m in pairs) if key not in results]
        state = "; ".join(
            f"{c}/{m}: "
            + (", ".join(f"{t.id} archived={t.archived}" for t in seen.get((c, m), [])) or "none")
            for c, m in left
        )
        raise NotConverged(
            f"{email}: not settled after {self._settings.converge_rounds} rounds "
            f"(last seen: {state}); run again"
        )

    async def _signin(self, email: str, name: str | None, slot: Lease | None) -> UserSession:
        """Sign in as ``email``; a cancelled caller leaves at once, the sign-in runs on.

        The first sign-in creates the account in several writes, and OpenWebUI 0.12.4 does
        not undo the first when the request is cut short (the proxy cancels it when its
        client goes), nor when a second sign-in of the same new email collides with it: an
        account left without its credentials record, which no later sign-in can use
        (:class:`AccountCannotSignIn`) until an admin deletes it. Under a storm the
        webhook's deadline cut sign-ins that late. So the call itself is never cancelled:
        a caller's ``slot`` stays taken until it ends (the bound on calls at OpenWebUI
        holds), the next caller for the same email joins it instead of signing in beside
        it, and :meth:`settle` waits for those still running before the client closes.
        """
        task = self._signins.get(email)
        if task is None:
            task = asyncio.ensure_future(self._api.signin(email, name))
            self._signins[email] = task
            task.add_done_callback(lambda done: self._signin_done(email, done))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if slot is not None and not task.done():
                slot.hand_to(task)
            raise

    def _signin_done(self, email: str, task: asyncio.Task[UserSession]) -> None:
        if self._signins.get(email) is task:
            del self._signins[email]
        if not task.cancelled():
            task.exception()  # retrieved: a caller gone by then has no use for it

    async def settle(self) -> None:
        """Wait for the sign-ins cancelled callers left running (see :meth:`_signin`)."""
        while self._signins:
            await asyncio.gather(*self._signins.values(), return_exceptions=True)

    async def _pause(self, seconds: float, slot: Lease | None) -> None:
        if slot is None:
            await self._sleep(seconds)
            return
        slot.release()
        # Cancelled while sleeping or while waiting for the slot back (before users not yet
        # started, see slots.py), this user leaves at once: the lease knows it holds
        # nothing, and the holder gives nothing back.
        await self._sleep(seconds)
        await slot.resume()

    def _server_now(self) -> float:
        """The server's clock as last seen (the local clock until an answer had a Date)."""
        seen = self._api.transport.server_time
        return time.time() if seen is None else seen

    async def _course_folder(
        self, session: UserSession, course: Course, look: Look
    ) -> Folder | None:
        """The course folder as this round saw it, made when missing; duplicates deleted.

        A folder made here is used at once (its threads are created in it this round); if
        another process made one too, the next look sees both and the older wins. ``None``
        while there is none to use (the name was taken meanwhile): the module steps wait
        for the next look, which sees it.
        """
        flog = log.bind(email=session.email, course=course.course.id)
        found = look.course_folder(course)
        if found is None:
            made = await session.create_folder(
                folder_name(course, self._settings.title_tag), folder_marker(course.course.id)
            )
            folders = as_folders([made]) if made is not None else []
            flog.info("created the course folder", folder_id=folders[0].id if folders else None)
            return folders[0] if folders else None
        for duplicate in found.delete:
            await session.delete_folder(duplicate.id)
            flog.info("deleted a duplicate course folder", folder_id=duplicate.id)
        return found.winner

    async def _step(
        self,
        session: UserSession,
        course: Course,
        module: Module,
        found: list[Thread],
        created: set[str],
        folder: Folder | None,
    ) -> Thread | float | None:
        """One round's step for one module (see the module docstring).

        Returns the winner when there was nothing to do, the created chat's ``created_at``
        after a create (the settle rule needs it), and ``None`` after any other change (or
        while a ``folder`` course has no folder to use yet).
        """
        mlog = log.bind(email=session.email, course=course.course.id, module=module.id)
        in_folder = course.course.placement == "folder"
        if in_folder and folder is None:
            return None
        decision = decide(
            found,
            course,
            module,
            folder_id=folder.id if folder else None,
            update_unreplied=self._update_unreplied,
        )
        if decision.plan is None:
            chat = await session.create_chat(
                build_chat(course, module, title_tag=self._settings.title_tag),
                folder_id=folder.id if folder else None,
            )
            new_id = chat.get("id") if chat else None
            mlog.info("created", chat_id=new_id)
            if chat is None or not isinstance(new_id, str):
                return None  # the folder went away meanwhile: the next look decides
            created.add(new_id)
            if not in_folder:
                await self._archive(session, new_id, chat)
            created_at = chat.get("created_at")
            return float(created_at) if isinstance(created_at, int) else self._server_now()
        found_plan = decision.plan
        for extra in found_plan.keep:
            mlog.warning("kept a second thread holding the user's own messages", chat_id=extra.id)
        winner = found_plan.winner
        for duplicate in found_plan.delete:
            await session.delete_chat(duplicate.id)
            mlog.info("deleted duplicate", chat_id=duplicate.id, kept=winner.id)
        if decision.action == "archive":
            await self._archive(session, winner.id, None)
            return None
        if decision.action == "move" and folder is not None:
            # Sets the folder and un-archives: never a toggle, so repeating it is harmless.
            await session.move_to_folder(winner.id, folder.id)
            mlog.info("moved into the course folder", chat_id=winner.id, folder_id=folder.id)
            return None
        if decision.action == "delete":
            return None
        if decision.action == "update":
            update = update_for(winner, course, module)
            if update is not None:
                await session.update_chat(winner.id, update)
                mlog.info("updated the first message", chat_id=winner.id)
            return None
        return winner

    async def _archive(
        self, session: UserSession, chat_id: str, chat: dict[str, Any] | None
    ) -> None:
        """Toggle until the chat reads archived (or is gone); every toggle's answer is read.

        ``chat`` is the create's answer for a chat this process has just made (nobody has
        toggled it yet, most likely); any other chat is read right before the first toggle,
        since other processes may be archiving the same winner from an older look. Two
        processes toggling at once cancel out; each then sees the chat still unarchived,
        waits a random, growing pause and reads it again, so the next toggles are unlikely
        to coincide.
        """
        if chat is None:
            chat = await session.get_chat(chat_id)
            if chat is None:  # deleted since the look: the next look decides
                return
        for attempt in range(self._settings.archive_attempts):
            if chat is not None and chat.get("archived") is True:
                return
            try:
                after = await session.toggle_archive(chat_id)
            except Unavailable as exc:  # flipped or not: a read tells
                # A Retry-After (429, 503) is waited out before anything else is asked, as
                # the transport does for every call it retries itself; one beyond the limit
                # fails the user, as it does for every other call.
                if exc.retry_after is not None:
                    if exc.retry_after > self._settings.retry_after_max_s:
                        raise
                    await self._sleep(exc.retry_after)
                after = await session.get_chat(chat_id)
            if after is None or after.get("archived") is True:
                return
            # Still unarchived: a concurrent toggle undid ours (or ours failed).
            await self._sleep(self._settings.backoff_base_s * 2.0**attempt * self._rand())
            chat = await session.get_chat(chat_id)
            if chat is None:
                return
        # Out of attempts: the next round reads the state again and decides.

    async def look(self, session: UserSession, pairs: Sequence[tuple[Course, Module]]) -> Look:
        """Every thread of these modules the user has, archived or not, confirmed by marker;
        and the user's folders when one of the courses keeps its threads in a folder.

        One call: every chat of the user, whole. When the answer is a full batch or more it
        was read in several queries, which is no snapshot (a chat updated meanwhile can move
        between them), so such a user is looked at through the title lists instead. The
        folders are read after the chats: a folder a thread was moved into is older than
        the move, so it is in the list.
        """
        wanted = [_key(course, module) for course, module in pairs]
        chats = await session.list_all()
        if len(chats) < EXPORT_BATCH_SIZE:
            threads = threads_by_module(chats, wanted)
            left = tuple(left_behind(chats, wanted))
        else:
            threads, left = await self._find_by_title(session, wanted), ()
        folders = None
        if any(course.course.placement == "folder" for course, _ in pairs):
            folders = tuple(as_folders(await session.list_folders()))
        return Look(threads, left, folders)

    async def look_at_courses(
        self, session: UserSession, course_ids: Sequence[str], module_id: str | None = None
    ) -> dict[Key, list[Thread]]:
        """Every thread of these courses, whatever its module (or of ``module_id`` only),
        confirmed by marker: what ``remove`` deletes. Users with 100 chats or more are
        looked at through the title lists, by the courses' tag prefixes."""
        chats = await session.list_all()
        if len(chats) < EXPORT_BATCH_SIZE:
            return course_threads(chats, course_ids, module_id)
        listed = await session.list_chats()
        for course_id in course_ids:
            for prefix in tag_prefixes(course_id):
                listed += await session.list_archived(prefix)
        candidates = sorted(
            {
                chat["id"]
                for chat in listed
                if isinstance(chat.get("id"), str)
                and isinstance(chat.get("title"), str)
                and any(p in chat["title"] for c in course_ids for p in tag_prefixes(c))
            }
        )
        whole = [chat for chat_id in candidates if (chat := await session.get_chat(chat_id))]
        return course_threads(whole, course_ids, module_id)

    def _report_left(self, email: str, look: Look) -> None:
        for (course_id, module_id), chat_id in look.left:
            log.warning(
                "left alone: a thread of a module the course no longer has",
                email=email,
                course=course_id,
                module=module_id,
                chat_id=chat_id,
            )

    async def _find_by_title(
        self, session: UserSession, wanted: Sequence[Key]
    ) -> dict[Key, list[Thread]]:
        """The title lists: active chats, then archived ones of each course by its tag.

        Active first: provisioners only ever move a thread from active to archived, so a
        thread archived between the two reads is still seen (in the first). A chat whose
        title carries a module's tag is then read whole to confirm its marker.
        """
        chats = await session.list_chats()
        for course_id in dict.fromkeys(course_id for course_id, _ in wanted):
            for prefix in tag_prefixes(course_id):
                chats += await session.list_archived(prefix)
        found: dict[Key, list[Thread]] = {key: [] for key in wanted}
        candidates = sorted(
            {
                (chat["id"], key)
                for chat in chats
                for key in wanted
                if isinstance(chat.get("id"), str) and title_matches(chat.get("title"), *key)
            }
        )
        for chat_id, key in candidates:
            chat = await session.get_chat(chat_id)
            thread = None if chat is None else as_thread(chat, *key)  # None: deleted since
            if thread is not None:
                found[key].append(thread)
        return found
