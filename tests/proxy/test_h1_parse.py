"""What the response parser (llhttp, through httptools) lets through to ``h1``'s callbacks.

``_Exchange.on_header`` decodes names as UTF-8 where Latin-1 was once named: the same text
for ASCII, and the parser passes no other name. It also picks out the framing headers as
they arrive: the first of each, whatever the case of its name, as a multidict would.
"""

from __future__ import annotations

import asyncio

import httptools
import pytest
from multidict import CIMultiDict

from proxy import h1


class _Fields:
    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))


def _parsed_names(name: bytes) -> list[bytes] | None:
    """The names the parser hands on for a head with this header name; None if refused."""
    sink = _Fields()
    head = b"HTTP/1.1 200 OK\r\n" + name + b": v\r\nContent-Length: 0\r\n\r\n"
    try:
        httptools.HttpResponseParser(sink).feed_data(head)
    except httptools.HttpParserError:
        return None
    return [n for n, _ in sink.fields]


@pytest.mark.parametrize("byte", range(256))
def test_a_header_name_the_parser_passes_is_ascii(byte: int) -> None:
    names = _parsed_names(b"X" + bytes([byte]) + b"Y")
    if names is not None:
        assert all(n.isascii() for n in names)
        assert all(n.decode() == n.decode("latin-1") for n in names)
    if byte >= 0x80:
        assert names is None


# --------------------------------------------------------------------------- framing


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Pool:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle_timeout_s = 60.0

    def put_back(self, conn: object) -> None:
        pass

    def forget(self, conn: object) -> None:
        pass


def _head(raw: bytes, method: str = "GET") -> h1.Response:
    """The response ``raw`` gives an exchange, fed in one piece."""
    conn = h1._Connection(_Pool())  # type: ignore[arg-type]
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    exchange = conn.exchange = h1._Exchange(conn, method == "HEAD")
    conn.data_received(raw)
    assert exchange.head_waiter is not None
    return exchange.head_waiter.result()


def _reference(fields: list[tuple[str, str]]) -> tuple[str | None, str | None, str | None]:
    """The first Content-Length, Transfer-Encoding and Content-Type, as a multidict finds them."""
    headers = CIMultiDict(fields)
    return (
        headers.get("Content-Length"),
        headers.get("Transfer-Encoding"),
        headers.get("Content-Type"),
    )


@pytest.mark.parametrize(
    "fields",
    [
        [("Content-Length", "3"), ("Content-Type", "text/html")],
        [("content-length", "3"), ("content-type", "Text/HTML; charset=utf-8")],
        [("CONTENT-LENGTH", "3"), ("CONTENT-TYPE", "a/b"), ("Content-Type", "c/d")],
        [("Content-length", "3"), ("X-Content-Type", "x/y"), ("Content-Typo", "x/z")],
        [("Transfer-Encoding", "chunked"), ("content-TYPE", "a/b")],
        [("transfer-encoding", "gzip, chunked"), ("Content-Type", "")],
        [("Content-Length", "3")],
        [
            ("X-Twelve-Chr", "a"),
            ("X-Fourteen-Chrs", "b"),
            ("X-Seventeen-Chars", "c"),
            ("Content-Length", "3"),
        ],
    ],
)
async def test_the_framing_headers_are_the_first_of_each_whatever_their_case(
    fields: list[tuple[str, str]],
) -> None:
    length, coding, content_type = _reference(fields)
    chunked = coding is not None and "chunked" in coding.lower()
    body = b"3\r\nabc\r\n0\r\n\r\n" if chunked else b"abc"
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    response = _head(f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + body)
    assert response.header_list == fields
    assert response.content_length == (None if chunked or length is None else int(length))
    expected_type = "" if content_type is None else content_type.partition(";")[0].strip().lower()
    assert response.content_type == expected_type
    assert response.read_now() == b"abc"


async def test_an_informational_heads_framing_headers_do_not_carry_over() -> None:
    raw = (
        b"HTTP/1.1 103 Early Hints\r\nContent-Type: text/early\r\nContent-Length: 9\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    response = _head(raw)
    assert response.status == 200
    assert response.header_list == [("Transfer-Encoding", "chunked")]
    assert response.content_length is None
    assert response.content_type == ""
    assert response.read_now() == b"abc"
