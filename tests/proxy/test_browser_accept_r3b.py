"""A client that prefers JSON (or refuses HTML) never gets one of the proxy's HTML pages."""

from __future__ import annotations

import pytest

from proxy.browser import is_browser_navigation


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("text/html;q=0.9, application/json;q=0.9", True),  # a tie: the page
        ("application/json, text/plain, */*", False),
        ("*/*", False),
        ("", False),
        ("application/json, text/html;q=0", False),  # q=0: not acceptable at all
        ("text/html;q=0", False),
        ("text/html ; q=0.000", False),
        ("application/json, text/html;q=0.5", False),  # JSON preferred
        ("text/html;q=0.1, */*", False),  # anything (JSON) preferred to HTML
        ("application/*, text/html;q=0.5", False),
        ("text/htmlx", False),
        ("application/x-text/html", False),
        ("text/html;q=bogus", False),
    ],
)
def test_only_a_client_that_prefers_html_gets_a_page(accept: str, page: bool) -> None:
    assert is_browser_navigation("GET", accept, websocket=False) is page
