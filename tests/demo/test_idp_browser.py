"""The demo IdP in a real browser (Debian's chromium): the form, the cookie crossing from
the IdP's port to the app's port, the redirect back, and logout."""

from __future__ import annotations

import shutil
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from demo.idp import IdpConfig, create_app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> Any:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Debian's chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        await instance.close()


async def test_sign_in_return_and_sign_out_in_chromium(aiohttp_server, browser: Any) -> None:
    # The "application": asks the IdP's forward-auth endpoint with the browser's cookies,
    # as the proxy does, and shows who it got. Each server needs the other's URL.
    where: dict[str, str] = {}

    async def whoami(request: web.Request) -> web.Response:
        headers = {"Cookie": request.headers.get("Cookie", "")}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{where['idp']}/oauth2/auth", headers=headers) as answer,
        ):
            who = answer.headers.get("X-Auth-Request-Email", "anonymous")
        return web.Response(text=f"<p id=who>{who}</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/landing", whoami)
    app_server = await aiohttp_server(app)
    public_url = str(app_server.make_url("")).rstrip("/")
    idp_server = await aiohttp_server(
        create_app(IdpConfig(host="127.0.0.1", port=0, public_url=public_url, cookie_key=b"b" * 32))
    )
    idp = where["idp"] = str(idp_server.make_url("")).rstrip("/")

    page = await browser.new_page()
    await page.goto(f"{idp}/login?rd={public_url}/landing")
    assert "DEMO identity provider" in await page.content()
    await page.fill("#email", "Ada@Example.edu")
    await page.fill("#name", "Ada Lovelace")
    async with page.expect_navigation(url=f"{public_url}/landing"):
        await page.click("button[type=submit]")
    assert await page.text_content("#who") == "ada@example.edu"
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["owui_demo_session"]["httpOnly"] is True
    assert cookies["owui_demo_session"]["sameSite"] == "Lax"

    await page.goto(f"{idp}/logout")
    assert "signed out" in await page.content()
    await page.goto(f"{public_url}/landing")
    assert await page.text_content("#who") == "anonymous"
    await page.goto(f"{idp}/logout")
    await page.click("text=Sign in again")
    assert page.url.startswith(f"{idp}/login")
