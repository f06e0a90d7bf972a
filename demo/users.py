"""Who has signed in before, and the signup event a first sign-in produces.

The event is shaped like Clerk's ``user.created`` webhook, so the provisioner's receiver is
the one it would need in production. Ids are derived from the email, so a restarted demo
(with in-memory state) re-announces a user under the same id and the receiver can treat it
as the duplicate it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


class SeenUsers:
    """Emails that have signed in at least once: in memory, or in a small JSON file
    (``{"emails": [...]}``) when ``path`` is given, so a restart does not re-announce them."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._emails: set[str] = set()
        if path is not None and path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            self._emails = {str(e) for e in data.get("emails", [])}

    def first_login(self, email: str) -> bool:
        """Record ``email``; True if it had never signed in before."""
        if email in self._emails:
            return False
        self._emails.add(email)
        self._save()
        return True

    def _save(self) -> None:
        if self._path is None:
            return
        # Write-then-rename: a crash never leaves half a file behind.
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".seen-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"emails": sorted(self._emails)}, out)
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _stable_id(prefix: str, email: str) -> str:
    return f"{prefix}_{hashlib.sha256(f'{prefix}:{email}'.encode()).hexdigest()[:27]}"


def user_created_event(
    email: str, name: str | None, groups: tuple[str, ...] = (), now: float | None = None
) -> dict[str, Any]:
    """A Clerk-style ``user.created`` event for a first sign-in."""
    millis = int((time.time() if now is None else now) * 1000)
    first, _, last = (name or "").strip().partition(" ")
    email_id = _stable_id("idn", email)
    return {
        "type": "user.created",
        "object": "event",
        "timestamp": millis,
        "data": {
            "id": _stable_id("user", email),
            "object": "user",
            "email_addresses": [
                {
                    "id": email_id,
                    "object": "email_address",
                    "email_address": email,
                    "verification": {"status": "verified", "strategy": "demo"},
                }
            ],
            "primary_email_address_id": email_id,
            "first_name": first or None,
            "last_name": last.strip() or None,
            "public_metadata": {"groups": list(groups)} if groups else {},
            "created_at": millis,
            "updated_at": millis,
        },
    }
