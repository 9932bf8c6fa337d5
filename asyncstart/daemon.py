"""The daemon: the composition root of the engine, and its public library API.

``open_daemon`` builds the drivers, loads the records, starts one actor per container in one
task group, and hands back a :class:`Daemon` whose methods are those of dockerd's container
backend (``container_create``, ``container_start``, ...). The daemon resolves references and
validates requests; everything that changes a container is done by that container's actor.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from . import errors
from .actor import ActorServices, ContainerActor, Pending
from .clock import Clock, SystemClock
from .config import (
    Config,
    HostConfig,
    parse_config,
    parse_host_config,
    validate_host_config,
    validate_name,
)
from .events import EventBus
from .images import FakeMounter, MountDriver
from .images.overlay import OverlayMounter
from .images.store import ImageSource, ImageStore
from .lifecycle import PROCESS_STATES, State
from .network import FakeNetwork, NetworkDriver
from .network.bridge import DEFAULT_BRIDGE, DEFAULT_SUBNET, BridgeNetwork
from .network.loopback import LoopbackNetwork
from .network.netlink import asyncio_loop
from .network.ports import PortProxy
from .record import ContainerRecord, new_id
from .runtime import FakeRuntime, Runtime, StateInfo
from .runtime.runc import RuncRuntime
from .saga import Saga
from .signals import parse_signal
from .steps import (
    MountStep,
    NetworkStep,
    PortsStep,
    RuntimeStep,
    SpecStep,
    Step,
)
from .store import ContainerIndex, RecordStore
from .views import format_time, list_view, parse_time

__all__ = ["AttachSession", "Daemon", "DaemonConfig", "DaemonStatistics", "open_daemon"]


class AttachSession:
    """One attached client: its input to the container, the container's output to it."""

    def __init__(
        self,
        actor: ContainerActor,
        output: MemoryObjectReceiveStream[tuple[str, bytes]],
        stdin: bool,
    ) -> None:
        self._actor = actor
        self._output = output
        self._stdin = stdin

    async def send(self, data: bytes) -> None:
        if not self._stdin:
            raise errors.InvalidParameter("attached without stdin")
        await self._actor.write_stdin(data)

    async def send_eof(self) -> None:
        """Close the container's stdin — now, or once its process is ready."""
        if self._stdin:
            await self._actor.close_stdin()

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self._output.__aiter__()


log = structlog.get_logger("asyncstart.daemon")

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Where the daemon keeps its state and how it runs containers."""

    data_root: Path | str
    exec_root: Path | str
    #: ``runc`` (real containers: overlay root filesystems, runc) or ``fake`` (in memory).
    runtime: str = "runc"
    #: fsync each record before the rename that publishes it (durability across power loss).
    fsync: bool = True
    #: Seconds a stop waits before SIGKILL when neither request nor container says.
    stop_timeout: float = 10.0
    cgroup_parent: str = "asyncstart"
    #: Checkpoint/restore is experimental in dockerd too.
    experimental: bool = False
    #: OCI runtimes a container may name in ``HostConfig.Runtime``: name -> (path, *args),
    #: as dockerd's ``runtimes`` setting. ``runc`` is always there.
    runtimes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: User-namespace remapping, ``"UID:GID[:SIZE]"``: container root is that host uid/gid
    #: (dockerd's ``--userns-remap``, given as numbers). Empty: no remapping.
    userns_remap: str = ""
    #: The runc runtime's networking: ``bridge`` (pyroute2: a bridge, a namespace, veth and
    #: address per container; ``NetworkMode`` none/host/container:<id> as dockerd) or
    #: ``loopback`` (every container in a namespace with lo only).
    network: str = "bridge"
    bridge: str = DEFAULT_BRIDGE
    bridge_subnet: str = DEFAULT_SUBNET

    def userns(self) -> tuple[int, int, int] | None:
        """``userns_remap`` parsed: (uid, gid, size), or None."""
        if not self.userns_remap:
            return None
        parts = self.userns_remap.split(":")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
            raise errors.InvalidParameter(
                f"invalid userns-remap {self.userns_remap!r}: expected UID:GID[:SIZE]"
            )
        uid, gid = int(parts[0]), int(parts[1])
        return uid, gid, int(parts[2]) if len(parts) == 3 else 65536


@dataclass(frozen=True, slots=True)
class DaemonStatistics:
    containers: int
    running: int
    paused: int
    stopped: int
    events_dropped: int


class Daemon:
    """The engine's public face. Obtain one with :func:`open_daemon`."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        runtime: Runtime,
        mounter: MountDriver,
        network: NetworkDriver,
        clock: Clock,
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        self.config = config
        self.data_root = Path(config.data_root)
        self.exec_root = Path(config.exec_root)
        self.runtime = runtime
        self.mounter = mounter
        self.network = network
        self.clock = clock
        self.events = EventBus()
        self.records = RecordStore(self.data_root / "containers", fsync=config.fsync)
        self.images = ImageStore(self.data_root / "image")
        self._runtimes: dict[str, tuple[str, ...]] = {"runc": ("runc",)}
        self._runtimes.update({name: tuple(v) for name, v in config.runtimes.items()})
        self._index = ContainerIndex()
        self._actors: dict[str, ContainerActor] = {}
        userns = config.userns()
        self._ports = PortProxy(task_group)
        # The start saga: each step with the lifecycle state it runs in.
        saga: Sequence[tuple[State, Step]] = (
            (State.MOUNTING, MountStep(mounter)),
            (
                State.NETWORKING,
                NetworkStep(
                    network,
                    files_root=None if config.runtime == "fake" else self.records.root,
                    peers=self._network_peer,
                ),
            ),
            (State.NETWORKING, PortsStep(self._ports)),
            (State.SPEC_READY, SpecStep(cgroup_parent=config.cgroup_parent, userns=userns)),
            (
                State.SPEC_READY,
                RuntimeStep(
                    runtime,
                    self.exec_root,
                    self.records.log_path,
                    self._runtimes,
                    owner=userns[:2] if userns else None,
                ),
            ),
        )
        self._services = ActorServices(
            runtime=runtime,
            mounter=mounter,
            saga=Saga(saga, clock),
            records=self.records,
            bus=self.events,
            clock=clock,
            task_group=task_group,
            forget=self._forget,
            stop_timeout=config.stop_timeout,
        )
        self._task_group = task_group

    # -- wiring -----------------------------------------------------------------------------

    def state_changed(self, container_id: str, info: StateInfo) -> None:
        """The runtime backend's callback: route the report to the container's actor."""
        actor = self._actors.get(container_id)
        if actor is None:
            log.debug("runtime.unknown_container", container_id=container_id, state=info.state)
            return
        actor.state_changed(info)

    def _network_peer(self, reference: str) -> tuple[str, int, dict[str, Any]]:
        """For ``container:<ref>``: the container's ID, its pid (0 unless running) and its
        network settings with its hostname. Read only: its actor owns it."""
        snapshot = self._actor(reference).snapshot()
        record = snapshot.record
        settings = {**record.network_settings, "Hostname": record.config.hostname}
        return record.id, record.pid if snapshot.process_exists else 0, settings

    def _forget(self, record: ContainerRecord) -> None:
        self._actors.pop(record.id, None)
        self._index.remove(record.id, record.name)

    async def _adopt(self, record: ContainerRecord, *, new: bool = False) -> ContainerActor:
        actor = ContainerActor(record, self._services, new=new)
        await self._task_group.start(actor.run)
        self._actors[record.id] = actor
        return actor

    async def _restore(self) -> None:
        """Reconcile with reality: every record gets its actor; live processes are taken back,
        dead ones become exits; what removed containers left (runtime state, mounts, bundles)
        is deleted."""
        records = await self.records.load_all()
        live: set[str] = set()
        for record in records:
            self._index.add(record.id, record.name)
            actor = await self._adopt(record)
            if await actor.adopt_process():
                live.add(record.id)
                await self._republish(record)
        await self.runtime.cleanup(live)
        await self.mounter.cleanup(live, {r.id for r in records})
        await self.network.cleanup(live)
        for bundle in await anyio.to_thread.run_sync(lambda: list(self.exec_root.iterdir())):
            if bundle.is_dir() and bundle.name not in live and len(bundle.name) == 64:
                await anyio.to_thread.run_sync(shutil.rmtree, bundle, True)

    async def _republish(self, record: ContainerRecord) -> None:
        """A live container's published ports: listen again (the proxy lived in the daemon)."""
        settings = record.network_settings
        if not settings.get("Ports") or not settings.get("IPAddress"):
            return
        try:
            await self._ports.publish(
                record.id, record.name, settings["IPAddress"], settings["Ports"]
            )
        except errors.DockerError as exc:
            log.error("network.republish_failed", container_id=record.id, error=exc.message)

    def _actor(self, reference: str) -> ContainerActor:
        container_id = self._index.resolve(reference)
        actor = self._actors.get(container_id)
        if actor is None:  # removed between resolve and now
            raise errors.NotFound(f"No such container: {reference}")
        return actor

    # -- containers -------------------------------------------------------------------------

    async def container_create(
        self,
        name: str | None = None,
        config: Config | Mapping[str, Any] | None = None,
        host_config: HostConfig | Mapping[str, Any] | None = None,
    ) -> str:
        """Create a container (``docker create``); return its 64-hex ID."""
        parsed = parse_config(dict(config) if isinstance(config, Mapping) else config)
        host = parse_host_config(
            dict(host_config) if isinstance(host_config, Mapping) else host_config
        )
        validate_host_config(host)
        if host.runtime and host.runtime not in self._runtimes:
            raise errors.InvalidParameter(f"unknown or invalid runtime name: {host.runtime}")
        image_id = self._apply_image(parsed)
        # dockerd's order: the image, then the name, then the command.
        canonical = validate_name(name) if name else self._generate_name()
        if not parsed.cmd and not parsed.entrypoint:
            raise errors.InvalidParameter("No command specified")
        container_id = new_id()
        if not parsed.hostname:
            # dockerd: the host's name in host mode, else the short ID.
            host_mode = host.network_mode == "host"
            parsed.hostname = socket.gethostname() if host_mode else container_id[:12]
        self._index.reserve_name(canonical, container_id)
        record = ContainerRecord(
            id=container_id,
            name=canonical,
            created=format_time(time.time()),
            image=image_id,
            config=parsed,
            host_config=host,
        )
        try:
            await self.mounter.create(container_id, parsed.image)
            try:
                await self.records.save(record)
            except errors.DockerError:
                await self.mounter.remove(container_id)
                raise
        except BaseException:
            self._index.release_name(canonical)
            raise
        self._index.add(container_id, canonical)
        await self._adopt(record, new=True)
        return container_id

    def _apply_image(self, config: Config) -> str:
        """Resolve ``config.image`` and fill what the container leaves to the image (dockerd's
        ``merge``); return the image ID. The fake runtime runs images it has never seen."""
        try:
            image_id = self.images.resolve(config.image or "")
        except errors.NotFound:
            if self.config.runtime == "fake":
                return config.image
            raise
        image = self.images.config(image_id).get("config", {})
        if not config.cmd and not config.entrypoint:
            config.cmd = image.get("Cmd")
        if config.entrypoint is None:
            config.entrypoint = image.get("Entrypoint")
        own = {item.partition("=")[0] for item in config.env or ()}
        inherited = [item for item in image.get("Env") or () if item.partition("=")[0] not in own]
        config.env = [*inherited, *(config.env or ())]
        config.working_dir = config.working_dir or image.get("WorkingDir", "")
        config.user = config.user or image.get("User", "")
        return image_id

    # -- images -----------------------------------------------------------------------------

    async def image_import(
        self,
        source: ImageSource,
        repo: str = "",
        tag: str = "",
        changes: Sequence[str] = (),
    ) -> str:
        """``docker import``: a root filesystem tarball becomes an image; returns its ID."""
        return await self.images.import_(source, repo=repo, tag=tag, changes=changes)

    async def image_load(self, source: ImageSource) -> list[str]:
        """``docker load``: the images of a ``docker save`` archive."""
        return await self.images.load(source)

    async def images_list(self) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(self.images.list_images)

    async def image_inspect(self, reference: str) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self.images.inspect, reference)

    async def image_tag(self, reference: str, repo: str, tag: str = "latest") -> None:
        self.images.tag(reference, repo, tag)

    async def image_remove(self, reference: str, force: bool = False) -> list[str]:
        """``docker rmi``; 409 while a container uses the image."""
        image_id = self.images.resolve(reference)
        snapshots = [actor.snapshot() for actor in self._actors.values()]
        users = [(s.id, s.process_exists) for s in snapshots if s.record.image == image_id]
        return await anyio.to_thread.run_sync(
            lambda: self.images.remove(reference, users=users, force=force)
        )

    # -- logs -------------------------------------------------------------------------------

    def container_logs(
        self,
        reference: str,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: str | int = "all",
        since: float = 0,
        until: float = 0,
        timestamps: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """``docker logs``: ``(stream, bytes)`` from the container's json-file log.

        ``since``/``until`` are seconds since the epoch (0: unbounded); ``tail`` keeps the last
        N lines; ``follow`` goes on until the container stops. The file is polled every 20 ms
        while following. Bad arguments and an unknown container raise here, before the first
        line is read (the API answers them with their status).
        """
        if not (stdout or stderr):
            raise errors.InvalidParameter("Bad parameters: you must choose at least one stream")
        if tail not in ("all", "") and not str(tail).lstrip("-").isdigit():
            raise errors.InvalidParameter(f"invalid value for tail: {tail}")
        actor = self._actor(reference)
        wanted = {name for name, on in (("stdout", stdout), ("stderr", stderr)) if on}
        return self._read_log(actor, wanted, follow, tail, since, until, timestamps)

    async def _read_log(
        self,
        actor: ContainerActor,
        wanted: set[str],
        follow: bool,
        tail: str | int,
        since: float,
        until: float,
        timestamps: bool,
    ) -> AsyncIterator[tuple[str, bytes]]:
        path = anyio.Path(self.records.log_path(actor.id))

        def select(lines: list[bytes]) -> list[tuple[str, bytes]]:
            chosen = []
            for line in lines:
                entry = json.loads(line)
                if entry["stream"] not in wanted:
                    continue
                at = parse_time(entry["time"])
                if (since and at < since) or (until and at > until):
                    continue
                data = entry["log"].encode()
                if timestamps:
                    data = entry["time"].encode() + b" " + data
                chosen.append((entry["stream"], data))
            return chosen

        offset = 0
        try:
            data = await path.read_bytes()
        except FileNotFoundError:
            data = b""
        complete = data[: data.rfind(b"\n") + 1]
        offset = len(complete)
        backlog = select(complete.splitlines())
        if str(tail).isdigit():
            backlog = backlog[len(backlog) - int(tail) :] if int(tail) else []
        for item in backlog:
            yield item
        while follow and not (until and time.time() > until):
            running = actor.snapshot().lifecycle.running
            try:
                async with await anyio.open_file(path, "rb") as file:
                    await file.seek(offset)
                    data = await file.read()
            except FileNotFoundError:
                data = b""
            complete = data[: data.rfind(b"\n") + 1]
            offset += len(complete)
            for item in select(complete.splitlines()):
                yield item
            if not running and not complete:
                return
            if not complete:
                await anyio.sleep(0.02)

    def _generate_name(self) -> str:
        # Like dockerd: a few plain tries, then a growing numeric suffix, so the space of names
        # never runs out however many containers there are.
        for attempt in itertools.count():
            name = f"/{random.choice(_ADJECTIVES)}_{random.choice(_NOUNS)}"
            if attempt >= 3:
                name += str(random.randrange(10 ** (attempt - 2)))
            if not self._index.has_name(name):
                return name
        raise AssertionError("unreachable")

    async def container_start(
        self,
        reference: str,
        checkpoint: str | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        """Start a container (``docker start``); returns once its process is running.

        Raises ``NotModified`` if it already runs; concurrent starts of one container make one
        runtime create and all return once it runs.
        """
        if checkpoint:
            validate_name(checkpoint)
            if not self.config.experimental:
                raise errors.InvalidParameter("checkpoint is only supported in experimental mode")
        actor = self._actor(reference)
        validate_host_config(actor.snapshot().record.host_config)
        if checkpoint and not checkpoint_dir:
            checkpoint_dir = str(self.records.path(actor.id) / "checkpoints")
        await actor.start(checkpoint or None, checkpoint_dir if checkpoint else None)

    async def container_inspect(self, reference: str) -> dict[str, Any]:
        """``docker inspect``: a dict shaped like dockerd's inspect JSON."""
        return self._actor(reference).snapshot().inspect()

    async def containers_list(
        self,
        all: bool = False,
        limit: int = -1,
        filters: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """``docker ps``: newest first; stopped ones only with ``all`` (or a ``limit``)."""
        wanted = _normalise_filters(filters)
        now = time.time()
        rows = []
        snapshots = sorted(
            (actor.snapshot() for actor in self._actors.values()),
            key=lambda s: s.record.created,
            reverse=True,
        )
        for snapshot in snapshots:
            lifecycle = snapshot.lifecycle
            if not (all or limit > 0 or wanted.get("status")) and lifecycle.status not in (
                "running",
                "paused",
                "restarting",
            ):
                continue
            if not _matches(snapshot.record, lifecycle.status, wanted):
                continue
            rows.append(list_view(snapshot.record, lifecycle, now))
            if 0 < limit <= len(rows):
                break
        return rows

    async def container_wait(
        self, reference: str, condition: str = "not-running"
    ) -> dict[str, Any]:
        """``docker wait``: ``{"StatusCode": n}`` (plus ``Error``) once the condition holds."""
        return await self.container_wait_pending(reference, condition).wait()

    def container_wait_pending(self, reference: str, condition: str = "not-running") -> Pending:
        """Register a wait and return at once (errors such as 404 are raised here); the result
        is ``await pending.wait()``. Anything asked of the container after this returns — a
        start, say — is ordered after the wait, as the API's early 200 promises."""
        if condition == "":
            condition = "not-running"
        if condition not in WAIT_CONDITIONS:
            raise errors.InvalidParameter(f'invalid condition: "{condition}"')
        return self._actor(reference).wait_pending(condition)

    async def container_kill(self, reference: str, signal: str | int = "KILL") -> None:
        """``docker kill``: send a signal; with KILL, return once the process has exited."""
        number = parse_signal(signal)
        await self._actor(reference).kill(number, reference)

    async def container_stop(self, reference: str, timeout: float | None = None) -> None:
        """``docker stop``: stop signal, then KILL after ``timeout`` seconds (-1: wait forever)."""
        await self._actor(reference).stop(timeout)

    async def container_restart(self, reference: str, timeout: float | None = None) -> None:
        """``docker restart``: stop (if it runs), start, then the ``restart`` event.

        As dockerd, a failure is a 500 ``Cannot restart container <ref>: ...``.
        """
        actor = self._actor(reference)
        try:
            await actor.restart(timeout)
        except errors.NotFound:
            raise
        except errors.DockerError as exc:
            raise errors.SystemError(
                f"Cannot restart container {reference}: {exc.message}"
            ) from exc

    async def container_pause(self, reference: str) -> None:
        await self._actor(reference).pause()

    async def container_unpause(self, reference: str) -> None:
        await self._actor(reference).unpause()

    async def container_remove(self, reference: str, force: bool = False) -> None:
        """``docker rm``; ``force`` kills a running container first."""
        await self._actor(reference).remove(force, reference)

    @asynccontextmanager
    async def container_attach(
        self, reference: str, stdin: bool = False, stdout: bool = True, stderr: bool = True
    ) -> AsyncIterator[AttachSession]:
        """``docker attach``: ``async with daemon.container_attach("web", stdin=True) as s:``
        then ``await s.send(b"...")``, ``await s.send_eof()``, ``async for stream, data in s``.

        Attaching before the start is allowed: the output of the next run arrives, and input
        sent meanwhile reaches the process once it exists. The output ends with the run.
        """
        actor = self._actor(reference)
        streams = frozenset(n for n, on in (("stdout", stdout), ("stderr", stderr)) if on)
        receive = actor.attach(streams)
        try:
            yield AttachSession(actor, receive, stdin)
        finally:
            actor.detach(receive)

    async def container_close_stdin(self, reference: str) -> None:
        """What an attached client's EOF does: close stdin now, or once the process is ready."""
        await self._actor(reference).close_stdin()

    def container_start_phases(self, reference: str) -> dict[str, float]:
        """Seconds spent in each phase of the container's latest start."""
        return self._actor(reference).last_start

    # -- events and statistics --------------------------------------------------------------

    def subscribe_events(
        self,
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[dict[str, Any]]]:
        """``async with daemon.subscribe_events() as events: async for event in events: ...``"""
        return self.events.subscribe()

    def statistics(self) -> DaemonStatistics:
        states = [actor.snapshot().lifecycle.state for actor in self._actors.values()]
        running = sum(1 for s in states if s in PROCESS_STATES)
        paused = sum(1 for s in states if s.value == "paused")
        return DaemonStatistics(
            containers=len(states),
            running=running - paused,
            paused=paused,
            stopped=len(states) - running,
            events_dropped=self.events.dropped,
        )


def _normalise_filters(filters: Mapping[str, Any] | None) -> dict[str, set[str]]:
    """Docker sends ``{"status": ["running"]}`` or the older ``{"status": {"running": true}}``."""
    result: dict[str, set[str]] = {}
    for key, value in (filters or {}).items():
        if key not in ("id", "name", "status", "label", "exited"):
            raise errors.InvalidParameter(f"invalid filter '{key}'")
        values = value.keys() if isinstance(value, Mapping) else value
        result[key] = {str(v) for v in values}
    for status in result.get("status", ()):
        if status not in (
            "created",
            "restarting",
            "running",
            "removing",
            "paused",
            "exited",
            "dead",
        ):
            raise errors.InvalidParameter(f"invalid filter 'status={status}'")
    return result


def _matches(record: ContainerRecord, status: str, wanted: dict[str, set[str]]) -> bool:
    if "id" in wanted and not any(record.id.startswith(v) for v in wanted["id"]):
        return False
    if "name" in wanted and not any(v.lstrip("/") in record.name for v in wanted["name"]):
        return False
    if "status" in wanted and status not in wanted["status"]:
        return False
    if "exited" in wanted and (status != "exited" or str(record.exit_code) not in wanted["exited"]):
        return False
    for label in wanted.get("label", ()):
        key, has_value, value = label.partition("=")
        labels = record.config.labels
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


_ADJECTIVES = (
    "brisk", "calm", "deft", "eager", "fond", "glad", "hardy", "keen", "lucid", "merry",
    "nimble", "plucky", "quiet", "rapid", "sober", "tidy", "vivid", "witty", "zesty", "bold",
)  # fmt: skip
_NOUNS = (
    "otter", "heron", "badger", "falcon", "lynx", "marten", "osprey", "puffin", "raven",
    "salmon", "tern", "vole", "wren", "yak", "bison", "crane", "dingo", "egret", "finch", "gecko",
)  # fmt: skip


@asynccontextmanager
async def open_daemon(
    config: DaemonConfig,
    *,
    runtime: Runtime | None = None,
    mounter: MountDriver | None = None,
    network: NetworkDriver | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Daemon]:
    """Run a daemon for the duration of the ``async with`` block.

    Drivers not given are chosen by ``config.runtime``. Leaving the block stops the actors;
    containers are left as they are (dockerd's live-restore), and a daemon reopened on the same
    roots finds them again.
    """
    clock = clock or SystemClock()
    await anyio.Path(config.data_root).mkdir(parents=True, exist_ok=True)
    await anyio.Path(config.exec_root).mkdir(parents=True, exist_ok=True, mode=0o700)
    if config.runtime == "fake":
        runtime = runtime or FakeRuntime(clock=clock)
        mounter = mounter or FakeMounter()
        network = network or FakeNetwork()
    elif config.runtime == "runc":
        images = ImageStore(Path(config.data_root) / "image")
        runtime = runtime or RuncRuntime(Path(config.exec_root) / "runc")
        userns = config.userns()
        owner = userns[:2] if userns else None
        mounter = mounter or OverlayMounter(Path(config.data_root) / "overlay", images, owner)
        if network is None and config.network == "bridge":
            network = BridgeNetwork(
                state=Path(config.data_root) / "network" / "ipam.json",
                netns_dir=Path(config.exec_root) / "netns",
                bridge=config.bridge,
                subnet=config.bridge_subnet,
            )
        network = network or LoopbackNetwork()
    else:
        raise errors.InvalidParameter(f"unknown runtime specified {config.runtime}")
    async with asyncio_loop(), anyio.create_task_group() as tg:
        daemon = Daemon(
            config, runtime=runtime, mounter=mounter, network=network, clock=clock, task_group=tg
        )
        await tg.start(runtime.run, daemon)
        await daemon._restore()
        log.info("daemon.ready", containers=len(daemon._actors), runtime=runtime.name)
        try:
            yield daemon
        finally:
            tg.cancel_scope.cancel()
