"""The operator's page folder (``OWUI_PROXY_PAGES_DIR``) is read at start: each entry was
read whole (``read_bytes()``) before the 64 KiB limit was applied, and any kind of file was
opened. A named pipe there (or a link to one) blocked the start forever; a link to a device
(``/dev/zero``, ``/dev/urandom``) read without end; a huge file was read into memory whole.
Now only regular files are read, and at most one byte past the limit."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from proxy.pages import PagesError, load_folder


def _load_within(folder: Path, seconds: float) -> BaseException | None:
    """What ``load_folder(folder)`` raised within ``seconds`` (None: it never returned)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            load_folder(folder)
            outcome.append(None)
        except BaseException as exc:  # reported to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0] if outcome else TimeoutError("load_folder did not return")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "error.en.html"
    os.mkfifo(fifo)
    try:
        outcome = _load_within(tmp_path, 2.0)
    finally:
        # Unblock a reader stuck on the pipe (the unfixed code): a writer that goes at once.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert isinstance(outcome, PagesError), outcome
    assert "not a regular file" in str(outcome)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_a_link_to_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "error.en.html").symlink_to("/dev/zero")
    outcome = _load_within(tmp_path, 2.0)
    assert isinstance(outcome, PagesError), outcome
    assert "not a regular file" in str(outcome)


def test_a_huge_file_is_read_only_to_the_limit(tmp_path: Path, monkeypatch) -> None:
    page = tmp_path / "error.en.html"
    with page.open("wb") as out:
        out.truncate(1 << 30)  # sparse: a gigabyte that takes no disk
    read_whole = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read_whole.append(self) or b"")
    with pytest.raises(PagesError, match="larger than"):
        load_folder(tmp_path)
    assert read_whole == []


def test_a_link_to_a_template_still_loads(tmp_path: Path) -> None:
    source = tmp_path / "elsewhere.txt"
    source.write_text("<p>$message ($request_id)</p>", encoding="utf-8")
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "error.en.html").symlink_to(source)
    assert set(load_folder(folder)["error"]) == {"en"}
