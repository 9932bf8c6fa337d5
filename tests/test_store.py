"""Records on disk: atomic writes that survive a killed writer, and the ID/name index."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import cast

import anyio
import anyio.lowlevel
import msgspec
import pytest

from asyncstart import errors, recordwriter
from asyncstart.config import Config, HostConfig
from asyncstart.record import ContainerRecord, new_id
from asyncstart.store import DATABASE, ContainerIndex, RecordStore, _Writer

pytestmark = pytest.mark.anyio


def _record(container_id: str, **fields: object) -> ContainerRecord:
    return ContainerRecord(
        id=container_id,
        name="/" + container_id[:8],
        created="2026-01-01T00:00:00Z",
        image="busybox",
        config=Config(image="busybox", cmd=["true"]),
        host_config=HostConfig(),
        **fields,  # type: ignore[arg-type]
    )


def test_ids_are_64_hex_and_never_all_digits_in_short_form() -> None:
    for _ in range(2000):
        cid = new_id()
        assert len(cid) == 64 and int(cid, 16) >= 0 and not cid[:12].isdigit()


async def test_save_load_roundtrip_and_sweep(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "containers")
    record = _record(new_id(), state="exited", exit_code=3, error="boom")
    await store.save(record)
    assert (tmp_path / DATABASE).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "containers" / record.id).is_dir()  # for its log and files
    (tmp_path / "containers" / ("f" * 64)).mkdir()  # a create killed before its first save
    await store.aclose()
    reopened = RecordStore(tmp_path / "containers")
    assert await reopened.load_all() == [record]
    assert not (tmp_path / "containers" / ("f" * 64)).exists()
    await reopened.delete(record.id)
    assert not (tmp_path / "containers" / record.id).exists()
    assert await reopened.load_all() == []
    await reopened.aclose()


async def test_concurrent_saves_share_transactions_and_each_waits_for_its_own(
    tmp_path: Path,
) -> None:
    store = RecordStore(tmp_path / "containers")
    records = [_record(new_id()) for _ in range(100)]

    async def save(record: ContainerRecord, counts: range) -> None:
        for count in counts:
            record = msgspec.structs.replace(record, restart_count=count)
            await store.save(record)
            # Answered only once its transaction is on disk: another connection sees it.
            with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as reader:
                row = reader.execute("SELECT data FROM records WHERE id = ?", (record.id,))
                stored = msgspec.json.decode(row.fetchone()[0], type=ContainerRecord)
            assert stored.restart_count == count

    async with anyio.create_task_group() as tg:
        for record in records:
            tg.start_soon(save, record, range(1))
    first = store.commits
    assert 0 < first < len(records) / 4, "saves made together are written together"
    # Saves made while transactions are being written go into later ones.
    async with anyio.create_task_group() as tg:
        for record in records:
            tg.start_soon(save, record, range(1, 3))
    assert store.commits > first
    await store.delete(records[0].id)
    await store.aclose()
    loaded = await RecordStore(tmp_path / "containers").load_all()
    assert {r.id for r in loaded} == {r.id for r in records[1:]}
    assert {r.restart_count for r in loaded} == {2}


async def test_a_failed_write_fails_its_save_and_the_next_ones_work(
    tmp_path: Path,
) -> None:
    store = RecordStore(tmp_path / "containers")
    await store.save(_record(new_id()))
    blocked = _record(new_id())
    (tmp_path / "containers" / blocked.id).write_bytes(b"")  # its directory cannot be made
    with pytest.raises(errors.SystemError, match=f"^failed to save container {blocked.id}"):
        await store.save(blocked)
    (tmp_path / "containers" / blocked.id).unlink()
    await store.save(_record(new_id()))
    await store.aclose()
    assert len(await RecordStore(tmp_path / "containers").load_all()) == 2


async def test_an_older_daemons_record_files_are_taken_in(tmp_path: Path) -> None:
    record = _record(new_id(), state="running", pid=7)
    directory = tmp_path / "containers" / record.id
    directory.mkdir(parents=True)
    (directory / "container.json").write_bytes(msgspec.json.encode(record))
    (directory / "container.json.tmp").write_bytes(b'{"torn')  # an older daemon killed mid-write
    store = RecordStore(tmp_path / "containers")
    assert await store.load_all() == [record]
    assert sorted(p.name for p in directory.iterdir()) == []
    await store.aclose()
    assert await RecordStore(tmp_path / "containers").load_all() == [record]


def test_a_writer_killed_mid_write_never_leaves_a_torn_record(tmp_path: Path) -> None:
    # A child rewrites one record as fast as it can with growing payloads; it is SIGKILLed at
    # random moments. Every time, the record in the database must decode and be one of the
    # versions.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from asyncstart.record import ContainerRecord
        from asyncstart.store import RecordStore
        from asyncstart.config import Config, HostConfig
        store = RecordStore(__import__("pathlib").Path(sys.argv[1]) / "containers", fsync=False)
        n = 0
        print("ready", flush=True)
        while True:
            n += 1
            record = ContainerRecord(id="a" * 64, name="/a", created="x", image="i",
                config=Config(env=["X=" + "y" * (n % 5000)]), host_config=HostConfig(),
                restart_count=n)
            store.write({{record.id: __import__("msgspec").json.encode(record)}})
        """
    )
    seen = set()
    for attempt in range(15):
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        # Let it write for a varying while, then kill it without warning.
        target = tmp_path / DATABASE
        while not target.exists():
            pass
        for _ in range(200 * (attempt + 1)):
            os.stat(target)
        child.send_signal(signal.SIGKILL)
        child.wait()
        loaded = RecordStore(tmp_path / "containers")._load_all()
        if not loaded:
            continue  # killed before its first commit
        (record,) = loaded
        assert record.config.env == ["X=" + "y" * (record.restart_count % 5000)]
        seen.add(record.restart_count)
    assert len(seen) > 1, "the child was killed at different points"


def test_index_resolution_order() -> None:
    index = ContainerIndex()
    a = "ab" + "0" * 62
    b = "ab" + "1" * 62
    c = "cd" + "0" * 62
    for cid, name in ((a, "/first"), (b, "/second"), (c, "/ab")):
        index.add(cid, name)
    assert index.resolve(a) == a
    assert index.resolve("first") == a and index.resolve("/second") == b
    assert index.resolve("ab") == c, "an exact name beats an ID prefix"
    assert index.resolve("ab1") == b and index.resolve("c") == c
    with pytest.raises(
        errors.InvalidParameter, match="^multiple IDs found with provided prefix: a$"
    ):
        index.resolve("a")
    with pytest.raises(errors.NotFound, match="^No such container: zz$"):
        index.resolve("zz")
    index.remove(b, "/second")
    for gone in ("second", "ab1", b):
        with pytest.raises(errors.NotFound):
            index.resolve(gone)
    assert index.resolve("ab0") == a
    assert len(index) == 2


async def test_saves_cancelled_while_they_wait_are_written_whole(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "containers")
    records = [_record(new_id(), restart_count=n) for n in range(30)]
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            for record in records:
                tg.start_soon(store.save, record)
            await anyio.lowlevel.checkpoint()  # each is in a transaction, or waits for the next
            scope.cancel()
    await store.aclose()
    loaded = await RecordStore(tmp_path / "containers").load_all()
    assert sorted(loaded, key=lambda r: r.restart_count) == records


async def test_directories_without_a_database_are_kept_for_a_person(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "containers")
    record = _record(new_id())
    await store.save(record)
    (tmp_path / "containers" / record.id / "log").write_text("kept")
    await store.aclose()
    for leftover in tmp_path.glob("containers.db*"):
        leftover.unlink()  # (a partial restore of the data root)
    reopened = RecordStore(tmp_path / "containers")
    assert await reopened.load_all() == []
    assert reopened.quarantined == {record.id}
    (kept,) = (tmp_path / "quarantine").iterdir()
    assert (kept / "log").read_text() == "kept"
    await reopened.aclose()


async def _store_with_a_writer(tmp_path: Path) -> tuple[RecordStore, int]:
    """A store that has saved a record: its writer runs; its pid."""
    store = RecordStore(tmp_path / "containers")
    await store.save(_record(new_id()))
    assert store.writer_pid is not None
    return store, store.writer_pid


async def test_saves_sent_to_a_writer_that_dies_fail_and_the_next_start_a_new_one(
    tmp_path: Path,
) -> None:
    store = RecordStore(tmp_path / "containers")
    first = _record(new_id())
    await store.save(first)
    pid = store.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    lost = _record(new_id())
    with pytest.raises(
        errors.SystemError,
        match=f"^failed to save container {lost.id}: the record writer is gone",
    ):
        await store.save(lost)
    again = msgspec.structs.replace(lost, restart_count=1)
    await store.save(again)
    assert store.writer_pid not in (None, pid)
    await store.aclose()
    assert not Path(f"/proc/{pid}").exists(), "the dead writer was reaped"
    loaded = await RecordStore(tmp_path / "containers").load_all()
    assert sorted(loaded, key=lambda r: r.id) == sorted([first, again], key=lambda r: r.id)


async def test_the_writer_ignores_a_terminals_signals_and_ends_with_the_store(
    tmp_path: Path,
) -> None:
    store, pid = await _store_with_a_writer(tmp_path)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # (ctrl-C, a stop, a hangup)
        os.kill(pid, number)
    record = _record(new_id())
    await store.save(record)  # the same writer, still there
    assert store.writer_pid == pid
    await store.aclose()
    assert not Path(f"/proc/{pid}").exists(), "ended and reaped"
    assert len(await RecordStore(tmp_path / "containers").load_all()) == 2


async def test_without_a_python_to_run_the_writer_this_process_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    store = RecordStore(tmp_path / "containers", placeholders={"hosts": 0o644})
    records = [_record(new_id(), restart_count=n) for n in range(10)]
    async with anyio.create_task_group() as tg:
        for record in records:
            tg.start_soon(store.save, record)
    assert store.writer_pid is None
    assert (tmp_path / "containers" / records[0].id / "hosts").stat().st_mode & 0o777 == 0o644
    await store.delete(records[0].id)
    assert not (tmp_path / "containers" / records[0].id).exists()
    await store.aclose()
    loaded = await RecordStore(tmp_path / "containers").load_all()
    assert sorted(loaded, key=lambda r: r.restart_count) == records[1:]


async def test_a_writer_killed_while_a_save_reads_its_answers_fails_it_and_the_next_work(
    tmp_path: Path,
) -> None:
    store, pid = await _store_with_a_writer(tmp_path)
    os.kill(pid, signal.SIGSTOP)  # (its answers stop: the next save waits, reading)
    outcome: list[str] = []

    async def save_and_tell() -> None:
        with pytest.raises(errors.SystemError, match="the record writer is gone"):
            await store.save(_record(new_id()))
        outcome.append("failed")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(save_and_tell)
            await anyio.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
                time.sleep(0.01)  # noqa: ASYNC251 (blocking on purpose: no reader wakes meanwhile)
            # The first save finds the socket broken; the second starts a new writer, whose
            # socket may get the old one's number while the reader still waits on it.
            with pytest.raises(errors.SystemError, match="the record writer is gone"):
                await store.save(_record(new_id()))
            kept = _record(new_id())
            await store.save(kept)
    assert outcome == ["failed"]
    await store.aclose()
    assert not Path(f"/proc/{pid}").exists(), "the killed writer was reaped"
    assert kept.id in {r.id for r in await RecordStore(tmp_path / "containers").load_all()}


async def test_a_sender_cancelled_once_answered_leaves_no_frame_half_sent() -> None:
    # The writer's part is played by a thread: it takes two frames and answers them, then
    # reads no more until told, so that the third frame (4 MiB), sent after the second by
    # the second's saver, stays half sent when that saver, answered, is cancelled.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    writer = _Writer(cast("subprocess.Popen[bytes]", None), ours)
    resume = threading.Event()

    def peer() -> None:
        time.sleep(0.3)  # (the second frame is still being sent when the third is made)
        first_two = len(recordwriter.frame(recordwriter.SAVE, "a", b"1")) + len(
            recordwriter.frame(recordwriter.SAVE, "b", big)
        )
        while first_two:  # (exactly those: the third's first bytes are read later)
            first_two -= len(theirs.recv(min(first_two, 1 << 16)))
        theirs.sendall(recordwriter.answer(2, {}))
        resume.wait(timeout=10)
        buffer, handled = bytearray(), 2
        while chunk := theirs.recv(1 << 16):
            buffer += chunk
            frames, used = recordwriter._frames(buffer)
            del buffer[:used]
            if frames:
                handled += len(frames)
                theirs.sendall(recordwriter.answer(handled, {}))

    big = b"x" * (4 << 20)
    playing = threading.Thread(target=peer, daemon=True)
    playing.start()
    answered: list[str] = []

    async def save(name: str, ticket: int) -> None:
        try:
            assert await writer.wait(ticket) is None
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):  # (as the store's saves do)
                assert await writer.wait(ticket) is None
            answered.append(name)
            raise
        answered.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(save, "small", writer.submit(recordwriter.SAVE, "a", b"1"))
            await anyio.sleep(0.05)
            sending = anyio.CancelScope()
            ticket = writer.submit(recordwriter.SAVE, "b", big)

            async def send_it() -> None:
                with sending:
                    await save("sender", ticket)

            tg.start_soon(send_it)
            await anyio.sleep(0.05)
            tg.start_soon(save, "last", writer.submit(recordwriter.SAVE, "c", big))
            while writer.handled < 2:
                await anyio.sleep(0.01)
            assert writer.out, "the last frame waits to be sent"
            sending.cancel()
            await anyio.sleep(0.05)
            resume.set()
    assert sorted(answered) == ["last", "sender", "small"]
    assert not writer.out
    ours.close()  # (the peer reads its end, and stops)
    playing.join(10)
    theirs.close()


async def test_a_writer_that_ends_at_once_makes_this_process_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/true")  # (a wrapper, not a Python)
    store = RecordStore(tmp_path / "containers")
    records = [_record(new_id(), restart_count=n) for n in range(5)]
    async with anyio.create_task_group() as tg:
        for record in records:
            tg.start_soon(store.save, record)
    await store.save(_record(new_id()))
    assert store.writer_pid is None
    await store.aclose()
    assert len(await RecordStore(tmp_path / "containers").load_all()) == 6


async def test_a_writer_that_cannot_open_the_database_says_why(tmp_path: Path) -> None:
    (tmp_path / DATABASE).mkdir()  # (a directory where the database should be)
    store = RecordStore(tmp_path / "containers")
    record = _record(new_id())
    with pytest.raises(
        errors.SystemError,
        match=f"^failed to save container {record.id}: the record writer cannot start: Is a",
    ):
        await store.save(record)
    await store.aclose()
