"""A stand-in for oauth2-proxy in the compose test: its ``/oauth2/`` contract, without an IdP.

oauth2-proxy cannot be installed here (a Go binary published as a container image and a
GitHub release, neither reachable), so this small server plays it. It starts with the
compose file's own command line (``--config=FILE --http-address=HOST:PORT``), reads the
kit's ``oauth2-proxy.cfg`` (TOML, as oauth2-proxy reads it) and refuses settings owui-gate
could not work with. What it answers, under ``proxy_prefix``:

- ``GET  /auth``      202 with ``X-Auth-Request-Email``, ``-User`` and ``-Groups`` for a valid
  session cookie (``set_xauthrequest``), else 401: what owui-proxy asks about every request;
- ``GET  /start?rd=`` where the real one redirects to the IdP, a sign-in form (email, name,
  groups) standing in for the IdP's login;
- ``POST /callback``  where the real one redeems the IdP's code, sets the session cookie
  (``cookie_name``, HMAC-signed with ``OAUTH2_PROXY_COOKIE_SECRET``) and redirects to ``rd``
  when it is a path or a URL on a ``whitelist_domains`` host (else to ``/``);
- ``GET  /sign_out``  clears the cookie;
- ``GET  /ping``      200 (outside the prefix, as oauth2-proxy's).

Emails outside ``email_domains`` get no session. Every request is printed to stdout as
``<METHOD> <path>`` so the test can read, with ``podman logs``, what reached it.
Python's standard library only: the image is the bare base image.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class Config:
    def __init__(self, argv: list[str]) -> None:
        flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv if "=" in arg)
        with open(flags["config"], "rb") as handle:
            cfg: dict[str, Any] = tomllib.load(handle)
        address = flags.get("http-address", cfg.get("http_address", "127.0.0.1:4180"))
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.prefix = cfg.get("proxy_prefix", "/oauth2").rstrip("/")
        self.cookie = cfg.get("cookie_name", "_oauth2_proxy")
        self.domains = [d.lower() for d in cfg.get("email_domains", [])]
        self.whitelist = [d.lower().lstrip(".") for d in cfg.get("whitelist_domains", [])]
        if cfg.get("set_xauthrequest") is not True:
            sys.exit("set_xauthrequest must be true: owui-proxy reads the X-Auth-Request-* headers")
        if cfg.get("upstreams") != ["static://202"]:
            sys.exit('upstreams must be ["static://202"]: this service only answers /oauth2/auth')
        secret = os.environ.get("OAUTH2_PROXY_COOKIE_SECRET", "")
        if len(secret) < 16:
            sys.exit("OAUTH2_PROXY_COOKIE_SECRET is missing or too short")
        self.key = secret.encode()

    def admits(self, email: str) -> bool:
        domain = email.rpartition("@")[2].lower()
        return "*" in self.domains or domain in self.domains

    def safe_redirect(self, rd: str) -> str:
        if rd.startswith("/") and not rd.startswith("//"):
            return rd
        target = urlsplit(rd)
        host = (target.hostname or "").lower()
        if target.scheme == "https" and any(
            host == d or host.endswith("." + d) for d in self.whitelist
        ):
            return rd
        return "/"

    def seal(self, session: dict[str, str]) -> str:
        # No '=' padding: clients quote cookie values holding one.
        body = base64.urlsafe_b64encode(json.dumps(session).encode()).decode().rstrip("=")
        mac = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def unseal(self, value: str) -> dict[str, str] | None:
        body, _, mac = value.partition(".")
        good = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, good):
            return None
        session: dict[str, str] = json.loads(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        )
        return session


FORM = """<!doctype html><title>Sign in (oauth2-proxy stand-in)</title>
<form method="post" action="{action}"><input type="hidden" name="rd" value="{rd}">
<input name="email"> <input name="name"> <input name="groups">
<button>Sign in</button></form>"""


def handler(config: Config) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per request is printed by handle_one()

        def do_GET(self) -> None:
            self.handle_one()

        def do_POST(self) -> None:
            self.handle_one()

        def handle_one(self) -> None:
            path, _, query = self.path.partition("?")
            print(f"{self.command} {path}", flush=True)
            route = (self.command, path.removeprefix(config.prefix))
            if (self.command, path) == ("GET", "/ping"):
                self.answer(200, "OK")
            elif not path.startswith(config.prefix + "/"):
                self.answer(404, "not found")
            elif route == ("GET", "/auth"):
                self.auth()
            elif route == ("GET", "/start"):
                rd = parse_qs(query).get("rd", ["/"])[0]
                page = FORM.format(action=f"{config.prefix}/callback", rd=html.escape(rd))
                self.answer(200, page, content_type="text/html; charset=utf-8")
            elif route == ("POST", "/callback"):
                self.callback()
            elif route == ("GET", "/sign_out"):
                self.answer(302, "", [("Location", "/"), ("Set-Cookie", self.cookie("", 0))])
            else:
                self.answer(404, "not found")

        def session(self) -> dict[str, str] | None:
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == config.cookie:
                    return config.unseal(value)
            return None

        def auth(self) -> None:
            session = self.session()
            if session is None:
                self.answer(401, "Unauthorized")
                return
            headers = [("X-Auth-Request-Email", session["email"])]
            if session.get("name"):
                headers.append(("X-Auth-Request-User", session["name"]))
            if session.get("groups"):
                headers.append(("X-Auth-Request-Groups", session["groups"]))
            self.answer(202, "Accepted", headers)

        def callback(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            email = form.get("email", "").strip().lower()
            if "@" not in email or not config.admits(email):
                self.answer(403, "email domain not allowed")
                return
            session = {"email": email, "name": form.get("name", "")}
            session["groups"] = form.get("groups", "")
            location = config.safe_redirect(form.get("rd", "/"))
            cookie = self.cookie(config.seal(session), 12 * 3600)
            self.answer(302, "", [("Location", location), ("Set-Cookie", cookie)])

        def cookie(self, value: str, max_age: int) -> str:
            return (
                f"{config.cookie}={value}; Path=/; Max-Age={max_age}; "
                "HttpOnly; Secure; SameSite=Lax"
            )

        def answer(
            self,
            status: int,
            body: str,
            headers: Sequence[tuple[str, str]] = (),
            content_type: str = "text/plain; charset=utf-8",
        ) -> None:
            data = body.encode()
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    config = Config(sys.argv[1:])
    server = ThreadingHTTPServer(config.address, handler(config))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {config.address[0]}:{config.address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
