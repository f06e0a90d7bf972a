"""Identity validation: the one gate every identity value passes before becoming a header."""

from __future__ import annotations

import pytest

from proxy.identity import MAX_GROUPS, Identity, InvalidIdentity, make_identity

ACCEPTED = [
    ("lower-cased", ("Alice@Example.EDU", None, None), Identity("alice@example.edu")),
    (
        "surrounding space trimmed",
        ("  bob@example.edu ", " Bob ", None),
        Identity("bob@example.edu", "Bob"),
    ),
    ("plus and dots", ("a.b+c@sub.example.edu", None, None), Identity("a.b+c@sub.example.edu")),
    (
        "groups comma string, empties dropped",
        ("c@x.io", None, " staff,, students ,"),
        Identity("c@x.io", None, ("staff", "students")),
    ),
    ("groups list", ("c@x.io", None, ["a", "b", ""]), Identity("c@x.io", None, ("a", "b"))),
    (
        "groups keep Unicode spaces: another name",
        ("c@x.io", None, ["staff\u00a0", "\u3000staff", "staff\u2028"]),
        Identity("c@x.io", None, ("staff\u00a0", "\u3000staff", "staff\u2028")),
    ),
    (
        "only spaces and tabs around a comma string's names go",
        ("c@x.io", None, "\tstaff ,\u00a0staff"),
        Identity("c@x.io", None, ("staff", "\u00a0staff")),
    ),
    (
        "name and email keep what is not a space or tab",
        ("c@x.io", "\u00a0Ann\u3000", None),
        Identity("c@x.io", "\u00a0Ann\u3000"),
    ),
    ("blank name is no name", ("c@x.io", "   ", None), Identity("c@x.io")),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [r[1:] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED]
)
def test_accepted(raw, expected) -> None:
    assert make_identity(*raw) == expected


REFUSED = [
    ("missing email", (None, None, None)),
    ("empty email", ("", None, None)),
    ("no domain dot", ("alice@localhost", None, None)),
    ("two addresses", ("a@x.io, b@x.io", None, None)),
    ("display-name form", ("Alice <a@x.io>", None, None)),
    ("space inside", ("a b@x.io", None, None)),
    ("CRLF in email", ("a@x.io\r\nX-User-Role: admin", None, None)),
    ("LF in name", ("a@x.io", "Alice\nX-User-Role: admin", None)),
    ("NUL in name", ("a@x.io", "Al\x00ice", None)),
    ("CR in group", ("a@x.io", None, ["staff\r"])),
    ("comma inside a listed group", ("a@x.io", None, ["a,b"])),
    # OpenWebUI strip()s each name it is sent: a name it would read as another is refused.
    ("listed group with a leading space", ("a@x.io", None, [" staff"])),
    ("listed group with a trailing tab", ("a@x.io", None, ["staff\t"])),
    ("C1 control NEXT LINE", ("a@x.io", None, ["staff\u0085"])),
    ("C0 unit separator", ("a@x.io", None, "staff\x1f")),
    ("vertical tab", ("a@x.io", None, ["\x0bstaff"])),
    ("email with an ASCII separator control", ("kate@example.edu\x1f", None, None)),
    ("non-string group", ("a@x.io", None, [1])),
    ("email too long", ("a" * 250 + "@x.io", None, None)),
    ("name too long", ("a@x.io", "n" * 257, None)),
    ("too many groups", ("a@x.io", None, [f"g{i}" for i in range(MAX_GROUPS + 1)])),
    ("group name too long", ("a@x.io", None, ["g" * 257])),
    ("group name too long in a comma string", ("a@x.io", None, "staff," + "g" * 257)),
    # Non-ASCII is refused before any case folding: lower() would turn these into ASCII.
    ("KELVIN SIGN folds to k", ("\u212aate@example.edu", None, None)),
    ("dotted capital I folds to i", ("\u0130nfo@example.edu", None, None)),
    ("fullwidth letters", ("\uff41@example.edu", None, None)),
    ("non-ASCII domain", ("kate@ex\u00e4mple.edu", None, None)),
    ("non-breaking space around", ("\u00a0kate@example.edu", None, None)),
    # Not text: aiohttp's surrogateescape for bytes that are not UTF-8, or JSON's "\ud800".
    ("raw byte in email", ("kate\udce9@example.edu", None, None)),
    ("raw byte in name", ("a@x.io", "caf\udce9", None)),
    ("lone surrogate in name", ("a@x.io", "\ud800", None)),
    ("lone surrogate in group", ("a@x.io", None, ["staff\udfff"])),
    ("raw byte in a comma string of groups", ("a@x.io", None, "staff,caf\udcff")),
]


@pytest.mark.parametrize("raw", [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused(raw) -> None:
    with pytest.raises(InvalidIdentity):
        make_identity(*raw)


@pytest.mark.parametrize(
    ("name", "header"),
    [("Alice", "Alice"), ("Ann Smith", "Ann%20Smith"), ("Zoë, 50%", "Zo%C3%AB%2C%2050%25")],
)
def test_name_is_percent_encoded_for_openwebui(name, header) -> None:
    assert Identity("a@x.io", name).name_header_value() == header
