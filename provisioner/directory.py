"""Who has an OpenWebUI account, found without creating anyone's.

OpenWebUI creates an account on a person's first trusted sign-in, and every chat call needs
a signed-in person: so ``status``, ``--dry-run`` and ``remove`` must know whether a person
has an account *before* signing in as them. Without admin credentials (the internal
listener never acts as an admin), the one read-only source is OpenWebUI's user directory,
``GET /api/v1/users/search``, which any ordinary user may read (0.12.4 lets people find each
other there to share with): it lists id, name, email and role, matching ``query`` against
emails and names with SQL ``ILIKE '%query%'``, 30 a page.

It is read as the **lookup account** (``OWUI_PROVISION_LOOKUP_EMAIL``): an ordinary account
the operator names, signed in once per run. That sign-in creates it the first time; it is
the only account these commands can create, and it never gets threads.

For a few people each is searched for by email (``_`` and ``%`` in an address are
wildcards there, so matches are compared exactly). For many (more than a page), the whole
directory is read once, ordered by email (unique, so pages do not overlap), and whoever is
not in it is searched for once more: an account deleted while the pages were read shifts
the later pages by one and could hide someone, and the second look makes "no account" sure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from provisioner.client import USERS_PAGE_SIZE, OpenWebUI, UserSession
from provisioner.errors import (
    AdminAccount,
    ApiError,
    ConfigError,
    LookupAccountUnusable,
    Unavailable,
)

# A directory (or one search) longer than this many pages is refused, not read forever.
MAX_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class Account:
    """What the directory says of a person: their OpenWebUI role (user, pending, admin)."""

    email: str
    role: str


class Directory:
    """Accounts by email, read as the lookup account; never signs in as anyone else."""

    def __init__(self, api: OpenWebUI, lookup_email: str | None) -> None:
        self._api = api
        self._lookup_email = lookup_email
        self._session: UserSession | None = None
        self._lock = asyncio.Lock()
        self._known: dict[str, Account | None] = {}

    async def _as_lookup(self) -> UserSession:
        async with self._lock:
            if self._session is None:
                if self._lookup_email is None:
                    raise ConfigError(
                        "OWUI_PROVISION_LOOKUP_EMAIL: required for status, --dry-run and "
                        "remove: they must know who has an OpenWebUI account without signing "
                        "in as them (a first sign-in creates the account). Name an ordinary "
                        "account for the provisioner to look people up as, e.g. "
                        "provisioner@your-school.example; signing in as it creates it once"
                    )
                try:
                    session = await self._api.signin(self._lookup_email, "owui-provision lookup")
                except AdminAccount as exc:
                    raise LookupAccountUnusable(self._lookup_email, "admin") from exc
                if session.role != "user":
                    raise LookupAccountUnusable(self._lookup_email, session.role)
                self._session = session
        return self._session

    async def _pages(self, query: str | None) -> list[dict[str, object]]:
        session = await self._as_lookup()
        found: list[dict[str, object]] = []
        for page in range(1, MAX_PAGES + 1):
            try:
                batch = await session.search_users(query, page)
            except ApiError as exc:
                if exc.status == 401:  # a pending lookup account, made so since sign-in
                    raise LookupAccountUnusable(session.email, "pending") from exc
                raise
            found.extend(batch)
            if len(batch) < USERS_PAGE_SIZE:
                return found
        raise Unavailable(f"GET /api/v1/users/search: still full after {MAX_PAGES} pages")

    async def account(self, email: str) -> Account | None:
        """The account of ``email`` (validated, lower-case), or ``None`` if it has none."""
        if email not in self._known:
            matches = await self._pages(email)
            self._known[email] = _exact(matches, email)
        return self._known[email]

    async def prefetch(self, emails: Sequence[str]) -> None:
        """Know many people at once: read the whole directory when that is fewer calls."""
        wanted = [email for email in dict.fromkeys(emails) if email not in self._known]
        if len(wanted) <= USERS_PAGE_SIZE:
            return  # one search each is no more calls than the directory's first page
        everyone = {
            str(user["email"]).lower(): user
            for user in await self._pages(None)
            if isinstance(user.get("email"), str) and str(user["email"]).isascii()
        }
        for email in wanted:
            if email in everyone:
                self._known[email] = _exact([everyone[email]], email)
        # Whoever is missing is asked once more, alone (see the module docstring).


def _exact(users: Sequence[dict[str, object]], email: str) -> Account | None:
    for user in users:
        found = user.get("email")
        # ASCII before lower(): an account stored as "\u212aate@..." (KELVIN SIGN) is not kate's.
        if isinstance(found, str) and found.isascii() and found.lower() == email:
            role = user.get("role")
            return Account(email, role if isinstance(role, str) else "unknown")
    return None
