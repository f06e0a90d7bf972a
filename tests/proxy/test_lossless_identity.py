"""No lossy reading of an identity: every code point that Unicode-aware stripping, splitting,
case mapping or normalisation would drop, split on or fold onto ASCII, tried on every function
an access decision or an identity value depends on (proxy and provisioner alike).

The properties: a group name is kept exactly or refused, never changed; access by group and
a course's groups match exact names only; an email is ASCII before it is lower-cased; and
what the proxy sends OpenWebUI reads back as the same ASCII names, never as another.
OpenWebUI's reading is modelled from its source (0.12.4 ``routers/auths.py``: the groups
header as Starlette decodes it, latin-1, split on commas, each name ``strip()``ed); the e2e
tier shows the same against the real OpenWebUI (``tests/e2e/test_group_names.py``).
"""

from __future__ import annotations

import functools
import json
import string
import unicodedata

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner import directory, users
from provisioner.catalog import courses_for
from provisioner.client import _json_lines_or_list
from provisioner.course import Course
from proxy.access import AccessRules, domain_allowed
from proxy.identity import InvalidIdentity, make_identity, parse_groups, validate_email

STAFF = "staff"
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@functools.cache
def lossy_code_points() -> tuple[str, ...]:
    """Whitespace, controls, format characters, and every non-ASCII character that
    ``lower()``, ``upper()``, ``casefold()`` or NFKC turns into ASCII letters or digits."""
    found = []
    for point in range(0x110000):
        if 0xD800 <= point <= 0xDFFF:
            continue
        char = chr(point)
        category = unicodedata.category(char)
        if category == "Cn":
            continue
        if char.isspace() or category in ("Zs", "Zl", "Zp", "Cc", "Cf"):
            found.append(char)
            continue
        if char.isascii():
            continue
        for mapped in (
            char.lower(),
            char.upper(),
            char.casefold(),
            unicodedata.normalize("NFKC", char),
        ):
            if mapped.isascii() and any(c.isalnum() for c in mapped):
                found.append(char)
                break
    return tuple(found)


LOSSY = st.deferred(lambda: st.sampled_from(lossy_code_points()))
AFFIX = st.lists(LOSSY, max_size=2).map("".join)
BASE = st.sampled_from([STAFF, "Staff", "STAFF", "\u017ftaff", "st\uff41ff", "year-9"])


@st.composite
def group_names(draw: st.DrawFn) -> str:
    """``staff`` and look-alikes, with lossy characters around or inside."""
    base = draw(BASE)
    where = draw(st.integers(0, len(base)))
    inside = draw(st.sampled_from(["", draw(LOSSY)]))
    return draw(AFFIX) + base[:where] + inside + base[where:] + draw(AFFIX)


def openwebui_reads(header_value: str) -> list[str]:
    """The group names OpenWebUI 0.12.4 takes from the header value the proxy sends."""
    as_received = header_value.encode("utf-8").decode("latin-1")  # Starlette's decoding
    return [name.strip() for name in as_received.split(",") if name.strip()]


def check_groups_kept(names: list[str], as_comma_list: bool) -> None:
    raw: str | list[str] = ",".join(names) if as_comma_list else names
    try:
        identity = make_identity("kate@example.edu", None, raw)
    except InvalidIdentity:
        return  # refused whole: nothing reaches OpenWebUI
    if as_comma_list:
        expected = [name.strip(" \t") for name in ",".join(names).split(",")]
    else:
        expected = names
    assert identity.groups == tuple(name for name in expected if name)
    admitted = AccessRules(groups=(STAFF,)).check(identity) is None
    assert admitted == (STAFF in identity.groups)
    header = identity.groups_header_value()
    if header is not None:
        read = openwebui_reads(header)
        assert len(read) == len(identity.groups)
        for sent, got in zip(identity.groups, read, strict=True):
            # ASCII names arrive as themselves; no other name arrives as an ASCII one.
            assert got == sent if sent.isascii() else not got.isascii(), (sent, got)


@given(st.lists(group_names(), min_size=1, max_size=4))
def test_listed_group_names_are_kept_exactly_or_refused(names: list[str]) -> None:
    check_groups_kept(names, as_comma_list=False)


@given(st.lists(group_names().filter(lambda name: "," not in name), min_size=1, max_size=4))
def test_comma_list_group_names_lose_only_spaces_and_tabs(names: list[str]) -> None:
    check_groups_kept(names, as_comma_list=True)


@pytest.mark.parametrize(
    "group", ["staff\u00a0", "\u3000staff", "staff\u2028", "staff\u0085", "staff\x1f"]
)
def test_the_reported_look_alikes_never_pass_as_staff(group: str) -> None:
    for raw in ([group], group):
        try:
            identity = make_identity("kate@example.edu", None, raw)
        except InvalidIdentity:
            continue
        assert AccessRules(groups=(STAFF,)).check(identity) is not None
        assert STAFF not in openwebui_reads(identity.groups_header_value() or "")


@st.composite
def emails(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(["kate@example.edu", "Kate@Example.EDU", "k@example.edu"]))
    where = draw(st.integers(0, len(base)))
    return draw(AFFIX) + base[:where] + draw(LOSSY) + base[where:] + draw(AFFIX)


@given(emails())
def test_an_email_is_ascii_before_it_is_lower_cased(raw: str) -> None:
    try:
        email = validate_email(raw)
    except InvalidIdentity:
        return
    trimmed = raw.strip(" \t")
    assert trimmed.isascii()
    assert email == trimmed.translate(_ASCII_LOWER)
    assert domain_allowed(email, ("example.edu",)) == (email.rpartition("@")[2] == "example.edu")


def course_for(groups: list[str]) -> Course:
    return Course.model_validate(
        {
            "course": {"id": "c", "title": "C", "model": "m", "groups": groups},
            "modules": [{"id": "m1", "title": "M1", "first_message": "hello"}],
        }
    )


@given(group_names())
def test_a_course_is_chosen_by_exact_group_names(name: str) -> None:
    course = course_for([STAFF])
    chosen = courses_for([course], [name])
    assert (chosen == (course,)) == (name == STAFF)
    try:
        named = course_for([name])
    except ValueError:
        return  # refused with its reason, never changed
    assert named.course.groups == (name,)


@given(st.sampled_from(["email", "name", "course", "kurs"]), st.data())
def test_roster_columns_fold_ascii_case_only(column: str, data: st.DataObject) -> None:
    """A column name with a look-alike (``\\u212aurs``: KELVIN SIGN) is another column."""
    where = data.draw(st.integers(0, len(column) - 1))
    lossy = data.draw(LOSSY.filter(lambda c: c not in " \t\ufeff"))
    variant = column[:where] + lossy + column[where + 1 :]
    assert users._key(variant) != column
    assert users._key(f" \ufeff{column.upper()}\t") == column


def test_kelvin_sign_is_not_k_in_a_column_name() -> None:
    assert users._key("\u212aurs") != "kurs"
    assert users._key("\u212aURS") == "\u212aurs"  # ASCII letters folded, the rest kept


def test_a_json_lines_roster_splits_at_line_feeds_only() -> None:
    """U+2028 may stand inside a JSON string; it ends no line (splitlines() would)."""
    roster = '{"email": "a@school.edu", "name": "Ann\u2028Lee"}\n{"email": "b@school.edu"}\n'
    parsed = users.parse_roster(roster, "r.jsonl", course_ids=["c"], json_lines=True)
    assert [(row.line, row.email, row.name) for row in parsed.rows] == [
        (1, "a@school.edu", "Ann\u2028Lee"),
        (2, "b@school.edu", None),
    ]


def test_the_chat_list_splits_at_line_feeds_only() -> None:
    """OpenWebUI 0.12.4 streams /chats/all as JSON Lines with U+2028 left raw in a title (a
    student's chat could stop their own provisioning)."""
    chats = [{"id": "1", "title": "a\u2028b\u0085c"}, {"id": "2", "title": "d"}]
    text = "".join(json.dumps(chat, ensure_ascii=False) + "\n" for chat in chats)
    response = httpx.Response(
        200, text=text, request=httpx.Request("GET", "http://owui/api/v1/chats/all")
    )
    assert _json_lines_or_list(response) == chats


@given(st.lists(group_names().filter(lambda n: not set(n) & set(",;|")), min_size=1, max_size=3))
def test_roster_group_cells_keep_names_exactly(names: list[str]) -> None:
    """A roster's group cell is a list like the groups header: only spaces and tabs around
    each name go; a JSON list's names are kept as they are, or refused."""
    for value, expected in (("; ".join(names), [n.strip(" \t") for n in names]), (names, names)):
        try:
            groups = users._groups(value, "groups")
        except users._RowProblem:
            continue
        assert groups == tuple(name for name in expected if name)


def test_the_user_directory_matches_ascii_case_only() -> None:
    """An OpenWebUI account stored with a look-alike address is not the person's."""
    look_alike = {"email": "\u212aate@school.edu", "role": "admin"}
    assert directory._exact([look_alike], "kate@school.edu") is None
    assert directory._exact([{"email": "Kate@School.edu", "role": "user"}], "kate@school.edu")


def test_a_roster_cell_splits_on_ascii_blanks_only() -> None:
    with pytest.raises(users._RowProblem, match="unknown course"):
        users._course_ids("welcome\u00a0year-9", "course", ["welcome", "year-9"])
    assert users._course_ids("welcome year-9", "course", ["welcome", "year-9"]) == (
        "welcome",
        "year-9",
    )


@given(group_names())
def test_groups_of_a_user_seen_event_are_kept_exactly(name: str) -> None:
    try:
        groups = parse_groups([name])
    except InvalidIdentity:
        return
    assert groups == (name,)
