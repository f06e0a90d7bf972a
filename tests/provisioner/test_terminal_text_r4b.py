"""What the provisioner prints about its inputs holds no terminal control: no escape
sequence, no C0/C1 control, no bidi override, no line or paragraph separator.

Roster cells, course files, webhook payloads and OpenWebUI's explanations reach the
admin's terminal (and logs) inside error messages: a roster's unknown course cell was
echoed raw, so ``demo\\x1b[2J`` cleared the screen and ``\\u202e`` turned the rest of the
line around. Every :class:`ProvisionError`'s text, the one that is "safe to show", now
writes such characters as escapes.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from provisioner.errors import ApiError, BadInput, CourseFileError, ProvisionError, shown
from provisioner.users import parse_roster
from tests.provisioner.cli_helpers import run

CONTROLS = ["\x1b[2J", "\x1b]0;owned\x07", "\x9b31m", "\u202e", "\u2066", "\u2028", "\r", "\x00"]


def unsafe(text: str) -> list[str]:
    return [
        char
        for char in text
        if char != "\n" and unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")
    ]


@pytest.mark.parametrize("control", CONTROLS)
def test_every_error_text_is_safe_to_show(control: str) -> None:
    for error in (
        ProvisionError(f"a{control}b"),
        BadInput(f"a{control}b"),
        ApiError("GET", "/api/v1/chats/x", 400, f"detail{control}"),
        CourseFileError([f"c.toml:1: key{control}"]),
    ):
        assert unsafe(str(error)) == [], repr(str(error))
    assert unsafe("\n".join(CourseFileError([f"x{control}"]).problems)) == []


def test_escapes_say_what_was_there_and_lines_stay_lines() -> None:
    assert shown("a\x1bb\u202ec\nd") == "a\\x1bb\\u202ec\nd"
    assert shown("plain text, ünïcödé, 日本") == "plain text, ünïcödé, 日本"


def test_the_detail_openwebui_gave_is_kept_raw_for_matching() -> None:
    error = ApiError("POST", "/api/v1/folders/", 400, "Folder already exists\x1b")
    assert error.detail == "Folder already exists\x1b"


def test_a_rosters_unknown_course_is_not_echoed_raw() -> None:
    text = 'email,course\nok@x.edu,"demo\x1b[2J\u202eevil"\nok2@x.edu,"bad\nr.csv:9: fine"\n'
    with pytest.raises(BadInput) as caught:
        parse_roster(text, "r.csv", course_ids=["demo", "b"])
    message = str(caught.value)
    assert unsafe(message) == []
    assert "r.csv:9: fine" not in message.splitlines()[-1][:12]
    assert len(message.splitlines()) == 2


async def test_the_cli_prints_no_escape_sequence(
    env: dict[str, str], course_file: Path, tmp_path: Path
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text('email,course\nok@x.edu,"demo\x1b[2J\x1b]0;owned\x07"\n', encoding="utf-8")

    result = await run(env, "bulk", str(course_file), str(roster))

    assert result.rc == 2, result.err
    assert "unknown course" in result.err
    assert unsafe(result.err) == [], repr(result.err)
