"""Service tokens: the file format, its permissions, constant-time checks, reload."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from proxy.tokens import TokenFileError, TokenStore, fingerprint, load_tokens

OLD = "old-token-0123456789abcdefghijklmnopqrstuv"
NEW = "new-token-ZYXWVUTSRQPONMLKJIHGFEDCBA987654"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="ascii")
    path.chmod(mode)
    return path


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return write(tmp_path / "tokens", f"# the provisioner\n{OLD}\n")


def test_comments_blank_lines_and_whitespace_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "t", f"\n# rotation in progress\n  {OLD}  \n\n\t{NEW}\n# end\n")
    assert load_tokens(path) == (OLD, NEW)


def test_duplicate_lines_count_once(tmp_path: Path) -> None:
    assert load_tokens(write(tmp_path / "t", f"{OLD}\n{OLD}\n")) == (OLD,)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666, 0o777], ids=oct)
def test_world_readable_file_is_refused(tmp_path: Path, mode: int) -> None:
    """A world-readable token file is an error that says how to fix it."""
    path = write(tmp_path / "t", f"{OLD}\n", mode)
    with pytest.raises(TokenFileError, match="world-readable") as info:
        load_tokens(path)
    assert f"chmod 600 {path}" in str(info.value)
    assert OLD not in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640], ids=oct)
def test_private_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    assert load_tokens(write(tmp_path / "t", f"{OLD}\n", mode)) == (OLD,)


def test_short_token_names_file_and_line_not_token(tmp_path: Path) -> None:
    path = write(tmp_path / "t", f"# header\n{OLD}\n\nshort-but-secret-31-characters!\n")
    with pytest.raises(TokenFileError) as info:
        load_tokens(path)
    message = str(info.value)
    assert f"{path}:4:" in message
    assert "31 characters, at least 32" in message
    assert "short-but-secret" not in message


def test_every_bad_line_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "t", f"tooshort\n{OLD}\n{OLD} # inline comment\nalso-short\n")
    with pytest.raises(TokenFileError) as info:
        load_tokens(path)
    message = str(info.value)
    assert f"{path}:1:" in message
    assert f"{path}:3: a token must be visible ASCII without spaces" in message
    assert f"{path}:4:" in message
    assert OLD not in message


def test_exactly_32_characters_is_enough(tmp_path: Path) -> None:
    token = "x" * 32
    assert load_tokens(write(tmp_path / "t", token)) == (token,)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("", "no tokens", id="empty"),
        pytest.param("# only a comment\n\n", "no tokens", id="only-comments"),
        pytest.param(f"{OLD}\n\u00e9{OLD}\n", ":2: not ASCII", id="non-ascii"),
        # A line ends at LF only: a separator control is no line break making two tokens.
        pytest.param(f"{OLD}\x1c{OLD}\n", ":1: a token must be visible ASCII", id="fs-control"),
        pytest.param(f"{OLD}\x1f\n", ":1: a token must be visible ASCII", id="trailing-us"),
    ],
)
def test_unusable_files(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "t"
    path.write_bytes(content.encode("utf-8"))
    path.chmod(0o600)
    with pytest.raises(TokenFileError, match=problem):
        load_tokens(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read"):
        load_tokens(tmp_path / "absent")


def test_directory_is_not_a_token_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(TokenFileError, match="not a regular file"):
        load_tokens(tmp_path / "d")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO (which would block a plain open until a writer came) is refused at once."""
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(TokenFileError, match="not a regular file"):
        load_tokens(tmp_path / "fifo")


def test_fingerprint_is_a_sha256_prefix_never_the_token() -> None:
    assert fingerprint(OLD) == hashlib.sha256(OLD.encode()).hexdigest()[:12]
    assert fingerprint(OLD) != fingerprint(NEW)
    assert fingerprint(OLD) not in OLD


@pytest.mark.parametrize(
    ("presented", "accepted"),
    [
        pytest.param(OLD, True, id="exact"),
        pytest.param(OLD[:-1], False, id="prefix"),
        pytest.param(OLD + "x", False, id="longer"),
        pytest.param(OLD.upper(), False, id="case"),
        pytest.param(OLD[:-1] + "\u00fc", False, id="non-ascii-last-char"),
        pytest.param("", False, id="empty"),
    ],
)
def test_check(token_file: Path, presented: str, accepted: bool) -> None:
    store = TokenStore(token_file)
    assert store.check(presented) == (fingerprint(OLD) if accepted else None)


def test_non_ascii_never_matches_a_token_with_a_question_mark(tmp_path: Path) -> None:
    """Encoding a non-ASCII character must not turn it into a character a token holds."""
    token = "q?" * 16
    store = TokenStore(write(tmp_path / "t", token))
    assert store.check(token) == fingerprint(token)
    assert store.check("q\u00fc" * 16) is None


def test_two_tokens_for_rotation(tmp_path: Path) -> None:
    store = TokenStore(write(tmp_path / "t", f"{OLD}\n{NEW}\n"))
    assert store.check(OLD) == fingerprint(OLD)
    assert store.check(NEW) == fingerprint(NEW)


def test_reload_swaps_tokens_and_logs_fingerprints_only(token_file: Path) -> None:
    store = TokenStore(token_file)
    write(token_file, f"{NEW}\n")
    with capture_logs() as logs:
        assert store.reload() is True
    assert store.check(OLD) is None
    assert store.check(NEW) == fingerprint(NEW)
    assert logs[0]["event"] == "internal_tokens_reloaded"
    assert logs[0]["fingerprints"] == [fingerprint(NEW)]
    assert NEW not in repr(logs)
    assert OLD not in repr(logs)


@pytest.mark.parametrize(
    ("content", "mode"),
    [
        pytest.param(f"{NEW}\nshort\n", 0o600, id="short-line"),
        pytest.param(f"{NEW}\n", 0o644, id="world-readable"),
        pytest.param("# emptied\n", 0o600, id="no-tokens"),
    ],
)
def test_bad_reload_keeps_the_old_tokens(token_file: Path, content: str, mode: int) -> None:
    """A broken file on SIGHUP is logged and changes nothing: the listener keeps working."""
    store = TokenStore(token_file)
    write(token_file, content, mode)
    with capture_logs() as logs:
        assert store.reload() is False
    assert store.check(OLD) == fingerprint(OLD)
    assert store.check(NEW) is None
    assert logs[0]["event"] == "internal_tokens_reload_failed"
    assert logs[0]["log_level"] == "error"
    assert logs[0]["kept"] == 1
    assert NEW not in repr(logs)
    assert OLD not in repr(logs)


def test_reload_after_the_file_vanished_keeps_the_old_tokens(token_file: Path) -> None:
    store = TokenStore(token_file)
    token_file.unlink()
    assert store.reload() is False
    assert store.check(OLD) == fingerprint(OLD)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "t", (OLD + "\n") * 2000)
    with pytest.raises(TokenFileError, match="larger than"):
        load_tokens(path)
