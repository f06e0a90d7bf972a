"""The proxy's own pages for browsers (proxy/pages.py): which page, which language, every
value escaped, the operator's templates checked at start; API calls keep getting JSON."""

from __future__ import annotations

import asyncio
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from proxy.app import Runtime, create_admin_app, create_app
from proxy.errors import (
    AccessDenied,
    AuthServiceUnavailable,
    BadIdentity,
    Forbidden,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.pages import (
    BUILT_IN_LANGUAGES,
    PLACEHOLDERS,
    Page,
    Pages,
    PagesError,
    load_folder,
    negotiate,
    page_for,
)
from proxy.release_watch import UnsafeRelease
from proxy.settings import SettingsError, load_settings
from tests.proxy.conftest import BOB_COOKIE
from tests.proxy.test_internal import internal  # noqa: F401 - the fixture
from tests.proxy.test_relay import _closed_port

PAGE_LOAD = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
BUILT_IN = ("en", "de", "fr", "es")


@pytest.mark.parametrize(
    ("accept_language", "available", "expected"),
    [
        pytest.param(None, BUILT_IN, "en", id="no-header-english"),
        pytest.param("", BUILT_IN, "en", id="empty-english"),
        pytest.param("de", BUILT_IN, "de", id="exact"),
        pytest.param("DE", BUILT_IN, "de", id="case-insensitive"),
        pytest.param("de-AT,de;q=0.9,en;q=0.8", BUILT_IN, "de", id="region-falls-to-language"),
        pytest.param("fr-CH, fr;q=0.9, en;q=0.8, *;q=0.5", BUILT_IN, "fr", id="browser-typical"),
        pytest.param("en;q=0.5, es", BUILT_IN, "es", id="q-value-beats-order"),
        pytest.param("es;q=0.8, fr;q=0.8", BUILT_IN, "es", id="tie-keeps-the-order-sent"),
        pytest.param("it, es;q=0.5", BUILT_IN, "es", id="unknown-skipped"),
        pytest.param("it", BUILT_IN, "en", id="nothing-matches-english"),
        pytest.param("*", BUILT_IN, "en", id="star-is-the-default"),
        pytest.param("de;q=0, fr;q=0.1", BUILT_IN, "fr", id="q0-is-not-this-one"),
        pytest.param("de;q=abc, fr;q=0.5", BUILT_IN, "fr", id="bad-q-ignored"),
        pytest.param("de;q=2", BUILT_IN, "en", id="q-over-one-ignored"),
        pytest.param(" ; , ;q=1,", BUILT_IN, "en", id="garbage"),
        pytest.param("x" * 10_000 + ",de", BUILT_IN, "en", id="overlong-cut"),
        pytest.param("de", ("en", "de-ch"), "de-ch", id="range-matches-tag-under-it"),
        pytest.param("pt-BR", (*BUILT_IN, "pt-br"), "pt-br", id="operator-language"),
        pytest.param("it", ("fr", "it-ch"), "it-ch", id="under-without-english"),
        pytest.param("nl", ("fr", "it"), "fr", id="no-english-first-available"),
    ],
)
def test_the_browsers_language_is_negotiated(accept_language, available, expected) -> None:
    assert negotiate(accept_language, available) == expected


@pytest.mark.parametrize(
    ("error", "page"),
    [
        (AccessDenied("not in the domain", email="bob@example.edu"), "access-denied"),
        (UnsafeRelease(), "openwebui-release"),
        (UpstreamTimeout(), "openwebui-timeout"),
        (UpstreamUnavailable(), "openwebui-down"),
        (AuthServiceUnavailable(), "auth-down"),
        (BadIdentity(), "error"),
        (Forbidden("cross-site sign-out refused"), "error"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_each_error_has_its_page(error, page) -> None:
    assert page_for(error).name == page


class _Document(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.title = ""
        self.links: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang")
        self._in_title = tag == "title"
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False


def _values(page: str) -> dict[str, str]:
    return {name: f"<{name}>" for name in PLACEHOLDERS[page]}


@pytest.mark.parametrize("page", list(PLACEHOLDERS))
def test_every_built_in_page_exists_in_four_languages_each_its_own(page: str) -> None:
    assert BUILT_IN_LANGUAGES == BUILT_IN
    pages = Pages("/api/v1/auths/signout")
    texts = set()
    for lang in BUILT_IN:
        chosen, text = pages.render(
            Page(page, _values(page)), lang, {"status": "503", "request_id": "r1"}
        )
        assert chosen == lang
        document = _Document()
        document.feed(text)
        assert document.lang == lang
        assert document.title.strip()
        assert "r1" in text  # the reference support asks for
        texts.add(document.title)
    assert len(texts) == len(BUILT_IN)  # translated, not copied


def test_every_value_is_html_escaped_in_text_and_attributes() -> None:
    pages = Pages('https://idp.example/logout?a=1&b="><script>x</script>')
    hostile = "<script>alert(1)</script>\"'&"
    _lang, text = pages.render(
        Page("access-denied", {"email": hostile, "reason": hostile}),
        "en",
        {"status": "403", "request_id": hostile},
    )
    assert "<script>" not in text
    assert html.escape(hostile, quote=True) in text
    assert 'href="https://idp.example/logout?a=1&amp;b=&quot;&gt;&lt;script&gt;' in text
    _lang, text = pages.render(
        Page("error", {"message": hostile}), "en", {"status": "400", "request_id": "r"}
    )
    assert "<script>" not in text


def _write(folder: Path, name: str, text: str | bytes) -> None:
    folder.mkdir(exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    (folder / name).write_bytes(data)


def test_an_operators_folder_replaces_pages_and_adds_languages(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    _write(folder, "access-denied.en.html", "<p>Ours: $email, <a href='$signout_url'>out</a></p>")
    _write(
        folder, "access-denied.it.html", "<p>Nessun accesso: $email <a href=$signout_url>esci</a>"
    )
    _write(folder, "openwebui-down.en.html", "<p>Down ($status, $$5)</p>")
    pages = Pages("/out", folder)
    page = Page("access-denied", {"email": "a@b.c", "reason": "r"})
    common = {"status": "403", "request_id": "r"}
    assert pages.render(page, "en", common) == ("en", "<p>Ours: a@b.c, <a href='/out'>out</a></p>")
    assert pages.render(page, "it-IT", common)[0] == "it"
    assert "Kein Zugang" in pages.render(page, "de", common)[1]  # the built-in German stays
    assert pages.render(Page("openwebui-down", {}), "en", common)[1] == "<p>Down (403, $5)</p>"


def test_every_problem_of_an_operators_folder_is_named_with_its_fix(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    _write(folder, "acess-denied.en.html", "typo in the name")
    _write(folder, "access-denied.EN.html", "upper-case language")
    _write(folder, "access-denied.de.html", "<p>$email, no way out</p>")
    _write(folder, "openwebui-down.fr.html", "<p>$emial</p>")
    _write(folder, "auth-down.es.html", "<p>costs 5 $ today</p>")
    _write(folder, "error.de.html", b"\xff\xfe not utf-8")
    _write(folder, ".hidden", "editors leave these; ignored")
    with pytest.raises(PagesError) as caught:
        load_folder(folder)
    problems = "\n".join(caught.value.problems)
    assert "acess-denied.en.html: not a page template; name one PAGE.LANG.html" in problems
    assert "access-denied.EN.html: not a page template" in problems
    assert "access-denied.de.html: $signout_url is missing; this page must show it" in problems
    assert "openwebui-down.fr.html: unknown placeholder $emial (this page knows" in problems
    assert "auth-down.es.html: a '$' that starts no placeholder; write '$$'" in problems
    assert "error.de.html: not UTF-8" in problems
    assert ".hidden" not in problems
    assert len(caught.value.problems) == 6
    with pytest.raises(PagesError, match="is not a folder"):
        load_folder(tmp_path / "missing")


def test_a_bad_folder_stops_the_start_with_the_other_setting_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pages"
    _write(folder, "access-denied.en.html", "<p>$email</p>")
    monkeypatch.setenv("OWUI_PROXY_UPSTREAM", "http://127.0.0.1:8080")
    monkeypatch.setenv("OWUI_PROXY_AUTH", "forward")
    monkeypatch.setenv("OWUI_PROXY_LISTEN", "nowhere")
    monkeypatch.setenv("OWUI_PROXY_PAGES_DIR", str(folder))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert any(
        p.startswith("OWUI_PROXY_PAGES_DIR: ") and "$signout_url is missing" in p
        for p in caught.value.problems
    ), caught.value.problems
    assert any(p.startswith("OWUI_PROXY_LISTEN: ") for p in caught.value.problems)


# --- through the proxy -------------------------------------------------------------------


def _page(response_text: str) -> _Document:
    document = _Document()
    document.feed(response_text)
    return document


async def test_access_refused_page_in_german_and_json_for_the_api(make_proxy) -> None:
    logout = "https://idp.example.edu/logout"
    proxy = await make_proxy(allowed_email_domains="school.edu", logout_url=logout)
    response = await proxy.get(
        "/", headers={**BOB_COOKIE, **PAGE_LOAD, "Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
    )
    assert response.status == 403
    assert response.content_type == "text/html"
    assert response.headers["Content-Language"] == "de"
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    text = await response.text()
    assert "Sie sind als <strong>bob@example.edu</strong> angemeldet" in text
    assert _page(text).links[0] == logout
    assert response.headers["X-Request-ID"] in text
    api = await proxy.get("/api/models", headers={**BOB_COOKIE, "Accept": "application/json"})
    assert api.status == 403
    assert (await api.json())["code"] == "access_denied"


async def test_openwebui_down_page_in_french(make_proxy) -> None:
    proxy = await make_proxy(upstream=f"http://127.0.0.1:{_closed_port()}")
    response = await proxy.get("/", headers={**PAGE_LOAD, "Accept-Language": "fr"})
    assert response.status == 502
    assert _page(await response.text()).title == "Le service de chat est injoignable"
    api = await proxy.get("/api/models")
    assert api.status == 502
    assert "error" in await api.json()


async def test_openwebui_timeout_page_in_spanish(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(response_timeout_s=0.2)
    response = await proxy.get(
        "/slow?delay=5", headers={**BOB_COOKIE, **PAGE_LOAD, "Accept-Language": "es-MX"}
    )
    assert response.status == 504
    assert response.headers["Content-Language"] == "es"
    assert _page(await response.text()).title == "El servicio de chat tarda demasiado"


async def test_auth_service_down_page(settings_for, aiohttp_client) -> None:
    settings = settings_for(forward_auth_url=f"http://127.0.0.1:{_closed_port()}/oauth2/auth")
    proxy = await aiohttp_client(create_app(settings))
    response = await proxy.get("/", headers={**BOB_COOKIE, **PAGE_LOAD})
    assert response.status == 503
    assert _page(await response.text()).title == "Sign-in is not available right now"
    api = await proxy.get("/api/models", headers=BOB_COOKIE)
    assert (api.status, api.content_type) == (503, "application/json")


async def test_release_refused_page(settings_for, aiohttp_client, fake_upstream) -> None:
    runtime = Runtime(settings_for())
    await runtime.start()
    try:
        public = await aiohttp_client(create_app(runtime.settings, runtime))
        admin = await aiohttp_client(
            create_admin_app(runtime.settings, runtime, check_every_s=0.05)
        )
        fake_upstream.version = "0.6.5"  # replaced while the proxy runs
        for _ in range(100):  # until the readiness check, in the background, has read it
            if (await admin.get("/readyz")).status == 503:
                break
            await asyncio.sleep(0.05)
        response = await public.get(
            "/", headers={**BOB_COOKIE, **PAGE_LOAD, "Accept-Language": "de"}
        )
        assert response.status == 503
        title = _page(await response.text()).title
        assert title == "Der Chat-Dienst ist wegen Wartung geschlossen"
        api = await public.get("/api/models", headers=BOB_COOKIE)
        assert (await api.json())["code"] == "openwebui_release"
    finally:
        await runtime.close()


async def test_other_errors_get_the_general_page_with_the_status(make_proxy) -> None:
    proxy = await make_proxy()
    response = await proxy.get("/", headers=PAGE_LOAD)  # no session, no login URL: 401
    assert response.status == 401
    text = await response.text()
    assert _page(text).title == "Something went wrong"
    assert "Error 401: authentication required" in text
    refused = await proxy.get(
        "/api/v1/auths/signout",
        headers={**BOB_COOKIE, **PAGE_LOAD, "Sec-Fetch-Site": "cross-site"},
    )
    assert refused.status == 403
    assert "cross-site sign-out refused" in await refused.text()


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"Accept": "application/json"}),
        ("GET", {}),
        ("POST", PAGE_LOAD),
        ("GET", {**PAGE_LOAD, "Upgrade": "websocket", "Connection": "Upgrade"}),
    ],
    ids=["json-accept", "no-accept", "post", "websocket"],
)
async def test_anything_but_a_page_load_gets_json(make_proxy, method, headers) -> None:
    proxy = await make_proxy(upstream=f"http://127.0.0.1:{_closed_port()}")
    response = await proxy.request(method, "/x", headers=headers)
    assert response.status == 502
    assert response.content_type == "application/json"


async def test_a_head_page_load_gets_the_status_and_headers(make_proxy) -> None:
    proxy = await make_proxy(upstream=f"http://127.0.0.1:{_closed_port()}")
    response = await proxy.head("/", headers={**PAGE_LOAD, "Accept-Language": "de"})
    assert response.status == 502
    assert response.content_type == "text/html"
    assert response.headers["Content-Language"] == "de"
    assert await response.read() == b""


async def test_the_operators_pages_are_served(make_proxy, tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    _write(folder, "openwebui-down.en.html", "<title>Our school: back soon</title>$request_id")
    proxy = await make_proxy(upstream=f"http://127.0.0.1:{_closed_port()}", pages_dir=str(folder))
    response = await proxy.get("/", headers=PAGE_LOAD)
    text = await response.text()
    assert re.fullmatch(r"<title>Our school: back soon</title>[0-9a-f]{32}", text)


async def test_the_internal_listener_answers_json_even_to_a_page_load(
    internal,  # noqa: F811 - the fixture
) -> None:
    """Services call it: a refusal stays JSON whatever the request accepts."""
    response = await internal.client.get("/api/config", headers=PAGE_LOAD)
    assert response.status == 407
    assert response.content_type == "application/json"
