"""``owui-demo-idp``: a DEMO identity provider, its own process, bound to loopback only.

What a real IdP in front of owui-gate does, in the smallest honest form:

- ``GET /login?rd=URL``   a form (email, name, optional groups); anyone may be anyone.
- ``POST /login``         sets a signed HttpOnly SameSite=Lax session cookie and redirects
                          to ``rd`` when it lies under ``--public-url`` (else to the public URL).
- ``GET /oauth2/auth``    forward-auth like oauth2-proxy: 202 with ``X-Auth-Request-Email``,
                          ``-User`` (the display name) and ``-Groups``, or 401.
- ``GET /logout``         drops the cookie; a "signed out, sign in again" page.
- first sign-in of an email: a Clerk-style ``user.created`` event POSTed to ``--webhook-url``,
  signed with the Standard Webhooks scheme, retried in the background.

Cookies are scoped to a host, not a port, so on one machine the cookie set here on
``127.0.0.1:4180`` also reaches the proxy on ``127.0.0.1:8000``, which hands it to
``/oauth2/auth`` like any forward-auth cookie. Use the same host name for both.
"""

from __future__ import annotations

import argparse
import html
import ipaddress
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import aiohttp
import structlog
from aiohttp import web

from demo import session as sessions
from demo.delivery import DEFAULT_RETRY_DELAYS, WebhookSender
from demo.redirect import safe_redirect
from demo.users import SeenUsers, user_created_event
from proxy import version
from proxy.identity import InvalidIdentity, make_identity
from proxy.webhooks import BadSecret, secret_key

log = structlog.get_logger(__name__)

COOKIE_NAME = "owui_demo_session"
MIN_COOKIE_SECRET_BYTES = 32
BANNER = """
  ************************************************************************
  *  DEMO IDENTITY PROVIDER - NOT FOR PRODUCTION                         *
  *  Anyone can sign in as anyone by typing an email address.            *
  *  Use a real IdP (oauth2-proxy, Authelia, Cloudflare Access, ...).    *
  ************************************************************************
"""

_SENDER = web.AppKey("sender", WebhookSender)


@dataclass(frozen=True, slots=True)
class IdpConfig:
    host: str
    port: int
    public_url: str
    cookie_key: bytes
    webhook_url: str | None = None
    webhook_secret: str | None = None
    state_file: Path | None = None
    session_ttl_s: int = 12 * 3600
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6); refuses any host that is not loopback."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:4180")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{value!r}: the demo IdP binds to loopback only (127.0.0.1, ::1)")
    return host, int(port)


# --- pages ------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}"
    ".demo{background:#fde68a;border:2px solid #b45309;padding:.6rem;font-weight:bold}"
    "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem}"
    "button{margin-top:1rem;padding:.5rem 1.2rem}.error{color:#b91c1c}"
)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f"<meta name=viewport content='width=device-width'><style>{_STYLE}</style></head><body>"
        "<p class=demo>DEMO identity provider: anyone can sign in as anyone. "
        "Not for production.</p>"
        f"<h1>{title}</h1>{body}</body></html>"
    )
    response = web.Response(text=text, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    # Nobody may frame the login form (clickjacking) or load anything into it. No
    # form-action: browsers apply it to the redirect after the POST, which leaves this origin.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _login_form(rd: str, error: str | None = None, email: str = "", name: str = "") -> str:
    e = html.escape
    problem = f"<p class=error>{e(error)}</p>" if error else ""
    return (
        f"{problem}<form method=post action=/login>"
        f"<input type=hidden name=rd value='{e(rd, quote=True)}'>"
        f"<label for=email>Email</label><input id=email name=email type=email required "
        f"value='{e(email, quote=True)}' autofocus>"
        f"<label for=name>Name</label><input id=name name=name value='{e(name, quote=True)}'>"
        "<label for=groups>Groups (comma-separated, optional)</label>"
        "<input id=groups name=groups>"
        "<button type=submit>Sign in</button></form>"
    )


# --- handlers ---------------------------------------------------------------------------------


class Handlers:
    def __init__(self, config: IdpConfig, seen: SeenUsers) -> None:
        self._config = config
        self._seen = seen
        self._secure = urlsplit(config.public_url).scheme == "https"

    async def login_page(self, request: web.Request) -> web.Response:
        rd = safe_redirect(request.query.get("rd"), self._config.public_url)
        return _page("Sign in", _login_form(rd))

    async def login(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            # Login CSRF: another site must not sign the browser in as someone else.
            return _page("Sign in", "<p class=error>Cross-site sign-in refused.</p>", 403)
        form = await request.post()
        rd = safe_redirect(_field(form, "rd"), self._config.public_url)
        email, name = _field(form, "email"), _field(form, "name")
        try:
            identity = make_identity(email, name, _field(form, "groups"))
        except InvalidIdentity as exc:
            return _page("Sign in", _login_form(rd, exc.reason, email, name), 400)
        value = sessions.encode(
            self._config.cookie_key,
            sessions.Session(
                identity.email,
                identity.name,
                identity.groups,
                int(time.time()) + self._config.session_ttl_s,
            ),
        )
        response = web.Response(status=303, headers={"Location": rd, "Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE_NAME,
            value,
            max_age=self._config.session_ttl_s,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self._secure,
        )
        first = self._seen.first_login(identity.email)
        log.info("demo_login", email=identity.email, first_login=first)
        sender = request.app.get(_SENDER)
        if first and sender is not None:
            sender.send(user_created_event(identity.email, identity.name, identity.groups))
        return response

    async def forward_auth(self, request: web.Request) -> web.Response:
        found = sessions.decode(
            self._config.cookie_key, request.cookies.get(COOKIE_NAME), time.time()
        )
        if found is None:
            return web.Response(status=401, headers={"Cache-Control": "no-store"})
        headers = {"X-Auth-Request-Email": found.email, "Cache-Control": "no-store"}
        if found.name:
            headers["X-Auth-Request-User"] = found.name
        if found.groups:
            headers["X-Auth-Request-Groups"] = ",".join(found.groups)
        return web.Response(status=202, headers=headers)

    async def logout(self, request: web.Request) -> web.Response:
        again = "/login?" + urlencode({"rd": self._config.public_url})
        response = _page(
            "Signed out",
            f"<p>You are signed out.</p><p><a href='{html.escape(again, quote=True)}'>"
            "Sign in again</a></p>",
        )
        response.del_cookie(
            COOKIE_NAME, path="/", secure=self._secure, httponly=True, samesite="Lax"
        )
        return response

    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/login")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


def _field(form: Mapping[str, object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""  # files or absent fields count as empty


def create_app(config: IdpConfig) -> web.Application:
    app = web.Application()
    handlers = Handlers(config, SeenUsers(config.state_file))
    app.router.add_get("/", handlers.root)
    app.router.add_get("/login", handlers.login_page)
    app.router.add_post("/login", handlers.login)
    app.router.add_get("/oauth2/auth", handlers.forward_auth)
    app.router.add_get("/logout", handlers.logout)
    app.router.add_get("/healthz", handlers.healthz)
    if config.webhook_url is not None and config.webhook_secret is not None:
        app.cleanup_ctx.append(_webhook_sender(config.webhook_url, config.webhook_secret, config))
    return app


def _webhook_sender(
    url: str, secret: str, config: IdpConfig
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as client:
            sender = WebhookSender(url, secret, client, retry_delays=config.retry_delays)
            app[_SENDER] = sender
            yield
            await sender.close()

    return context


# --- command line -----------------------------------------------------------------------------


def _read_secret_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise SystemExit(f"owui-demo-idp: cannot read {what} {path}: {exc.strerror}") from exc


def config_from_args(argv: Sequence[str] | None = None) -> IdpConfig:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="owui-demo-idp", description="DEMO identity provider for owui-gate (loopback only)."
    )
    parser.add_argument("--listen", default=env("OWUI_DEMO_IDP_LISTEN", "127.0.0.1:4180"))
    parser.add_argument(
        "--public-url",
        default=env("OWUI_DEMO_IDP_PUBLIC_URL", "http://127.0.0.1:8000"),
        help="The proxy's public URL: sign-ins may only return under it.",
    )
    parser.add_argument("--webhook-url", default=env("OWUI_DEMO_IDP_WEBHOOK_URL"))
    parser.add_argument(
        "--webhook-secret-file",
        type=Path,
        default=env("OWUI_DEMO_IDP_WEBHOOK_SECRET_FILE"),
        help="File holding the whsec_... secret shared with the webhook receiver.",
    )
    parser.add_argument(
        "--cookie-secret-file",
        type=Path,
        default=env("OWUI_DEMO_IDP_COOKIE_SECRET_FILE"),
        help="File holding >= 32 bytes; default: random per process (restart = signed out).",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=env("OWUI_DEMO_IDP_STATE_FILE"),
        help="JSON file remembering who signed in before; default: in memory only.",
    )
    parser.add_argument("--version", action="version", version=f"owui-demo-idp {version()}")
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    public = urlsplit(args.public_url)
    if public.scheme not in ("http", "https") or not public.netloc:
        parser.error(f"--public-url {args.public_url!r} is not an http(s) URL")
    if (args.webhook_url is None) != (args.webhook_secret_file is None):
        parser.error("--webhook-url and --webhook-secret-file go together")
    if args.webhook_url is not None:
        hook = urlsplit(args.webhook_url)
        if hook.scheme not in ("http", "https") or not hook.netloc:
            parser.error(f"--webhook-url {args.webhook_url!r} is not an http(s) URL")
    secret = None
    if args.webhook_secret_file is not None:
        secret = _read_secret_file(args.webhook_secret_file, "webhook secret").decode()
        try:
            secret_key(secret)
        except BadSecret as exc:
            parser.error(f"--webhook-secret-file: {exc}")
    cookie_key = secrets.token_bytes(32)
    if args.cookie_secret_file is not None:
        cookie_key = _read_secret_file(args.cookie_secret_file, "cookie secret")
        if len(cookie_key) < MIN_COOKIE_SECRET_BYTES:
            parser.error(f"--cookie-secret-file: needs at least {MIN_COOKIE_SECRET_BYTES} bytes")
    return IdpConfig(
        host=host,
        port=port,
        public_url=args.public_url.rstrip("/"),
        cookie_key=cookie_key,
        webhook_url=args.webhook_url,
        webhook_secret=secret,
        state_file=args.state_file,
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = config_from_args(argv)
    print(BANNER, file=sys.stderr, flush=True)
    print(
        f"  demo IdP on http://{config.host}:{config.port}/login  "
        f"(returns to {config.public_url}; webhooks: {config.webhook_url or 'off'})\n",
        file=sys.stderr,
        flush=True,
    )
    web.run_app(create_app(config), host=config.host, port=config.port, print=None)


if __name__ == "__main__":  # pragma: no cover
    main()
