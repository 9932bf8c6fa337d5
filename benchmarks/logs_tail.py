#!/usr/bin/env python3
"""``docker logs --tail 5`` of a large json-file log, and how long the daemon stalls meanwhile.

The issue this answers: ``--tail 5`` of a 97 MiB log took 3.9 s and ``_ping`` stalled 3.6 s,
as the whole file was read and parsed on the event loop (dockerd: 24 ms). The benchmark opens a
daemon on the fake runtime (no root needed: only the log matters) in a temporary directory,
serves the Engine API on a unix socket, creates and starts a container and writes ``--size``
MiB of json-file entries (distinct lines, a second apart, both streams) to its log path. Then,
per round:

* ``api tail``   — ``GET /containers/{id}/logs?stdout=1&stderr=1&tail=N`` on a fresh connection,
  timed from the request's first byte to the end of the response; the client runs in a worker
  thread (a blocking socket) so its own reading is not charged to the daemon's loop;
* ``lib tail``   — ``daemon.container_logs(id, tail=N)`` iterated to its end, in this process;
* ``api all``    — the same request without ``tail`` (the whole log, streamed), once per round;
* ``api alone``  — ``api tail`` again with nothing beside it (no pinger, no probe).

While each of the first three runs, a pinger sends ``GET /_ping`` on a keep-alive connection of
its own, one after the other (its worst latency is what a ``docker ps`` would have waited), and a
probe sleeps 1 ms in a loop (its worst overshoot is the longest the event loop was kept from
running anything). Both run in the daemon's own loop, as any concurrent request would.

    .venv/bin/python benchmarks/logs_tail.py --backend asyncio --size 100
    .venv/bin/python benchmarks/logs_tail.py --backend trio --rounds 10 --tail 5
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
from _common import percentile

import asyncstart
from asyncstart.logconfig import configure_logging

START = 1_700_000_000  # the first entry's time, seconds since the epoch
MiB = 1024 * 1024


def write_log(path: Path, size: int) -> int:
    """``size`` bytes or so of json-file entries, in dockerd's format; how many."""
    count = 0
    with path.open("wb") as out:
        written = 0
        while written < size:
            batch = []
            for _ in range(10_000):
                at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START + count))
                stream = "stderr" if count % 7 == 0 else "stdout"
                text = f"line {count:08d} of the benchmark's log, with some padding to fill it\n"
                batch.append(
                    json.dumps({"log": text, "stream": stream, "time": f"{at}.123456789Z"}) + "\n"
                )
                count += 1
            data = "".join(batch).encode()
            out.write(data)
            written += len(data)
    return count


def http_get(path: str, target: str) -> tuple[int, int]:
    """One request on a fresh connection (blocking, for a worker thread): the status and the
    number of body bytes (framing included) read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        buffer = bytearray(1 << 20)
        head = b""
        received = 0
        while True:
            n = sock.recv_into(buffer)
            if not n:
                break
            if not head:
                head = bytes(buffer[:n])
            received += n
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, received


@dataclass
class Watch:
    """``_ping`` latencies and event-loop overshoots while something runs."""

    pings: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    #: Set when the work is done: both loops end (never cancelled mid-receive: anyio's
    #: asyncio unix-socket receive does not take that well).
    done: bool = False

    async def pinger(self, sock: Path) -> None:
        async with await anyio.connect_unix(sock) as stream:
            while not self.done:
                began = time.perf_counter()
                await stream.send(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                data = b""
                while not data.endswith(b"OK"):
                    data += await stream.receive()
                self.pings.append(time.perf_counter() - began)

    async def probe(self) -> None:
        while not self.done:
            began = time.perf_counter()
            await anyio.sleep(0.001)
            self.stalls.append(time.perf_counter() - began - 0.001)


async def watched(sock: Path, work: Callable[[], Awaitable[object]]) -> tuple[float, Watch]:
    """Run ``work`` with the pinger and the probe beside it: its duration, and what they saw."""
    watch = Watch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.pinger, sock)
        tg.start_soon(watch.probe)
        await anyio.sleep(0.05)  # both running
        began = time.perf_counter()
        await work()
        took = time.perf_counter() - began
        watch.done = True
    return took, watch


@dataclass
class Mode:
    name: str
    times: list[float] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)

    def add(self, took: float, watch: Watch) -> None:
        self.times.append(took)
        self.pings += watch.pings
        self.stalls += watch.stalls


async def run(size: int, rounds: int, tail: int) -> tuple[list[Mode], int, int]:
    with tempfile.TemporaryDirectory(prefix="as-logs-") as tmp:
        root = Path(tmp)
        sock = root / "api.sock"
        config = asyncstart.DaemonConfig(
            data_root=root / "data", exec_root=root / "exec", runtime="fake", fsync=False
        )
        async with (
            asyncstart.open_daemon(config) as daemon,
            asyncstart.serve_api(daemon, [f"unix://{sock}"]),
        ):
            cid = await daemon.container_create(
                "bench", {"Image": "busybox", "Cmd": ["sleep", "infinity"]}
            )
            await daemon.container_start(cid)
            log = Path((await daemon.container_inspect(cid))["LogPath"])
            entries = await anyio.to_thread.run_sync(write_log, log, size)
            api_tail, lib_tail, api_all = Mode("api tail"), Mode("lib tail"), Mode("api all")
            tail_target = f"/v1.51/containers/{cid}/logs?stdout=1&stderr=1&tail={tail}"
            all_target = f"/v1.51/containers/{cid}/logs?stdout=1&stderr=1"
            got: dict[str, object] = {}

            async def get_tail() -> None:
                got["tail"] = await anyio.to_thread.run_sync(http_get, str(sock), tail_target)

            async def lib() -> None:
                got["lib"] = [d async for _, d in daemon.container_logs(cid, tail=tail)]

            async def get_all() -> None:
                got["all"] = await anyio.to_thread.run_sync(http_get, str(sock), all_target)

            alone = Mode("api alone")
            for number in range(-1, rounds):  # round -1 warms up (page cache), untimed
                for mode, work in ((api_tail, get_tail), (lib_tail, lib), (api_all, get_all)):
                    took, watch = await watched(sock, work)
                    if number >= 0:
                        mode.add(took, watch)
                began = time.perf_counter()
                await get_tail()
                alone.times.append(time.perf_counter() - began)
            lines = got["lib"]
            assert isinstance(lines, list) and len(lines) == tail, lines
            assert lines[-1].startswith(f"line {entries - 1:08d} ".encode()), lines
            size_on_disk = (await anyio.Path(log).stat()).st_size
            await daemon.container_remove(cid, force=True)
    return [api_tail, lib_tail, api_all, alone], size_on_disk, entries


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--size", type=int, default=100, help="MiB of log (default 100)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tail", type=int, default=5)
    args = parser.parse_args()
    configure_logging("warning")
    modes, size, entries = anyio.run(
        run, args.size * MiB, args.rounds, args.tail, backend=args.backend
    )
    print(
        f"logs_tail backend={args.backend} log={size / MiB:.1f} MiB ({entries} entries) "
        f"tail={args.tail} rounds={args.rounds}"
    )
    print(
        f"{'mode':<9} {'p50 ms':>9} {'max ms':>9} {'pings':>6} {'ping p50 ms':>12} "
        f"{'worst ping ms':>14} {'worst loop stall ms':>20}"
    )
    for m in modes:
        print(
            f"{m.name:<9} {_ms(statistics.median(m.times)):>9} {_ms(max(m.times)):>9} "
            f"{len(m.pings):>6} {_ms(percentile(m.pings, 50)) if m.pings else '-':>12} "
            f"{_ms(max(m.pings)) if m.pings else '-':>14} "
            f"{_ms(max(m.stalls)) if m.stalls else '-':>20}"
        )


if __name__ == "__main__":
    main()
