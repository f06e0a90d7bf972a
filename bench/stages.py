"""The cost budget of one public request, stage by stage: ``python -m bench.stages``.

Each stage of a request through the public listener is run on its own real objects (a
``web.Request`` parsed by aiohttp from raw bytes, bound to a real client connection; the
real runtime: forward-auth with its decision cache warm, the upstream pool, metrics, the
access line) against nginx on loopback, and measured two ways:

- **CPU µs** per stage (``time.thread_time_ns`` around each stage, minus the cost of the
  clock reads themselves), the least of ``--rounds`` rounds: what a stage costs here, but
  moved by whatever else the machine does.
- **instructions** per stage (``--instructions``: the same code under valgrind's callgrind,
  collecting only while the stage runs): independent of load and nearly exact from run to
  run, so they decide whether a change helps, however busy the machine is.

Then the **whole request**, served by the real listener to an in-process client over
loopback TCP (32 connections, one request at a time each), beside the floor
(``bench/floor.py``), aiohttp's low-level server answering alone, and a bare
httptools server (what the client and the event loop cost). Whole-request rows include
the garbage collector as it runs in production, reported on its own line; the stages run
with it off, so a collection never lands in whichever stage happens to trip it.

``--against DIR`` runs every measurement for another checkout's ``proxy/`` too (a git
worktree of main, say), alternating round by round, and prints both side by side.

The stages (:data:`STAGES`) follow the public handler's order as one async step each over a
:class:`Scope`; what each one calls is the handler's own code, so when the handler is
reorganised only these step functions need re-mapping.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
from aiohttp import web

from bench import configs
from bench.floor import floor_handler
from bench.procs import Procs, free_port, wait_http
from proxy import app as proxy_app
from proxy import browser, logs, socketio
from proxy import server as proxy_server
from proxy.app import Runtime, access_line, create_app
from proxy.headers import forwarded_view
from proxy.observe import observed
from proxy.public import PublicHandler
from proxy.relay import stream_back
from proxy.respond import REQUEST_ID_KEY, new_request_id
from proxy.scope import Scope as ProxyScope
from proxy.settings import Settings
from proxy.target import read_target
from proxy.websocket import is_websocket

ROOT = Path(__file__).resolve().parent.parent
MARKS_SOURCE = Path(__file__).resolve().parent / "callgrind_marks.c"
COOKIE = "_oauth2_proxy=bench-session-cookie"

# What wrk sends in case 1, and what a browser sends for an API call behind oauth2-proxy.
_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "e30" * 40 + ".c2lnbmF0dXJl"
REQUESTS = {
    "wrk": f"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nCookie: {COOKIE}\r\n\r\n",
    "browser": (
        "GET /api/v1/chats/list?page=1 HTTP/1.1\r\n"
        "Host: chat.example.edu\r\n"
        "Connection: keep-alive\r\n"
        'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"\r\n'
        "Accept: application/json\r\n"
        "sec-ch-ua-mobile: ?0\r\n"
        f"Authorization: Bearer {_TOKEN}\r\n"
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36\r\n"
        'sec-ch-ua-platform: "Linux"\r\n'
        "Sec-Fetch-Site: same-origin\r\n"
        "Sec-Fetch-Mode: cors\r\n"
        "Sec-Fetch-Dest: empty\r\n"
        "Referer: https://chat.example.edu/\r\n"
        "Accept-Encoding: gzip, deflate, br, zstd\r\n"
        "Accept-Language: en-GB,en;q=0.9\r\n"
        f"Cookie: {COOKIE}{'x' * 200}; token={_TOKEN}\r\n\r\n"
    ),
}


# --------------------------------------------------------------------------- the stages


@dataclass
class Step:
    """What one request carries from stage to stage: the handler's own scope, and what
    its dispatch stage makes (split here into the exchange and the response)."""

    request: web.Request
    scope: Any = None
    relayed: Any = None
    response: Any = None
    out: web.StreamResponse | None = None


async def release_gate(rig: Rig, s: Step) -> None:
    """``PublicHandler.release_gate``: never relay to a release the proxy would fail open
    against."""
    answer = rig.handler.release_gate(s.scope)
    if answer is not None:  # a coroutine (every stage of an older checkout is one)
        answer = await answer
    assert answer is None


async def edge_refusals(rig: Rig, s: Step) -> None:
    """The scope's facts read once (``PublicHandler.scope``: the target, the WebSocket
    test, the forwarded view), then ``PublicHandler.edge_refusals`` (none refuses here:
    the request is an ordinary one)."""
    h, r = rig.handler, s.request
    if hasattr(h, "scope"):
        s.scope = h.scope(r)
    else:  # a checkout whose handler builds it inline (main before issue 23 phase 2)
        s.scope = ProxyScope(
            request=r,
            target=read_target(r.raw_path),
            websocket=is_websocket(r),
            forwarded=forwarded_view(
                r.headers, peer=r.remote, scheme=r.scheme, host=r.host, policy=h.policy
            ),
            relayed=r.raw_path,
        )
    answer = h.edge_refusals(s.scope)
    if answer is not None:  # a coroutine
        answer = await answer
    assert answer is None


async def identity(rig: Rig, s: Step) -> None:
    """``PublicHandler.identify``: forward-auth with the decision cache warm (the key, the
    lookup, the hit counted)."""
    assert await rig.handler.identify(s.scope) is None
    assert s.scope.identity is not None


async def access_rules(rig: Rig, s: Step) -> None:
    """``PublicHandler.admit``: the access rules, the decision counted, the credentials the
    request carries bound to the person (wrk's request carries none)."""
    answer = rig.handler.admit(s.scope)
    if answer is not None:  # a coroutine
        answer = await answer
    assert answer is None


async def outbound_headers(rig: Rig, s: Step) -> None:
    """``PublicHandler.outbound``: the header set OpenWebUI gets (stripped names logged,
    hop-by-hop dropped, X-Forwarded-*, the id, the identity injected)."""
    answer = rig.handler.outbound(s.scope)
    if answer is not None:  # a coroutine
        answer = await answer
    assert answer is None


async def upstream_exchange(rig: Rig, s: Step) -> None:
    """The dispatch stage's relay up to the response head: the request head written to a
    pooled connection and the response head read back, timed and observed in the latency
    histogram (``PublicHandler._send``)."""
    h, scope = rig.handler, s.scope
    assert not scope.websocket
    assert not browser.is_signout(scope.request.method, scope.target)
    assert not socketio.is_polling_post(scope.request.method, scope.target.route)
    s.relayed = h._relayed_request(scope)
    s.response = await h._send(scope, s.relayed)


async def response(rig: Rig, s: Step) -> None:
    """The rest of ``PublicHandler._relay``: the body read, the connection back in the pool,
    the response headers filtered, the client's answer built, prepared (``X-Request-ID``
    added) and written."""

    h, scope = rig.handler, s.scope
    assert not (h.signin_hook is not None and browser.is_signin(s.request.method, scope.target))
    assert not scope.drop_token_cookie
    assert s.response.status == 200
    s.out = await stream_back(s.relayed, s.response, extra_headers=None)


async def observation(rig: Rig, s: Step) -> None:
    """The observation middleware around the handler (request id, its log context, the
    request counted, the access line)."""

    out = s.out
    assert out is not None

    async def answered(_request: web.Request) -> web.StreamResponse:
        return out

    await rig.observe(s.request, answered)


Stage = Callable[["Rig", Step], Awaitable[None]]
STAGES: list[tuple[str, Stage]] = [
    ("release gate", release_gate),
    ("edge refusals", edge_refusals),
    ("identity (cache hit)", identity),
    ("access rules", access_rules),
    ("outbound headers", outbound_headers),
    ("upstream exchange", upstream_exchange),
    ("response", response),
    ("observation", observation),
]


# --------------------------------------------------------------------------- the rig


class _Drain(asyncio.Protocol):
    """The client end of the stage requests' connection: reads and forgets the answers."""

    def data_received(self, data: bytes) -> None:
        pass


@dataclass
class Rig:
    """The real runtime and public app of one process, and a connection to answer on."""

    settings: Any
    runtime: Any
    app: web.Application
    handler: Any
    observe: Any
    protocol: Any
    raw: bytes
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @classmethod
    async def open(cls, upstream_port: int, raw: bytes) -> Rig:

        base = f"http://127.0.0.1:{upstream_port}"
        settings = Settings(
            upstream=base,
            auth="forward",
            forward_auth_url=base + "/oauth2/auth",
            forward_auth_cache_s=60,
        )
        runtime = Runtime(settings)
        await runtime.start()
        app = create_app(settings, runtime)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()  # runs the app's start-up: its handler exists from here
        handler = PublicHandler(
            settings,
            runtime.authenticator,
            runtime.upstream,
            runtime.metrics,
            runtime.release,
            runtime.signin_hook,
        )
        # What serve() does once listening, where the checkout has it (the GC freeze).
        freeze = getattr(proxy_server, "_freeze_what_lives_for_good", None)
        if freeze is not None:
            freeze()
        # A plain server whose one connection the stage requests answer on (no head timer:
        # the connection stays idle as far as its own parser knows).
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client_end = socket.create_connection(listener.getsockname())
            server_end, _ = listener.accept()
        server = web.Server(_never, keepalive_timeout=3600)
        _, protocol = await loop.connect_accepted_socket(server, server_end)
        client, _ = await loop.connect_accepted_socket(_Drain, client_end)
        rig = cls(
            settings,
            runtime,
            app,
            handler,
            _observation(app, runtime),
            protocol,
            raw,
        )

        async def close() -> None:
            client.close()
            await runner.cleanup()
            await runtime.close()

        rig.closers.append(close)
        return rig

    async def close(self) -> None:
        for closer in self.closers:
            await closer()

    def requests(self, count: int) -> list[web.Request]:
        """``count`` fresh requests, each parsed from the raw bytes by aiohttp's own parser
        (nothing cached between them), routed as the app routes them, with a request id as
        the observation middleware gives it before the handler runs (the handler's stages
        run before the observation stage here)."""
        from aiohttp.http_writer import StreamWriter
        from aiohttp.web_protocol import RequestPayloadError

        loop = asyncio.get_running_loop()
        parser_class = type(self.protocol._parser)
        out = []
        task = asyncio.current_task()
        for _ in range(count):
            parser = parser_class(
                self.protocol,
                loop,
                2**16,
                max_line_size=8190,
                max_field_size=65536,
                max_headers=128,
                payload_exception=RequestPayloadError,
            )
            (message, payload), *_ = parser.feed_data(self.raw)[0]
            writer = StreamWriter(self.protocol, loop)
            request = self.app._make_request(message, payload, self.protocol, writer, task)
            request[REQUEST_ID_KEY] = new_request_id()
            out.append(request)
        return out

    async def route(self, request: web.Request) -> None:
        match = await self.app.router.resolve(request)
        match.add_app(self.app)
        match.freeze()
        request._match_info = match


def _observation(app: web.Application, runtime: Any) -> Any:
    """The public app's observation, as its route runs it (``app.PUBLIC_KEY``), or, in a
    checkout where it is a middleware, that middleware."""
    public_key = getattr(proxy_app, "PUBLIC_KEY", None)
    if public_key is not None:
        return app[public_key].observation.around
    return observed("public", runtime.metrics, access_line)


async def _never(_request: web.BaseRequest) -> web.StreamResponse:
    raise AssertionError("the stage connection never sends a request")


# --------------------------------------------------------------------------- measuring


class Marks:
    """Callgrind's collection switch and dumps (no-ops when not under callgrind)."""

    def __init__(self, library: Path | None) -> None:
        self.lib = ctypes.CDLL(str(library)) if library is not None else None

    def toggle(self) -> None:
        if self.lib is not None:
            self.lib.owui_bench_toggle()

    def dump(self, name: str) -> None:
        if self.lib is not None:
            self.lib.owui_bench_dump(name.encode())


async def stage_phase(rig: Rig, count: int, marks: Marks, only: str | None) -> dict[str, float]:
    """``count`` requests through every stage; CPU ns per stage (all of them), and with
    ``only`` callgrind collecting during that stage alone."""
    requests = rig.requests(count)
    for request in requests:
        await rig.route(request)
    spent = dict.fromkeys([name for name, _ in STAGES], 0)
    clock = time.thread_time_ns
    gc.disable()
    try:
        for request in requests:
            scope = Step(request)
            for name, stage in STAGES:
                if name == only:
                    marks.toggle()
                started = clock()
                await stage(rig, scope)
                spent[name] += clock() - started
                if name == only:
                    marks.toggle()
    finally:
        gc.enable()
    return {name: ns / count for name, ns in spent.items()}


async def empty_phase(count: int, marks: Marks) -> float:
    """What measuring costs by itself: the clock reads (ns per stage) and, under callgrind,
    the two switches (dumped as ``empty``)."""
    clock = time.thread_time_ns
    spent = 0
    for _ in range(count):
        marks.toggle()
        started = clock()
        spent += clock() - started
        marks.toggle()
    marks.dump("empty")
    return spent / count


class _Client(asyncio.Protocol):
    """One keep-alive client connection: the next request as soon as an answer is whole."""

    def __init__(self, raw: bytes, count: int, done: asyncio.Future[None]) -> None:
        self.raw, self.left, self.done = raw, count, done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.left -= 1
        assert self.parser.get_status_code() == 200, self.parser.get_status_code()
        assert self.transport is not None
        if self.left > 0:
            self.transport.write(self.raw)
        elif not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed with {self.left} left"))


async def drive(port: int, raw: bytes, conns: int, per_conn: int) -> None:
    """``conns`` connections, each sending ``per_conn`` requests one after the other."""
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in range(conns)]
    clients = []
    for future in done:
        transport, client = await loop.create_connection(
            lambda f=future: _Client(raw, per_conn, f), "127.0.0.1", port
        )
        clients.append((transport, client))
    for _, client in clients:
        client.transport.write(raw)
    try:
        await asyncio.gather(*done)
    finally:
        for transport, _ in clients:
            transport.close()


class _Null(asyncio.Protocol):
    """A bare httptools server answering every request with the same bytes."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n"
        b'{"ok":true,"user":"bench@example.edu"}'
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(self.ANSWER)  # type: ignore[attr-defined]


async def _fixed(_request: web.BaseRequest) -> web.Response:
    return web.Response(
        body=b'{"ok":true,"user":"bench@example.edu"}', content_type="application/json"
    )


async def _application() -> web.AppRunner:
    """aiohttp's ``Application`` shaped as the public app around the fixed answer (its one
    route, one ``on_response_prepare`` hook, and the observation's layer: a wrapper around
    the route; in checkouts from before ``EveryTarget``, their ``CatchAll`` or the catch-all
    pattern and one middleware): what the application layer costs over ``web.Server``."""

    async def hook(_request: web.Request, _response: web.StreamResponse) -> None:
        pass

    async def around(request: web.Request) -> web.StreamResponse:
        return await _fixed(request)

    async def no_continue(_request: web.Request) -> None:
        pass

    app = web.Application(handler_args={"max_field_size": 65536})
    try:
        from proxy.catchall import EveryTarget
    except ImportError:  # a checkout from before it
        try:
            from proxy.catchall import CatchAll  # type: ignore[attr-defined]
        except ImportError:  # a checkout from before that

            @web.middleware
            async def passing(request: web.Request, handler: Any) -> web.StreamResponse:
                return await handler(request)  # type: ignore[no-any-return]

            app = web.Application(middlewares=[passing], handler_args={"max_field_size": 65536})
            app.router.add_route("*", r"/{tail:[\s\S]*}", _fixed)
        else:
            everything = CatchAll()
            app.router.register_resource(everything)
            everything.add_route("*", around)
    else:
        app.router.register_resource(EveryTarget(around, no_continue))
    app.on_response_prepare.append(hook)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    return runner


@dataclass
class GcTimes:
    """How often the collector ran and how long it took, by generation (gc.callbacks)."""

    runs: list[int] = field(default_factory=lambda: [0, 0, 0])
    ns: list[int] = field(default_factory=lambda: [0, 0, 0])
    started: int = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter_ns()
        else:
            self.runs[info["generation"]] += 1
            self.ns[info["generation"]] += time.perf_counter_ns() - self.started


async def whole_rows(
    rig: Rig, upstream_port: int, raw: bytes, count: int, conns: int, marks: Marks, log: Any
) -> dict[str, dict[str, float]]:
    """Whole requests through four servers; process CPU µs per request (the client's
    share included, which the null server's row shows alone) and the collector's share."""

    loop = asyncio.get_running_loop()
    runner = await proxy_server._start(rig.app, "127.0.0.1:0", rig.settings, False)
    rig.closers.insert(0, runner.cleanup)
    public_port = runner.addresses[0][1]
    application = await _application()
    rig.closers.insert(0, application.cleanup)
    assert application.server is not None
    # (row, protocol factory to serve, or the port of the listener already serving)
    servers: list[tuple[str, Callable[[], asyncio.Protocol] | None, int | None]] = [
        ("bare httptools server (client + loop)", _Null, None),
        ("aiohttp web.Server, fixed answer", web.Server(_fixed), None),
        ("aiohttp Application as the public app's, fixed answer", application.server, None),
        ("floor (bench/floor.py)", web.Server(floor_handler(upstream_port, log)), None),
        ("owui-proxy public listener", None, public_port),
    ]
    out: dict[str, dict[str, float]] = {}
    per_conn = max(count // conns, 1)
    for label, factory, port in servers:
        server = None
        if factory is not None:
            server = await loop.create_server(factory, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
        assert port is not None
        await drive(port, raw, conns, 20)  # warm: connections, pools, caches
        gc.collect()
        times = GcTimes()
        gc.callbacks.append(times)
        marks.toggle()
        cpu, wall = time.process_time_ns(), time.perf_counter_ns()
        await drive(port, raw, conns, per_conn)
        cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
        marks.toggle()
        marks.dump(f"whole: {label}")
        gc.callbacks.remove(times)
        n = per_conn * conns
        out[label] = {
            "cpu_us": cpu / n / 1000,
            "wall_us": wall / n / 1000,
            "requests": n,
            "gc_us": sum(times.ns) / n / 1000,
            "gc_runs": times.runs,
        }
        if server is not None:
            server.close()
    return out


# --------------------------------------------------------------------------- one process


async def measure(args: argparse.Namespace, floor_log: io.TextIOBase) -> dict[str, Any]:
    """One round (or, under callgrind, the one run) in this process."""
    raw = REQUESTS[args.request].encode()
    marks = Marks(Path(args.marks) if args.marks else None)
    rig = await Rig.open(args.upstream_port, raw)
    try:
        await stage_phase(rig, 50, Marks(None), None)  # warm: pools, caches, code paths
        result: dict[str, Any] = {"empty_ns": await empty_phase(args.n, marks)}
        if marks.lib is None:
            result["stages_ns"] = await stage_phase(rig, args.n, marks, None)
        else:
            for name, _ in STAGES:
                await stage_phase(rig, args.n, marks, name)
                marks.dump(f"stage: {name}")
        result["whole"] = await whole_rows(
            rig, args.upstream_port, raw, args.whole_n, args.conns, marks, floor_log
        )
        return result
    finally:
        await rig.close()


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--request", choices=sorted(REQUESTS), default="wrk")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--whole-n", type=int, default=4000)
    parser.add_argument("--marks")
    parser.add_argument("--log", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import uvloop

    # The proxy's log lines (the access line among them) go to a file, unbuffered as in the
    # container; this process's own output stays on the real stdout.
    real_stdout = sys.stdout
    with (
        io.TextIOWrapper(open(args.log, "ab", buffering=0), write_through=True) as log,
        open(args.log + ".floor", "a", buffering=65536) as floor_log,
    ):
        sys.stdout = log
        logs.configure("info")
        sys.stdout = real_stdout
        result = uvloop.run(measure(args, floor_log))
    Path(args.out).write_text(json.dumps(result))


# --------------------------------------------------------------------------- orchestration


def _child(tree: Path, argv: list[str], valgrind: list[str] | None = None) -> list[str]:
    """A Python that imports ``proxy`` from ``tree`` and this ``bench`` from here."""
    boot = (
        "import sys; sys.path.insert(0, sys.argv[1]); import proxy; "
        "sys.path[0] = sys.argv[2]; from bench.stages import child_main; "
        "child_main(sys.argv[3:])"
    )
    return [*(valgrind or []), sys.executable, "-c", boot, str(tree), str(ROOT), *argv]


def _build_marks(work: Path) -> Path:
    library = work / "callgrind_marks.so"
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(MARKS_SOURCE)], check=True
    )
    return library


def read_dump(path: Path) -> tuple[str, int, int]:
    """(the dump's name, instructions, of them in the garbage collector) of one callgrind
    dump file."""
    names: dict[str, str] = {}
    trigger, total, collector = "", 0, 0
    callee: str | None = None
    inclusive_next = False
    for line in path.read_text(errors="replace").splitlines():
        if inclusive_next:
            inclusive_next = False
            if callee == "gc_collect_main":
                collector += int(line.split()[1])
        elif line.startswith("desc: Trigger:"):
            trigger = line.rpartition("Client Request: ")[2].strip()
        elif line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
        elif line.startswith("cfn="):
            callee = _name(line[4:], names)
        elif line.startswith("fn="):
            _name(line[3:], names)
            callee = None
        elif line.startswith("calls="):
            inclusive_next = True
    return trigger, total, collector


def _name(text: str, names: dict[str, str]) -> str:
    """A compressed callgrind name: ``(id) name`` the first time, ``(id)`` after."""
    ident, _, name = text.partition(")")
    if name.strip():
        names[ident] = name.strip()
    return names.get(ident, "")


def instructions(
    tree: Path, args: argparse.Namespace, work: Path, marks: Path, label: str
) -> dict[str, Any]:
    """One run under callgrind: instructions per stage and per whole request."""
    out_dir = work / f"callgrind-{label}"
    out_dir.mkdir()
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        f"--callgrind-out-file={out_dir}/cg.out",
    ]
    result_file = work / f"instructions-{label}.json"
    argv = _child_argv(args, work, label, result_file, marks)
    subprocess.run(_child(tree, argv, valgrind), check=True, capture_output=True)
    if args.keep_dumps is not None:
        shutil.copytree(out_dir, args.keep_dumps / label, dirs_exist_ok=True)
    dumps = {}
    for path in sorted(out_dir.glob("cg.out.*")):
        name, total, collector = read_dump(path)
        dumps[name] = (total, collector)
    n = args.n_instructions
    empty = dumps["empty"][0] / n
    result = json.loads(result_file.read_text())
    stages = {
        name: (dumps[f"stage: {name}"][0] - dumps[f"stage: {name}"][1]) / n - empty
        for name, _ in STAGES
    }
    whole = {}
    for row, numbers in result["whole"].items():
        total, collector = dumps[f"whole: {row}"]
        whole[row] = {
            "instructions": total / numbers["requests"],
            "gc": collector / numbers["requests"],
        }
    return {"stages": stages, "whole": whole}


def _child_argv(
    args: argparse.Namespace, work: Path, label: str, out: Path, marks: Path | None = None
) -> list[str]:
    n = args.n_instructions if marks is not None else args.n
    whole_n = args.whole_n_instructions if marks is not None else args.whole_n
    argv = [
        "--upstream-port",
        str(args.upstream_port),
        "--request",
        args.request,
        "--n",
        str(n),
        "--conns",
        str(args.conns),
        "--whole-n",
        str(whole_n),
        "--log",
        str(work / f"proxy-{label}.log"),
        "--out",
        str(out),
    ]
    if marks is not None:
        argv += ["--marks", str(marks)]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stages", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--request",
        choices=sorted(REQUESTS),
        default="wrk",
        help="which request (default: wrk's, as case 1)",
    )
    parser.add_argument("--n", type=int, default=2000, help="requests per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the least of each is kept")
    parser.add_argument("--conns", type=int, default=32, help="client connections, whole requests")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions under callgrind"
    )
    parser.add_argument(
        "--n-instructions", type=int, default=400, help="requests per stage under callgrind"
    )
    parser.add_argument(
        "--whole-n",
        type=int,
        default=4000,
        help="whole requests per row and round (enough for the collector to run many times)",
    )
    parser.add_argument(
        "--whole-n-instructions", type=int, default=1000, help="whole requests under callgrind"
    )
    parser.add_argument(
        "--against", type=Path, metavar="DIR", help="another checkout to measure side by side"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--keep-dumps",
        type=Path,
        metavar="DIR",
        help="keep the callgrind dumps (one per stage and whole row) in DIR/<tree> for "
        "callgrind_annotate",
    )
    args = parser.parse_args(argv)
    trees = {"this": ROOT}
    if args.against is not None:
        trees["against"] = args.against.resolve()
    # One string-hash seed for every child (unless the caller chose one): dict and set
    # look-ups of the same strings then cost the same in both trees and in every run (with
    # random seeds a stage moved by ~1k instructions between identical runs).
    os.environ.setdefault("PYTHONHASHSEED", "0")
    work = Path(tempfile.mkdtemp(prefix="owui-stages-"))
    procs = Procs(work)
    results: dict[str, Any] = {
        "request": args.request,
        "trees": {k: str(v) for k, v in trees.items()},
    }
    try:
        args.upstream_port = free_port()
        conf = configs.nginx_static(work, "upstream", args.upstream_port)
        nginx = procs.start("upstream", ["nginx", "-c", str(conf), "-e", "stderr"], cpus=None)
        wait_http(f"http://127.0.0.1:{args.upstream_port}/", nginx)
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
        for index in range(args.rounds):
            for label, tree in trees.items():
                out = work / f"round-{label}-{index}.json"
                subprocess.run(_child(tree, _child_argv(args, work, label, out)), check=True)
                rounds[label].append(json.loads(out.read_text()))
                print(f"[stages] round {index + 1} {label} done", file=sys.stderr)
        for label in trees:
            results[label] = {"time": least(rounds[label])}
        if args.instructions:
            marks = _build_marks(work)
            for label, tree in trees.items():
                print(f"[stages] callgrind {label}", file=sys.stderr)
                results[label]["instructions"] = instructions(tree, args, work, marks, label)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results, list(trees)))
    return 0


def least(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage and per whole row, the least of the rounds (the least disturbed)."""
    empty = min(r["empty_ns"] for r in rounds)
    stages = {name: min(r["stages_ns"][name] for r in rounds) - empty for name, _ in STAGES}
    whole = {}
    for row in rounds[0]["whole"]:
        best = min((r["whole"][row] for r in rounds), key=lambda w: w["cpu_us"])
        whole[row] = best
    return {
        "stages_us": {k: v / 1000 for k, v in stages.items()},
        "whole": whole,
        "rounds": len(rounds),
    }


def table(results: dict[str, Any], labels: list[str]) -> str:
    cols = ["stage"]
    for label in labels:
        cols += [f"CPU µs ({label})"]
        if "instructions" in results[label]:
            cols += [f"instructions ({label})"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    total: dict[str, list[float]] = {label: [0.0, 0.0] for label in labels}
    for name, _ in STAGES:
        cells = [name]
        for label in labels:
            us = results[label]["time"]["stages_us"][name]
            total[label][0] += us
            cells.append(f"{us:.1f}")
            if "instructions" in results[label]:
                ins = results[label]["instructions"]["stages"][name]
                total[label][1] += ins
                cells.append(f"{ins:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**sum of the stages**"]
    for label in labels:
        cells.append(f"**{total[label][0]:.1f}**")
        if "instructions" in results[label]:
            cells.append(f"**{total[label][1]:,.0f}**")
    lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    cols = ["whole request (in-process client)"]
    for label in labels:
        cols += [f"CPU µs ({label})", f"of it GC µs ({label})"]
        if "instructions" in results[label]:
            cols += [f"instructions ({label})", f"of it GC ({label})"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in results[labels[0]]["time"]["whole"]:
        cells = [row]
        for label in labels:
            w = results[label]["time"]["whole"][row]
            cells += [f"{w['cpu_us']:.1f}", f"{w['gc_us']:.1f}"]
            if "instructions" in results[label]:
                i = results[label]["instructions"]["whole"][row]
                cells += [f"{i['instructions']:,.0f}", f"{i['gc']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
