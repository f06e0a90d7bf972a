"""``scripts/compat [RELEASE ...]``: the e2e tests about OpenWebUI's behaviour, per release.

For each release in turn (one at a time: installs and OpenWebUI itself want both CPUs of a
small machine): install it into its own cached venv (``demo/openwebui.py``), run the e2e
tests marked ``openwebui`` against it with ``OWUI_GATE_OPENWEBUI_VERSION`` set, and, unless
``--keep`` (or it is the pinned release), delete its venv again (~7-8 GB each). Then print
a markdown table with the date, the command and how long it took, write it to
``artifacts/compat/``, and with ``--docs`` put it into docs/compatibility.md between its
markers.

Without releases: the latest release of each supported line (0.6 and later), asked from the
package index with ``pip index versions open-webui``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demo import openwebui
from proxy.openwebui_release import (
    MISMATCH_CHECK_FROM,
    NAME_DECODED_FROM,
    PINNED_LISTED_FROM,
    SIGNUP_INDEPENDENT_FROM,
    Release,
    parse_release,
    show,
)

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "compat"
DOCS = REPO / "docs" / "compatibility.md"
BEGIN, END = "<!-- compat:begin -->", "<!-- compat:end -->"
OLDEST_LINE = (0, 6)  # lines before 0.6 have no release with the "User mismatch" check
REFUSED_SKIP = "the proxy refuses this release by design"


@dataclass
class Outcome:
    """One release's run."""

    release: str
    install_s: float = 0.0
    test_s: float = 0.0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    refused_by_design: bool = False
    problem: str | None = None  # install or harness failure
    failures: list[str] = field(default_factory=list)

    def verdict(self) -> str:
        if self.problem is not None:
            return f"not run: {self.problem}"
        if self.failed:
            return f"**{self.failed} failed**: " + ", ".join(self.failures[:4])
        if self.refused_by_design:
            return "refused by the proxy, as designed (no 'User mismatch' check)"
        return "works"


def latest_of_each_line(versions: Sequence[str]) -> list[str]:
    """The newest release of each ``major.minor`` line from 0.6 on, oldest line first."""
    newest: dict[tuple[int, int], Release] = {}
    for text in versions:
        if not re.fullmatch(r"\d+\.\d+\.\d+", text):
            continue  # pre-releases
        release = parse_release(text)
        if release is None or release[:2] < OLDEST_LINE:
            continue
        line = release[:2]
        if line not in newest or release > newest[line]:
            newest[line] = release
    return [show(newest[line]) for line in sorted(newest)]


def index_versions() -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "open-webui"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Available versions: (.+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise SystemExit(
            "scripts/compat: cannot list open-webui's releases (pip index versions failed); "
            "name the releases to run instead, e.g. scripts/compat 0.12.4 0.8.12\n"
            + result.stderr[-500:]
        )
    return [v.strip() for v in match.group(1).split(",")]


def known_gaps(release: str) -> str:
    """What docs/compatibility.md says about this release, in a few words."""
    parsed = parse_release(release)
    assert parsed is not None
    notes = []
    if parsed < MISMATCH_CHECK_FROM:
        notes.append("no 'User mismatch' check: proxy refuses")
    elif parsed < PINNED_LISTED_FROM:
        notes.append("pinned chats not listed: provisioner refuses")
    if MISMATCH_CHECK_FROM <= parsed < SIGNUP_INDEPENDENT_FROM:
        notes.append("sign-up trap: fix applied (sign-ups on)")
    if MISMATCH_CHECK_FROM <= parsed < NAME_DECODED_FROM:
        notes.append("names shown percent-encoded")
    return "; ".join(notes) or "none"


def run_release(release: str, keep: bool, pytest_args: Sequence[str]) -> Outcome:
    outcome = Outcome(release)
    started = time.monotonic()
    try:
        openwebui.ensure_installed(release=release)
    except openwebui.OpenWebUIError as exc:
        outcome.problem = f"install failed ({str(exc).splitlines()[0]})"
        return outcome
    outcome.install_s = time.monotonic() - started
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = ARTIFACTS / f"junit-{release}.xml"
    env = {**os.environ, openwebui.VERSION_ENV: release}
    command = [
        sys.executable, "-m", "pytest", "tests/e2e", "-m", "openwebui", "-q", "-rs",
        "-p", "no:cacheprovider", f"--junitxml={report}", *pytest_args,
    ]  # fmt: skip
    print(f"== OpenWebUI {release}: {shlex.join(command[2:])}", flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, env=env, check=False)
    outcome.test_s = time.monotonic() - started
    _read_junit(report, outcome)
    if not keep and release != openwebui.VERSION:
        shutil.rmtree(openwebui.venv_dir(release), ignore_errors=True)
    return outcome


def _read_junit(report: Path, outcome: Outcome) -> None:
    try:
        root = ET.parse(report).getroot()  # noqa: S314 - pytest's own report, written just now
    except (OSError, ET.ParseError) as exc:
        outcome.problem = f"pytest wrote no report ({exc})"
        return
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome.failed += 1
            outcome.failures.append(name)
        elif (skip := case.find("skipped")) is not None:
            outcome.skipped += 1
            if REFUSED_SKIP in (skip.get("message") or ""):
                outcome.refused_by_design = True
        else:
            outcome.passed += 1


def table(outcomes: Sequence[Outcome], command: str, took_s: float, when: str) -> str:
    lines = [
        f"Run {when} with `{command}` in {took_s / 60:.0f} min "
        f"({len(outcomes)} releases, one after another, on a 2-CPU machine).",
        "",
        "| release | result | passed | failed | skipped | known gaps | install | tests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.release} | {o.verdict()} | {o.passed} | {o.failed} | {o.skipped} | "
            f"{known_gaps(o.release)} | {o.install_s / 60:.1f} min | {o.test_s / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def put_in_docs(text: str) -> None:
    doc = DOCS.read_text(encoding="utf-8")
    head, begin, rest = doc.partition(BEGIN)
    _old, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"scripts/compat: {DOCS} lacks the {BEGIN} ... {END} markers")
    DOCS.write_text(f"{head}{BEGIN}\n{text}{END}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/compat",
        description="Run the e2e tests about OpenWebUI's behaviour against each release.",
    )
    parser.add_argument(
        "releases", nargs="*", help="e.g. 0.12.4 0.8.12 (default: newest of each line from 0.6)"
    )
    parser.add_argument("--keep", action="store_true", help="keep each release's venv")
    parser.add_argument("--docs", action="store_true", help="put the table in the docs")
    given = list(sys.argv[1:] if argv is None else argv)
    ours, _, pytest_args = (
        (given[: given.index("--")], "--", given[given.index("--") + 1 :])
        if "--" in given
        else (given, "", [])
    )
    parser.epilog = "Arguments after -- go to pytest."
    args = parser.parse_args(ours)
    releases = args.releases or latest_of_each_line(index_versions())
    for release in releases:
        if not re.fullmatch(r"\d+\.\d+\.\d+", release):
            parser.error(f"{release!r} is not a release like 0.12.4")
    command = shlex.join(["scripts/compat", *given])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.monotonic()
    outcomes = []
    for release in releases:
        outcomes.append(run_release(release, args.keep, pytest_args))
        print(table(outcomes, command, time.monotonic() - started, when), flush=True)
    text = table(outcomes, command, time.monotonic() - started, when)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "latest.md").write_text(text, encoding="utf-8")
    if args.docs:
        put_in_docs(text)
    print(text)
    print(f"table written to {ARTIFACTS / 'latest.md'}" + (f" and {DOCS}" if args.docs else ""))
    return 1 if any(o.failed or o.problem for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
