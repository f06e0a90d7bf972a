"""A trusted front proxy's X-Forwarded-Proto/-Host: the entry it added, the last one.

A header sent as several lines is one comma-separated list (RFC 9110 5.3). A front proxy
that extends the list (a line of its own after the client's, as HAProxy's ``add-header``
does, or its entry appended to the client's line) puts what it knows last; what comes before
it is whatever the client sent. Reading the first entry of the first line believed the
client's own value: ``X-Forwarded-Host: evil.example`` became the ``Host`` and
``X-Forwarded-Host`` OpenWebUI and the auth service were told (absolute URLs, redirects),
``X-Forwarded-Proto: http`` the scheme. The closest hop's entry, the last, is read now
(as for ``X-Forwarded-For``, whose chain ends with it).
"""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.headers import build_upstream_headers, forwarded_view, request_headers_upstream
from tests.proxy.test_headers import POLICY  # 10.0.0.0/8 trusted

CASES = [
    # (what came, the proto and host the trusted front proxy vouches for)
    (
        [
            ("X-Forwarded-Proto", "http"),  # the client's, forged
            ("X-Forwarded-Host", "evil.example"),  # the client's, forged
            ("X-Forwarded-Proto", "https"),  # the front proxy's own line
            ("X-Forwarded-Host", "chat.example.edu"),  # the front proxy's own line
        ],
        ("https", "chat.example.edu"),
    ),
    (
        [
            ("X-Forwarded-Proto", "http, https"),  # appended on the client's line
            ("X-Forwarded-Host", "evil.example, chat.example.edu"),
        ],
        ("https", "chat.example.edu"),
    ),
    (
        [("X-Forwarded-Proto", " https "), ("X-Forwarded-Host", " chat.example.edu ")],
        ("https", "chat.example.edu"),
    ),
]


@pytest.mark.parametrize(("sent", "vouched"), CASES)
def test_the_closest_hops_entry_is_believed(
    sent: list[tuple[str, str]], vouched: tuple[str, str]
) -> None:
    for headers in (sent, CIMultiDict(sent)):
        view = forwarded_view(headers, peer="10.1.2.3", scheme="http", host="h", policy=POLICY)
        assert (view.proto, view.host) == vouched


@pytest.mark.parametrize(("sent", "vouched"), CASES)
def test_what_openwebui_is_sent(sent: list[tuple[str, str]], vouched: tuple[str, str]) -> None:
    view = forwarded_view(sent, peer="10.1.2.3", scheme="http", host="h", policy=POLICY)
    for headers in (
        build_upstream_headers(
            sent, peer="10.1.2.3", scheme="http", host="h", identity=None, policy=POLICY
        ),
        request_headers_upstream(
            CIMultiDict(sent), identity=None, policy=POLICY, request_id=None, forwarded=view
        )[0],
    ):
        assert headers.getall("X-Forwarded-Proto") == [vouched[0]]
        assert headers.getall("X-Forwarded-Host") == [vouched[1]]
        assert headers.getall("Host") == [vouched[1]]


def test_an_empty_last_entry_is_no_value() -> None:
    """A trailing comma or an empty line names nothing: the proxy's own view stands."""
    sent = [("X-Forwarded-Proto", "https,"), ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Host", " ")]  # fmt: skip
    view = forwarded_view(sent, peer="10.1.2.3", scheme="http", host="h", policy=POLICY)
    assert (view.proto, view.host) == ("http", "h")


def test_an_untrusted_peer_is_never_believed() -> None:
    sent = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example")]
    view = forwarded_view(sent, peer="192.0.2.7", scheme="http", host="h", policy=POLICY)
    assert (view.proto, view.host) == ("http", "h")
