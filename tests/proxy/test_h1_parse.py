"""What the response parser (llhttp, through httptools) lets through to ``h1``'s callbacks.

``_Exchange.on_header`` decodes names as UTF-8 where Latin-1 was once named: the same text
for ASCII, and the parser passes no other name.
"""

from __future__ import annotations

import httptools
import pytest


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
