"""asyncstart: the path ``docker start`` takes inside dockerd, as an async (anyio) engine.

Embed it in an asyncio or trio program::

    async with asyncstart.open_daemon(asyncstart.DaemonConfig(data_root=..., exec_root=...)) as d:
        cid = await d.container_create(name="web", config={"Image": "busybox", "Cmd": ["true"]})
        await d.container_start("web")
"""

from . import errors
from ._version import __version__
from .api import serve_api
from .client import Client
from .clock import Clock, FakeClock, SystemClock
from .config import Config, HostConfig, RestartPolicy
from .daemon import Daemon, DaemonConfig, DaemonStatistics, open_daemon
from .images import FakeMounter, MountDriver
from .lifecycle import InvalidTransition, Lifecycle, LifecycleEvent, State
from .network import FakeNetwork, NetworkDriver
from .runtime import FakeRuntime, Runtime, RuntimeBackend, StateInfo

__all__ = [
    "Client",
    "Clock",
    "Config",
    "Daemon",
    "DaemonConfig",
    "DaemonStatistics",
    "FakeClock",
    "FakeMounter",
    "FakeNetwork",
    "FakeRuntime",
    "HostConfig",
    "InvalidTransition",
    "Lifecycle",
    "LifecycleEvent",
    "MountDriver",
    "NetworkDriver",
    "RestartPolicy",
    "Runtime",
    "RuntimeBackend",
    "State",
    "StateInfo",
    "SystemClock",
    "__version__",
    "errors",
    "open_daemon",
    "serve_api",
]
