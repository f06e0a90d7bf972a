"""A group name OpenWebUI would read as another is refused, whatever its characters.

OpenWebUI (0.12.4, ``routers/auths.py``) reads the groups header through Starlette, which
decodes header bytes as Latin-1, splits on commas and ``strip()``s each name. The proxy
sends the names UTF-8 encoded. A name whose UTF-8 ends in byte 0x85 or 0xA0 (``à`` is
C3 A0, ``Å`` C3 85, ``Š`` C5 A0, Cyrillic ha D1 85, ...) reads in Latin-1 as ending in
NEL or NO-BREAK SPACE, which ``strip()`` removes: ``Xà`` and ``XÅ`` both became OpenWebUI's
``XÃ``, two groups of the identity provider one group in OpenWebUI. Before the fix both
were accepted; the proxy checked one name and OpenWebUI acted on another. A name ending
in U+00A0 (C2 A0) stays accepted: its partner, U+0085, is a control refused anyway, so no
other name reads as it does.
"""

from __future__ import annotations

import pytest
from multidict import CIMultiDict
from starlette.datastructures import Headers

from proxy.h1 import encode_head
from proxy.identity import InvalidIdentity, check_group, make_identity

GROUPS_HEADER = "X-User-Groups"


def openwebui_reads(groups_value: str) -> list[str]:
    """The group names OpenWebUI takes from the header the proxy sends with this value."""
    head = encode_head("GET", "/", CIMultiDict({GROUPS_HEADER: groups_value}))
    raw = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b":")
            raw.append((name.strip().lower(), value.strip(b" \t")))
    names = Headers(raw=raw).get(GROUPS_HEADER, "").split(",")
    return [name.strip() for name in names if name.strip()]  # auths.py, as written


@pytest.mark.parametrize(
    "group",
    [
        "X\u00e0",
        "X\u00c5",
        "Grupa \u0160",
        "\u0421\u0442\u0443\u0434\u0435\u043d\u0442\u0430\u0445",
        "\u0105",
    ],
)
def test_a_name_openwebui_would_trim_is_refused(group: str) -> None:
    read = openwebui_reads(group)
    latin1 = group.encode("utf-8").decode("latin-1")
    assert read != [latin1]  # the reproduction: OpenWebUI reads a shorter name
    with pytest.raises(InvalidIdentity):
        check_group(group)
    with pytest.raises(InvalidIdentity):
        make_identity("a@school.edu", None, [group])
    with pytest.raises(InvalidIdentity):
        make_identity("a@school.edu", None, f"staff, {group}")


@pytest.mark.parametrize(("one", "other"), [("X\u00e0", "X\u00c5"), ("X\u20a0", "X\u2085")])
def test_two_provider_groups_were_one_openwebui_group(one: str, other: str) -> None:
    assert openwebui_reads(one) == openwebui_reads(other)


def test_a_name_ending_in_no_break_space_reads_as_no_other() -> None:
    assert check_group("staff\u00a0") == "staff\u00a0"
    with pytest.raises(InvalidIdentity):
        check_group("staff\u0085")  # the one name it would share a reading with
    assert openwebui_reads("staff\u00a0") not in (
        openwebui_reads("staff"),
        openwebui_reads("staff\u00c2"),
    )


@pytest.mark.parametrize(
    "group", ["\u00c4rzte", "caf\u00e9", "\u5b66\u751f", "Gr\u00fcn\u00a0Team", "staff"]
)
def test_other_names_pass_and_openwebui_reads_each_as_its_bytes(group: str) -> None:
    assert check_group(group) == group
    identity = make_identity("a@school.edu", None, [group, "other"])
    value = identity.groups_header_value()
    assert value is not None
    expected = [g.encode("utf-8").decode("latin-1") for g in (group, "other")]
    assert openwebui_reads(value) == expected
