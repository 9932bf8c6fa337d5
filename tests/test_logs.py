"""``docker logs`` and the json-file driver: reading off the event loop, tail from the end,
bounded memory, rotation (``max-size``/``max-file``), follow across rotations, attributes, and
the driver's options checked at create with dockerd's messages.

Each of the reading cases failed on the reader that loaded the whole file and parsed it on the
event loop (a ``--tail 5`` of 97 MiB took 3.9 s and stalled ``_ping`` 3.6 s); the options were
accepted and ignored.

Logs written by conmon in its k8s-file format (``<time> <stream> F|P <content>``), alone or
after json-file lines in the same file, are read as well: each of those cases got nothing from
the reader that knew json-file only.
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
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncstart import errors, serve_api
from asyncstart.logs import JsonFileWriter, LogOptions, LogQuery, read_log, reader
from asyncstart.logs.jsonfile import Selection

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


# -- conmon's k8s-file -----------------------------------------------------------------------

NS = 10**9
T0_NS = int(T0) * NS


def k8s(stream: str, tag: str, content: bytes, at_ns: int, offset: str = "+00:00") -> bytes:
    """One entry as conmon writes it in k8s-file: local time at ``offset`` with nine digits of
    nanoseconds (``at_ns``: since the epoch, an int so that none is lost), stream, tag."""
    whole, nanos = divmod(at_ns, NS)
    hours, minutes = offset[1:].split(":")
    shift = dt.timedelta(hours=int(hours), minutes=int(minutes))
    zone = dt.timezone(-shift if offset[0] == "-" else shift)
    local = dt.datetime.fromtimestamp(whole, zone).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{local}.{nanos:09d}{offset} {stream} {tag} ".encode() + content + b"\n"


def k8s_text(content: bytes, tag: str) -> bytes:
    """What ``docker logs`` sends for a k8s-file entry (invalid UTF-8 replaced, as json-file's)."""
    return content.decode(errors="replace").encode() + (b"\n" if tag == "F" else b"")


async def test_k8s_file_full_partial_and_empty_lines_and_streams(engine: Engine) -> None:
    _, log = await running(engine)
    log.write_bytes(
        b"".join(
            [
                k8s("stdout", "P", b"hello ", T0_NS),  # conmon's newline, not the output's
                k8s("stdout", "P", b"wor", T0_NS + 1),
                k8s("stdout", "F", b"ld", T0_NS + 2),
                k8s("stdout", "F", b"", T0_NS + 3),  # an empty line
                k8s("stderr", "F", b" oops  ", T0_NS + 4),  # spaces are content
                k8s("stdout", "F", b"50%\r100% done", T0_NS + 5),  # \r is no line end
                k8s("stderr", "P", b"no newline at exit", T0_NS + 6),
            ]
        )
    )
    got = await logs(engine)
    assert got == [
        ("stdout", b"hello "),
        ("stdout", b"wor"),
        ("stdout", b"ld\n"),
        ("stdout", b"\n"),
        ("stderr", b" oops  \n"),
        ("stdout", b"50%\r100% done\n"),
        ("stderr", b"no newline at exit"),
    ]
    # What the client prints: the parts joined into the line the container wrote.
    assert b"".join(d for s, d in got if s == "stdout") == b"hello world\n\n50%\r100% done\n"
    assert await logs(engine, stdout=False) == [
        ("stderr", b" oops  \n"),
        ("stderr", b"no newline at exit"),
    ]
    assert await logs(engine, stderr=False) == [item for item in got if item[0] == "stdout"]


async def test_k8s_file_timestamps_are_utc_with_all_nine_digits(engine: Engine) -> None:
    _, log = await running(engine)
    entries = [
        k8s("stdout", "F", b"utc", T0_NS + 123456789),
        k8s("stdout", "F", b"west", T0_NS + NS + 987654321, "-05:30"),
        # Local dates on either side of the UTC one: the date moves with the hour.
        k8s("stderr", "F", b"east", T0_NS + 7200 * NS + 1, "+05:30"),
        k8s("stdout", "P", b"west late", T0_NS + 7205 * NS + 10, "-05:30"),
    ]
    assert entries[1].startswith(b"2023-11-14T16:43:21.987654321-05:30 stdout F ")
    assert entries[2].startswith(b"2023-11-15T05:43:20.000000001+05:30 stderr F ")
    assert entries[3].startswith(b"2023-11-14T18:43:25.000000010-05:30 stdout P ")
    # Fewer digits, or none (conmon writes nine; other writers might not), and "Z".
    entries.append(b"2023-11-15T00:13:26.5Z stdout F short\n")
    entries.append(b"2023-11-15T01:13:27+01:00 stdout F none\n")
    log.write_bytes(b"".join(entries))
    assert await logs(engine, timestamps=True) == [
        ("stdout", b"2023-11-14T22:13:20.123456789Z utc\n"),
        ("stdout", b"2023-11-14T22:13:21.987654321Z west\n"),
        ("stderr", b"2023-11-15T00:13:20.000000001Z east\n"),
        ("stdout", b"2023-11-15T00:13:25.000000010Z west late"),
        ("stdout", b"2023-11-15T00:13:26.500000000Z short\n"),
        ("stdout", b"2023-11-15T00:13:27.000000000Z none\n"),
    ]


async def test_k8s_file_since_and_until(engine: Engine) -> None:
    _, log = await running(engine)
    offsets = ["+00:00", "-05:30", "+09:00", "-00:00"]
    log.write_bytes(
        b"".join(
            k8s("stdout", "F", f"{n}".encode(), T0_NS + n * NS + NS // 2, offsets[n % 4])
            for n in range(9)
        )
    )
    assert [d for _, d in await logs(engine, since=T0 + 3)] == [
        f"{n}\n".encode() for n in range(3, 9)
    ]
    assert [d for _, d in await logs(engine, until=T0 + 5)] == [f"{n}\n".encode() for n in range(5)]
    between = await logs(engine, since=T0 + 2, until=T0 + 7)
    assert [d for _, d in between] == [b"2\n", b"3\n", b"4\n", b"5\n", b"6\n"]
    assert [d for _, d in await logs(engine, since=T0 + 6, tail=5)] == [b"6\n", b"7\n", b"8\n"]


async def test_k8s_file_tail_across_a_rotated_file(engine: Engine) -> None:
    _, log = await running(engine, **{"max-size": "10m", "max-file": "3"})
    entries = [
        k8s("stderr" if n % 3 == 0 else "stdout", "F", f"k8s {n}".encode(), T0_NS + n * NS)
        for n in range(10)
    ]
    Path(f"{log}.1").write_bytes(b"".join(entries[:6]))
    log.write_bytes(b"".join(entries[6:]))
    assert [d for _, d in await logs(engine)] == [f"k8s {n}\n".encode() for n in range(10)]
    assert [d for _, d in await logs(engine, tail=6)] == [
        f"k8s {n}\n".encode() for n in range(4, 10)
    ]
    assert [d for _, d in await logs(engine, tail=2)] == [b"k8s 8\n", b"k8s 9\n"]
    # The last N lines, counted whatever their stream (as json-file's).
    assert await logs(engine, tail=5, stdout=False) == [
        ("stderr", b"k8s 6\n"),
        ("stderr", b"k8s 9\n"),
    ]


async def test_a_large_k8s_file_log_tail_reads_its_end_and_a_full_read_gets_all(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, log = await running(engine)
    # Many chunks' worth, the minute (and at times the date) changing, at an offset.
    old = [
        k8s("stdout", "F", f"old {n:06d} {'x' * 60}".encode(), T0_NS + n * NS, "-05:30")
        for n in range(8 * MiB // 110)
    ]
    last = [k8s("stderr", "F", f"last {n}".encode(), T0_NS + (len(old) + n) * NS) for n in range(5)]
    log.write_bytes(b"".join(old + last))
    reads = Reads(monkeypatch)
    assert await logs(engine, tail=3) == [("stderr", f"last {n}\n".encode()) for n in (2, 3, 4)]
    assert reads.total <= 256 * 1024, reads.sizes
    got = await logs(engine, timestamps=True)
    assert len(got) == len(old) + len(last)
    stamp = dt.datetime.fromtimestamp(T0 + 5000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert got[5000] == ("stdout", f"{stamp}.000000000Z old 005000 {'x' * 60}\n".encode())
    assert got[-1][1].endswith(b"Z last 4\n")


async def test_a_log_in_json_file_then_k8s_file_reads_both(engine: Engine) -> None:
    """A container logged in json-file, then by conmon: each line says its format."""
    _, log = await running(engine)
    log.write_bytes(
        line("stdout", "json 0\n", T0)
        + line("stderr", "json 1\n", T0 + 1)
        + k8s("stdout", "P", b"k8s ", T0_NS + 2 * NS, "-05:30")
        + k8s("stdout", "F", b"2", T0_NS + 2 * NS + 1, "-05:30")
        + k8s("stderr", "F", b"k8s 3", T0_NS + 3 * NS)
    )
    expected = [
        ("stdout", b"json 0\n"),
        ("stderr", b"json 1\n"),
        ("stdout", b"k8s "),
        ("stdout", b"2\n"),
        ("stderr", b"k8s 3\n"),
    ]
    assert await logs(engine) == expected
    # Lines as the client sees them: a partial entry and the one ending it are one line.
    assert await logs(engine, tail=3) == expected[1:]  # from a json-file line
    assert await logs(engine, tail=2) == expected[2:]  # k8s-file only, the split line whole
    assert await logs(engine, tail=1) == expected[4:]
    assert await logs(engine, since=T0 + 1, until=T0 + 2.5) == expected[1:4]
    stamped = await logs(engine, timestamps=True, stdout=False)
    assert stamped == [
        ("stderr", b"2023-11-14T22:13:21.000000000Z json 1\n"),
        ("stderr", b"2023-11-14T22:13:23.000000000Z k8s 3\n"),
    ]


async def test_k8s_file_then_json_file_lines_in_one_read(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    path.write_bytes(
        k8s("stdout", "F", b"k8s 0", T0_NS)
        + line("stderr", "json 1\n", T0 + 1)
        + k8s("stdout", "F", b"k8s 2", T0_NS + 2 * NS)
    )
    got = [item async for item in read_log(path, LogQuery(), running=lambda: False)]
    assert got == [("stdout", b"k8s 0\n"), ("stderr", b"json 1\n"), ("stdout", b"k8s 2\n")]


async def test_details_give_k8s_file_entries_the_containers_attributes(engine: Engine) -> None:
    config = {
        "Image": "busybox",
        "Cmd": ["sleep", "infinity"],
        "Labels": {"team": "core"},
        "Env": ["REGION=eu west"],
    }
    options = {"labels": "team", "env": "REGION", "tag": "{{.Name}}/{{.ID}}"}
    host = {"LogConfig": {"Type": "json-file", "Config": options}}
    cid = await engine.daemon.container_create("web", config, host)
    await engine.daemon.container_start("web")
    log = Path((await engine.daemon.container_inspect("web"))["LogPath"])
    log.write_bytes(
        line("stdout", "json\n", T0, tag="written then")  # its own attributes, kept
        + k8s("stdout", "F", b"k8s", T0_NS + NS)
        + k8s("stderr", "P", b"part", T0_NS + 2 * NS)
    )
    attrs = f"REGION=eu+west,tag=web%2F{cid[:12]},team=core ".encode()
    assert await logs(engine, details=True) == [
        ("stdout", b"tag=written+then json\n"),
        ("stdout", attrs + b"k8s\n"),
        ("stderr", attrs + b"part"),
    ]
    assert await logs(engine, details=True, timestamps=True, stdout=False) == [
        ("stderr", b"2023-11-14T22:13:22.000000000Z " + attrs + b"part")
    ]
    assert await logs(engine) == [("stdout", b"json\n"), ("stdout", b"k8s\n"), ("stderr", b"part")]


async def test_read_log_takes_the_attributes_of_entries_without_any(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    path.write_bytes(k8s("stdout", "F", b"x", T0_NS) + line("stdout", "y\n", T0 + 1))
    query = LogQuery(details=True)
    given = read_log(path, query, running=lambda: False, attrs={"a b": "c/d", "0": "z"})
    assert [d async for _, d in given] == [b"0=z,a+b=c%2Fd x\n", b"0=z,a+b=c%2Fd y\n"]
    assert [d async for _, d in read_log(path, query, running=lambda: False)] == [b" x\n", b" y\n"]


BAD_K8S_LINES = [
    b"2023-11-14T22:13:20.123456789+00:00 std",  # torn
    b"2023-11-14T22:13:20.123456789+00:00 stdin F no such stream",
    b"2023-11-14T22:13:20.123456789+00:00 stdout X no such tag",
    b"2023-11-14T22:13:20.123456789+00:00 stdout Fno space",
    b"2023-11-14T22:13:20.123456789+00:00 stdoutF no space",
    b"2023-11-14 22:13:20.123456789+00:00 stdout F no T",
    b"2023-11-14T22:13:20.123456789 stdout F no offset",
    b"2023-11-14T22:13:61.123456789+00:00 stdout F no such second",
    b"2023-11-14T22:13:20.123456789+0000 stdout F offset without a colon",
    b"{not json either",
    b"just text",
]
#: Well-formed, but no time: found only when the time is read (the chunk is matched at once).
NO_TIME_K8S_LINES = [
    b"2023-13-14T22:13:20.123456789+00:00 stdout F no such month",
    b"2023-11-14T24:13:20.123456789Z stdout F no such hour",
    b"2023-11-14T22:13:20.123456789+25:00 stdout F no such offset",
]


@pytest.mark.parametrize("bad", BAD_K8S_LINES + NO_TIME_K8S_LINES)
async def test_a_malformed_k8s_file_line_is_skipped_alone(engine: Engine, bad: bytes) -> None:
    _, log = await running(engine)
    # Good lines of the same minute before and after: each is read as if the bad one were not.
    good = [k8s("stdout", "F", f"good {n}".encode(), T0_NS + n * NS) for n in range(4)]
    log.write_bytes(b"".join(good[:2]) + bad + b"\n" + b"".join(good[2:]))
    got = await logs(engine, timestamps=True)
    assert got == [
        ("stdout", f"2023-11-14T22:13:2{n}.000000000Z good {n}\n".encode()) for n in range(4)
    ]


async def test_k8s_file_content_is_raw_bytes_invalid_utf8_replaced(engine: Engine) -> None:
    _, log = await running(engine)
    contents = [
        ("F", b"caf\xc3\xa9 \xff\xfe end"),
        ("P", b"euro cut \xe2\x82"),  # a character split between two parts
        ("F", b"\xac!"),
        ("F", b"\x00\x1b[31mred\x1b[0m\t"),
    ]
    entries = b"".join(k8s("stdout", tag, c, T0_NS + n) for n, (tag, c) in enumerate(contents))
    log.write_bytes(entries)
    expected = [
        ("stdout", b"caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd end\n"),
        ("stdout", b"euro cut \xef\xbf\xbd"),
        ("stdout", b"\xef\xbf\xbd!\n"),
        ("stdout", b"\x00\x1b[31mred\x1b[0m\t\n"),
    ]
    assert expected == [("stdout", k8s_text(c, tag)) for tag, c in contents]
    assert await logs(engine) == expected
    # The same, read line by line (a bad line makes the chunk's lines decoded one at a time).
    log.write_bytes(entries + b"junk\n")
    assert await logs(engine) == expected


_K8S_CONTENT = st.binary(max_size=40).map(lambda data: data.replace(b"\n", b"\r"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["stdout", "stderr"]),
            st.sampled_from(["F", "P"]),
            _K8S_CONTENT,
            st.integers(T0_NS, T0_NS + 10**6 * NS),
            st.sampled_from(["+00:00", "-05:30", "+13:45", "-00:00"]),
        ),
        max_size=20,
    ),
    st.booleans(),
)
def test_k8s_file_entries_read_as_written(
    entries: list[tuple[str, str, bytes, int, str]], with_junk: bool
) -> None:
    """Any content and time: the text as conmon took it, the time in UTC to the nanosecond,
    whether the chunk is matched at once or (a junk line in it) line by line."""
    data = b"".join(k8s(*entry) for entry in entries)
    if with_junk:
        data += b"junk\n"
    select = Selection({"stdout", "stderr"}, 0, 0, timestamps=True, details=False)
    expected = []
    for stream, tag, content, at_ns, _ in entries:
        whole, nanos = divmod(at_ns, NS)
        stamp = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        expected.append((stream, f"{stamp}.{nanos:09d}Z ".encode() + k8s_text(content, tag)))
    assert select(data) == expected


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
