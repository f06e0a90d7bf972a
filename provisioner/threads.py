"""What a course thread looks like, and how one is recognised: pure functions.

A thread carries its (course, module) twice, for two different readers:

- in its **title**, as a tag ``[course/module]`` at the end. OpenWebUI's list endpoints
  return only id, title and timestamps (``ChatTitleIdResponse``), and the archived list
  can filter on the title (``query``, a SQL ``ILIKE``), so the tag finds candidates
  without fetching every chat the user has. Course and module ids are ``[a-z0-9-]+``, so
  the tag holds no ``LIKE`` wildcard, and the brackets stop ``intro`` matching ``intro-2``.
- in the **chat JSON** under :data:`MARKER_KEY`. ``POST /chats/new`` stores the chat dict
  as given and later updates merge top-level keys, so it survives the user continuing
  the thread. A candidate only counts once this marker is confirmed with
  ``GET /chats/{id}``: a chat the user merely titled like ours is never touched.

Clones and forks made in OpenWebUI copy the whole chat JSON, marker included, but add
``originalChatId``: they are the user's copies and never count as the course thread.

A thread is ours to delete as a duplicate, to delete without ``--including-replied`` or
to rewrite with ``--update-unreplied`` only while it holds nothing but a text we wrote.
Counting messages is not enough: OpenWebUI lets the person edit any message of their own
chats, the assistant's included, so a thread still holding one assistant message may hold
the person's words. The opening message therefore carries the SHA-256 of the text it was
created with (:data:`OPENING_KEY`): the thread is *pristine* while its one message still
has that text. ``--update-unreplied`` rewrites only a pristine thread, and writes the new
text's digest with it (the internal listener relays an update only of a pristine opening,
and only with the digest of its new content: ``proxy/chat_update.py``, whose digest this
is). A thread also counts as ours while its one message holds exactly the course's current
text (:meth:`Thread.ours_with`: a thread from before the digest). An opening with any other
text, or without a digest (an edit that dropped it, a thread from before), is the
person's, and kept.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from provisioner.course import Course, Module
from proxy.chat_update import DIGEST_KEY, text_digest, written_by_us

MARKER_KEY = "owui_gate"
# In the opening message: the SHA-256 (hex) of the text the provisioner wrote there. One
# definition, the internal listener's, which checks it on every update.
OPENING_KEY = DIGEST_KEY


TitleTag = Literal["hidden", "visible"]

# The hidden tag writes each id character as three base-4 digits, each digit an invisible
# format character (zero width space, non-joiner, joiner, word joiner); the ids' alphabet
# has 37 characters, fewer than 4**3. INVISIBLE SEPARATOR frames the tag and INVISIBLE PLUS
# stands between course and module, so ``demo``/``intro`` matches neither ``demo-2`` nor
# ``intro-2``. Browsers draw none of them; SQL LIKE matches them like any other character.
_DIGITS = "\u200b\u200c\u200d\u2060"
_FRAME, _BETWEEN = "\u2063", "\u2064"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"


def hidden_id(text: str) -> str:
    """An id (``[a-z0-9-]+``) written in invisible characters, three a character."""
    out = []
    for char in text:
        index = _ID_ALPHABET.index(char)
        out.append(_DIGITS[index // 16] + _DIGITS[index // 4 % 4] + _DIGITS[index % 4])
    return "".join(out)


def tag_frame() -> str:
    """The invisible character that opens and closes every hidden tag."""
    return _FRAME


def tag(course_id: str, module_id: str, form: TitleTag = "visible") -> str:
    """The title tag: ``[welcome/intro]``, or the same written in invisible characters."""
    if form == "hidden":
        return f"{_FRAME}{hidden_id(course_id)}{_BETWEEN}{hidden_id(module_id)}{_FRAME}"
    return f"[{course_id}/{module_id}]"


def tag_prefixes(course_id: str) -> tuple[str, str]:
    """What every tag of a course begins with, in both forms (one archived query each).

    Both, whatever the setting: threads made before it changed keep the tag they got.
    """
    return (f"[{course_id}/", f"{_FRAME}{hidden_id(course_id)}{_BETWEEN}")


def thread_title(course: Course, module: Module, form: TitleTag = "hidden") -> str:
    return f"{module.title} {tag(course.course.id, module.id, form)}"


def marker(course_id: str, module_id: str) -> dict[str, str]:
    return {"course": course_id, "module": module_id}


def build_chat(
    course: Course,
    module: Module,
    *,
    title_tag: TitleTag = "hidden",
    now: float | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The ``chat`` object for ``POST /api/v1/chats/new``: one assistant message at the root.

    The shape is the one that renders in OpenWebUI 0.12.4 (see ``docs/openwebui.md``):
    ``history`` and ``messages`` hold the same message, and ``history.currentId`` points at
    it (a null ``currentId`` shows an empty chat).
    """
    now = time.time() if now is None else now
    message_id = message_id or str(uuid.uuid4())
    model = course.model_for(module)
    message: dict[str, Any] = {
        "id": message_id,
        "parentId": None,
        "childrenIds": [],
        "role": "assistant",
        "content": module.first_message,
        "done": True,
        "model": model,
        "modelName": model,
        "modelIdx": 0,
        "timestamp": int(now),
        OPENING_KEY: text_digest(module.first_message),
    }
    return {
        "title": thread_title(course, module, title_tag),
        "models": [model],
        "params": {},
        "history": {"currentId": message_id, "messages": {message_id: message}},
        "messages": [message],
        "tags": [],
        "timestamp": int(now * 1000),
        MARKER_KEY: marker(course.course.id, module.id),
    }


def title_matches(title: object, course_id: str, module_id: str) -> bool:
    """Whether ``title`` carries the module's tag, in either form."""
    return isinstance(title, str) and any(
        tag(course_id, module_id, form) in title for form in ("visible", "hidden")
    )


@dataclass(frozen=True, slots=True)
class Thread:
    """A confirmed course thread, as read from ``GET /api/v1/chats/{id}``."""

    id: str
    created_at: int
    archived: bool
    # The one message still has the text it was created with (its digest matches).
    pristine: bool
    # The only message, while the thread holds just one assistant message (edited or not).
    opening: dict[str, Any] | None = None
    folder_id: str | None = None
    # The text of the thread's first message (the root of its history), replied to or not.
    first_content: str | None = None

    @property
    def replied(self) -> bool:
        """The person may have written in it (anything beyond our one message, or in it):
        theirs to keep, as far as the thread alone tells."""
        return not self.pristine

    def ours_with(self, text: str | None) -> bool:
        """Whether the thread holds nothing but a text we wrote: pristine, or its one
        message is exactly ``text``, the module's current first message (``None`` when the
        course no longer has the module)."""
        if self.pristine:
            return True
        return text is not None and self.opening is not None and self.opening.get("content") == text

    @property
    def rank(self) -> tuple[int, str]:
        """The winner is the smallest rank: oldest, then smallest id.

        Both parts are fixed when OpenWebUI creates the chat and never change, so every
        process that sees the same two threads picks the same winner, whenever it looks.
        """
        return (self.created_at, self.id)


def as_thread(chat: dict[str, Any], course_id: str, module_id: str) -> Thread | None:
    """The thread ``chat`` is for (course, module), or ``None`` if it is not one of ours."""
    body = chat.get("chat")
    if not isinstance(body, dict) or marked(body) != (course_id, module_id):
        return None
    if "originalChatId" in body:  # a clone or fork the user made
        return None
    chat_id, created_at = chat.get("id"), chat.get("created_at")
    if not isinstance(chat_id, str) or not isinstance(created_at, int):
        return None
    folder_id = chat.get("folder_id")
    return Thread(
        id=chat_id,
        created_at=created_at,
        archived=chat.get("archived") is True,
        pristine=_pristine(body),
        opening=_only_message(body) if _one_assistant_message(body) else None,
        folder_id=folder_id if isinstance(folder_id, str) else None,
        first_content=_first_content(body),
    )


Key = tuple[str, str]  # (course id, module id)


def marked(body: object) -> Key | None:
    """The (course, module) a chat JSON's marker names, or ``None`` when it has none.

    The one reading of the marker: the chat JSON is the person's to write, so the marker
    may be anything at all; only two strings name a module (anything else, a list or a
    dict that a set look-up would refuse, names none).
    """
    mark = body.get(MARKER_KEY) if isinstance(body, dict) else None
    if not isinstance(mark, dict):
        return None
    course_id, module_id = mark.get("course"), mark.get("module")
    if not isinstance(course_id, str) or not isinstance(module_id, str):
        return None
    return (course_id, module_id)


def threads_by_module(
    chats: Iterable[dict[str, Any]], wanted: Collection[Key]
) -> dict[Key, list[Thread]]:
    """The confirmed threads among whole chats (``ChatResponse``), grouped by (course, module).

    Only the chat JSON marker counts here, not the title: these chats were read whole.
    """
    found: dict[Key, list[Thread]] = {key: [] for key in wanted}
    for chat in chats:
        key = marked(chat.get("chat"))
        if key is not None and key in found:
            thread = as_thread(chat, *key)
            if thread is not None:
                found[key].append(thread)
    return found


def course_threads(
    chats: Iterable[dict[str, Any]], course_ids: Collection[str], module_id: str | None = None
) -> dict[Key, list[Thread]]:
    """Every confirmed thread of these courses among whole chats, whatever its module (or
    of one module), grouped by (course, module): what ``remove`` deletes, found by marker.
    A module no course file still has is found too: the marker is the course's."""
    found: dict[Key, list[Thread]] = {}
    for chat in chats:
        key = marked(chat.get("chat"))
        if key is None or key[0] not in course_ids:
            continue
        if module_id is not None and key[1] != module_id:
            continue
        thread = as_thread(chat, *key)
        if thread is not None:
            found.setdefault(key, []).append(thread)
    return found


def left_behind(chats: Iterable[dict[str, Any]], wanted: Collection[Key]) -> list[tuple[Key, str]]:
    """Threads of the wanted courses whose module the course no longer has: (key, chat id).

    They are left alone (they may hold the user's work) and only reported.
    """
    courses = {course_id for course_id, _ in wanted}
    found = []
    for chat in chats:
        body = chat.get("chat")
        if not isinstance(body, dict) or "originalChatId" in body:
            continue
        key = marked(body)
        if key is None or key[0] not in courses or key in wanted:
            continue
        if isinstance(chat.get("id"), str):
            found.append((key, str(chat["id"])))
    return found


def _only_message(body: dict[str, Any]) -> dict[str, Any] | None:
    (only,) = body["history"]["messages"].values()
    return dict(only)


def update_for(thread: Thread, course: Course, module: Module) -> dict[str, Any] | None:
    """The ``chat`` for ``POST /api/v1/chats/{id}`` that brings a pristine thread's message up
    to date with the course file, or ``None`` when there is nothing to change (or the user
    has replied: then the thread is theirs and is never changed).

    OpenWebUI merges an update into the stored chat key by key and message by message, and
    keeps the stored ``currentId`` when the update names none; so a reply landing between
    our look and this update is kept, and still shown.
    """
    if not thread.pristine or thread.opening is None:
        return None  # an opening whose text is not the one it was created with is theirs
    if thread.opening.get("content") == module.first_message:
        return None
    model = course.model_for(module)
    message = {**thread.opening, "content": module.first_message, "model": model}
    message["modelName"] = model
    message[OPENING_KEY] = text_digest(module.first_message)  # still ours after the rewrite
    return {"history": {"messages": {message["id"]: message}}, "messages": [message]}


def _first_content(body: dict[str, Any]) -> str | None:
    """The content of the history's root message (the one without a parent), if one."""
    history = body.get("history")
    messages = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(messages, dict):
        return None
    roots = [m for m in messages.values() if isinstance(m, dict) and m.get("parentId") is None]
    content = roots[0].get("content") if len(roots) == 1 else None
    return content if isinstance(content, str) else None


def _one_assistant_message(body: dict[str, Any]) -> bool:
    """True while the chat holds one message, an assistant's (edited or not)."""
    history = body.get("history")
    messages = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(messages, dict) or len(messages) != 1:
        return False
    (only,) = messages.values()
    return isinstance(only, dict) and only.get("role") == "assistant"


def _pristine(body: dict[str, Any]) -> bool:
    """True while the chat still holds only the assistant message we wrote, with the text
    it was created with: an opening the person edited (its digest no longer matches, or is
    gone) is not pristine."""
    if not _one_assistant_message(body):
        return False
    (only,) = body["history"]["messages"].values()
    return isinstance(only, dict) and written_by_us(only)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with the threads found for one module."""

    winner: Thread
    delete: tuple[Thread, ...]
    keep: tuple[Thread, ...]  # extra threads holding the user's own messages: never deleted


def plan(threads: Iterable[Thread], text: str | None = None) -> Plan | None:
    """Pick the winner and the duplicates to delete; ``None`` when there is no thread.

    ``text`` is the module's current first message: a duplicate holding exactly it is
    ours too (:meth:`Thread.ours_with`); without it only pristine ones are.
    """
    ordered = sorted(threads, key=lambda thread: thread.rank)
    if not ordered:
        return None
    winner, rest = ordered[0], ordered[1:]
    return Plan(
        winner=winner,
        delete=tuple(thread for thread in rest if thread.ours_with(text)),
        keep=tuple(thread for thread in rest if not thread.ours_with(text)),
    )


Action = Literal["create", "archive", "move", "delete", "update", "done"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What one round does for one module; ``plan`` is ``None`` only for ``create``.

    ``archive`` and ``move`` put the winner in its place (and delete the plan's duplicates
    in the same round), ``delete`` only deletes duplicates, ``update`` rewrites a first
    message nobody has replied to, ``done`` changes nothing.
    """

    action: Action
    plan: Plan | None


def decide(
    found: Iterable[Thread],
    course: Course,
    module: Module,
    *,
    folder_id: str | None,
    update_unreplied: bool,
) -> Decision:
    """The step for one module, given the threads found and the course folder's id
    (``folder`` placement; ``None`` while it does not exist). A real run does it; a dry
    run only says it."""
    found_plan = plan(found, module.first_message)
    if found_plan is None:
        return Decision("create", None)
    winner = found_plan.winner
    if course.course.placement == "folder":
        placed = folder_id is not None and not winner.archived and winner.folder_id == folder_id
        if not placed:
            return Decision("move", found_plan)
    elif not winner.archived:
        return Decision("archive", found_plan)
    if found_plan.delete:
        return Decision("delete", found_plan)
    if update_unreplied and update_for(winner, course, module) is not None:
        return Decision("update", found_plan)
    return Decision("done", found_plan)
