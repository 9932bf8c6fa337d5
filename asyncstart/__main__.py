"""The ``asyncstart`` command: what the docker CLI does not cover.

* ``asyncstart daemon`` — the engine behind a Docker Engine API socket (``docker -H unix://...``);
* ``asyncstart image build-busybox`` — the test/demo image, from the static busybox binary;
* ``asyncstart demo`` — start containers concurrently (embedded, or on a running daemon with
  ``--host``) and show where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio

from . import Daemon, DaemonConfig, errors, open_daemon
from .api import parse_host, serve_api
from .api.server import Host, claim_socket
from .client import Client
from .images.busybox import build_busybox_tar, missing_for_real_containers
from .logconfig import configure_logging
from .network.bridge import DEFAULT_BRIDGE, DEFAULT_SUBNET

PHASES = ("mounting", "networking", "spec-ready", "running")
DEFAULT_HOST = "unix:///run/asyncstart/asyncstart.sock"


def choose_runtime(requested: str) -> str:
    """``requested``; for ``auto``, runc where real containers can run here, else fake."""
    if requested != "auto":
        return requested
    missing = missing_for_real_containers()
    if not missing:
        return "runc"
    print(f"{', '.join(missing)}: running on the fake runtime", file=sys.stderr)
    return "fake"


# -- daemon ---------------------------------------------------------------------------------


def _lock_exec_root(exec_root: Path) -> int:
    """dockerd's pidfile: one daemon per exec root (and so per set of runc states, mounts and
    namespaces). The lock lasts as long as the process."""
    exec_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(exec_root / "asyncstart.pid", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.Conflict(
            f"another daemon is running on {exec_root} (see {exec_root}/asyncstart.pid)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def _notify_systemd(state: str) -> None:
    """As dockerd: tell the systemd of a ``Type=notify`` unit ``state`` (``READY=1`` once the
    API serves, ``STOPPING=1`` when the daemon shuts down) on ``NOTIFY_SOCKET``; nothing
    outside such a unit. A full queue is waited on for 5 s at most, without blocking."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return
    target = "\0" + address[1:] if address.startswith("@") else address  # (@: abstract)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
        sender.setblocking(False)
        with contextlib.suppress(OSError):
            sender.connect(target)  # (connected: writable means the queue has room)
            with anyio.move_on_after(5):
                while True:
                    try:
                        sender.send(state.encode())
                        return
                    except BlockingIOError:
                        await anyio.wait_writable(sender)


def _runtime_entry(text: str) -> tuple[str, tuple[str, ...]]:
    """dockerd's ``--add-runtime NAME=PATH``."""
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"invalid runtime {text!r}: expected NAME=PATH")
    return name, (path,)


async def _daemon(args: argparse.Namespace) -> int:
    hosts = [parse_host(h, allow_tcp=args.insecure_tcp) for h in args.host or [DEFAULT_HOST]]
    # dockerd's default umask: what the daemon makes is not narrowed by its caller's.
    os.umask(0o022)
    # Refuse before touching any container: another daemon here, or on one of the sockets.
    lock = _lock_exec_root(Path(args.exec_root))
    try:
        return await _serve(args, hosts)
    finally:
        # As dockerd's pid file: gone after a clean exit (still locked while it goes).
        with contextlib.suppress(OSError):
            os.unlink(Path(args.exec_root) / "asyncstart.pid")
        os.close(lock)


async def _serve(args: argparse.Namespace, hosts: list[Host]) -> int:
    for host in hosts:
        if host.scheme == "unix":
            await anyio.to_thread.run_sync(claim_socket, host.path)
    config = DaemonConfig(
        data_root=args.data_root,
        exec_root=args.exec_root,
        # fake: the in-memory engine; any other name: real containers on that OCI runtime.
        runtime="fake" if args.default_runtime == "fake" else "runc",
        default_runtime="" if args.default_runtime == "fake" else args.default_runtime,
        runtimes=dict(args.add_runtime or ()),
        monitor=args.monitor,
        bridge=args.bridge,
        bridge_subnet=args.bridge_subnet,
        bridge_ip=args.bip,
        experimental=args.experimental,
        debug=args.debug,
    )
    async with open_daemon(config) as daemon:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with serve_api(daemon, hosts):
                for host in hosts:
                    # dockerd's line; scripts (and the tests) wait for it.
                    print(f"API listen on {host}", file=sys.stderr, flush=True)
                await _notify_systemd("READY=1")
                async for signum in signals:
                    print(f"{signal.Signals(signum).name}: shutting down", file=sys.stderr)
                    await _notify_systemd("STOPPING=1")
                    break
            # The API has stopped accepting and answered what was in flight.
            if args.shutdown_stop:
                running = await daemon.containers_list()
                async with anyio.create_task_group() as tg:
                    for row in running:
                        tg.start_soon(_stop_quietly, daemon, row["Id"])
    return 0


async def _stop_quietly(daemon: Daemon, container_id: str) -> None:
    # Stopped, exited or removed meanwhile: nothing left to do.
    with contextlib.suppress(errors.NotModified, errors.NotFound):
        await daemon.container_stop(container_id)


# -- image build-busybox --------------------------------------------------------------------


async def _build_busybox(args: argparse.Namespace) -> int:
    if args.host:
        with tempfile.TemporaryDirectory(prefix="asyncstart-image-") as scratch:
            tar = build_busybox_tar(Path(scratch) / "busybox.tar", args.busybox)
            async with Client(args.host) as client:
                image_id = await client.image_import(str(tar), repo="busybox", tag="latest")
        print(f"busybox:latest {image_id}")
    else:
        tar = build_busybox_tar(Path(args.output), args.busybox)
        print(f"wrote {tar}; load it with: docker import {tar} busybox:latest")
    return 0


# -- demo -----------------------------------------------------------------------------------


class _Engine(Protocol):
    """What the demo needs: the library's Daemon and the socket Client both have it."""

    async def container_create(
        self, name: str | None = None, config: Any = None, host_config: Any = None
    ) -> str: ...
    async def container_start(self, reference: str) -> None: ...
    async def container_remove(self, reference: str, force: bool = False) -> None: ...
    async def image_inspect(self, reference: str) -> dict[str, Any]: ...
    async def image_import(self, source: str, repo: str = "", tag: str = "") -> str: ...


async def _run_demo(
    engine: _Engine,
    count: int,
    image_tar: Callable[[], Path] | None,
    phases_of: Callable[[str], Awaitable[dict[str, float]]],
    describe: str,
) -> int:
    if image_tar is not None:
        try:
            await engine.image_inspect("busybox:latest")
        except errors.NotFound:
            await engine.image_import(str(image_tar()), repo="busybox", tag="latest")
    ids = [
        await engine.container_create(config={"Image": "busybox", "Cmd": ["sleep", "infinity"]})
        for _ in range(count)
    ]
    totals: list[float] = []
    failures: list[str] = []

    async def start(container_id: str) -> None:
        began = time.perf_counter()
        try:
            await engine.container_start(container_id)
        except errors.DockerError as exc:
            failures.append(exc.message)
        totals.append(time.perf_counter() - began)
        done, width = len(totals), 40
        if width * done // count != width * (done - 1) // count or done == count:
            bar = "#" * (width * done // count) + "." * (width - width * done // count)
            print(f"\rstarting [{bar}] {done}/{count}", end="", file=sys.stderr)

    began = time.perf_counter()
    try:
        async with anyio.create_task_group() as tg:
            for container_id in ids:
                tg.start_soon(start, container_id)
        elapsed = time.perf_counter() - began
        print(file=sys.stderr)
        phases: dict[str, list[float]] = {p: [] for p in PHASES}
        for container_id in ids:
            for phase, seconds in (await phases_of(container_id)).items():
                phases[phase].append(seconds)
        rows = [(p, statistics.median(v), max(v)) for p, v in phases.items() if v]
        rows.append(("start call", statistics.median(totals), max(totals)))
        print(f"{'phase':<12} {'p50 ms':>9} {'max ms':>9}")
        for name, p50, worst in rows:
            print(f"{name:<12} {p50 * 1000:>9.3f} {worst * 1000:>9.3f}")
        started = count - len(failures)
        print(f"{started} of {count} containers running {describe}; {count / elapsed:.0f} starts/s")
        for message in sorted(set(failures)):
            print(f"start failed: {message}", file=sys.stderr)
    finally:
        with anyio.CancelScope(shield=True):
            for container_id in ids:
                await engine.container_remove(container_id, force=True)
    return 0 if not failures else 1


async def _demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="asyncstart-demo-") as root:

        def image_tar() -> Path:
            return build_busybox_tar(Path(root) / "busybox.tar")

        if args.host:
            async with Client(args.host) as client:
                return await _run_demo(
                    client, args.containers, image_tar, client.container_start_phases,
                    f"on the daemon at {args.host}",
                )  # fmt: skip
        runtime = choose_runtime(args.runtime)
        config = DaemonConfig(
            data_root=args.data_root or f"{root}/data",
            exec_root=args.exec_root or f"{root}/exec",
            runtime=runtime,
        )
        async with open_daemon(config) as daemon:

            async def phases_of(container_id: str) -> dict[str, float]:
                return daemon.container_start_phases(container_id)

            return await _run_demo(
                daemon, args.containers, image_tar if runtime == "runc" else None, phases_of,
                f"on the embedded {config.runtime_name() if runtime == 'runc' else runtime} "
                "runtime",
            )  # fmt: skip


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncstart", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    common.add_argument("--log-level", help="default: info for the daemon, else warning")
    sub = parser.add_subparsers(dest="command", required=True)

    daemon = sub.add_parser(
        "daemon", parents=[common], help="serve the Docker Engine API on a unix socket"
    )
    daemon.add_argument("--data-root", default="/var/lib/asyncstart")
    daemon.add_argument("--exec-root", default="/run/asyncstart")
    daemon.add_argument(
        "-H", "--host", action="append", help=f"listen address (default {DEFAULT_HOST})"
    )
    daemon.add_argument(
        "--default-runtime",
        default="",
        help="the OCI runtime of a container that names none: runc, crun, one added with "
        "--add-runtime, or fake (no real containers); default: crun where installed, else runc",
    )
    daemon.add_argument(
        "--add-runtime",
        action="append",
        type=_runtime_entry,
        metavar="NAME=PATH",
        help="an OCI runtime containers may name (HostConfig.Runtime), as dockerd's",
    )
    daemon.add_argument(
        "--monitor",
        choices=("conmon", "none"),
        default="",
        help="what watches each container while no engine runs: conmon (its output, stdin and "
        "exit code survive the engine), or none; default: conmon where installed",
    )
    daemon.add_argument(
        "-b",
        "--bridge",
        default=DEFAULT_BRIDGE,
        help="the bridge containers attach to (created if missing; an existing one must be a "
        "bridge with the network's gateway address)",
    )
    daemon.add_argument(
        "--bip",
        default="",
        metavar="CIDR",
        help="the bridge's address and prefix, as dockerd's (its network is the containers' "
        "subnet); default: the first address of --bridge-subnet",
    )
    daemon.add_argument("--bridge-subnet", default=DEFAULT_SUBNET)
    daemon.add_argument("--experimental", action="store_true")
    daemon.add_argument(
        "-D", "--debug", action="store_true", help="debug mode: log at debug (unless --log-level)"
    )
    daemon.add_argument(
        "--shutdown-stop", action="store_true", help="stop running containers on shutdown"
    )
    daemon.add_argument(
        "--insecure-tcp",
        action="store_true",
        help="allow -H tcp:// on a loopback address (the API has no authentication)",
    )

    image = sub.add_parser("image", help="image helpers").add_subparsers(
        dest="image_command", required=True
    )
    busybox = image.add_parser(
        "build-busybox", parents=[common], help="the test image, from a static busybox"
    )
    busybox.add_argument("-o", "--output", default="busybox.tar")
    busybox.add_argument("--busybox", help="the static busybox binary (default: found)")
    busybox.add_argument("-H", "--host", help="import it as busybox:latest into this daemon")

    demo = sub.add_parser(
        "demo", parents=[common], help="start containers concurrently, show per-phase latency"
    )
    demo.add_argument("-n", "--containers", type=int, default=100)
    demo.add_argument("--runtime", default="auto", choices=["auto", "runc", "fake"])
    demo.add_argument("-H", "--host", help="a running daemon's socket (default: embedded)")
    demo.add_argument("--data-root")
    demo.add_argument("--exec-root")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    default_level = "info" if args.command == "daemon" else "warning"
    if getattr(args, "debug", False):
        default_level = "debug"
    configure_logging(args.log_level or default_level)
    command = {"daemon": _daemon, "image": _build_busybox, "demo": _demo}[args.command]
    result = 1
    try:
        result = anyio.run(command, args, backend=args.backend)
    except* errors.DockerError as group:
        for exc in _leaves(group):
            print(f"asyncstart {args.command}: {exc}", file=sys.stderr)
    return result


def _leaves(group: BaseExceptionGroup[errors.DockerError]) -> list[BaseException]:
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


if __name__ == "__main__":
    raise SystemExit(main())
