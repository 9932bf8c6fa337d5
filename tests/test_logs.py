"""``docker logs`` and the json-file driver: reading off the event loop, tail from the end,
bounded memory, rotation (``max-size``/``max-file``), follow across rotations, attributes, and
the driver's options checked at create with dockerd's messages.

Each of the reading cases failed on the reader that loaded the whole file and parsed it on the
event loop (a ``--tail 5`` of 97 MiB took 3.9 s and stalled ``_ping`` 3.6 s); the options were
accepted and ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncstart import errors, serve_api
from asyncstart.logs import JsonFileWriter, LogOptions, LogQuery, read_log, reader

from .conftest import Engine
from .helpers import create

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
MiB = 1024 * 1024


def line(stream: str, text: str, at: float, **attrs: str) -> bytes:
    """One entry as dockerd's json-file driver writes it (nanoseconds, trailing zeros cut)."""
    whole, fraction = divmod(round(at * 1e9), 10**9)
    seconds = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    stamp = seconds + f".{fraction:09d}".rstrip("0").rstrip(".") + "Z"
    entry: dict[str, Any] = {"log": text, "stream": stream}
    if attrs:
        entry["attrs"] = attrs
    entry["time"] = stamp
    return json.dumps(entry).encode() + b"\n"


class Reads:
    """Counts what the reader reads (every read of a log goes through ``reader._read_at``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        real = reader._read_at

        def counting(fd: int, size: int, offset: int) -> bytes:
            data = real(fd, size, offset)
            self.sizes.append(len(data))
            return data

        monkeypatch.setattr(reader, "_read_at", counting)

    @property
    def total(self) -> int:
        return sum(self.sizes)


class Ticker:
    """A task that ticks every millisecond while the event loop is free to run it."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await anyio.sleep(0.001)
            self.ticks += 1


async def running(engine: Engine, name: str = "web", **log_config: str) -> tuple[str, Path]:
    """A started container (``sleep infinity``) with these log options, and its log's path."""
    host: dict[str, Any] = {"LogConfig": {"Type": "json-file", "Config": log_config}}
    cid = await create(engine.daemon, name, **host)
    await engine.daemon.container_start(name)
    return cid, Path((await engine.daemon.container_inspect(name))["LogPath"])


async def logs(engine: Engine, name: str = "web", **options: Any) -> list[tuple[str, bytes]]:
    return [item async for item in engine.daemon.container_logs(name, **options)]


OLD = line("stdout", "x" * 80 + "\n", T0 - 3600)


def filler(size: int) -> bytes:
    """About ``size`` bytes of old entries (all alike, an hour before the last ones)."""
    return OLD * (size // len(OLD))


LAST = [line("stderr" if n % 3 == 0 else "stdout", f"last {n}\n", T0 + n) for n in range(10)]


# -- reading ---------------------------------------------------------------------------------


async def test_tail_reads_the_end_of_a_large_log_only(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, log = await running(engine)
    log.write_bytes(filler(50 * MiB) + b"".join(LAST))
    reads = Reads(monkeypatch)
    got = await logs(engine, tail=5)
    assert got == [
        ("stdout", b"last 5\n"),
        ("stderr", b"last 6\n"),
        ("stdout", b"last 7\n"),
        ("stdout", b"last 8\n"),
        ("stderr", b"last 9\n"),
    ]
    # A block from the end and the five entries: not the 50 MiB before them.
    assert reads.total <= 256 * 1024, reads.sizes
    # As dockerd, the last N lines are counted before the streams are chosen.
    assert await logs(engine, tail=5, stdout=False) == [
        ("stderr", b"last 6\n"),
        ("stderr", b"last 9\n"),
    ]
    assert await logs(engine, tail=0) == []


async def test_a_whole_large_log_streams_in_chunks_and_the_loop_runs_meanwhile(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, log = await running(engine)
    log.write_bytes(filler(50 * MiB) + b"".join(LAST))
    reads = Reads(monkeypatch)
    ticker = Ticker()
    count, read_at_first, ticks_at_first, last = 0, 0, 0, b""
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        async for _, data in engine.daemon.container_logs("web"):
            if not count:
                read_at_first, ticks_at_first = reads.total, ticker.ticks
            count += 1
            last = data
        tg.cancel_scope.cancel()
    assert last == b"last 9\n"
    assert count == 50 * MiB // len(OLD) + len(LAST)
    # The first entries were handed on before the rest was read: a chunk, not the file.
    assert read_at_first <= 512 * 1024
    assert max(reads.sizes) <= 512 * 1024 and reads.total >= 50 * MiB
    # The loop ran while the rest was read and parsed (in worker threads).
    assert ticker.ticks > ticks_at_first


async def test_reading_a_large_log_holds_a_bounded_amount_of_memory(engine: Engine) -> None:
    _, log = await running(engine)
    log.write_bytes(filler(16 * MiB) + b"".join(LAST))
    tracemalloc.start()
    try:
        last = b""
        async for _, data in engine.daemon.container_logs("web", timestamps=True):
            last = data
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last.endswith(b" last 9\n")
    assert peak < 4 * MiB, peak  # the old reader held the file and every entry: > 16 MiB


async def test_since_until_and_timestamps_across_rotated_files(engine: Engine) -> None:
    _, log = await running(engine, **{"max-size": "1k", "max-file": "3"})
    entries = [line("stderr" if n % 4 == 3 else "stdout", f"{n}\n", T0 + n + 0.5) for n in range(9)]
    Path(f"{log}.2").write_bytes(b"".join(entries[0:3]))
    Path(f"{log}.1").write_bytes(b"".join(entries[3:6]))
    log.write_bytes(b"".join(entries[6:9]))
    everything = await logs(engine)
    assert [data for _, data in everything] == [f"{n}\n".encode() for n in range(9)]
    since = await logs(engine, since=T0 + 3)
    assert [d for _, d in since] == [f"{n}\n".encode() for n in range(3, 9)]
    assert [d for _, d in await logs(engine, until=T0 + 5)] == [f"{n}\n".encode() for n in range(5)]
    between = await logs(engine, since=T0 + 2, until=T0 + 7)
    assert [d for _, d in between] == [b"2\n", b"3\n", b"4\n", b"5\n", b"6\n"]
    assert [d for _, d in await logs(engine, tail=7)] == [f"{n}\n".encode() for n in range(2, 9)]
    assert await logs(engine, tail=4, stdout=False) == [("stderr", b"7\n")]
    stamped = await logs(engine, tail=1, timestamps=True)
    # dockerd's --timestamps: RFC 3339 with nine digits of fraction, whatever the file holds.
    assert stamped == [("stdout", b"2023-11-14T22:13:28.500000000Z 8\n")]


async def test_a_reader_keeps_its_place_while_the_files_rotate_under_it(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    writer = JsonFileWriter(path, LogOptions(max_size=1000, max_file=20))
    for n in range(60):
        writer.write("stdout", f"before {n:03d} {'.' * 40}\n".encode())
    assert Path(f"{path}.4").exists() and not Path(f"{path}.7").exists()
    lines = read_log(path, LogQuery(frozenset({"stdout"})), running=lambda: False)
    first = await anext(lines)  # the oldest file is open and read
    for n in range(60):  # every file moves up by several places
        writer.write("stdout", f"after {n:03d}\n".encode())
    rest = [data async for _, data in lines]
    writer.close()
    # Exactly what was logged when the call came, in order: files are followed by identity.
    expected = [f"before {n:03d} {'.' * 40}\n".encode() for n in range(60)]
    assert [first[1], *rest] == expected


# -- rotation --------------------------------------------------------------------------------


async def test_rotation_keeps_max_file_files_of_max_size(engine: Engine) -> None:
    cid, log = await running(engine, **{"max-size": "1k", "max-file": "3"})
    written = [f"line {n:04d}\n".encode() for n in range(400)]
    for data in written:
        engine.runtime.output(cid, "stdout", data)
    names = sorted(p.name for p in log.parent.iterdir() if p.name.startswith(f"{cid}-json.log"))
    assert names == [f"{cid}-json.log", f"{cid}-json.log.1", f"{cid}-json.log.2"]
    longest = max(len(x) for x in log.read_bytes().splitlines(keepends=True))
    for name in names:  # "1k" is 1000 bytes (go-units' FromHumanSize, as dockerd reads it)
        assert (log.parent / name).stat().st_size <= 1000 + longest
        assert (log.parent / name).stat().st_mode & 0o777 == 0o640
    got = [data for _, data in await logs(engine)]
    assert got == written[-len(got) :] and len(got) > 20  # the newest lines, in order
    assert [d for _, d in await logs(engine, tail=3)] == written[-3:]


async def test_one_file_without_max_file_is_emptied_when_full(engine: Engine) -> None:
    cid, log = await running(engine, **{"max-size": "1k"})
    for n in range(100):
        engine.runtime.output(cid, "stdout", f"line {n:04d}\n".encode())
    assert not Path(f"{log}.1").exists()
    assert 0 < log.stat().st_size <= 1100
    got = [data for _, data in await logs(engine)]
    assert got[-1] == b"line 0099\n" and len(got) < 100


async def test_follow_goes_on_across_rotations(engine: Engine) -> None:
    cid, _ = await running(engine, **{"max-size": "1k", "max-file": "4"})
    seen: list[bytes] = []
    written: list[bytes] = []

    async def follow() -> None:
        async for _, data in engine.daemon.container_logs("web", follow=True, tail=0):
            seen.append(data)

    async def settled() -> None:
        while len(seen) < len(written):
            await anyio.sleep(0.005)

    def out(text: str) -> None:
        written.append(f"{text:<20}\n".encode())  # about 90 bytes an entry: 12 a file
        engine.runtime.output(cid, "stdout", written[-1])

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.05)  # the follow has looked at the log (none yet)
            for n in range(60):  # line by line: a rotation every dozen lines
                out(f"one {n}")
                await settled()
            # Several files' worth between two reads: up to three rotations, with four files
            # kept (more would delete what was not read yet: lost, in dockerd too).
            for burst, count in enumerate((12, 24, 30)):
                for n in range(count):
                    out(f"burst {burst} {n}")
                await settled()
            engine.runtime.exit(cid, 0)  # the follow ends once the rest is read
    assert seen == written


async def test_follow_goes_on_when_its_only_file_is_emptied(engine: Engine) -> None:
    """``max-size`` alone: each rotation unlinks the file a follower reads and starts another."""
    cid, log = await running(engine, **{"max-size": "300"})
    written = [f"line {n:02d}\n".encode() for n in range(40)]
    seen: list[bytes] = []

    async def follow() -> None:
        async for _, data in engine.daemon.container_logs("web", follow=True):
            seen.append(data)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            for count, data in enumerate(written, 1):
                engine.runtime.output(cid, "stdout", data)
                while len(seen) < count:
                    await anyio.sleep(0.005)
            engine.runtime.exit(cid, 0)
    assert seen == written
    assert not Path(f"{log}.1").exists()


# -- attributes ------------------------------------------------------------------------------


async def test_labels_env_and_tag_become_each_entrys_attrs(engine: Engine) -> None:
    config = {
        "Image": "busybox",
        "Cmd": ["sleep", "infinity"],
        "Labels": {"team": "core", "other": "x"},
        "Env": ["REGION=eu west", "SECRET=1"],
    }
    options = {"labels": "team,missing", "env": "REGION", "tag": "{{.Name}}/{{.ID}}"}
    host = {"LogConfig": {"Type": "json-file", "Config": options}}
    cid = await engine.daemon.container_create("web", config, host)
    await engine.daemon.container_start("web")
    engine.runtime.output(cid, "stdout", b"hello\n")
    log = Path((await engine.daemon.container_inspect("web"))["LogPath"])
    entry = json.loads(log.read_bytes())
    assert list(entry) == ["log", "stream", "attrs", "time"]  # dockerd's order
    assert entry["attrs"] == {"REGION": "eu west", "tag": f"web/{cid[:12]}", "team": "core"}
    assert list(entry["attrs"]) == sorted(entry["attrs"])
    detailed = await logs(engine, details=True)
    assert detailed == [
        ("stdout", f"REGION=eu+west,tag=web%2F{cid[:12]},team=core hello\n".encode())
    ]


async def test_details_without_attributes_is_a_space(engine: Engine) -> None:
    cid, _ = await running(engine)
    engine.runtime.output(cid, "stderr", b"oops\n")
    assert await logs(engine, details=True) == [("stderr", b" oops\n")]


# -- options ---------------------------------------------------------------------------------

VALID = [
    {},
    {"max-size": "10m", "max-file": "3"},
    {"max-size": "1k"},
    {"max-size": "1g", "max-file": "1"},
    {"max-size": "1.5MB", "max-file": "+2"},
    {"max-size": "10 KiB"},
    {"max-file": "5"},  # without max-size: accepted, never rotates (dockerd)
    {"max-size": "10m", "max-file": "3", "compress": "false"},
    {"labels": "a,b", "env": "A", "tag": "web"},
    {"tag": "{{.ImageName}}/{{ .Name }}/{{.ID}}"},
    {"mode": "blocking"},
    {"cache-disabled": "true", "cache-max-size": "20m"},
]

INVALID = [
    ({"max-size": "abc"}, "invalid size: 'abc'"),
    ({"max-size": "10x"}, "invalid suffix: 'x'"),
    ({"max-size": "-1"}, "invalid size: '-1'"),
    ({"max-size": "0"}, "max-size must be a positive number"),
    ({"max-size": "1..2k"}, 'strconv.ParseFloat: parsing "1..2": invalid syntax'),
    ({"max-file": "0"}, "max-file cannot be less than 1"),
    ({"max-file": "-3"}, "max-file cannot be less than 1"),
    ({"max-file": "two"}, 'strconv.Atoi: parsing "two": invalid syntax'),
    ({"max-file": "99999999999999999999"}, "value out of range"),
    ({"compress": "yes"}, 'strconv.ParseBool: parsing "yes": invalid syntax'),
    (
        {"compress": "true", "max-size": "1m"},
        "compress cannot be true when max-file is less than 2 or max-size is not set",
    ),
    (
        {"compress": "true", "max-size": "1m", "max-file": "3"},
        "asyncstart does not apply HostConfig.LogConfig.Config.compress",
    ),
    ({"mode": "non-blocking"}, "asyncstart does not apply HostConfig.LogConfig.Config.mode"),
    ({"mode": "lossy"}, "logger: logging mode not supported: lossy"),
    (
        {"max-buffer-size": "4m"},
        "logger: max-buffer-size option is only supported with 'mode=non-blocking'",
    ),
    ({"cache-disabled": "maybe"}, "invalid value for option cache-disabled: maybe"),
    ({"max-sizes": "1m"}, "unknown log opt 'max-sizes' for json-file log driver"),
    ({"labels-regex": "("}, "error parsing regexp"),
    # Python's regular expressions backtrack (``^(a+)+$`` on a long name: minutes); RE2's do not.
    ({"env-regex": "^(a+)+$"}, "asyncstart does not apply HostConfig.LogConfig.Config.env-regex"),
    ({"labels-regex": "^com\\."}, "does not apply HostConfig.LogConfig.Config.labels-regex"),
    ({"tag": "{{.Name | upper}}"}, "asyncstart renders log tags"),
]


@pytest.mark.parametrize("options", VALID)
async def test_valid_log_options_are_accepted(engine: Engine, options: dict[str, str]) -> None:
    await create(engine.daemon, "web", LogConfig={"Type": "json-file", "Config": options})
    await engine.daemon.container_start("web")


@pytest.mark.parametrize(("options", "message"), INVALID)
async def test_invalid_log_options_are_a_400_at_create(
    engine: Engine, options: dict[str, str], message: str
) -> None:
    with pytest.raises(errors.InvalidParameter) as refused:
        await create(engine.daemon, "web", LogConfig={"Type": "json-file", "Config": options})
    assert refused.value.status == 400
    assert message in refused.value.message
    assert engine.mounter.layers == {}  # nothing made
    with pytest.raises(errors.NotFound):
        await engine.daemon.container_inspect("web")


# -- removal ---------------------------------------------------------------------------------


async def test_removing_a_container_deletes_its_rotated_logs(engine: Engine) -> None:
    cid, log = await running(engine, **{"max-size": "1k", "max-file": "4"})
    for n in range(200):
        engine.runtime.output(cid, "stdout", f"line {n}\n".encode())
    assert Path(f"{log}.3").exists()
    await engine.daemon.container_remove("web", force=True)
    assert not log.parent.exists()


def test_the_reads_seam_is_the_only_way_the_reader_reads() -> None:
    """The byte counts above mean something only if every read goes through the seam."""
    source = Path(reader.__file__).read_text()
    assert source.count("os.pread(") == 1 and "os.read(" not in source
    assert ".read_bytes(" not in source and "open_file" not in source
    assert os.path.basename(reader.__file__) == "reader.py"


# -- through the docker CLI ------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
async def test_docker_logs_tail_and_a_bad_log_opt_through_the_cli(
    engine: Engine, tmp_path: Path
) -> None:
    """The docker CLI against the fake runtime (no container runs: no root, no bridge)."""
    with tempfile.TemporaryDirectory(prefix="as-", dir="/tmp") as short:
        sock = Path(short) / "api.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env |= {"DOCKER_CONFIG": str(tmp_path), "DOCKER_CLI_HINTS": "false"}

        async def docker(*args: str) -> subprocess.CompletedProcess[bytes]:
            with anyio.fail_after(30):
                argv = ["docker", "-H", f"unix://{sock}", *args]
                return await anyio.run_process(argv, check=False, env=env)

        async with serve_api(engine.daemon, [f"unix://{sock}"]):
            _, log = await running(engine, **{"max-size": "10m", "max-file": "3"})
            Path(f"{log}.1").write_bytes(b"".join(LAST[:8]))
            log.write_bytes(b"".join(LAST[8:]))
            result = await docker("logs", "--tail", "3", "web")
            assert result.returncode == 0, result.stderr
            assert (result.stdout, result.stderr) == (b"last 7\nlast 8\n", b"last 9\n")
            bad = await docker("create", "--log-opt", "max-size=10q", "busybox", "true")
            assert bad.returncode != 0
            assert b"Error response from daemon: invalid suffix: 'q'" in bad.stderr
