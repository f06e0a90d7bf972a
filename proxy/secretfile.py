"""Reading a file that holds secrets: a regular file, neither world-readable nor
world-writable, small, ASCII.

One reader for every secret file the proxy takes (the internal listener's service tokens,
the first-sign-in hook's webhook secret), so each gets the same checks and the same plain
errors. Errors name the file (and line); never a secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# A secret file is a handful of lines; anything bigger is not one.
MAX_FILE_BYTES = 64 * 1024


class SecretFileError(Exception):
    """The file cannot be used; the message says why and what to do."""


def read_secret_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the file's lines that are neither blank nor ``#`` comments,
    stripped. Raises :class:`SecretFileError`."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not hang start-up; it is then
        # refused as not a regular file. fstat the open file, not the path, so the mode
        # checked is that of the file read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise SecretFileError(f"{path}: not a regular file")
            if mode & stat.S_IROTH:
                raise SecretFileError(
                    f"{path} is world-readable (mode {stat.S_IMODE(mode):04o}); "
                    f"run: chmod 600 {path}"
                )
            if mode & stat.S_IWOTH:
                # Whoever may write it chooses the secret: a token of their own on the
                # internal listener after the next SIGHUP, a hook secret to forge events.
                raise SecretFileError(
                    f"{path} is world-writable (mode {stat.S_IMODE(mode):04o}); "
                    f"run: chmod 600 {path}"
                )
            data = _read_up_to(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) > MAX_FILE_BYTES:
        raise SecretFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes, not a secret file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        number = data[: exc.start].count(b"\n") + 1
        raise SecretFileError(f"{path}:{number}: not ASCII") from exc
    # Lines end at LF (CRLF too) only, and only ASCII blanks are trimmed: splitlines() and
    # strip() would also cut at or drop other controls, making one line two secrets.
    lines = [(number, line.strip(" \t\r")) for number, line in enumerate(text.split("\n"), start=1)]
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def first_secret_line(path: Path, what: str = "secret") -> tuple[int, str]:
    """``(line number, text)`` of the file's first secret line (:func:`read_secret_lines`);
    raises :class:`SecretFileError` when there is none, naming ``what`` was expected."""
    lines = read_secret_lines(path)
    if not lines:
        raise SecretFileError(f"{path} holds no {what}")
    return lines[0]
