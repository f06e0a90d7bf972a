"""Where a sign-in may return to: under the public URL, nowhere else."""

from __future__ import annotations

import pytest

from demo.redirect import safe_redirect

PUBLIC = "http://127.0.0.1:8000"
PREFIXED = "https://chat.example.edu/owui"


@pytest.mark.parametrize(
    ("rd", "public", "expected"),
    [
        pytest.param(
            "http://127.0.0.1:8000/c/123?x=1",
            PUBLIC,
            "http://127.0.0.1:8000/c/123?x=1",
            id="same-origin",
        ),
        pytest.param("http://127.0.0.1:8000", PUBLIC, "http://127.0.0.1:8000", id="bare-origin"),
        pytest.param("/c/123", PUBLIC, "http://127.0.0.1:8000/c/123", id="path-only"),
        pytest.param(None, PUBLIC, PUBLIC, id="absent"),
        pytest.param("", PUBLIC, PUBLIC, id="empty"),
        pytest.param("https://evil.test/", PUBLIC, PUBLIC, id="other-host"),
        pytest.param("//evil.test/x", PUBLIC, PUBLIC, id="scheme-relative"),
        pytest.param("/\\evil.test", PUBLIC, PUBLIC, id="slash-backslash"),
        pytest.param("http://127.0.0.1:8000@evil.test/", PUBLIC, PUBLIC, id="userinfo-trick"),
        pytest.param("http://127.0.0.1:8001/", PUBLIC, PUBLIC, id="other-port"),
        pytest.param("https://127.0.0.1:8000/", PUBLIC, PUBLIC, id="other-scheme"),
        pytest.param("http://127.0.0.1:8000.evil.test/", PUBLIC, PUBLIC, id="host-suffix"),
        pytest.param("javascript:alert(1)", PUBLIC, PUBLIC, id="javascript"),
        pytest.param("http://127.0.0.1:8000/\tx", PUBLIC, PUBLIC, id="tab"),
        pytest.param("http://127.0.0.1:8000/\r\nSet-Cookie:x", PUBLIC, PUBLIC, id="crlf"),
        pytest.param(
            "https://chat.example.edu/owui/c/1",
            PREFIXED,
            "https://chat.example.edu/owui/c/1",
            id="under-prefix",
        ),
        pytest.param(
            "https://CHAT.example.edu/owui",
            PREFIXED,
            "https://CHAT.example.edu/owui",
            id="host-case",
        ),
        pytest.param("https://chat.example.edu/owuix", PREFIXED, PREFIXED, id="prefix-lookalike"),
        pytest.param("https://chat.example.edu/other", PREFIXED, PREFIXED, id="outside-prefix"),
    ],
)
def test_safe_redirect(rd: str | None, public: str, expected: str) -> None:
    assert safe_redirect(rd, public) == expected
