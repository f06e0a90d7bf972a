"""A dot segment OpenWebUI takes as a route parameter is no way around a deny list.

Starlette matches ``{param}`` against one segment (``[^/]+``) and ``{param:path}`` against
the rest, dot segments included, and never resolves them: ``/oauth/../login`` is OpenWebUI's
OAuth sign-in with ``provider=".."``, ``/api/v1/auths/oauth/sessions/../../../../../x`` its
``DELETE /api/v1/auths/oauth/sessions/{provider:path}``. The deny lists (account creation,
API keys kept off ``/api/v1/auths`` and ``/oauth``) decided on the target's fold alone
(``Target.route``), which resolves those segments away (``/login``, ``/x``): the proxy relayed
what OpenWebUI's router sends to an account-creation endpoint, and an API key to
``/api/v1/auths/...``. They now decide on both readings: the fold, and the server's own
(dot segments kept).

Checked against OpenWebUI's server from its own parts (``tests/proxy/owui_server.py``:
uvicorn's request reading, FastAPI/Starlette routing of OpenWebUI 0.12.4's route templates).
"""

from __future__ import annotations

import pytest

from proxy import browser, socketio
from proxy.target import read_target
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.owui_server import ACCOUNT_CREATION, AUTHS, OpenWebUIServer
from tests.proxy.rawhttp import raw_request

# Endpoints under /api/v1/auths or /oauth: API keys never reach them.
NO_API_KEY = AUTHS | {"oauth_sessions", "oauth_clients", "oauth_backchannel"}

# OpenWebUI 0.12.4's route templates under the deny lists' prefixes whose parameters take a
# segment (or, for :path, the rest), and the method each answers.
TEMPLATES = [
    ("GET", "/oauth/{}/login"),
    ("GET", "/oauth/{}/login/callback"),
    ("GET", "/oauth/{}/callback"),
    ("GET", "/oauth/clients/{}/authorize"),
    ("GET", "/oauth/clients/{}/callback"),
    ("POST", "/api/v1/auths/oauth/{}/token/exchange"),
    ("DELETE", "/api/v1/auths/oauth/sessions/{}"),
    ("GET", "/api/v1/scim/v2/Users/{}"),
    ("DELETE", "/api/v1/scim/v2/Groups/{}"),
]
DOTS = [".", "..", "%2e%2e", "%2E.", ".%2e", "%2e"]
# Only a :path parameter takes several segments.
PATH_VALUES = ["../../../../../x", "%2e%2e/%2E%2E/../../../x", "google/../../../../../../y"]


def _targets() -> list[tuple[str, str]]:
    out = [(method, template.format(dot)) for method, template in TEMPLATES for dot in DOTS]
    out += [("DELETE", "/api/v1/auths/oauth/sessions/" + value) for value in PATH_VALUES]
    return out


@pytest.fixture(scope="module")
def server() -> OpenWebUIServer:
    return OpenWebUIServer()


@pytest.mark.parametrize(("method", "raw"), _targets())
async def test_the_deny_lists_agree_with_openwebuis_router(
    server: OpenWebUIServer, method: str, raw: str
) -> None:
    reading = await server.read(method, raw.encode("ascii"))
    assert reading is not None
    target = read_target(raw)
    assert target.problem is None
    assert reading.path == target.path  # the server reads what the proxy read
    endpoint = reading.endpoint
    if endpoint in ACCOUNT_CREATION:
        assert browser.account_creation(target) is not None, (raw, endpoint)
    if endpoint in NO_API_KEY:
        on_socketio = socketio.is_socketio_path(target.path)
        assert not browser.api_key_allowed(["Bearer sk-x"], target, on_socketio), (raw, endpoint)


@pytest.mark.parametrize(
    ("method", "raw", "endpoint"),
    [
        ("GET", "/oauth/../login", "oauth_login"),
        ("GET", "/oauth/%2e%2e/callback", "oauth_callback"),
        ("POST", "/api/v1/auths/oauth/../token/exchange", "oauth_token_exchange"),
        ("DELETE", "/api/v1/auths/oauth/sessions/../../../../../x", "oauth_sessions"),
    ],
)
async def test_the_server_does_route_them(
    server: OpenWebUIServer, method: str, raw: str, endpoint: str
) -> None:
    """The control: OpenWebUI's router sends these to those endpoints, and the fold alone
    resolves them off the deny lists' prefixes."""
    reading = await server.read(method, raw.encode("ascii"))
    assert reading is not None
    assert reading.endpoint == endpoint
    route = read_target(raw).route
    assert not route.startswith(("/oauth/", "/api/v1/auths/oauth/"))


def test_what_nobody_routes_there_is_not_refused() -> None:
    """The second reading only adds what the server's own reading starts with."""
    for raw in ("/api/v1/files/x/../content", "/c/../oauth-help", "/x/./y", "/static/./a.js"):
        assert browser.account_creation(read_target(raw)) is None, raw
        assert browser.api_key_allowed(["Bearer sk-x"], read_target(raw), False), raw


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("GET", "/oauth/../login"),
        ("GET", "/oauth/%2E%2E/login/callback?code=x&state=y"),
        ("POST", "/api/v1/auths/oauth/../token/exchange"),
    ],
)
async def test_the_proxy_refuses_them_before_openwebui(
    proxy, fake_upstream, method: str, raw: str
) -> None:
    server = proxy.server
    answer = await raw_request(
        server.host, server.port, raw, [("Cookie", ALICE_COOKIE["Cookie"])], method=method
    )
    assert answer.status == 403
    assert not any("oauth" in seen.raw_path for seen in fake_upstream.seen)


async def test_an_api_key_is_kept_off_a_dotted_auths_path(make_proxy, fake_upstream) -> None:
    client = await make_proxy(allow_api_keys=True)
    server = client.server
    raw = "/api/v1/auths/oauth/sessions/../../../../../x"
    answer = await raw_request(
        server.host, server.port, raw, [("Authorization", "Bearer sk-123")], method="DELETE"
    )
    # Refused at the edge (under /api/v1/auths/oauth/: account creation's prefix) and the
    # key kept off /api/v1/auths: either way, not relayed.
    assert answer.status in (401, 403)
    assert not any("sessions" in seen.raw_path for seen in fake_upstream.seen)
    # The control: the same key reaches an ordinary path.
    answer = await raw_request(
        server.host, server.port, "/api/v1/chats/", [("Authorization", "Bearer sk-123")]
    )
    assert answer.status == 200


@pytest.mark.parametrize(
    ("raw", "endpoint"),
    [
        ("/oauth/clients/login", "oauth_login"),
        ("/oauth/clients/callback", "oauth_callback"),
        ("/oauth/clients/x/callback", "oauth_clients"),
        ("/oauth/clients/login/callback", "oauth_clients"),
        ("/oauth/clients/x/authorize", "oauth_clients"),
    ],
)
async def test_tool_server_oauth_is_exactly_its_two_routes(
    server: OpenWebUIServer, raw: str, endpoint: str
) -> None:
    """``/oauth/clients/...`` is left alone only where OpenWebUI routes it to tool-server
    OAuth (``/oauth/clients/{client_id}/authorize`` and ``.../callback``): its router sends
    ``/oauth/clients/login`` to the OAuth sign-in, provider ``clients``, which the prefix
    ``/oauth/clients/`` let through."""
    reading = await server.read("GET", raw.encode("ascii"))
    assert reading is not None
    assert reading.endpoint == endpoint
    refused = browser.account_creation(read_target(raw)) is not None
    assert refused is (endpoint in ACCOUNT_CREATION), raw
