"""``h1.encode_head`` against a plain reference: the same heads, the same refusals.

The client's check for CR, LF and NUL looks at the header values alone; the reference
counts the line breaks of the whole head, as the check once did. Both must accept and
refuse exactly the same inputs, and write the same bytes.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy import h1
from proxy.errors import BadRequest

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")


def reference(method: str, target: str, headers: CIMultiDict[str]) -> bytes:
    """The head as the client wrote it when it counted the head's CRs and LFs."""
    if _BAD_IN_TARGET.search(target):
        raise BadRequest("target")
    if not all(_TOKEN.fullmatch(token) for token in (method, *headers.keys())):
        raise BadRequest("token")
    text = "\r\n".join([f"{method} {target} HTTP/1.1", *map(": ".join, headers.items()), "", ""])
    breaks = len(headers) + 2
    if text.count("\n") != breaks or text.count("\r") != breaks or "\x00" in text:
        raise BadRequest("CR, LF or NUL")
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise BadRequest("not encodable") from exc


def outcome(encode, method: str, target: str, headers: CIMultiDict[str]) -> bytes | None:  # type: ignore[no-untyped-def]
    try:
        return encode(method, target, CIMultiDict(headers))
    except BadRequest:
        return None


# Characters a check could trip over: the ones it looks for, their neighbours, the
# separators the head is built of, and a few beyond ASCII (a surrogate escape among them).
_TRICKY = "\r\n\x00\t\x0b\x0c\x1f \x7f:;\x85\u2028\udc80\ud800aZ0-é"
_TEXT = st.text(alphabet=st.sampled_from(_TRICKY), max_size=8) | st.text(max_size=8)
_NAMES = st.sampled_from(["Host", "X-A", "x-a", "Cookie", "X\r\nY", "X Y", "", "X\x00"]) | _TEXT


@settings(max_examples=2000, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "G T", "GET\r\n", ""]),
    target=st.sampled_from(["/", "/a?b=c", "/a b", "/\r\n"]) | _TEXT.map(lambda t: "/" + t),
    fields=st.lists(st.tuples(_NAMES, _TEXT), max_size=6),
)
def test_encode_head_accepts_and_refuses_as_the_reference(
    method: str, target: str, fields: list[tuple[str, str]]
) -> None:
    headers = CIMultiDict(fields)
    assert outcome(h1.encode_head, method, target, headers) == outcome(
        reference, method, target, headers
    )


def test_every_character_in_a_value_is_judged_as_the_reference_judges_it() -> None:
    for code in [*range(0x300), 0x2028, 0xD800, 0xDC80, 0xDCFF]:
        for value in (chr(code), f"a{chr(code)}b", f"{chr(code)}\r\n"):
            headers = CIMultiDict([("Host", "h"), ("X-A", value)])
            got = outcome(h1.encode_head, "GET", "/", headers)
            assert got == outcome(reference, "GET", "/", headers), hex(code)
