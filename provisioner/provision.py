"""Exactly one archived thread per (user, course, module), without a lock: convergence.

Each module is driven to its end state in rounds. A round *finds* the module's threads
(both chat lists, filtered by the title tag, each candidate confirmed by reading its chat
JSON marker) and then does at most one kind of step:

1. none found          -> create one, then look again (another process may have too);
2. duplicates found    -> delete every one but the winner (oldest ``created_at``, then
                          smallest id), then look again; a duplicate holding the user's
                          own messages is never deleted, only logged;
3. winner not archived -> archive it: read, toggle, read again (the endpoint flips, so
                          the state is read before every toggle, never assumed),
                          then look again;
4. exactly the winner, archived, nothing to delete -> done.

Why this is safe with any number of processes at once (``docs/provisioner.md`` has the
long form): the winner rule uses only values fixed at creation, so processes that see
the same threads agree, and the thread ranked first among all that ever existed is never
deleted by anyone. A process only finishes after a round in which it changed nothing: the
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
was seen. Modules whose winner is that young are driven again after one shared pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from provisioner.client import OpenWebUI, UserSession
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
from provisioner.settings import Settings
from provisioner.threads import Thread, as_thread, build_chat, plan, tag, title_matches
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

    def as_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "course": self.course,
            "module": self.module,
            "chat_id": self.chat_id,
            "status": self.status,
            "archived": self.archived,
        }


@dataclass(frozen=True, slots=True)
class Settled:
    """A module in its end state as one round saw it, and when (server clock) that round began."""

    result: ModuleResult
    created_at: int
    looked_at: float


def _key(course: Course, module: Module) -> tuple[str, str]:
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
    ) -> None:
        self._api = api
        self._settings = settings
        self._sleep = sleep
        self._rand = rand

    async def provision_user(
        self,
        courses: Sequence[Course],
        email: str,
        name: str | None = None,
        *,
        on_result: Callable[[ModuleResult], None] | None = None,
    ) -> list[ModuleResult]:
        """Every module of every course in ``courses`` for ``email``: one archived thread each.

        Refuses before signing in when OpenWebUI is onboarding (the account would become
        admin), not in trusted-header mode or a release whose chat lists miss threads; says
        how to fix the sign-up trap of releases before 0.8.0; refuses before any chat call
        when the user is pending. ``email`` must already be validated and lower-cased.
        ``on_result`` hears about each module as soon as it is settled, so a later failure
        loses no report. All courses share one sign-in and one settle pause.
        """
        config = await self._api.config()
        check_config(config)
        try:
            session = await self._api.signin(email, name)
        except ApiError as exc:
            if exc.status == 403 and signup_trap(config):  # a new user, sign-ups off
                version = str(config.get("version"))
                raise SignupsOff(email, signup_trap_problem(version), SIGNUP_FIX) from exc
            raise
        if session.role == "pending":
            raise PendingUser(email)
        pairs = [(course, module) for course in courses for module in course.modules]
        created: set[str] = set()  # chats this call created, across its passes
        results: dict[tuple[str, str], ModuleResult] = {}
        reported = 0
        todo = pairs
        for _ in range(self._settings.converge_rounds):
            pause = 0.0
            young: list[tuple[Course, Module]] = []
            for course, module in todo:
                settled = await self.ensure_module(session, course, module, created)
                left = settled.created_at + self._settings.settle_s - settled.looked_at
                if left > 0:  # could still be outranked: look again after the pause
                    young.append((course, module))
                    pause = max(pause, left)
                    continue
                results[_key(course, module)] = settled.result
                # Reported in course order, each as soon as it and those before it are final.
                while reported < len(pairs) and _key(*pairs[reported]) in results:
                    if on_result is not None:
                        on_result(results[_key(*pairs[reported])])
                    reported += 1
            if not young:
                return [results[_key(course, module)] for course, module in pairs]
            await self._sleep(pause)
            todo = young
        raise NotConverged(
            f"{email}: {', '.join(f'{c.course.id}/{m.id}' for c, m in todo)} not final after "
            f"{self._settings.converge_rounds} passes; run again"
        )

    def _server_now(self) -> float:
        """The server's clock as last seen (the local clock until an answer had a Date)."""
        seen = self._api.transport.server_time
        return time.time() if seen is None else seen

    async def ensure_module(
        self, session: UserSession, course: Course, module: Module, created: set[str]
    ) -> Settled:
        """Drive one module to exactly one archived thread (see the module docstring).

        ``created`` collects the ids of chats this call creates, so a later pass still
        reports them as ``created``.
        """
        course_id = course.course.id
        seen: list[Thread] = []
        for _ in range(self._settings.converge_rounds):
            looked_at = self._server_now()  # every request of this round comes after it
            seen = await self._find(session, course_id, module.id)
            decision = plan(seen)
            if decision is None:
                reply = await session.create_chat(build_chat(course, module))
                new_id = reply.get("id")
                if isinstance(new_id, str):
                    created.add(new_id)
                log.info(
                    "created",
                    email=session.email,
                    course=course_id,
                    module=module.id,
                    chat_id=new_id,
                )
                continue
            for extra in decision.keep:
                log.warning(
                    "kept a second thread holding the user's own messages",
                    email=session.email,
                    course=course_id,
                    module=module.id,
                    chat_id=extra.id,
                )
            winner = decision.winner
            if decision.delete:
                for duplicate in decision.delete:
                    await session.delete_chat(duplicate.id)
                    log.info(
                        "deleted duplicate",
                        email=session.email,
                        module=module.id,
                        chat_id=duplicate.id,
                        kept=winner.id,
                    )
                continue
            if not winner.archived:
                await self._archive(session, winner.id)
                continue
            result = ModuleResult(
                email=session.email,
                course=course_id,
                module=module.id,
                chat_id=winner.id,
                status="created" if winner.id in created else "existing",
                archived=True,
            )
            return Settled(result, created_at=winner.created_at, looked_at=looked_at)
        state = ", ".join(f"{t.id} archived={t.archived}" for t in seen) or "no thread"
        raise NotConverged(
            f"{session.email} {course_id}/{module.id}: not settled after "
            f"{self._settings.converge_rounds} rounds (last seen: {state}); run again"
        )

    async def _archive(self, session: UserSession, chat_id: str) -> None:
        """Toggle until the chat reads archived (or is gone), reading it before each toggle.

        The endpoint flips the flag, so the state is read right before every toggle. Two
        processes toggling at once cancel out; each then waits a random, growing pause
        before reading again, so the next toggles are unlikely to coincide.
        """
        chat = await session.get_chat(chat_id)
        for attempt in range(self._settings.archive_attempts):
            if chat is None or chat.get("archived") is True:
                return
            with contextlib.suppress(Unavailable):  # flipped or not: the read below tells
                await session.toggle_archive(chat_id)
            chat = await session.get_chat(chat_id)
            if chat is None or chat.get("archived") is True:
                return
            # Still unarchived: a concurrent toggle undid ours (or ours failed).
            await self._sleep(self._settings.backoff_base_s * 2.0**attempt * self._rand())
            chat = await session.get_chat(chat_id)
        # Out of attempts: the caller's next round reads the state again and decides.

    async def _find(self, session: UserSession, course_id: str, module_id: str) -> list[Thread]:
        """Every thread of this module the user has, archived or not, confirmed by its marker."""
        # Active first: provisioners only ever move a thread from active to archived, so a
        # thread archived between the two reads is still seen (in the first).
        active = await session.list_chats()
        archived = await session.list_archived(tag(course_id, module_id))
        candidates = sorted(
            {
                chat["id"]
                for chat in active + archived
                if isinstance(chat.get("id"), str)
                and title_matches(chat.get("title"), course_id, module_id)
            }
        )
        threads = []
        for chat_id in candidates:
            chat = await session.get_chat(chat_id)
            if chat is None:  # deleted since it was listed
                continue
            thread = as_thread(chat, course_id, module_id)
            if thread is not None:
                threads.append(thread)
        return threads
