"""Every async test runs on asyncio and on trio (anyio's pytest plugin)."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import asyncstart
from asyncstart import Daemon, FakeClock, FakeMounter, FakeNetwork, FakeRuntime
from asyncstart.network.bridge import DEFAULT_BRIDGE


def _firewall_table() -> bool:
    if shutil.which("nft") is None:
        return False
    listed = subprocess.run(["nft", "list", "table", "ip", "asyncstart"], capture_output=True,
                            check=False)  # fmt: skip
    return listed.returncode == 0


@pytest.fixture(scope="session", autouse=True)
def _host_as_found() -> Iterator[None]:
    """The default bridge and asyncstart's firewall table stay after a daemon, as docker0 and
    its rules do; the tests whose daemons made them leave the host as they found it. (Never
    one that was there before: a host's own daemon may be using it.)"""
    root = os.geteuid() == 0
    had_bridge = os.path.exists(f"/sys/class/net/{DEFAULT_BRIDGE}")
    had_table = root and _firewall_table()
    yield
    if not root:
        return
    if not had_bridge:
        subprocess.run(["ip", "link", "del", DEFAULT_BRIDGE], capture_output=True, check=False)
    if not had_table and _firewall_table():
        subprocess.run(["nft", "delete", "table", "ip", "asyncstart"], capture_output=True,
                       check=False)  # fmt: skip


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Async test modules say ``pytestmark = pytest.mark.anyio``: no test runs on one loop."""
    for item in items:
        if not (isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj)):
            continue
        if item.get_closest_marker("anyio") is None or "anyio_backend" not in item.fixturenames:
            raise pytest.UsageError(f"{item.nodeid} is async but not marked anyio")


@dataclass
class Engine:
    """A daemon on fake drivers, with the drivers at hand for assertions and faults."""

    daemon: Daemon
    runtime: FakeRuntime
    mounter: FakeMounter
    network: FakeNetwork
    clock: FakeClock | None
    root: Path

    @property
    def fake_clock(self) -> FakeClock:
        assert self.clock is not None, "open the engine with fake_clock=True"
        return self.clock


OpenEngine = Callable[..., AbstractAsyncContextManager[Engine]]


@pytest.fixture
def open_engine(tmp_path: Path) -> OpenEngine:
    """``async with open_engine(fake_clock=True) as engine: ...``; reopenable on the same roots."""

    @asynccontextmanager
    async def _open(
        *,
        fake_clock: bool = False,
        runtime: FakeRuntime | None = None,
        mounter: FakeMounter | None = None,
        network: FakeNetwork | None = None,
        **config: object,
    ) -> AsyncIterator[Engine]:
        clock = FakeClock() if fake_clock else None
        runtime = runtime or FakeRuntime(clock=clock)
        mounter = mounter or FakeMounter()
        network = network or FakeNetwork()
        daemon_config = asyncstart.DaemonConfig(
            data_root=tmp_path / "data",
            exec_root=tmp_path / "exec",
            runtime="fake",
            fsync=False,
            **config,
        )
        async with asyncstart.open_daemon(
            daemon_config, runtime=runtime, mounter=mounter, network=network, clock=clock
        ) as daemon:
            yield Engine(daemon, runtime, mounter, network, clock, tmp_path)

    return _open


@pytest.fixture
async def engine(open_engine: OpenEngine) -> AsyncIterator[Engine]:
    async with open_engine() as opened:
        yield opened


@pytest.fixture
async def clocked(open_engine: OpenEngine) -> AsyncIterator[Engine]:
    """An engine whose time moves only when the test advances ``engine.fake_clock``."""
    async with open_engine(fake_clock=True) as opened:
        yield opened


@pytest.fixture
def sock() -> Iterator[Path]:
    """A path for a served API's unix socket: short, as a socket path is at most 108 bytes
    (pytest's ``tmp_path`` can be longer)."""
    with tempfile.TemporaryDirectory(prefix="as-", dir="/tmp") as short:
        yield Path(short) / "api.sock"
