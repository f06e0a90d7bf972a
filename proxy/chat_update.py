"""What the internal listener lets a service write into an existing chat: exactly what the
provisioner writes, on the provisioner's own threads. Pure, tested by a table.

OpenWebUI's ``POST /api/v1/chats/{id}`` merges the chat JSON it is given into the stored one,
key by key and message by message, for any chat of the user. Relayed unchecked, a service
token could plant a user message the person never wrote, variables, another model, in any
of their chats. The provisioner needs one thing there (``--update-unreplied``,
``provisioner/threads.py``: ``update_for``): to rewrite the opening assistant message of a
thread it created, while nobody has replied to it. Its body is::

    {"chat": {"history": {"messages": {"<id>": M}}, "messages": [M]}}

where ``M`` is the stored message with a new ``content``, ``model`` and ``modelName``, and
the digest of its new content under :data:`DIGEST_KEY`. So the internal listener first
reads the chat as the same user (``GET /api/v1/chats/{id}``) and relays the update only
when:

- the stored chat is a provisioner's thread: it carries :data:`MARKER_KEY` (a
  ``{"course", "module"}`` object) and is no clone or fork (no ``originalChatId``);
- it holds one message, the assistant's, at the root (nobody has replied), whose content
  still has the digest it was written with: OpenWebUI lets a person edit any message of
  their own chats, the assistant's included, and an opening they edited is their text;
- the body is exactly the shape above, naming that message, and ``M`` is the stored message
  with only :data:`REWRITABLE` changed, each to a string, and :data:`DIGEST_KEY` the digest
  of its new content.

The read and the write are two requests: a reply landing in the milliseconds between them
is merged as OpenWebUI merges any update (the provisioner's own look-then-update has the
same window).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# The key under which the provisioner marks the chats it creates (provisioner/threads.py
# writes it; a test keeps the two equal).
MARKER_KEY = "owui_gate"
# The only message fields an update may change (and the digest, to its new content's).
REWRITABLE = frozenset({"content", "model", "modelName"})
# In a thread's opening message: the digest of the text the provisioner wrote there
# (provisioner/threads.py writes it with :func:`text_digest`).
DIGEST_KEY = "owui_gate_sha256"


def text_digest(text: str) -> str:
    """What :data:`DIGEST_KEY` holds for a message whose content is ``text``: SHA-256, hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def written_by_us(message: dict[str, Any]) -> bool:
    """Whether ``message`` still holds the text it was written with (its digest matches).
    Plain ``==``: no secret here, and the digest is the person's to write."""
    content = message.get("content")
    return isinstance(content, str) and message.get(DIGEST_KEY) == text_digest(content)


_UPDATE_PATH = re.compile(
    r"/api/v1/chats/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def is_update(method: str, path: str) -> bool:
    """``POST /api/v1/chats/{id}`` on the allowlist's canonical path."""
    return method == "POST" and _UPDATE_PATH.fullmatch(path) is not None


def refusal(body: bytes, stored: Any) -> str | None:
    """None when ``body`` is the provisioner's update of ``stored`` (the chat as
    ``GET /api/v1/chats/{id}`` answered it); else why not, safe to show and log."""
    opening = _opening(stored)
    if opening is None:
        return "not a thread the provisioner created and nobody has written in"
    try:
        update = json.loads(body)
    except (ValueError, RecursionError):
        return "the body is not JSON"
    message = _updated_message(update)
    if message is None:
        return (
            'the body is not {"chat": {"history": {"messages": {ID: M}}, "messages": [M]}} '
            "for one message M"
        )
    if message.get("id") != opening.get("id"):
        return "the body names another message than the thread's opening one"
    kept = set(opening) - REWRITABLE - {DIGEST_KEY}
    if set(message) - REWRITABLE - {DIGEST_KEY} != kept or any(
        not _same(message[key], opening[key]) for key in kept
    ):
        return f"the body changes more of the message than {', '.join(sorted(REWRITABLE))}"
    if not all(isinstance(message.get(key), str) for key in REWRITABLE):
        return f"{', '.join(sorted(REWRITABLE))} must each be a string"
    if not written_by_us(message):
        return f"{DIGEST_KEY} must be the digest of the new content"
    return None


def _opening(stored: Any) -> dict[str, Any] | None:
    """The only message of a provisioner's thread nobody has replied to, else None."""
    chat = stored.get("chat") if isinstance(stored, dict) else None
    if not isinstance(chat, dict) or "originalChatId" in chat:
        return None
    mark = chat.get(MARKER_KEY)
    if not (
        isinstance(mark, dict)
        and isinstance(mark.get("course"), str)
        and isinstance(mark.get("module"), str)
    ):
        return None
    history = chat.get("history")
    messages = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(messages, dict) or len(messages) != 1:
        return None
    ((message_id, message),) = messages.items()
    if (
        not isinstance(message, dict)
        or message.get("id") != message_id
        or message.get("role") != "assistant"
        or message.get("parentId") is not None
        or not written_by_us(message)  # the person edited it (or it predates the digest)
    ):
        return None
    return message


def _updated_message(update: Any) -> dict[str, Any] | None:
    """M, if ``update`` is exactly the provisioner's shape for one message M."""
    if not isinstance(update, dict) or set(update) != {"chat"}:
        return None
    chat = update["chat"]
    if not isinstance(chat, dict) or set(chat) != {"history", "messages"}:
        return None
    history, listed = chat["history"], chat["messages"]
    if not isinstance(history, dict) or set(history) != {"messages"}:
        return None
    messages = history["messages"]
    if not isinstance(messages, dict) or len(messages) != 1:
        return None
    ((message_id, message),) = messages.items()
    if not isinstance(message, dict) or message.get("id") != message_id:
        return None
    if listed != [message]:
        return None
    return message


def _same(one: Any, other: Any) -> bool:
    """Equal as JSON: Python's == takes ``true`` for ``1`` and ``1.0``."""
    return json.dumps(one, sort_keys=True) == json.dumps(other, sort_keys=True)
