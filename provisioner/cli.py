"""``owui-provision``: the command line. Exit codes: 0 done, 1 failed, 2 bad input,
128 + the signal when ``bulk`` is stopped by SIGINT or SIGTERM (130 for any other
command stopped by Ctrl-C).

Results go to stdout as JSON lines; messages and logs go to stderr. Neither ever holds a
token: the service token is only read into the HTTP client, and the users' OpenWebUI
tokens only live inside :class:`provisioner.client.UserSession`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from secrets import token_hex
from typing import Any, TextIO

import structlog
from aiohttp import web

from provisioner.bulk import check_report, describe_skipped, run_bulk_cli, write_report
from provisioner.catalog import check_courses, load_courses
from provisioner.check import Finding, lookup_finding, run_checks
from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course
from provisioner.directory import Directory
from provisioner.errors import BadInput, ListenFailed, ProvisionError
from provisioner.preview import Preview
from provisioner.provision import ModuleResult, Provisioner
from provisioner.remove import Removal, Remover, removal_summary, run_remove
from provisioner.settings import Settings, load_settings, read_service_token
from provisioner.status import Status, StatusRow, in_roster_order, run_status, summary, write_rows
from provisioner.stopping import until_stopped
from provisioner.users import Columns, UserRow, check_encoding, checked_identity, load_roster
from provisioner.webhook import create_app, load_secrets, make_runner
from proxy import version

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

log = structlog.get_logger("provisioner")


def _configure_logging(err: TextIO, level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(err),
        cache_logger_on_first_use=False,
    )


@asynccontextmanager
async def _openwebui(settings: Settings) -> AsyncIterator[OpenWebUI]:
    token = read_service_token(settings.token_file)
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, token, http))
        try:
            yield api
        finally:
            await api.settle()  # a first sign-in a stop left running ends before the client


def _listen_address(value: str) -> str:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) or ``unix:/absolute/path``, as the proxy takes."""
    if value.startswith("unix:"):
        if not value[5:].startswith("/"):
            raise argparse.ArgumentTypeError(
                f"{value!r}: a unix socket must be an absolute path (e.g. unix:/run/owui/hook.sock)"
            )
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8088) or unix:/path"
        )
    return value


def _delimiter(value: str) -> str:
    if value in ("tab", "\\t"):
        return "\t"
    if len(value) != 1 or value in '"\r\n':
        raise argparse.ArgumentTypeError(f"{value!r} is not one character (or 'tab')")
    return value


def _encoding(value: str) -> str:
    try:
        return check_encoding(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _module_id(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9-]{1,64}", value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a module id (lower-case letters, digits and '-')"
        )
    return value


def _site(runner: web.AppRunner, listen: str) -> web.BaseSite:
    if listen.startswith("unix:"):
        return web.UnixSite(runner, listen[5:])
    host, _, port = listen.rpartition(":")
    return web.TCPSite(runner, host.strip("[]"), int(port))


def _positive(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1 to 64")
    return int(value)


async def _cmd_user(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    courses = load_courses(args.courses)
    email, name = checked_identity(args.email, args.name)
    settings = load_settings()
    placed: list[bool] = []

    def report(result: ModuleResult) -> None:
        placed.append(result.placed)
        _write_line(out, result.as_json())

    async with _openwebui(settings) as api:
        provisioner = Provisioner(api, settings, update_unreplied=args.update_unreplied)
        if args.dry_run:
            preview = Preview(provisioner, Directory(api, settings.lookup_email))
            for line in await preview.preview_user(courses, email):
                _write_line(out, line.as_json())
            err.write("user: dry run: nothing was changed in OpenWebUI\n")
            return EXIT_OK
        # Ctrl-C or SIGTERM stops the work, but a first sign-in under way ends first: cut
        # short (asyncio.run cancels every task left, SIGTERM ends the process) it can
        # leave an account OpenWebUI refuses for ever.
        try:
            stopped = await until_stopped(
                provisioner.provision_user(courses, email, name, on_result=report)
            )
        finally:
            await provisioner.settle()
    if stopped is not None:
        err.write(
            f"user: stopped by {stopped.name} after {len(placed)} module(s); "
            "run the same command again to finish\n"
        )
        return 128 + stopped
    expected = sum(len(course.modules) for course in courses)
    return EXIT_OK if len(placed) == expected and all(placed) else EXIT_FAILED


def _write_line(out: TextIO, line: dict[str, Any]) -> None:
    out.write(json.dumps(line) + "\n")
    out.flush()


async def _cmd_bulk(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    courses = load_courses(args.courses)
    columns = Columns(
        email=args.email_column,
        name=tuple(args.name_column),
        course=args.course_column,
        groups=args.group_column,
    )
    roster = load_roster(
        args.users,
        course_ids=[course.course.id for course in courses],
        columns=columns,
        delimiter=args.delimiter,
        skip_invalid=args.skip_invalid,
        encoding=args.encoding,
    )
    if args.report is not None:
        check_report(args.report)
    if roster.ignored_columns:
        err.write(f"bulk: ignoring column(s) {', '.join(roster.ignored_columns)} of {args.users}\n")
    if roster.invalid:
        err.write(describe_skipped(str(args.users), roster.invalid))
    tty = out.isatty()
    if tty:  # per-chat info lines would tear the progress bar apart; problems still show
        _configure_logging(err, logging.WARNING)
    try:
        settings = load_settings()
        async with _openwebui(settings) as api:
            provisioner = Provisioner(api, settings, update_unreplied=args.update_unreplied)
            preview = None
            if args.dry_run:
                preview = Preview(provisioner, Directory(api, settings.lookup_email))
            # Refusals that hold for everyone (onboarding, header mode, token) stop the run
            # before the first user, instead of failing each one the same way.
            return await run_bulk_cli(
                provisioner,
                courses,
                roster,
                concurrency=args.concurrency or settings.concurrency,
                out=out,
                err=err,
                tty=tty,
                report=args.report,
                preview=preview,
            )
    except (ProvisionError, asyncio.CancelledError) as exc:
        # Stopped before the first user (a setting, the token, a refusal for everyone,
        # Ctrl-C): the report still names every user, and why none ran.
        if args.report is not None:
            why = "stopped by Ctrl-C" if isinstance(exc, asyncio.CancelledError) else str(exc)
            write_report(args.report, roster, {}, courses, not_run=f"the run stopped: {why}")
        raise


def _people(args: argparse.Namespace, err: TextIO) -> tuple[tuple[Course, ...], list[UserRow]]:
    """The course files and the people of ``status`` and ``remove``: ``COURSE.toml...``
    then emails, or ``COURSE.toml... --roster FILE`` (read as bulk reads it)."""
    paths = [Path(item) for item in args.targets if item.endswith(".toml")]
    emails = [item for item in args.targets if not item.endswith(".toml")]
    if not paths:
        raise BadInput(f"{args.command}: name at least one course file (COURSE.toml)")
    if bool(emails) == (args.roster is not None):
        raise BadInput(
            f"{args.command}: give the people as emails after the course files, or as "
            "--roster FILE (one of them)"
        )
    courses = load_courses(paths)
    if args.roster is None:
        rows = [UserRow(n, checked_identity(e, None)[0], None) for n, e in enumerate(emails, 1)]
        return courses, rows
    roster = load_roster(
        args.roster,
        course_ids=[course.course.id for course in courses],
        columns=Columns(
            email=args.email_column, course=args.course_column, groups=args.group_column
        ),
        delimiter=args.delimiter,
        skip_invalid=args.skip_invalid,
        encoding=args.encoding,
    )
    if roster.invalid:
        err.write(describe_skipped(str(args.roster), roster.invalid))
    return courses, roster.rows


async def _cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    courses, rows = _people(args, err)
    settings = load_settings()
    found: dict[int, list[StatusRow]] = {}
    nothing: list[UserRow] = []
    _configure_logging(err, logging.WARNING)  # rows and the summary say it all
    async with _openwebui(settings) as api:
        status = Status(Provisioner(api, settings), Directory(api, settings.lookup_email))
        stopped = await until_stopped(
            run_status(
                status,
                courses,
                rows,
                concurrency=args.concurrency or settings.concurrency,
                found=found,
                nothing=nothing,
            )
        )
    ordered = in_roster_order(found)
    if args.output is None:
        write_rows(out, ordered, args.format)
    else:
        try:
            with args.output.open("w", encoding="utf-8", newline="") as handle:
                write_rows(handle, ordered, args.format)
        except OSError as exc:
            raise BadInput(f"--output {args.output}: cannot write ({exc.strerror})") from exc
    people = len(found) + len(nothing)
    err.write(f"status: {people} of {len(rows)} people looked at\n{summary(ordered)}\n")
    if nothing:
        err.write(f"  {len(nothing)} person(s) whose groups choose no course: no rows\n")
    if stopped is not None:
        err.write(f"  interrupted by {stopped.name}: the rows above are the people read so far\n")
        return 128 + stopped.value
    return EXIT_FAILED if any(row.state == "failed" for row in ordered) else EXIT_OK


async def _cmd_remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    courses, rows = _people(args, err)
    settings = load_settings()
    found: dict[int, list[Removal]] = {}
    async with _openwebui(settings) as api:
        remover = Remover(
            Provisioner(api, settings),
            Directory(api, settings.lookup_email),
            including_replied=args.including_replied,
            module_id=args.module,
            rounds=settings.converge_rounds,
            dry_run=args.dry_run,
        )
        stopped = await until_stopped(
            run_remove(
                remover,
                courses,
                rows,
                concurrency=args.concurrency or settings.concurrency,
                found=found,
                emit=lambda line: _write_line(out, line.as_json()),
            )
        )
    dry = " (dry run: nothing deleted)" if args.dry_run else ""
    err.write(f"remove{dry}: {removal_summary(found, len(rows), dry_run=args.dry_run)}\n")
    failed = [line for person in found.values() for line in person if line.result == "failed"]
    for line in failed:
        err.write(f"  failed: {line.email}: {line.detail}\n")
    if stopped is not None:
        err.write("  interrupted: run the same command again to finish\n")
        return 128 + stopped.value
    return EXIT_FAILED if failed else EXIT_OK


async def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.courses:
        findings = _course_findings(args.courses)
    else:
        findings = await _setup_findings()
    for finding in findings:
        out.write(f"{'ok  ' if finding.ok else 'FAIL'} {finding.what}\n")
        if finding.fix:
            out.write(f"     fix: {finding.fix}\n")
    problems = sum(not finding.ok for finding in findings)
    out.write("all good\n" if not problems else f"{problems} problem(s)\n")
    return EXIT_OK if not problems else EXIT_FAILED


def _course_findings(paths: list[Path]) -> list[Finding]:
    """Course files checked offline: no settings, no listener, no OpenWebUI needed."""
    findings: list[Finding] = []
    for item in check_courses(paths):
        findings += [Finding(False, problem) for problem in item.problems]
        if item.course is not None:
            info = item.course.course
            who = f"groups {', '.join(info.groups)}" if info.groups else "everyone"
            count = len(item.course.modules)
            where = ", in a sidebar folder" if info.placement == "folder" else ""
            findings.append(
                Finding(True, f"{item.path}: course {info.id}, {count} module(s), for {who}{where}")
            )
    return findings


async def _setup_findings() -> list[Finding]:
    settings = load_settings()
    try:
        token = read_service_token(settings.token_file)
    except BadInput as exc:
        return [Finding(False, str(exc))]
    findings = [Finding(True, f"service token file {settings.token_file} readable")]
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, token, http))
        # The same listener with a token it cannot hold: only the internal listener says 407.
        stranger = OpenWebUI(Transport(settings, f"not-the-service-token-{token_hex(16)}", http))
        findings += await run_checks(api, settings.url, stranger)
        if all(finding.ok for finding in findings):  # signing in needs all of the above
            directory = Directory(api, settings.lookup_email)
            findings.append(await lookup_finding(directory, settings.lookup_email))
    return findings


async def _cmd_webhook(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    courses = load_courses(args.courses)
    secrets = load_secrets(args.secret_file)
    settings = load_settings()
    async with _openwebui(settings) as api:
        provisioner = Provisioner(api, settings)
        app = create_app(
            courses,
            secrets,
            provisioner,
            deadline_s=settings.webhook_deadline_s,
            concurrency=settings.concurrency,
        )
        runner = make_runner(app)
        await runner.setup()
        try:
            try:
                await _site(runner, args.listen).start()
            except OSError as exc:
                raise ListenFailed(args.listen, exc) from exc
            log.info(
                "webhook receiver listening",
                listen=args.listen,
                path="/webhooks/signup",
                courses={course.course.id: list(course.course.groups) for course in courses},
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()
            await provisioner.settle()  # sign-ins a deadline left running end first
    return EXIT_OK


UPDATE_HELP = (
    "give threads the user has not replied to the course file's current first_message "
    "(threads the user has continued are never changed)"
)
DRY_RUN_HELP = (
    "say, per person and module, what a run would do (create, already there, update, move, "
    "left alone) and change nothing: no chat, no folder, no account (needs "
    "OWUI_PROVISION_LOOKUP_EMAIL)"
)


def _command(
    commands: Any, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help has a description and examples, not a bare usage line."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _roster_options(parser: argparse.ArgumentParser, *, provisioning: bool) -> None:
    """The roster's columns and format, the same for bulk, status and remove."""
    parser.add_argument("--email-column", default="email", metavar="NAME", help="default: email")
    if provisioning:
        parser.add_argument(
            "--name-column",
            action="append",
            default=[],
            metavar="NAME",
            help="the display name's column (default: name, if present); repeat it to join "
            "several, e.g. first and last name",
        )
    parser.add_argument(
        "--course-column",
        default="course",
        metavar="NAME",
        help="the column naming each person's course ids (default: course); without it, "
        "everyone gets every course file given",
    )
    parser.add_argument(
        "--group-column",
        metavar="NAME",
        help="a column of groups or classes (several a cell, separated by , ; or |) that "
        "chooses each person's courses by the course files' groups, as the webhook "
        "receiver does (instead of a course column)",
    )
    parser.add_argument(
        "--delimiter",
        type=_delimiter,
        metavar="CHAR",
        help="the CSV delimiter (default: sniffed among , ; tab |); 'tab' for a tab",
    )
    parser.add_argument(
        "--encoding",
        type=_encoding,
        metavar="NAME",
        help="the roster's text encoding (default: UTF-8), e.g. cp1252 for a CSV Excel "
        "saved on Windows",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="report bad rows and go on with the others (default: stop before anything runs)",
    )
    parser.add_argument(
        "--concurrency", type=_positive, metavar="N", help="people at once (default 4)"
    )


def _people_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="COURSE.toml|EMAIL",
        help="course files (ending in .toml), then the people's emails (or --roster)",
    )
    parser.add_argument(
        "--roster", type=Path, metavar="FILE", help="the people: a roster, as for bulk"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="owui-provision",
        description="Create course threads in OpenWebUI for users, through the proxy's "
        "internal listener (settings: OWUI_PROVISION_* environment variables).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    user = _command(
        commands,
        "user",
        "provision one user with every course named",
        "Give one person every module of every course file named: one thread each, "
        "archived or in the course's folder (the course's placement), exactly once however "
        "often it runs. Signing in as a person creates their OpenWebUI account if missing. "
        "Prints one JSON line per module.",
        "  owui-provision user examples/welcome.toml ada@example.edu --name 'Ada Lovelace'\n"
        "  owui-provision user examples/welcome.toml ada@example.edu --dry-run",
    )
    user.add_argument("courses", type=Path, nargs="+", metavar="COURSE.toml")
    user.add_argument("email", metavar="EMAIL")
    user.add_argument("--name", help="display name, used when the account is created")
    user.add_argument("--update-unreplied", action="store_true", help=UPDATE_HELP)
    user.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    user.set_defaults(handler=_cmd_user)

    bulk = _command(
        commands,
        "bulk",
        "provision every user of a roster (CSV with any delimiter, or JSON Lines)",
        "Provision every person of a roster, a few at a time; a person's failure never "
        "stops the others. Each person gets the course files their course column names, "
        "those their groups choose (--group-column), or every course file given. Ends with "
        "a summary; rerun the same command after a failure or Ctrl-C to finish.",
        "  owui-provision bulk examples/welcome.toml roster.csv --report results.csv\n"
        "  owui-provision bulk courses/*.toml export.csv --group-column Class "
        "--encoding cp1252 --dry-run",
    )
    bulk.add_argument("courses", type=Path, nargs="+", metavar="COURSE.toml")
    bulk.add_argument("users", type=Path, metavar="USERS.csv|USERS.jsonl")
    _roster_options(bulk, provisioning=True)
    bulk.add_argument(
        "--report", type=Path, metavar="FILE", help="write per-user results to FILE (CSV)"
    )
    bulk.add_argument("--update-unreplied", action="store_true", help=UPDATE_HELP)
    bulk.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    bulk.set_defaults(handler=_cmd_bulk)

    status = _command(
        commands,
        "status",
        "who has which module thread, and whether they wrote in it",
        "One row per person and module: present or missing, where (archived, the course "
        "folder, another folder, the chats), replied to by the person or not, and whether "
        "its first message differs from the course file's. Rows go to stdout (JSON Lines, "
        "or CSV with --format csv) or --output; a summary per course and module, with "
        "percentages, to stderr. Reads only: creates no account (needs "
        "OWUI_PROVISION_LOOKUP_EMAIL).",
        "  owui-provision status examples/welcome.toml ada@example.edu grace@example.edu\n"
        "  owui-provision status courses/*.toml --roster roster.csv --format csv "
        "--output status.csv",
    )
    _people_arguments(status)
    _roster_options(status, provisioning=False)
    status.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="default: jsonl"
    )
    status.add_argument("--output", type=Path, metavar="FILE", help="default: stdout")
    status.set_defaults(handler=_cmd_status)

    remove = _command(
        commands,
        "remove",
        "delete courses' threads again (leavers, retired modules)",
        "Delete the threads these course files made for these people: only threads with the "
        "provisioner's marker, never a person's own chats; threads the person has written "
        "in are kept unless --including-replied. Safe to repeat, interrupt or run twice at "
        "once. Creates no account (needs OWUI_PROVISION_LOOKUP_EMAIL). The person's "
        "OpenWebUI account itself stays: docs/provisioner.md says how an admin deletes it.",
        "  owui-provision remove examples/welcome.toml leaver@example.edu --dry-run\n"
        "  owui-provision remove examples/welcome.toml leaver@example.edu\n"
        "  owui-provision remove examples/welcome.toml --roster year-9.csv --module prompting",
    )
    _people_arguments(remove)
    _roster_options(remove, provisioning=False)
    remove.add_argument(
        "--including-replied",
        action="store_true",
        help="delete threads the person has written in too (default: keep them)",
    )
    remove.add_argument(
        "--module",
        type=_module_id,
        metavar="ID",
        help="only this module's threads (it may already be gone from the course file)",
    )
    remove.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be deleted (would delete, would delete folder) and kept; "
        "delete nothing",
    )
    remove.set_defaults(handler=_cmd_remove)

    hook = _command(
        commands,
        "webhook",
        "receive signup webhooks; provision the courses each user's groups choose",
        "Listen for signed signup events (the proxy's user.seen, Clerk's user.created, or "
        "{email, name}) and provision, before answering, the courses each person's groups "
        "choose. GET /healthz and GET /metrics on the same listener.",
        "  owui-provision webhook examples/welcome.toml examples/year-9.toml "
        "--listen 127.0.0.1:8088 --secret-file /etc/owui-gate/webhook-secret",
    )
    hook.add_argument("courses", type=Path, nargs="+", metavar="COURSE.toml")
    hook.add_argument(
        "--listen", type=_listen_address, required=True, metavar="HOST:PORT|unix:/PATH"
    )
    hook.add_argument("--secret-file", type=Path, required=True, metavar="FILE")
    hook.set_defaults(handler=_cmd_webhook)

    check = _command(
        commands,
        "check",
        "verify the set-up and say how to fix it; with course files, check them offline",
        "Without arguments: the settings, the service token, the internal listener and "
        "OpenWebUI, each problem with its fix (and the lookup account, if set: checking "
        "signs in as it, creating it the first time). With course files: check them "
        "offline, each on its own and against each other.",
        "  owui-provision check\n  owui-provision check examples/welcome.toml examples/year-9.toml",
    )
    check.add_argument("courses", type=Path, nargs="*", metavar="COURSE.toml")
    check.set_defaults(handler=_cmd_check)

    shown = f"owui-provision {version()}"
    for command in (parser, user, bulk, status, remove, hook, check):
        command.add_argument("--version", action="version", version=shown)
    return parser


def main(
    argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    _configure_logging(err)
    handler: Callable[[argparse.Namespace, TextIO, TextIO], Coroutine[Any, Any, int]]
    handler = args.handler
    try:
        return asyncio.run(handler(args, out, err))
    except BadInput as exc:
        err.write(f"owui-provision: {exc}\n")
        return EXIT_BAD_INPUT
    except ProvisionError as exc:
        err.write(f"owui-provision: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.write("owui-provision: interrupted; run the same command again to finish\n")
        return 130
