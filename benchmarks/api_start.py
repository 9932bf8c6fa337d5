#!/usr/bin/env python3
"""Start over the Engine API socket beside the library call and the bare runtime, in one run.

Per round, ``--concurrency`` (20) containers running ``sleep infinity`` are started at once in
each of these modes, then removed (force). The modes take turns within a round, in an order
drawn anew each round (seeded: the same orders every run), so that drift and whatever a batch
leaves to the kernel (namespaces and cgroups are torn down after ``rm`` returns) touch every mode
alike; ``--settle`` seconds (1 on runc) pass after each batch's clean-up:

* ``library``    — ``daemon.container_start(id)``, the embedded engine, called in this process;
* ``api raw``    — ``POST /v1.51/containers/{id}/start`` written as bytes on a unix socket
  connection by a client process, timed until the response head (204) is read: the server's
  cost, next to no client;
* ``api client`` — the same request through :class:`asyncstart.Client`, in another
  client process: adds the client;
* ``bare runc``  — ``runc create`` + ``runc start`` of a prepared bundle (runc runtime only): the
  same rootfs and spec as asyncstart's, with fresh namespaces (no network to set up), as in
  ``runc_start.py``; ``bare crun`` when the daemon's OCI runtime is crun (``--oci``), run as
  this host needs any crun run (``runtime.runc_cli.launcher``: on a hybrid cgroup layout, in a
  mount namespace without the cgroup2 half). crun compiles the spec's seccomp profile at every
  create, as a user's crun does; the engine hands it the program it compiled before
  (``runtime.seccomp_cache``). ``--bare-filter kept`` hands bare crun the same program: the
  engine's own cost beside a runtime that does the same work.

The exec root and the bare runtime's state and bundles are on a tmpfs of the benchmark's own
(``--no-run-tmpfs``: the temporary directory's file system), as ``/run`` is on most hosts.

What runs where. The daemon (``open_daemon``, in a temporary directory), its API server
(``serve_api`` on a unix socket), the library calls and bare runc's ``runc`` invocations run in
this process, on the chosen ``--backend``. Each API client runs in a process of its own (this
script with ``--client-worker raw|client``, on asyncio, started once per run), as the docker CLI,
docker-py or an ``asyncstart.Client`` user would: a client inside the daemon's event loop would
charge its CPU time and wake-ups to the server, which no deployment does. A worker keeps one
keep-alive connection per concurrent request, reused across rounds. The benchmark sends it, one
JSON line on its stdin, ``warm`` (``--concurrency`` concurrent ``GET /_ping``, untimed, so that
every connection is open) and then the batch's container
IDs; the worker fires the starts concurrently, times each until the end of the response (204,
no body) from its write (raw) or from the call to ``Client.container_start`` (client: the
request's building included), and answers with the latencies and its own CPU time (one JSON
line on stdout). An untimed round of every mode comes first.

Per mode: p50/p90 of a start's latency (for the API modes, as the client process measured it),
and throughput = concurrency / mean batch wall time (measured here, around the whole exchange
with the worker for the API modes). ``lib p50`` is the time spent inside
``daemon.container_start`` (for the API modes, measured under the server); ``outside p50`` is,
per request, its latency less its own library time (matched by container ID), so the API's
overhead without the start's own variance. ``cpu ms/start`` is this process's CPU time over a
batch, per start: the engine and, in the API modes, the server (runc's own processes not
included); ``client cpu`` is the client process's, for the API modes; ``host cpu`` the whole
machine's busy CPU time over a batch, per start (every process: the runtime's, conmon's, the
kernel's threads). ``throughput / bare`` sets each engine mode's throughput beside the bare
runtime's (the concurrent-start target: at least 0.8x), with its 90% interval (bootstrap,
resampling rounds, paired: the modes of a round ran one after another) and, from 8 rounds on,
a verdict: met, not met, or unresolved when 0.8x is inside the interval. The API target line
compares API p50 with library p50, as the requirement reads: the API adds at most 2 ms p50
over the library call; it says "unresolved" when the 90% interval of that difference
(bootstrap, resampling rounds) contains the target, i.e. when the run's noise is larger than
what it is asked to tell apart. The clients and the daemon share the machine's cores (and
runc's processes).

Nothing is left behind: containers are removed, the client processes exit when their stdin
closes (killed after 5 s otherwise), the daemon's directories are temporary, and with
``--network bridge`` the benchmark creates its own bridge (an unused 10.213.X.0/24) and deletes
it, and its firewall rules, at the end (asyncstart's firewall table too if the run made it:
``_common.host_as_found``). ``--runtime fake`` needs no root and shows the engine and API alone.

    sudo .venv/bin/python benchmarks/api_start.py --backend asyncio --rounds 8
    .venv/bin/python benchmarks/api_start.py --runtime fake --backend trio --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import ipaddress
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, cast

import anyio
import anyio.abc
from _common import bare_spec, host_as_found, percentile
from anyio.streams.buffered import BufferedByteReceiveStream

import asyncstart
from asyncstart.__main__ import choose_runtime
from asyncstart._version import API_VERSION
from asyncstart.images.busybox import build_busybox_tar
from asyncstart.logconfig import configure_logging
from asyncstart.runtime import seccomp_cache
from asyncstart.runtime.runc_cli import launcher

CMD = ["sleep", "infinity"]
#: Longest a batch of starts (or its clean-up) may take before the run is called a failure.
BATCH_TIMEOUT = 120.0
TARGET_MS = 2.0
#: The concurrent-start target: throughput at least this much of the bare runtime's.
TARGET_RATIO = 0.8
#: Fewer rounds than this give too few distinct resamples for a bootstrap interval to cover
#: what it says: the ratio and interval are printed, without a verdict.
VERDICT_ROUNDS = 8
BOOTSTRAP_DRAWS = 1000
#: Longest a client process may take to exit once its stdin is closed.
WORKER_EXIT_TIMEOUT = 5.0
#: Longest line a client process may send back.
MAX_LINE = 1 << 20


# -- the clients, in processes of their own -----------------------------------------------


class RawConnection:
    """One keep-alive HTTP/1.1 connection to the API socket and nothing more: the request's
    bytes out, the response head (and body, if any) in."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stream: anyio.abc.SocketStream | None = None
        self._buffer = b""

    async def request(self, method: str, target: str) -> int:
        """Send one request without a body; its status (an error status raises)."""
        if self._stream is None:
            self._stream = await anyio.connect_unix(self._path)
            self._buffer = b""
        stream = self._stream
        await stream.send(
            f"{method} {target} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += await stream.receive()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            rest += await stream.receive()
        body, self._buffer = rest[:length], rest[length:]
        if headers.get(b"connection") == b"close":
            await self.aclose()
        if status >= 300:
            raise RuntimeError(f"{method} {target}: HTTP {status} {body!r}")
        return status

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()


async def _batch(starts: list[Callable[[], Awaitable[object]]]) -> list[float]:
    """Run the starts concurrently: each one's latency."""
    latencies = [0.0] * len(starts)

    async def one(index: int) -> None:
        began = time.perf_counter()
        await starts[index]()
        latencies[index] = time.perf_counter() - began

    with anyio.fail_after(BATCH_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for index in range(len(starts)):
                tg.start_soon(one, index)
    return latencies


async def _client_worker(kind: str, sock: str, concurrency: int) -> None:
    """A client process: one command per line on stdin (JSON), one answer per line on stdout.

    ``{"op": "warm"}``: ``concurrency`` concurrent pings, answered ``{}``. ``{"op": "start",
    "ids": [...]}``: those containers started at once, one connection each, answered
    ``{"latencies": {id: seconds}, "cpu": seconds}``. A failure is answered ``{"error": ...}``.
    EOF on stdin: close the connections and exit.
    """
    # Answers on a copy of stdout; anything else printed goes to stderr, not into the protocol.
    out: BinaryIO = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = asyncio.StreamReader(limit=MAX_LINE)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    raw = [RawConnection(sock) for _ in range(concurrency)]
    client = asyncstart.Client(f"unix://{sock}")
    start: Callable[[int, str], Awaitable[object]]
    ping: Callable[[int], Awaitable[object]]
    if kind == "raw":

        def start(index: int, cid: str) -> Awaitable[object]:
            return raw[index].request("POST", f"/v{API_VERSION}/containers/{cid}/start")

        def ping(index: int) -> Awaitable[object]:
            return raw[index].request("GET", "/_ping")

    else:

        def start(index: int, cid: str) -> Awaitable[object]:
            return client.container_start(cid)

        def ping(index: int) -> Awaitable[object]:
            return client.ping()

    try:
        while line := await stdin.readline():
            command = json.loads(line)
            answer: dict[str, Any] = {}
            try:
                if command["op"] == "warm":
                    await _batch([partial(ping, i) for i in range(concurrency)])
                else:
                    ids: list[str] = command["ids"]
                    cpu = time.process_time()
                    latencies = await _batch([partial(start, i, c) for i, c in enumerate(ids)])
                    answer["cpu"] = time.process_time() - cpu
                    answer["latencies"] = dict(zip(ids, latencies, strict=True))
            except Exception as exc:  # reported to the benchmark, which stops the run
                first: BaseException = exc
                while isinstance(first, BaseExceptionGroup):  # the first failed request's
                    first = first.exceptions[0]
                answer = {"error": f"{type(first).__name__}: {first}"}
            out.write(json.dumps(answer).encode() + b"\n")
            out.flush()
    finally:
        for connection in raw:
            await connection.aclose()
        await client.aclose()


class ClientWorker:
    """A client process (this script with ``--client-worker``) and the pipes to it."""

    def __init__(self, kind: str, sock: Path, concurrency: int) -> None:
        self.kind = kind
        self._command = [
            sys.executable, str(Path(__file__).resolve()), "--client-worker", kind,
            "--socket", str(sock), "--concurrency", str(concurrency),
        ]  # fmt: skip
        self._process: anyio.abc.Process | None = None
        self._stdout: BufferedByteReceiveStream | None = None

    async def __aenter__(self) -> Self:
        # A session of its own: a ^C reaches the benchmark only, which then closes its stdin.
        self._process = await anyio.open_process(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            start_new_session=True,
        )  # fmt: skip
        assert self._process.stdout is not None
        self._stdout = BufferedByteReceiveStream(self._process.stdout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(WORKER_EXIT_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None
        assert self._stdout is not None
        with anyio.fail_after(BATCH_TIMEOUT):
            await self._process.stdin.send(json.dumps(command).encode() + b"\n")
            try:
                line = await self._stdout.receive_until(b"\n", MAX_LINE)
            except anyio.IncompleteRead:
                raise RuntimeError(f"the {self.kind} client process exited") from None
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.kind} client: {answer['error']}")
        return answer

    async def warm(self) -> None:
        await self.call({"op": "warm"})

    async def starts(self, ids: list[str]) -> tuple[list[float], float]:
        """Start these containers at once: each one's latency (in the order of ``ids``), and
        the client process's CPU time."""
        answer = await self.call({"op": "start", "ids": ids})
        latencies: dict[str, float] = answer["latencies"]
        return [latencies[cid] for cid in ids], float(answer["cpu"])


# -- the daemon's side --------------------------------------------------------------------


class TimedStarts:
    """Stands in for the daemon (behind the API too): forwards everything, and records the
    time each ``container_start`` spends inside the library."""

    def __init__(self, daemon: asyncstart.Daemon) -> None:
        self._daemon = daemon
        self.inside: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._daemon, name)

    async def container_start(
        self, reference: str, checkpoint: str | None = None, checkpoint_dir: str | None = None
    ) -> None:
        began = time.perf_counter()
        try:
            await self._daemon.container_start(reference, checkpoint, checkpoint_dir)
        finally:
            self.inside[reference] = time.perf_counter() - began


# -- bare runc ----------------------------------------------------------------------------


class BareRunc:
    """Prepared bundles, one per concurrent start, reused round after round; ``binary`` is
    runc or crun (crun run as this host needs any crun run: see ``launcher``)."""

    def __init__(self, root: Path, count: int, binary: str = "runc") -> None:
        self.root = root
        self.state = root / "state"
        self.binary = binary
        self.names = [f"api-bench-{os.getpid()}-{i}" for i in range(count)]

    def prepare(self, spec: dict[str, Any], rootfs: Path) -> None:
        parent = str(spec["linux"]["cgroupsPath"]).rpartition("/")[0] or "asyncstart"
        for name in self.names:
            bundle = self.root / name
            bundle.mkdir(mode=0o700, parents=True)
            config = bare_spec(spec, str(rootfs), CMD, f"{parent}/{name}")
            (bundle / "config.json").write_text(json.dumps(config))

    async def _runc(self, name: str, *args: str) -> None:
        # The container inherits create's stdio: no pipe, or the call would wait for its EOF.
        log = self.root / f"{name}.log"
        wrapper = launcher(self.binary) if args[0] == "create" else ()
        with log.open("ab") as stderr:
            result = await anyio.run_process(
                [*wrapper, self.binary, "--root", str(self.state), *args],
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        if result.returncode != 0:
            raise RuntimeError(f"{self.binary} {args[0]} {name} failed: {log.read_text().strip()}")

    async def start(self, index: int) -> None:
        name = self.names[index]
        await self._runc(name, "create", "--bundle", str(self.root / name), name)
        await self._runc(name, "start", name)

    async def remove_all(self) -> None:
        """Delete every container in this state root (also those a failed round left)."""
        if not self.state.is_dir():
            return
        listed = await anyio.run_process([self.binary, "--root", str(self.state), "list", "-q"])
        async with anyio.create_task_group() as tg:
            for name in listed.stdout.decode().split():
                tg.start_soon(self._runc, name, "delete", "--force", name)


# -- the run ------------------------------------------------------------------------------


@dataclass
class Mode:
    name: str
    #: Start the batch's containers at once (for bare runc, as many empty IDs): each start's
    #: latency, in order, and the client process's CPU time (None: no client process).
    start: Callable[[list[str]], Awaitable[tuple[list[float], float | None]]]
    #: Called, untimed, before each batch.
    warm: Callable[[], Awaitable[object]] | None = None
    engine: bool = True
    #: Each round's start latencies.
    rounds: list[list[float]] = field(default_factory=list)
    inside: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    #: This process's CPU time per batch (engine and server; not runc's, not the clients').
    cpu: list[float] = field(default_factory=list)
    #: The client process's CPU time per batch, in the API modes.
    client_cpu: list[float] = field(default_factory=list)
    #: The whole machine's busy CPU time per batch (every process, the kernel's threads).
    host_cpu: list[float] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return [t for latencies in self.rounds for t in latencies]


@dataclass
class Bench:
    daemon: asyncstart.Daemon
    timed: TimedStarts
    bare: BareRunc | None
    concurrency: int

    async def round(self, mode: Mode, record: bool) -> None:
        """Create, start all at once (timed), remove."""
        ids: list[str] = []
        try:
            if mode.engine:
                for _ in range(self.concurrency):
                    config = {"Image": "busybox", "Cmd": CMD}
                    ids.append(await self.daemon.container_create(config=config))
            if mode.warm is not None:
                await mode.warm()
            keys = ids or [""] * self.concurrency
            host_cpu = _host_busy()
            cpu = time.process_time()
            began = time.perf_counter()
            latencies, client_cpu = await mode.start(keys)
            wall = time.perf_counter() - began
            cpu = time.process_time() - cpu
            host_cpu = _host_busy() - host_cpu
            inside = [self.timed.inside.pop(cid) for cid in ids]
            if record:
                mode.rounds.append(latencies)
                mode.walls.append(wall)
                mode.cpu.append(cpu)
                mode.host_cpu.append(host_cpu)
                if client_cpu is not None:
                    mode.client_cpu.append(client_cpu)
                if ids:
                    mode.inside += inside
                    mode.outside += [t - i for t, i in zip(latencies, inside, strict=True)]
        finally:
            with anyio.CancelScope(shield=True), anyio.fail_after(BATCH_TIMEOUT):
                async with anyio.create_task_group() as tg:
                    for cid in ids:
                        tg.start_soon(partial(self.daemon.container_remove, cid, force=True))
                if not mode.engine and self.bare is not None:
                    await self.bare.remove_all()


async def _asyncstart_spec(
    daemon: asyncstart.Daemon, exec_root: Path, kept_filter: bool = False
) -> dict[str, Any]:
    """The OCI spec asyncstart writes for a busybox container, from one real start (the first:
    crun compiles its seccomp profile); ``kept_filter``: with the program crun compiled then, as
    the engine hands it to crun from its second start on (``runtime.seccomp_cache``)."""
    cid = await daemon.container_create(config={"Image": "busybox", "Cmd": CMD})
    try:
        await daemon.container_start(cid)
        spec: dict[str, Any] = json.loads((exec_root / cid / "config.json").read_text())
        if kept_filter:
            program = (exec_root / "runc" / cid / "seccomp.bpf").read_bytes()
            annotations = spec.setdefault("annotations", {})
            annotations[seccomp_cache.ANNOTATION] = base64.b64encode(program).decode()
    finally:
        await daemon.container_remove(cid, force=True)
    return spec


async def run(
    root: Path,
    runtime: str,
    network: str,
    bridge: tuple[str, str] | None,
    rounds: int,
    concurrency: int,
    settle: float,
    oci: str = "",
    monitor: str = "",
    run_dir: Path | None = None,
    bare_filter: str = "compiled",
) -> list[Mode]:
    run_dir = run_dir or root
    config = asyncstart.DaemonConfig(
        data_root=root / "data",
        exec_root=run_dir / "exec",
        runtime=runtime,
        network=network,
        default_runtime=oci if runtime == "runc" else "",
        monitor=monitor,
    )
    if bridge is not None:
        config = dataclasses.replace(config, bridge=bridge[0], bridge_subnet=bridge[1])
    sock = root / "api.sock"
    async with asyncstart.open_daemon(config) as daemon:
        timed = TimedStarts(daemon)
        bare = None
        if runtime == "runc":
            await daemon.image_import(str(root / "busybox.tar"), repo="busybox")
            binary = config.runtime_table()[config.runtime_name()][0]
            bare = BareRunc(run_dir / "bare", concurrency, binary)
            spec = await _asyncstart_spec(daemon, run_dir / "exec", bare_filter == "kept")
            bare.prepare(spec, root / "rootfs")
        async with (
            asyncstart.serve_api(daemon, [f"unix://{sock}"]) as server,
            ClientWorker("raw", sock, concurrency) as raw,
            ClientWorker("client", sock, concurrency) as client,
        ):
            server.api.daemon = cast(asyncstart.Daemon, timed)

            async def library(ids: list[str]) -> tuple[list[float], None]:
                return await _batch([partial(timed.container_start, cid) for cid in ids]), None

            async def api_raw(ids: list[str]) -> tuple[list[float], float]:
                return await raw.starts(ids)

            async def api_client(ids: list[str]) -> tuple[list[float], float]:
                return await client.starts(ids)

            modes = [
                Mode("library", library),
                Mode("api raw", api_raw, raw.warm),
                Mode("api client", api_client, client.warm),
            ]
            if bare is not None:
                runc = bare

                async def bare_runc(ids: list[str]) -> tuple[list[float], None]:
                    return await _batch([partial(runc.start, i) for i in range(len(ids))]), None

                modes.append(Mode(f"bare {bare.binary}", bare_runc, engine=False))
            bench = Bench(daemon, timed, bare, concurrency)
            try:
                order = random.Random(0)  # the same sequence of orders every run
                for number in range(-1, rounds):  # round -1 warms up, untimed
                    for mode in order.sample(modes, len(modes)):
                        await bench.round(mode, record=number >= 0)
                        await anyio.sleep(settle)
            finally:
                if bare is not None:
                    with anyio.CancelScope(shield=True):
                        await bare.remove_all()
    return modes


# -- set-up, report -----------------------------------------------------------------------


def _free_bridge() -> tuple[str, str]:
    """A bridge name and a 10.213.X.0/24 that no interface or route on this host uses."""
    routes = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "table", "all"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    taken = []
    for line in routes.splitlines():
        # "10.0.0.0/8 dev ...", or a type first: "local 10.0.0.1 dev ...", "unreachable ...".
        for word in line.split()[:2]:
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
                break
            except ValueError:
                continue
    for x in range(250, 200, -1):
        name, subnet = f"asbench{x}", ipaddress.ip_network(f"10.213.{x}.0/24")
        if not Path("/sys/class/net", name).exists() and not any(subnet.overlaps(t) for t in taken):
            return name, str(subnet)
    raise SystemExit("no free 10.213.X.0/24 for the benchmark's bridge")


def _bootstrap(
    rounds: int, statistic: Callable[[list[int]], float], seed: int
) -> tuple[float, float]:
    """A 90% bootstrap interval of ``statistic(picks)``: rounds drawn with replacement, the
    same rounds for every mode it compares (paired: the modes of a round ran one after
    another, so what drifts between rounds touches them alike)."""
    draw = random.Random(seed)
    values = [
        statistic([draw.randrange(rounds) for _ in range(rounds)]) for _ in range(BOOTSTRAP_DRAWS)
    ]
    return percentile(values, 5), percentile(values, 95)


def _interval(api: list[list[float]], library: list[list[float]]) -> tuple[float, float]:
    """A 90% bootstrap interval of api p50 - library p50."""

    def difference(picks: list[int]) -> float:
        return percentile([t for i in picks for t in api[i]], 50) - percentile(
            [t for i in picks for t in library[i]], 50
        )

    return _bootstrap(len(library), difference, seed=1)


def _ratio_interval(walls: list[float], bare: list[float]) -> tuple[float, float]:
    """A 90% bootstrap interval of a mode's throughput over the bare runtime's."""

    def ratio(picks: list[int]) -> float:
        return statistics.fmean(bare[i] for i in picks) / statistics.fmean(walls[i] for i in picks)

    return _bootstrap(len(walls), ratio, seed=2)


def _host_busy() -> float:
    """Seconds of CPU the machine has spent busy since boot (/proc/stat: all but idle and
    iowait), on every core."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # (guest time is in user already)
    return busy / os.sysconf("SC_CLK_TCK")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def report(modes: list[Mode], header: str, concurrency: int) -> None:
    print(header)
    print(
        f"{'mode':<10} {'p50 ms':>9} {'p90 ms':>9} {'starts/s':>9} "
        f"{'lib p50 ms':>11} {'outside p50 ms':>15} {'cpu ms/start':>13} {'client cpu':>11} "
        f"{'host cpu':>9}"
    )
    by_name = {m.name: m for m in modes}
    for m in modes:
        inside = _ms(percentile(m.inside, 50)) if m.inside else "-"
        outside = _ms(percentile(m.outside, 50)) if m.outside else "-"
        throughput = concurrency / statistics.fmean(m.walls)
        cpu = statistics.fmean(m.cpu) / concurrency
        client = _ms(statistics.fmean(m.client_cpu) / concurrency) if m.client_cpu else "-"
        host = statistics.fmean(m.host_cpu) / concurrency
        print(
            f"{m.name:<10} {_ms(percentile(m.latencies, 50)):>9} "
            f"{_ms(percentile(m.latencies, 90)):>9} {throughput:>9.1f} {inside:>11} {outside:>15} "
            f"{_ms(cpu):>13} {client:>11} {host * 1000:>9.1f}"
        )
    library = by_name["library"]
    clients = ("raw", "client")
    overhead = {
        c: percentile(by_name[f"api {c}"].latencies, 50) - percentile(library.latencies, 50)
        for c in clients
    }
    interval = {c: _interval(by_name[f"api {c}"].rounds, library.rounds) for c in clients}
    print(
        "API overhead p50, api p50 - library p50:           "
        + "  ".join(f"{c} {overhead[c] * 1000:+.3f} ms" for c in clients)
    )
    print(
        "  90% interval, resampling rounds:                 "
        + "  ".join(
            f"{c} {lo * 1000:+.3f}..{hi * 1000:+.3f} ms" for c, (lo, hi) in interval.items()
        )
    )
    print(
        "  per request, latency - its own library call, p50: "
        + "  ".join(
            f"{c} {percentile(by_name[f'api {c}'].outside, 50) * 1000:.3f} ms" for c in clients
        )
    )
    raw, client = by_name["api raw"], by_name["api client"]
    latency = percentile(client.latencies, 50) - percentile(raw.latencies, 50)
    beyond = percentile(client.outside, 50) - percentile(raw.outside, 50)
    cpu = (statistics.fmean(client.client_cpu) - statistics.fmean(raw.client_cpu)) / concurrency
    print(
        "the Client's own cost, client - raw:                "
        f"p50 {latency * 1000:+.3f} ms  outside p50 {beyond * 1000:+.3f} ms  "
        f"client cpu {cpu * 1000:+.3f} ms/start"
    )
    for bare in (m for m in modes if not m.engine):
        ratio = percentile(library.latencies, 50) / percentile(bare.latencies, 50)
        print(f"library p50 / {bare.name} p50 = {ratio:.2f}x")
        bare_rate = concurrency / statistics.fmean(bare.walls)
        engines = [m for m in modes if m.engine]
        print(
            f"throughput / {bare.name}'s (target >= {TARGET_RATIO:g}x):     "
            + "  ".join(
                f"{m.name} {concurrency / statistics.fmean(m.walls) / bare_rate:.2f}x"
                for m in engines
            )
        )
        intervals = {m.name: _ratio_interval(m.walls, bare.walls) for m in engines}
        print(
            "  90% interval, resampling rounds:                 "
            + "  ".join(f"{name} {lo:.2f}..{hi:.2f}x" for name, (lo, hi) in intervals.items())
        )
        if len(bare.walls) < VERDICT_ROUNDS:
            print(
                f"target: throughput >= {TARGET_RATIO:g}x {bare.name}'s: no verdict from "
                f"{len(bare.walls)} rounds (an interval needs at least {VERDICT_ROUNDS})"
            )
            continue
        verdicts = {
            name: "met" if lo >= TARGET_RATIO else "not met" if hi < TARGET_RATIO else "unresolved"
            for name, (lo, hi) in intervals.items()
        }
        print(
            f"target: throughput >= {TARGET_RATIO:g}x {bare.name}'s: "
            + ", ".join(f"{name} {verdict}" for name, verdict in verdicts.items())
            + (
                f" (unresolved: {TARGET_RATIO:g}x is inside the interval)"
                if "unresolved" in verdicts.values()
                else ""
            )
        )
    target = TARGET_MS / 1000
    met = {c: v <= target for c, v in overhead.items()}
    if all(met.values()) or not any(met.values()):
        verdict = "met" if met["raw"] else "not met"
    else:
        verdict = " and ".join(f"{'met' if met[c] else 'not met'} with {c}" for c in clients)
    # The target inside the interval: this run's noise is larger than the difference.
    split = [c for c in clients if interval[c][0] <= target < interval[c][1]]
    print(
        f"target: API adds <= {TARGET_MS:g} ms p50 over the library call: {verdict} "
        f"(raw {overhead['raw'] * 1000:+.3f} ms, client {overhead['client'] * 1000:+.3f} ms)"
        + (
            f"; unresolved for {' and '.join(split)}: the target is inside the interval"
            if split
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--runtime", choices=["auto", "runc", "fake"], default="auto",
        help="auto: runc if root with runc and a static busybox, else fake",
    )  # fmt: skip
    parser.add_argument(
        "--oci",
        choices=["", "runc", "crun"],
        default="",
        help="the OCI runtime (default: the host's, crun where installed)",
    )
    parser.add_argument(
        "--monitor",
        choices=["", "conmon", "none"],
        default="",
        help="each container's monitor (default: conmon where installed)",
    )
    parser.add_argument(
        "--bare-filter",
        choices=["compiled", "kept"],
        default="compiled",
        help="bare crun compiles the seccomp profile at every create as a user's crun does"
        " (compiled, the default), or is handed the program as the engine hands it (kept)",
    )
    parser.add_argument("--rounds", type=int, default=VERDICT_ROUNDS)  # (fewer: no verdict)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--network", choices=["bridge", "loopback"], default="bridge")
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds to pause after each batch's clean-up (default: 1 on runc, 0 on fake)",
    )
    parser.add_argument(
        "--run-tmpfs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put the exec root and bare runc's state and bundles on a tmpfs of the benchmark's"
        " own, as /run is on most hosts (runc only; the default)",
    )
    parser.add_argument("--client-worker", choices=["raw", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_worker is not None:  # a client process, started by the benchmark
        asyncio.run(_client_worker(args.client_worker, args.socket, args.concurrency))
        return
    if args.rounds < 1 or args.concurrency < 1:
        parser.error("--rounds and --concurrency must be at least 1")
    configure_logging("warning")
    runtime = choose_runtime(args.runtime)
    settle = args.settle if args.settle is not None else 1.0 if runtime == "runc" else 0.0
    bridge = _free_bridge() if runtime == "runc" and args.network == "bridge" else None
    with host_as_found(bridge), tempfile.TemporaryDirectory(prefix="asyncstart-api-bench-") as tmp:
        root = Path(tmp)
        if runtime == "runc":
            tar = build_busybox_tar(root / "busybox.tar")
            (root / "rootfs").mkdir()
            subprocess.run(["tar", "-xf", str(tar), "-C", str(root / "rootfs")], check=True)
        run_dir = None
        if args.run_tmpfs and runtime == "runc":
            run_dir = root / "run"
            run_dir.mkdir(mode=0o700)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=1g", "tmpfs",
                            str(run_dir)], check=True)  # fmt: skip
        try:
            modes = anyio.run(
                run, root, runtime, args.network, bridge, args.rounds, args.concurrency,
                settle, args.oci, args.monitor, run_dir, args.bare_filter, backend=args.backend,
            )  # fmt: skip
        finally:
            if run_dir is not None:
                subprocess.run(["umount", "-l", str(run_dir)], check=False)
    header = f"api_start backend={args.backend} runtime={runtime} "
    if runtime == "runc":
        header += f"network={args.network} " + (f"({bridge[0]} {bridge[1]}) " if bridge else "")
        header += f"oci={args.oci or 'default'} monitor={args.monitor or 'default'} "
        header += f"run-tmpfs={'yes' if args.run_tmpfs else 'no'} "
        header += f"bare-filter={args.bare_filter} "
    header += (
        f"concurrency={args.concurrency} rounds={args.rounds} "
        f"({args.rounds * args.concurrency} starts per mode)"
    )
    report(modes, header, args.concurrency)


if __name__ == "__main__":
    main()
