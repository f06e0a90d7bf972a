"""Every log line reaches a shared pipe in one write no other worker's line can split.

Workers share stdout and stderr (a pipe, in a container). POSIX makes a write of at most
``PIPE_BUF`` bytes (4096 on Linux) atomic; a longer line goes out in pieces, and another
worker's line can land between them: both become unreadable to whatever parses the log,
so an access or audit line can be hidden by a request with a long target sent at the same
moment. Before: a line longer than ``PIPE_BUF`` (an 8 KiB target; an email or path of
non-ASCII characters, each escaped to six bytes; a traceback) was written as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import logs

LIMIT = logs._ATOMIC_WRITE


class _Writes:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/api/v1/" + "a" * 8000 + "/end", id="8-KiB-ascii-target"),
        pytest.param("/" + "é" * 2000 + "/end", id="non-ascii-escaped-to-six-bytes"),
        pytest.param("/" + "\U0001f600" * 1000 + "/end", id="astral-escaped-to-twelve-bytes"),
        pytest.param("/" + '"\\' * 3000 + "/end", id="quotes-and-backslashes"),
    ],
)
async def test_an_access_line_with_a_long_target_fits_one_write(monkeypatch, path: str) -> None:
    out = _Writes()
    monkeypatch.setattr(logs._access, "out", out)
    logs.access("rid-long", "internal", "GET", path, 200, 12, 1.5, 0.5, "ada@example.edu")
    logs.access("rid-next", "internal", "GET", "/x", 200)
    import asyncio

    await asyncio.sleep(0)
    for text in out.writes:
        assert len(text.encode()) <= LIMIT
    first, second = (json.loads(line) for line in "".join(out.writes).splitlines())
    assert (first["request_id"], first["email"], first["status"]) == (
        "rid-long",
        "ada@example.edu",
        200,
    )
    assert first["path"].startswith(path[:20])
    assert first["path"].endswith("/end")
    assert "characters cut]" in first["path"]
    assert list(first) == [
        "request_id", "listener", "method", "path", "status", "bytes", "duration_ms",
        "upstream_ms", "email", "peer", "client_request_id", "event", "level", "timestamp",
    ]  # fmt: skip
    assert second["request_id"] == "rid-next"


def test_a_short_line_is_left_as_it_is() -> None:
    text = json.dumps({"event": "x", "path": "/a" * 100})
    assert logs.fit(text) is text


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(
            st.text(max_size=3000),
            st.integers(),
            st.none(),
            st.lists(st.text(max_size=400), max_size=8),
        ),
        max_size=40,
    )
)
def test_any_line_is_made_to_fit_and_stays_one_json_object(fields: dict[str, Any]) -> None:
    text = json.dumps({"event": "e", "level": "info", **fields})
    fitted = logs.fit(text, LIMIT - 1)
    assert len(fitted.encode()) <= LIMIT - 1
    assert "\n" not in fitted
    parsed = json.loads(fitted)
    assert parsed["event"] == "e"
    if len(text) <= LIMIT - 1:
        assert fitted == text


_PROGRAM = """
import logging, sys
from proxy import logs
logs.configure("info")
logs.get().warning("long_detail", detail="d" * 9000, request_id="r1")
try:
    raise ValueError("x" * 9000)
except ValueError:
    logging.getLogger("somewhere").exception("failed_loudly")
"""


def test_structlog_and_standard_library_lines_fit_one_write() -> None:
    """The other lines (structlog's on stdout, the standard library's on stderr, a traceback
    in its ``exception`` field) are cut the same way: the start and the end kept."""
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    (out,) = done.stdout.splitlines()
    (err,) = done.stderr.splitlines()
    for line in (out, err):
        assert len(line.encode()) + 1 <= LIMIT
    warning = json.loads(out)
    assert (warning["event"], warning["request_id"]) == ("long_detail", "r1")
    assert warning["detail"].startswith("ddd")
    assert "characters cut]" in warning["detail"]
    failure = json.loads(err)
    assert failure["event"] == "failed_loudly"
    assert failure["exception"].startswith("Traceback")
    assert failure["exception"].endswith("x" * 10)  # the error itself, at the end, is kept
