"""Records on disk: atomic writes that survive a killed writer, and the ID/name index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from asyncstart import errors
from asyncstart.config import Config, HostConfig
from asyncstart.record import ContainerRecord, new_id
from asyncstart.store import RECORD_FILE, ContainerIndex, RecordStore

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
    store = RecordStore(tmp_path)
    record = _record(new_id(), state="exited", exit_code=3, error="boom")
    await store.save(record)
    assert (tmp_path / record.id / RECORD_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / ("f" * 64)).mkdir()  # a create killed before its first write
    (tmp_path / record.id / (RECORD_FILE + ".tmp")).write_bytes(b'{"torn')
    loaded = await store.load_all()
    assert loaded == [record]
    assert not (tmp_path / ("f" * 64)).exists()
    assert not (tmp_path / record.id / (RECORD_FILE + ".tmp")).exists()
    await store.delete(record.id)
    assert await store.load_all() == []


def test_a_writer_killed_mid_write_never_leaves_a_torn_record(tmp_path: Path) -> None:
    # A child rewrites one record as fast as it can with growing payloads; it is SIGKILLed at
    # random moments. Every time, the record on disk must decode and be one of the versions.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from asyncstart.record import ContainerRecord
        from asyncstart.store import RecordStore
        from asyncstart.config import Config, HostConfig
        store = RecordStore(__import__("pathlib").Path(sys.argv[1]), fsync=False)
        n = 0
        print("ready", flush=True)
        while True:
            n += 1
            record = ContainerRecord(id="a" * 64, name="/a", created="x", image="i",
                config=Config(env=["X=" + "y" * (n % 5000)]), host_config=HostConfig(),
                restart_count=n)
            store._write(record.id, __import__("msgspec").json.encode(record))
        """
    )
    decoder = msgspec.json.Decoder(ContainerRecord)
    seen = set()
    for attempt in range(15):
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        # Let it write for a varying while, then kill it without warning.
        target = tmp_path / ("a" * 64) / RECORD_FILE
        while not target.exists():
            pass
        for _ in range(200 * (attempt + 1)):
            os.stat(target)
        child.send_signal(signal.SIGKILL)
        child.wait()
        record = decoder.decode(target.read_bytes())
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
