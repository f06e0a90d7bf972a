"""Process life: listeners (TCP or unix), uvloop, worker processes, SIGTERM drain.

One worker (the default) runs everything in this process. With ``workers`` > 1 the parent
forks that many workers that each bind the public port with ``SO_REUSEPORT`` (the kernel
spreads connections); only worker 0 also serves the admin and internal listeners; its
``/metrics`` sums every worker's (prometheus-client's multiprocess mode, see
``proxy/metrics.py``). A refused OpenWebUI release any worker finds stops every worker's
relaying at once (a counter in shared memory, ``proxy/release_watch.py``). The parent
forwards SIGTERM/SIGINT to every worker and SIGHUP (re-read the internal token file) to
worker 0 alone, and exits 0 once every worker has drained. A process that serves no internal
listener ignores SIGHUP rather than die of it (``systemctl reload`` must never stop the
proxy). A worker whose parent is gone (killed with SIGKILL, say) drains and exits as on
SIGTERM: on Linux the kernel tells it (``PR_SET_PDEATHSIG``), elsewhere it notices within a
second (``getppid`` changes); otherwise orphans would keep serving the port with no one to
stop them.

On SIGTERM a worker stops accepting, lets in-flight requests (streams included) run for
up to ``shutdown_grace_s``, then cuts what is left and exits 0: the drain ends within the
grace (aiohttp alone would wait it out twice, before and after cancelling handlers).

Handlers are cancelled when their client's connection drops (``handler_cancellation``):
a stream whose client left stops at once, closing its upstream connection, instead of at
its next chunk; the cancellation is what counts and logs the request as 499.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import multiprocess

from proxy import logs
from proxy.app import Runtime, create_admin_app, create_app
from proxy.connections import GuardedRunner
from proxy.errors import ConfigProblems
from proxy.internal import AUDIT_KEY, create_internal_app
from proxy.internal import AuditAccessLogger as AuditLog
from proxy.metrics import MULTIPROC_ENV
from proxy.relay import reset
from proxy.release_watch import RefusalSignal
from proxy.settings import Settings


class ListenError(Exception):
    """A listener could not be opened (address in use, no permission, ...)."""


def _site(runner: web.AppRunner, listen: str, reuse_port: bool) -> web.BaseSite:
    if listen.startswith("unix:"):
        return web.UnixSite(runner, listen[5:])
    host, _, port = listen.rpartition(":")
    return web.TCPSite(
        runner, host.strip("[]"), int(port), reuse_port=reuse_port or None, backlog=1024
    )


# aiohttp's own drain timeout, longer than the grace: _drain's cut at the grace is what
# ends the drain, so aiohttp never starts its second wait.
_AIOHTTP_SHUTDOWN_SLACK_S = 5.0


async def _start(
    app: web.Application, listen: str, settings: Settings, reuse: bool
) -> web.AppRunner:
    audit: dict[str, Any] = {"access_log": None}
    if app.get(AUDIT_KEY):
        # The internal listener audits even what aiohttp's parser refuses (proxy/internal.py).
        audit = {"access_log": logging.getLogger("owui.internal"), "access_log_class": AuditLog}
    runner = GuardedRunner(
        app,
        header_timeout_s=settings.header_timeout_s,
        keepalive_timeout=settings.keepalive_timeout_s,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_grace_s + _AIOHTTP_SHUTDOWN_SLACK_S,
        handler_cancellation=True,
        **audit,
    )
    await runner.setup()
    await _site(runner, listen, reuse).start()
    return runner


async def _drain(runners: list[web.AppRunner], grace: float) -> None:
    """Stop accepting on every runner, let in-flight requests run, cut them at ``grace``."""

    def cut() -> None:
        for runner in runners:
            if runner.server is not None:
                for connection in runner.server.connections:
                    # A reset, not a FIN: a stream cut here must not look complete to a
                    # client whose body ends with the connection (HTTP/1.0).
                    if connection.transport is not None:
                        reset(connection.transport)
                    # Closing the transport cancels the handler (handler_cancellation).
                    connection.force_close()

    deadline = asyncio.get_running_loop().call_later(grace, cut)
    try:
        await asyncio.gather(*(runner.cleanup() for runner in runners))
    finally:
        deadline.cancel()


# How often a worker checks that its parent is still there (the portable fallback).
_PARENT_CHECK_S = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _signal_when_parent_dies() -> None:
    """Linux: ask the kernel for SIGTERM when the parent process dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once the parent is gone (an orphan is re-parented: getppid changes)."""
    while not stop.is_set():
        if os.getppid() != parent:
            logs.get().warning("parent_gone", parent=parent)
            stop.set()
            return
        await asyncio.sleep(_PARENT_CHECK_S)


# How often freed heap memory is handed back to the kernel (see _return_freed_memory).
_TRIM_INTERVAL_S = 10.0


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where there is none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:
        return None
    return lambda: trim(0)


async def _return_freed_memory(trim: Callable[[], None]) -> None:
    """Every few seconds, give the kernel back the heap pages glibc keeps after a burst.

    A burst of aborted transfers allocates many short-lived 64-256 KiB buffers (socket
    reads, queued body chunks); once freed, glibc keeps them in its fragmented heap: RSS
    stayed tens of MiB up after 2,000 aborts while the live Python objects were ~2 MiB
    (tracemalloc). ``malloc_trim`` releases the free pages (a heap walk, cheap at this
    size). ``MALLOC_ARENA_MAX`` does not help: the event loop is one thread.
    """
    while True:
        await asyncio.sleep(_TRIM_INTERVAL_S)
        trim()


# Container objects made (less those freed) before the youngest generation is collected:
# Python's default is 700. See _freeze_what_lives_for_good.
YOUNG_THRESHOLD = 10_000


def _freeze_what_lives_for_good() -> None:
    """Keep the objects made at start out of every later garbage collection, and collect
    the youngest generation when requests leave garbage, not while they run.

    Modules, settings, apps and pools (~60,000 objects) live as long as the process, yet
    each full collection walked them all: one such pause per few seconds under load, tens
    of milliseconds each (the p99 of a busy proxy, docs/benchmarks.md). Frozen, a full
    collection walks only what requests made since.

    The youngest generation's threshold counts objects made and not yet freed, and the
    requests in flight hold ~50 each: at 256 connections ~13,000 are alive at any moment,
    so with the default 700 a collection ran every few requests, walked them all and found
    nothing (403 collections, 0 objects collected, in 9,600 requests; ~7 % of the CPU).
    Requests leave no cycles (the relay breaks the ones an aborted transfer made, which
    held its buffers: tests/proxy/test_gc.py), so a higher threshold holds no garbage
    back, and any that some fault still makes waits for 10,000 allocations at most.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def serve(
    settings: Settings,
    *,
    worker: int = 0,
    reuse_port: bool = False,
    parent: int | None = None,
    refusals: RefusalSignal | None = None,
) -> None:
    """Run one worker until SIGTERM/SIGINT (or, with ``parent``, that process's end), then
    drain and return. ``refusals`` is shared by all the workers (``proxy/release_watch.py``)."""
    log = logs.get().bind(worker=worker, pid=os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Kept referenced here: the loop holds only weak references to tasks.
    watch = asyncio.create_task(_watch_parent(parent, stop)) if parent is not None else None
    trim = _malloc_trim()
    trimmer = asyncio.create_task(_return_freed_memory(trim)) if trim is not None else None
    # Replaced by the internal listener's own handler while it runs (proxy/internal.py).
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("sighup_ignored"))

    runtime = Runtime(settings, refusals=refusals)
    await runtime.start()
    grace = settings.shutdown_grace_s
    # Every app is built before any port opens: a configuration problem found here (the
    # internal listener's token file) must stop the start, not leave half a proxy running.
    try:
        apps = [(create_app(settings, runtime), settings.listen, reuse_port)]
        if worker == 0:
            apps.append((create_admin_app(settings, runtime), settings.admin_listen, False))
            if settings.internal_listen is not None:
                assert runtime.upstream is not None
                internal = create_internal_app(settings, runtime.upstream, runtime.metrics)
                apps.append((internal, settings.internal_listen, False))
    except BaseException:
        await runtime.close()
        raise
    runners: list[web.AppRunner] = []  # public first, then admin, then internal
    try:
        for app, listen, reuse in apps:
            try:
                runners.append(await _start(app, listen, settings, reuse))
            except OSError as exc:
                raise ListenError(f"cannot listen on {listen} ({exc.strerror or exc})") from exc
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        await runtime.close()
        raise
    admin = runners[1] if worker == 0 else None
    serving = [runner for runner in runners if runner is not admin]
    log.info(
        "listening",
        listen=settings.listen,
        admin_listen=settings.admin_listen if worker == 0 else None,
        internal_listen=settings.internal_listen if worker == 0 else None,
    )

    _freeze_what_lives_for_good()
    await stop.wait()
    for task in (watch, trimmer):
        if task is not None:
            task.cancel()
    log.info("draining", grace_s=grace)
    runtime.draining = True
    # The public and internal runners together, within one grace; the admin listener
    # keeps answering (/readyz: 503) meanwhile and stops last.
    await _drain(serving, grace)
    if admin is not None:
        await admin.cleanup()
    await runtime.close()
    log.info("stopped")


def _run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def _worker(settings: Settings, index: int, parent: int, refusals: RefusalSignal) -> None:
    _signal_when_parent_dies()
    logs.configure(settings.log_level)
    try:
        _run_loop(
            lambda: serve(settings, worker=index, reuse_port=True, parent=parent, refusals=refusals)
        )
    except ConfigProblems as exc:
        report_problems(exc.problems)
        raise SystemExit(2) from exc
    except ListenError as exc:
        print(f"owui-proxy worker {index}: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


def report_problems(problems: list[str]) -> None:
    """Every configuration problem on stderr, one a line (the caller exits 2)."""
    print("owui-proxy: the configuration has problems:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


def run(settings: Settings) -> int:
    """Serve until told to stop; the process exit code."""
    log = logs.get()
    log.info("starting", settings=settings.redacted())
    if settings.workers == 1:
        try:
            _run_loop(lambda: serve(settings))
        except ConfigProblems as exc:
            report_problems(exc.problems)
            return 2
        except ListenError as exc:
            print(f"owui-proxy: {exc}", file=sys.stderr)
            return 1
        return 0

    with _shared_metrics():
        return _run_workers(settings)


_METRICS_PREFIX = "owui-proxy-metrics-"


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """prometheus-client's multiprocess mode in a fresh folder, for the workers' lifetime.

    Each worker writes its metrics to files there and worker 0's ``/metrics`` sums them
    (``proxy/metrics.py``). A folder of our own per run: files of an earlier run's workers
    would be summed in. The value class is chosen again here, since prometheus-client picks
    it when first imported, before this process knew it would fork workers.

    The folder's name carries its owner (this process's pid and start time), and the folders
    of owners that are gone are removed first: a parent killed with SIGKILL never runs the
    clean-up below, and left 512 KiB behind every time.
    """
    from prometheus_client import values

    _remove_orphaned_metrics(tempfile.gettempdir())
    folder = tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-{_started(os.getpid())}-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = folder
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def _started(pid: int) -> str:
    """When process ``pid`` started (Linux: clock ticks since boot), so that a reused pid is
    not taken for the process that had it; "0" where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return "0"
    fields = stat.rpartition(")")[2].split(" ")
    # After the command name: field 3 (state) is fields[1]; field 22 (starttime) fields[20].
    return fields[20] if len(fields) > 20 and fields[20].isdigit() else "0"


def _owner_alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user has that pid: not ours to judge
    return started == "0" or _started(pid) == started


def _remove_orphaned_metrics(tmp: str) -> None:
    """Remove this user's metrics folders whose owning proxy process is gone."""
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(_METRICS_PREFIX):
            continue
        pid, _, rest = entry.name.removeprefix(_METRICS_PREFIX).partition("-")
        started = rest.partition("-")[0]
        try:
            owned = entry.is_dir(follow_symlinks=False) and entry.stat().st_uid == os.getuid()
        except OSError:
            continue
        # A name without an owner (an older release's) is left alone; ASCII digits only.
        named = (pid + started).isascii() and pid.isdigit() and started.isdigit()
        if owned and named and not _owner_alive(int(pid), started):
            shutil.rmtree(entry.path, ignore_errors=True)
            logs.get().info("metrics_folder_removed", folder=entry.path, owner=int(pid))


def _run_workers(settings: Settings) -> int:
    log = logs.get()
    context = multiprocessing.get_context("fork")  # no loop exists yet in the parent
    refusals = RefusalSignal(context)  # made before the fork: shared by every worker
    workers = [
        context.Process(
            target=_worker, args=(settings, i, os.getpid(), refusals), name=f"owui-proxy-{i}"
        )
        for i in range(settings.workers)
    ]
    for process in workers:
        process.start()

    def forward(signum: int, _frame: object) -> None:
        for process in workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    def forward_to_first(signum: int, _frame: object) -> None:
        # Only worker 0 serves the internal listener and holds its token store.
        first = workers[0]
        if first.pid is not None and first.is_alive():
            os.kill(first.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward_to_first)
    failed: int | None = None
    alive = list(workers)
    while alive:
        multiprocessing.connection.wait([p.sentinel for p in alive])
        for process in [p for p in alive if not p.is_alive()]:
            alive.remove(process)
            process.join()
            if process.pid is not None:
                # Its live gauges (open WebSockets) no longer count; its counters do.
                multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            if process.exitcode != 0 and failed is None:
                # One worker down means a broken deployment: stop the others too.
                failed = process.exitcode
                log.error("worker_failed", worker=process.name, exitcode=process.exitcode)
                forward(signal.SIGTERM, None)
    if failed is None:
        return 0
    return 2 if failed == 2 else 1
