"""What the shipped nginx edge writes to its access log: never a query string or a Referer.

The proxy logs each request's path without its query string ("which can carry secrets",
docs/proxy.md; "Never in any log: ... query strings", docs/operations.md). nginx in front of
it sees the same requests first. Without a format of its own, the site inherits nginx's
`combined` format, whose `$request` is the whole request line (query string included) and
which adds the Referer (another page's whole URL). The OIDC callback's authorization code and
state reach nginx as `/oauth2/callback?code=...&state=...`.

Run with Debian's nginx and the shipped site file (tests/deploy/edge.py); the access log
files are every one the test's main context or the site file names.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

import pytest

from tests.deploy.clients import raw_https
from tests.deploy.conftest import TestTLS
from tests.deploy.edge import SERVER_NAME, SITE_CONF
from tests.deploy.test_nginx import edge_in_front_of
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.nginx

ACCESS_LOG = re.compile(r"^\s*access_log\s+(\S+?)[\s;]", re.M)


def site_access_logs() -> list[Path]:
    """The access log files the shipped site file itself names (none means inherited)."""
    text = SITE_CONF.read_text(encoding="utf-8")
    return list(dict.fromkeys(Path(p) for p in ACCESS_LOG.findall(text) if p != "off"))


def logged(files: list[Path], start: dict[Path, int]) -> str:
    """What nginx appended to ``files`` since ``start`` (their sizes before the requests)."""
    out = []
    for path in files:
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(start.get(path, 0))
                out.append(fh.read().decode("utf-8", "replace"))
    return "".join(out)


async def test_the_edge_access_log_holds_no_query_string_and_no_referer(
    tmp_path: Path, tls: TestTLS, nginx_bin: str
) -> None:
    code, state, query, referer = (secrets.token_hex(12) for _ in range(4))
    marker = secrets.token_hex(6)  # in the path: the request is logged, and found by it
    proxy, auth = FakeUpstream(), FakeUpstream()
    files = [tmp_path / "nginx" / "logs" / "access.log", *site_access_logs()]
    start = {p: p.stat().st_size for p in files if p.exists()}
    async with edge_in_front_of(tmp_path, tls, proxy.app(), auth=auth.app()) as edge:
        for target in (
            f"/oauth2/callback/{marker}?code={code}&state={state}",
            f"/c/{marker}?q={query}",
        ):
            response = await raw_https(
                edge.https,
                [
                    f"GET {target} HTTP/1.1",
                    f"Host: {SERVER_NAME}",
                    f"Referer: https://idp.example.edu/auth?session={referer}",
                    "Connection: close",
                ],
                ctx=tls.client_context(),
            )
            assert response.status < 500
        # nginx writes each line when the request ends; give the worker a moment.
        await asyncio.sleep(0.2)
    text = logged(files, start)
    assert text.count(marker) == 2, text  # both requests are logged, once each
    for secret in (code, state, query, referer):
        assert secret not in text, text
