"""A trusted front proxy's X-Forwarded-For is every line of it, not the first one.

A header sent as several lines is one comma-separated list (RFC 9110 5.3), and front proxies
differ in how they extend the chain: nginx joins the client's value and its own into one
line, HAProxy's ``option forwardfor`` and others add a line of their own after the client's.
Reading only the first line kept the client's (forgeable) entries and dropped the entry the
trusted front proxy added, the only one anybody can believe: OpenWebUI (uvicorn's proxy
headers) and its logs were told the address the client made up.
"""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.headers import (
    build_upstream_headers,
    forwarded_view,
    request_headers_upstream,
)
from tests.proxy.test_headers import POLICY  # 10.0.0.0/8 trusted

SENT = [
    ("X-Forwarded-For", "6.6.6.6"),  # the client's own, forged
    ("X-Forwarded-For", "203.0.113.9"),  # the line the trusted front proxy added
]


def test_every_line_of_the_chain_is_kept_from_a_trusted_peer() -> None:
    view = forwarded_view(SENT, peer="10.1.2.3", scheme="http", host="h", policy=POLICY)
    # From the entry the trusted front proxy added on: the client's own is left out
    # (OpenWebUI takes the first entry for the client: test_forwarded_for_reading_r5.py).
    assert view.for_ == "203.0.113.9, 10.1.2.3"
    as_multidict = forwarded_view(
        CIMultiDict(SENT), peer="10.1.2.3", scheme="http", host="h", policy=POLICY
    )
    assert as_multidict == view


def test_what_openwebui_is_sent_starts_at_the_believed_client() -> None:
    view = forwarded_view(SENT, peer="10.1.2.3", scheme="http", host="h", policy=POLICY)
    for headers in (
        build_upstream_headers(
            SENT, peer="10.1.2.3", scheme="http", host="h", identity=None, policy=POLICY
        ),
        request_headers_upstream(
            CIMultiDict(SENT), identity=None, policy=POLICY, request_id=None, forwarded=view
        )[0],
    ):
        assert headers.getall("X-Forwarded-For") == ["203.0.113.9, 10.1.2.3"]


def test_empty_lines_add_no_empty_entries() -> None:
    sent = [("X-Forwarded-For", ""), ("X-Forwarded-For", " 1.2.3.4 "), ("X-Forwarded-For", " ")]
    view = forwarded_view(sent, peer="10.1.2.3", scheme="http", host="h", policy=POLICY)
    assert view.for_ == "1.2.3.4, 10.1.2.3"


def test_an_untrusted_peer_still_starts_the_chain() -> None:
    view = forwarded_view(SENT, peer="192.0.2.7", scheme="http", host="h", policy=POLICY)
    assert view.for_ == "192.0.2.7"
