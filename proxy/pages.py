"""The proxy's own answers to a browser's page load: HTML pages in the reader's language.

When the public listener answers a page load itself (a GET or HEAD asking for ``text/html``)
with an error, the person gets a page saying what happened and what to do, not JSON:

========================  ======  ===============================================
page                      status  when
========================  ======  ===============================================
``access-denied``         403     the access rules refuse who is signed in
``openwebui-down``        502     OpenWebUI cannot be reached
``openwebui-timeout``     504     OpenWebUI does not answer in time
``auth-down``             503     the auth service (or the JWT key set) fails
``openwebui-release``     503     OpenWebUI runs a release the proxy refuses
``error``                 any     every other error the proxy answers itself
========================  ======  ===============================================

API calls (anything else) keep getting JSON (``proxy/respond.py``, the one place errors
become answers, asks :meth:`Pages.answer` first).

The language is the best match of the browser's ``Accept-Language`` (q-values honoured)
among the languages a page exists in; English when none matches. Built-in: English, German,
French, Spanish (``proxy/page_templates/``). ``pages_dir`` names a folder of the operator's
own, ``PAGE.LANG.html`` files (``access-denied.de.html``), each replacing the built-in one
or adding a language; every file is checked at start. Templates are ``string.Template``
text: ``$name`` or ``${name}`` (``$$`` is a dollar sign); every value is HTML-escaped, so a
template may put one in an attribute too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from aiohttp import web

from proxy.browser import is_browser_navigation
from proxy.errors import (
    AccessDenied,
    AuthServiceUnavailable,
    ConfigProblems,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

DEFAULT_LANGUAGE = "en"
# Every page may use these.
COMMON = frozenset({"status", "request_id"})
# Per page: the placeholders it may use, and those it must (a refused person needs the way out).
PLACEHOLDERS: Mapping[str, frozenset[str]] = {
    "access-denied": frozenset({"email", "reason", "signout_url"}),
    "openwebui-down": frozenset(),
    "openwebui-timeout": frozenset(),
    "auth-down": frozenset(),
    "openwebui-release": frozenset(),
    "error": frozenset({"message"}),
}
REQUIRED: Mapping[str, frozenset[str]] = {"access-denied": frozenset({"signout_url"})}
BUILT_IN_LANGUAGES = ("en", "de", "fr", "es")

_FILE = re.compile(r"^(?P<page>[a-z-]+)\.(?P<lang>[a-z]{2,3}(?:-[a-z0-9]{1,8})*)\.html$")
_MAX_TEMPLATE_BYTES = 64 * 1024
_MAX_ACCEPT_LANGUAGE = 4096
# RFC 9110's language-range, at most eight subtags: anything else is no language and is
# skipped (a 4 KB range of 2,000 subtags cost 14 ms of matching on every page answered).
_LANGUAGE_RANGE = re.compile(r"[a-z]{1,8}(?:-[a-z0-9]{1,8}){0,7}|\*", re.ASCII)
# No script is needed to read a page; inline styles and images (https or data:) may be.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Vary": "Accept, Accept-Language",
}


class PagesError(ConfigProblems):
    """The page templates cannot be used; each problem names the file and the fix."""


@dataclass(frozen=True, slots=True)
class Page:
    """Which page answers an error, and its own values (the common ones are added)."""

    name: str
    values: Mapping[str, str]


def page_for(exc: ProxyError) -> Page:
    """The page a browser gets for ``exc``."""
    if isinstance(exc, AccessDenied):
        return Page("access-denied", {"email": exc.email or "", "reason": exc.reason})
    if exc.code == "openwebui_release":
        return Page("openwebui-release", {})
    if isinstance(exc, UpstreamTimeout):
        return Page("openwebui-timeout", {})
    if isinstance(exc, UpstreamUnavailable):
        return Page("openwebui-down", {})
    if isinstance(exc, AuthServiceUnavailable):
        return Page("auth-down", {})
    return Page("error", {"message": exc.reason})


def is_page_load(request: web.BaseRequest) -> bool:
    """A browser loading a page (GET/HEAD asking for HTML), as opposed to an API call."""
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    return is_browser_navigation(request.method, request.headers.get("Accept"), websocket)


def negotiate(accept_language: str | None, available: Collection[str]) -> str:
    """The language of ``available`` the browser prefers most (``DEFAULT_LANGUAGE`` when
    none matches, or the first of ``available`` without that).

    Ranges are taken by q-value, highest first, ties in the order sent; ``q=0`` is "not
    this one". A range matches a tag exactly, then by its prefix (``de-AT`` is served
    ``de``), then a tag under it (``de`` is served ``de-ch`` when that is all there is);
    ``*`` is the default.
    """
    fallback = DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in available else sorted(available)[0]
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "")[:_MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = item.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
        if 0 < q <= 1 and _LANGUAGE_RANGE.fullmatch(tag):
            ranked.append((-q, position, tag))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            return fallback
        parts = tag.split("-")
        for end in range(len(parts), 0, -1):
            prefix = "-".join(parts[:end])
            if prefix in available:
                return prefix
        under = sorted(lang for lang in available if lang.startswith(tag + "-"))
        if under:
            return under[0]
    return fallback


def _check(text: str, page: str, where: str) -> tuple[Template | None, list[str]]:
    template = Template(text)
    if not template.is_valid():
        return None, [
            f"{where}: a '$' that starts no placeholder; write '$$' for a dollar sign, "
            "'$name' or '${name}' for a value"
        ]
    allowed = COMMON | PLACEHOLDERS[page]
    used = set(template.get_identifiers())
    problems = [
        f"{where}: unknown placeholder ${name} (this page knows "
        f"{', '.join('$' + known for known in sorted(allowed))})"
        for name in sorted(used - allowed)
    ]
    problems += [
        f"{where}: ${name} is missing; this page must show it"
        for name in sorted(REQUIRED.get(page, frozenset()) - used)
    ]
    return (template if not problems else None), problems


def _built_in() -> dict[str, dict[str, Template]]:
    folder = resources.files("proxy") / "page_templates"
    pages: dict[str, dict[str, Template]] = {}
    for page in PLACEHOLDERS:
        for lang in BUILT_IN_LANGUAGES:
            text = (folder / f"{page}.{lang}.html").read_text(encoding="utf-8")
            template, problems = _check(text, page, f"built-in {page}.{lang}.html")
            if template is None:  # a packaging mistake, caught by the tests
                raise PagesError(problems)
            pages.setdefault(page, {})[lang] = template
    return pages


def load_folder(folder: Path) -> dict[str, dict[str, Template]]:
    """The operator's templates in ``folder``; raises :class:`PagesError` listing every
    problem of every file."""
    if not folder.is_dir():
        raise PagesError([f"{folder} is not a folder"])
    pages: dict[str, dict[str, Template]] = {}
    problems: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        match = _FILE.fullmatch(path.name)
        if match is None or match["page"] not in PLACEHOLDERS:
            problems.append(
                f"{path}: not a page template; name one PAGE.LANG.html, PAGE one of "
                f"{', '.join(PLACEHOLDERS)}, LANG a lower-case language tag (de, pt-br)"
            )
            continue
        # Only a regular file (a link to one included), and never more than one byte past
        # the limit: a named pipe blocked the start, a device (/dev/zero) read without end.
        try:
            if not path.is_file():
                problems.append(f"{path}: not a regular file")
                continue
            with path.open("rb") as file:
                data = file.read(_MAX_TEMPLATE_BYTES + 1)
        except OSError as exc:
            problems.append(f"{path}: cannot read ({exc.strerror})")
            continue
        if len(data) > _MAX_TEMPLATE_BYTES:
            problems.append(f"{path}: larger than {_MAX_TEMPLATE_BYTES} bytes")
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{path}: not UTF-8; save it as UTF-8")
            continue
        template, found = _check(text, match["page"], str(path))
        problems += found
        if template is not None:
            pages.setdefault(match["page"], {})[match["lang"]] = template
    if problems:
        raise PagesError(problems)
    return pages


class Pages:
    """Every page in every language it exists in: built-in, then the operator's over them."""

    def __init__(self, signout_url: str, folder: Path | None = None) -> None:
        self.signout_url = signout_url
        self.templates = _built_in()
        if folder is not None:
            for page, by_language in load_folder(folder).items():
                self.templates[page].update(by_language)

    def render(
        self, page: Page, accept_language: str | None, common: Mapping[str, str]
    ) -> tuple[str, str]:
        """``(language, HTML)`` of ``page``; every value HTML-escaped."""
        by_language = self.templates[page.name]
        lang = negotiate(accept_language, by_language)
        values = dict(common) | dict(page.values)
        if page.name == "access-denied":
            values["signout_url"] = self.signout_url
        escaped = {name: html.escape(str(value), quote=True) for name, value in values.items()}
        return lang, by_language[lang].substitute(escaped)

    def answer(
        self,
        request: web.BaseRequest,
        status: int,
        page: Page,
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        lang, text = self.render(
            page,
            request.headers.get("Accept-Language"),
            {"status": str(status), "request_id": request_id},
        )
        response = web.Response(
            status=status, text=text, content_type="text/html", headers=dict(headers or {})
        )
        response.headers.update(_HEADERS)
        response.headers["Content-Language"] = lang
        return response


PAGES_KEY = web.AppKey("owui_pages", Pages)
