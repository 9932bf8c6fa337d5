"""The daemon: the engine's public library API, and the task group its actors run in.

``open_daemon`` builds the drivers (:mod:`asyncstart.wiring`), reconciles the records with what
still runs (:mod:`asyncstart.reconcile`) and hands back a :class:`Daemon` whose methods are
those of dockerd's backends (``container_create``, ``container_start``, ``image_import``, ...).
The daemon resolves references, validates requests and delegates: everything that changes a
container is done by that container's actor, and what it reads of one is a snapshot.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import functools
import ipaddress
import json
import os
import platform
import shlex
import socket
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream

from . import errors, rmi
from ._log import get_logger
from ._version import API_VERSION, MIN_API_VERSION, __version__
from .actor import ActorServices, ContainerActor, Pending
from .attach import AttachSession
from .clock import Clock, SystemClock
from .config import Config, HostConfig, validate_name
from .create import new_record
from .detach import attach_detach_keys, detach_keys_for
from .events import EventBus, container_event
from .exec_io import ExecIO
from .execs import (
    ExecInstance,
    container_exec_ids,
    exec_process,
    parse_exec_config,
    ps_table,
)
from .fdio import write_all
from .filters import (
    container_filters,
    event_filters,
    event_matches,
    has_label,
    image_filters,
    image_matches,
    normalise,
    timestamp,
)
from .hostinfo import go_arch, host_facts, mem_total
from .images import MountDriver
from .images.copy import ContainerView, extract_to, prepare_archive, stat_path
from .images.platform import check_image_platform, parse_platform
from .images.reference import check_pull_reference
from .images.store import ImageSource
from .lifecycle import STARTING_STATES, Request, State
from .logs import LOG_MODE, ContainerLogs, LogQuery
from .mailbox import Dispatcher
from .mounts import MountPoint, inherit_mounts, parse_volumes_from
from .network import NetworkDriver
from .network.base import Attachment
from .network.netlink import asyncio_loop
from .network.ports import PortProxy
from .network.resolver import Resolver
from .networks import (
    NetworkRegistry,
    NetworkSpec,
    attachment_of,
    bridge_of,
    dns_names,
    endpoint_config,
    find_network,
    network_filters,
    network_matches,
    network_view,
    new_network,
    predefined_networks,
    refuse_connect,
    refuse_shared_namespace,
)
from .reconcile import reconcile
from .record import ZERO_TIME, ContainerRecord
from .runtime import Runtime, StateInfo, translate_start_error
from .runtime.runc_cli import runtime_env
from .runtime.stats import read_cgroup_stats, read_network_stats, stats_document
from .settings import apply_update
from .signals import parse_signal
from .steps import NETWORK_FILES, read_users
from .store import LOG_FILE, ContainerIndex, RecordStore
from .views import (
    ContainerSnapshot,
    DaemonStatistics,
    format_time,
    joined_networks,
    network_files,
    network_key,
    parse_time,
    ps_rows,
)
from .volumes import VolumeStore
from .wiring import (
    DaemonConfig,
    Drivers,
    build_drivers,
    build_saga,
    read_engine_id,
    secure_roots,
)

__all__ = ["AttachSession", "Daemon", "DaemonConfig", "DaemonStatistics", "open_daemon"]

log = get_logger("asyncstart.daemon")

#: How many containers a daemon that opens starts (or removes) at once.
_BOOT_STARTS = 16

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


class Daemon:
    """The engine's public face. Obtain one with :func:`open_daemon`.

    :class:`asyncstart.Client` has the same methods, parameters and results over the Engine
    API socket, but for those whose docstring says "Library-only" (and its own ``aclose``)."""

    def __init__(
        self,
        config: DaemonConfig,
        drivers: Drivers,
        *,
        clock: Clock,
        task_group: anyio.abc.TaskGroup,
        engine_id: str,
    ) -> None:
        self.config = config
        self.data_root: Path = Path(config.data_root)
        self.exec_root: Path = Path(config.exec_root)
        #: A stable identity for the data root (dockerd's ``engine-id``).
        self.engine_id = engine_id
        self._drivers = drivers
        self._images = drivers.images
        self._events = EventBus()
        self._records = RecordStore(
            self.data_root / "containers",
            fsync=config.fsync,
            # The files each start writes, made with the container: no start allocates them.
            placeholders={**NETWORK_FILES, LOG_FILE: LOG_MODE} if drivers.network_files else None,
        )
        userns = config.userns()
        self._volumes = VolumeStore(
            self.data_root / "volumes",
            fsync=config.fsync,
            root_ids=(userns[0], userns[1]) if userns else None,
        )
        self._runtimes = config.runtime_table()
        self._default_runtime = config.runtime_name()  # (a PATH lookup: once)
        self._runtime_versions: dict[str, str] | None = None
        #: What the machine offers containers, read once (dockerd's ``sysinfo``).
        self._host = host_facts(userns=config.userns() is not None)
        self._index = ContainerIndex()
        self._actors: dict[str, ContainerActor] = {}
        self._ports = PortProxy(task_group)
        self._resolver = Resolver(task_group)
        #: ``docker exec`` instances, and the I/O of those running.
        self._execs: dict[str, ExecInstance] = {}
        self._exec_io: dict[str, ExecIO] = {}
        #: The user-defined networks; their changes one at a time.
        self._registry = NetworkRegistry(self.data_root / "network" / "networks.json")
        self._network_lock = anyio.Lock()
        self._predefined = self._predefined_networks()
        self._task_group = task_group
        self._services = ActorServices(
            runtime=drivers.runtime,
            mounter=drivers.mounter,
            saga=build_saga(
                config,
                drivers,
                clock,
                records=self._records,
                ports=self._ports,
                peers=self._network_peer,
                plan=self._attachments,
                resolver=self._resolver,
            ),
            records=self._records,
            bus=self._events,
            clock=clock,
            task_group=task_group,
            dispatcher=Dispatcher(task_group),
            forget=self._forget,
            stop_timeout=config.stop_timeout,
            network=drivers.network,
            resolver=self._resolver,
        )

    # -- wiring -----------------------------------------------------------------------------

    def state_changed(self, container_id: str, info: StateInfo) -> None:
        """The runtime backend's callback: route the report to the container's actor.

        Library-only: the runtime calls it in-process; no client has anything to report."""
        actor = self._actors.get(container_id)
        if actor is None:
            log.debug("runtime.unknown_container", container_id=container_id, state=info.state)
            return
        actor.state_changed(info)

    def _network_peer(self, reference: str) -> tuple[str, int, dict[str, Any]]:
        """For ``container:<ref>`` and links: the container's ID, its pid (0 unless running)
        and its network settings with its hostname, name, environment and exposed ports."""
        snapshot = self._snapshot(reference)
        record = snapshot.record
        settings = {
            **record.network_settings,
            "Hostname": record.config.hostname,
            "Name": record.name,
            "Env": list(record.config.env or ()),
            "ExposedPorts": list(record.config.exposed_ports or {}),
        }
        return record.id, record.pid if snapshot.process_exists else 0, settings

    def _forget(self, record: ContainerRecord) -> None:
        self._actors.pop(record.id, None)
        self._index.remove(record.id, record.name)
        if record.host_config.auto_remove:  # dockerd's auto-removal takes them too (rm -v)
            self._task_group.start_soon(self._remove_anonymous_volumes, record.mount_points)

    async def _adopt(self, record: ContainerRecord, *, new: bool = False) -> ContainerActor:
        if not new:
            self._index.add(record.id, record.name)
        actor = ContainerActor(record, self._services, new=new)
        actor.open()
        self._actors[record.id] = actor
        return actor

    async def _reopen(self) -> None:
        await self._volumes.cleanup()  # (what a crashed removal or create left)
        for spec in self._registry:
            # The bridges and rules of the user-defined networks, found again (or made anew).
            try:
                await self._drivers.network.create_network(bridge_of(spec))
            except errors.DockerError as exc:
                log.error("network.restore_failed", name=spec.name, error=exc.message)
        await reconcile(
            self._records,
            self._adopt,
            self._drivers,
            self._ports,
            self.exec_root,
            self._resolver,
        )
        await self._start_or_remove_with_the_daemon()

    async def _start_or_remove_with_the_daemon(self) -> None:
        """dockerd's restore, for the containers whose process does not run: those whose
        restart policy says so are started, as by ``docker start`` (a fresh restart manager);
        of the others, those created with ``AutoRemove`` (``--rm``) are removed, never-started
        ones too (with their anonymous volumes, as at an exit). A few at a time; a failure is
        logged, as dockerd logs it, and the container stays as it was."""
        limiter = anyio.CapacityLimiter(_BOOT_STARTS)

        async def carry_out(action: str, call: Callable[[], Awaitable[None]], cid: str) -> None:
            async with limiter:
                try:
                    await call()
                except errors.DockerError as exc:
                    log.error(f"container.boot_{action}_failed", container_id=cid,
                              error=exc.message)  # fmt: skip

        async with anyio.create_task_group() as tg:
            for snapshot in self._snapshots():
                cid = snapshot.id
                if snapshot.process_exists:
                    continue
                if snapshot.starts_with_the_daemon:
                    start = functools.partial(self.container_start, cid)
                    tg.start_soon(carry_out, "start", start, cid)
                elif snapshot.record.host_config.auto_remove:
                    remove = functools.partial(self.container_remove, cid, force=True)
                    tg.start_soon(carry_out, "remove", remove, cid)

    def _actor(self, reference: str) -> ContainerActor:
        container_id = self._index.resolve(reference)
        actor = self._actors.get(container_id)
        if actor is None:  # removed between resolve and now
            raise errors.NotFound(f"No such container: {reference}")
        return actor

    def _snapshot(self, reference: str) -> ContainerSnapshot:
        return self._actor(reference).snapshot()

    def _snapshots(self) -> list[ContainerSnapshot]:
        return [actor.snapshot() for actor in self._actors.values()]

    # -- containers -------------------------------------------------------------------------

    async def container_create(
        self,
        name: str | None = None,
        config: Config | Mapping[str, Any] | None = None,
        host_config: HostConfig | Mapping[str, Any] | None = None,
        networking_config: Mapping[str, Any] | None = None,
        platform: str = "",
    ) -> str:
        """Create a container (``docker create``); return its 64-hex ID.

        ``networking_config``: dockerd's ``NetworkingConfig`` — ``EndpointsConfig``, the
        networks to join besides ``HostConfig.NetworkMode``'s, each with its aliases and
        address (``IPAMConfig.IPv4Address``). ``platform``: the image must be made for it
        (``os[/arch[/variant]]``; dockerd's 400 when malformed, 404 when another).
        """
        if platform:
            wanted = parse_platform(platform)
            reference = str(
                config.get("Image", "")
                if isinstance(config, Mapping)
                else getattr(config, "image", "")
            )
            image: dict[str, Any] | None = None
            with contextlib.suppress(errors.NotFound):  # the create's own 404 says so
                image = self._images.inspect(reference)
            if image is not None:
                check_image_platform(reference, image, wanted)
        record = new_record(
            name,
            config,
            host_config,
            images=self._images,
            runtimes=self._runtimes,
            default_runtime=self._default_runtime,
            name_taken=self._index.has_name,
            facts=self._host,
            daemon_root=str(self.data_root),
            inherited=self._volumes_from(host_config),
        )
        record.endpoints = self._endpoints_at_create(record, networking_config)
        container_id, canonical = record.id, record.name
        self._index.reserve_name(canonical, container_id)
        mounter = self._drivers.mounter
        made: list[str] = []  # anonymous volumes made for it: gone again if the create fails
        try:
            record.mount_points = await self._make_volumes(record.mount_points or [], made)
            await mounter.create(container_id, record.config.image)
            try:
                await self._copy_up(record)
                await self._records.save(record)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await mounter.remove(container_id)
                raise
        except BaseException:
            self._index.release_name(canonical)
            with anyio.CancelScope(shield=True):
                for name in made:
                    with contextlib.suppress(errors.DockerError):
                        await self._volumes.remove(name, force=True, in_use={})
            raise
        self._index.add(container_id, canonical)
        await self._adopt(record, new=True)
        return container_id

    async def _make_bind_sources(self, actor: ContainerActor) -> None:
        """dockerd's ``-v /host/path:/path``: a host directory that does not exist is made
        (0755, owned by the container's root) when the container starts. Not on the fake
        runtime, whose containers touch nothing of the host's."""
        if self.config.runtime == "fake":
            return
        userns = self.config.userns()
        for point in actor.record().mount_points or ():
            if point.type == "bind" and point.create_source:
                await anyio.to_thread.run_sync(_make_directory, point.source, userns)

    def _volumes_from(self, host_config: HostConfig | Mapping[str, Any] | None) -> list[MountPoint]:
        """``VolumesFrom``: the mount points of those containers, each ``container[:ro|rw]``
        (dockerd's 400 for a bad one, 404 for an unknown container)."""
        if isinstance(host_config, Mapping):
            specs = host_config.get("VolumesFrom") or []
        else:
            specs = (host_config.volumes_from if host_config is not None else None) or []
        if not isinstance(specs, list) or not all(isinstance(x, str) for x in specs):
            raise errors.InvalidParameter("invalid VolumesFrom: expected a list of strings")
        inherited: list[MountPoint] = []
        for spec in specs:
            container, mode = parse_volumes_from(spec)
            other = self._snapshot(container).record
            inherited += inherit_mounts(other.mount_points or (), mode)
        return inherited

    async def _make_volumes(self, points: list[MountPoint], made: list[str]) -> list[MountPoint]:
        """The volumes the points name, made (a name that exists is that volume); each
        point's source is then its volume's data. ``made``: the anonymous ones, as made."""
        result = []
        for point in points:
            if point.type == "volume":
                existed = False
                if point.name:
                    with contextlib.suppress(errors.NotFound):
                        existed = bool(await self._volumes.get(point.name))
                volume = await self._volumes.create(
                    point.name or None,
                    point.driver or "local",
                    point.driver_opts,
                    point.volume_labels,
                    anonymous=point.anonymous,
                )
                if point.anonymous and not existed:
                    made.append(volume["Name"])
                point = msgspec.structs.replace(
                    point, name=volume["Name"], source=volume["Mountpoint"], driver=volume["Driver"]
                )
            result.append(point)
        return result

    async def _copy_up(self, record: ContainerRecord) -> None:
        """dockerd's copy-up at create: an empty volume takes what the image has where it is
        mounted (unless ``nocopy``)."""
        wanted = [p for p in record.mount_points or () if p.type == "volume" and p.copy_data]
        if not wanted or self.config.runtime == "fake":  # (the fake layer has no files)
            return
        mounter = self._drivers.mounter
        rootfs = Path(await mounter.mount(record.id))
        try:
            for point in wanted:
                await self._volumes.populate(point.name, rootfs, point.destination)
        finally:
            with anyio.CancelScope(shield=True):
                await mounter.unmount(record.id)

    def _volumes_in_use(self) -> dict[str, list[str]]:
        """Volume name -> the containers that mount it."""
        users: dict[str, list[str]] = {}
        for snapshot in self._snapshots():
            for point in snapshot.record.mount_points or ():
                if point.type == "volume":
                    users.setdefault(point.name, []).append(snapshot.id)
        return users

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
        actor.check_settings()
        await self._make_bind_sources(actor)
        if checkpoint and not checkpoint_dir:
            checkpoint_dir = str(self._records.path(actor.id) / "checkpoints")
        await actor.request(
            Request.START, checkpoint or None, checkpoint_dir if checkpoint else None
        )

    async def container_inspect(self, reference: str) -> dict[str, Any]:
        """``docker inspect``: a dict shaped like dockerd's inspect JSON."""
        snapshot = self._snapshot(reference)
        document = snapshot.inspect()
        document["LogPath"] = str(self._records.log_path(snapshot.id))
        document["ExecIDs"] = container_exec_ids(list(self._execs.values()), snapshot.id)
        return document

    async def containers_list(
        self,
        all: bool = False,
        limit: int = -1,
        filters: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """``docker ps``: newest first; stopped ones only with ``all`` (or a ``limit``)."""
        wanted = container_filters(filters)
        return ps_rows(self._snapshots(), all=all, limit=limit, wanted=wanted, now=time.time())

    async def containers_prune(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        """``docker container prune``: every container that is not running (created, exited,
        dead) and passes ``until``/``label``/``label!``; the IDs removed, a ``prune`` event."""
        wanted = normalise(filters, ("until", "label", "label!"))
        until = min((timestamp(v, time.time()) for v in wanted.pop("until", ())), default=0.0)
        removed = []
        for snapshot in self._snapshots():
            record = snapshot.record
            if snapshot.process_exists or snapshot.lifecycle.status in ("restarting", "removing"):
                continue
            if until and parse_time(record.created) >= until:
                continue
            labels = record.config.labels
            if not all(has_label(labels, label) for label in wanted.get("label", ())):
                continue
            if any(has_label(labels, label) for label in wanted.get("label!", ())):
                continue
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                await self.container_remove(record.id)
                removed.append(record.id)
        self._events.publish("container", "prune", "", {"reclaimed": "0"})
        return removed

    async def container_wait(
        self, reference: str, condition: str = "not-running"
    ) -> dict[str, Any]:
        """``docker wait``: ``{"StatusCode": n}`` (plus ``Error``) once the condition holds."""
        return await self.container_wait_pending(reference, condition).wait()

    def container_wait_pending(self, reference: str, condition: str = "not-running") -> Pending:
        """Register a wait and return at once (errors such as 404 are raised here); the result
        is ``await pending.wait()``. Anything asked of the container after this returns — a
        start, say — is ordered after the wait, as the API's early 200 promises.

        Library-only: it registers in-process without awaiting (the API's ``POST /wait``
        sends its 200 on it); a client waits with :meth:`container_wait`."""
        if condition == "":
            condition = "not-running"
        if condition not in WAIT_CONDITIONS:
            raise errors.InvalidParameter(f'invalid condition: "{condition}"')
        return self._actor(reference).request_pending(Request.WAIT, condition)

    async def container_kill(self, reference: str, signal: str | int = "KILL") -> None:
        """``docker kill``: send a signal; with KILL, return once the process has exited."""
        number = parse_signal(signal)
        await self._actor(reference).request(Request.KILL, number, reference)

    async def container_stop(self, reference: str, timeout: float | None = None) -> None:
        """``docker stop``: stop signal, then KILL after ``timeout`` seconds (-1: wait forever)."""
        await self._actor(reference).request(Request.STOP, timeout)

    async def container_restart(self, reference: str, timeout: float | None = None) -> None:
        """``docker restart``: stop (if it runs), start, then the ``restart`` event.

        As dockerd, a failure is a 500 ``Cannot restart container <ref>: ...``.
        """
        try:
            await self._actor(reference).restart(timeout)
        except errors.NotFound:
            raise
        except errors.DockerError as exc:
            raise errors.SystemError(
                f"Cannot restart container {reference}: {exc.message}"
            ) from exc

    async def container_pause(self, reference: str) -> None:
        await self._actor(reference).request(Request.PAUSE)

    async def container_unpause(self, reference: str) -> None:
        await self._actor(reference).request(Request.UNPAUSE)

    async def container_export(self, reference: str) -> AsyncGenerator[bytes, None]:
        """``docker export``: the container's filesystem as a tar stream, ``async for chunk
        in await daemon.container_export(reference)``. Its errors come at the ``await``, as
        dockerd answers them before the stream: 404, 409 while the container is being
        removed, 500 ``Error exporting container ...`` when its filesystem cannot be mounted
        or read. An ``export`` event once the stream has been read to its end."""
        actor = self._actor(reference)
        actor.check(Request.EXPORT, reference)
        stream = self._exported(actor.record(), reference)
        await anext(stream)  # (mounted and the tar begun; started, closed unread it unmounts)
        return stream

    async def _exported(
        self, record: ContainerRecord, reference: str
    ) -> AsyncGenerator[bytes, None]:
        chunks = self._drivers.mounter.export(record.id)
        try:
            try:
                first = await anext(chunks, b"")
            except errors.DockerError as exc:
                raise errors.SystemError(
                    f"Error exporting container {reference}: {exc.message}"
                ) from exc
            yield b""  # (the caller's first step ends here: errors above come before it)
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # (unmounted even when the reader stops early)
        container_event(self._events, record, "export")

    # -- docker cp ------------------------------------------------------------------------

    @asynccontextmanager
    async def _container_view(self, reference: str) -> AsyncIterator[ContainerView]:
        """The container's files as its process sees them (its root filesystem, mounted for
        the while if it does not run, with its bind mounts over it), for ``docker cp``."""
        record = self._snapshot(reference).record
        host = record.host_config
        # Its binds and volumes (tmpfs mounts are the process's own: not there for a copy).
        mounts = [(p.destination, p.source, not p.rw) for p in record.mount_points or ()
                  if p.type in ("bind", "volume")]  # fmt: skip
        # The files that name it on its network are mounts over its own, as in its process.
        settings = record.network_settings
        mounts += [(target, source, False) for target, source in network_files(settings).items()]
        mounter = self._drivers.mounter
        rootfs = await mounter.mount(record.id)
        try:
            yield ContainerView(
                Path(rootfs),
                mounts,
                name=reference,
                readonly_rootfs=host.readonly_rootfs,
                user=record.config.user,
                id_map=self.config.userns(),
            )
        finally:
            with anyio.CancelScope(shield=True):
                await mounter.unmount(record.id)

    async def container_archive_stat(self, reference: str, path: str) -> dict[str, Any]:
        """``HEAD /containers/{id}/archive``: dockerd's ``PathStat`` of ``path`` in the
        container (404 ``Could not find the file ...``), running or not."""
        _check_archive_path(path)
        async with self._container_view(reference) as view:
            return await anyio.to_thread.run_sync(stat_path, view, path)

    async def container_archive(
        self, reference: str, path: str
    ) -> tuple[dict[str, Any], PipeReader]:
        """``docker cp`` out of a container: the stat of ``path`` and a tar of it (named by
        its base name, links kept as links, mounts below it included). Errors come with the
        stat, before any byte; an ``archive-path`` event."""
        _check_archive_path(path)
        view_cm = self._container_view(reference)
        view = await view_cm.__aenter__()
        try:
            archive = await anyio.to_thread.run_sync(prepare_archive, view, path)
        except BaseException:
            await view_cm.__aexit__(None, None, None)
            raise
        read, write = os.pipe()

        async def produce() -> None:
            try:

                def run() -> None:
                    # (Closed at the end: the reader sees it. A reader gone: the write fails.)
                    with open(write, "wb") as out, contextlib.suppress(BrokenPipeError):
                        archive.write(out)

                await anyio.to_thread.run_sync(run)
            finally:
                await view_cm.__aexit__(None, None, None)

        self._task_group.start_soon(produce)
        record = self._snapshot(reference).record
        container_event(self._events, record, "archive-path")
        return archive.stat, PipeReader(read)

    async def container_extract(
        self,
        reference: str,
        path: str,
        body: AsyncIterable[bytes],
        *,
        no_overwrite_dir_non_dir: bool = False,
        copy_uid_gid: bool = False,
    ) -> None:
        """``docker cp`` into a container: the tar ``body`` extracted into the directory
        ``path`` (dockerd's 400 when it is not one, or read-only), safely (names, links and
        devices that would leave or harm the container are refused). An ``extract-to-dir``
        event."""
        _check_archive_path(path)
        limits = self.config.import_limits
        async with self._container_view(reference) as view:
            read, write = os.pipe()

            def extract() -> None:
                with open(read, "rb") as source:  # (closed: a writer still busy ends)
                    extract_to(
                        view,
                        path,
                        source,
                        no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                        copy_uid_gid=copy_uid_gid,
                        limits=limits,
                    )

            async def feed() -> None:
                try:
                    async for chunk in body:
                        await anyio.to_thread.run_sync(write_all, write, chunk)
                except OSError:  # the extraction ended first: its answer is the one
                    pass
                finally:
                    os.close(write)

            refused: errors.DockerError | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                try:
                    await anyio.to_thread.run_sync(extract)
                except errors.DockerError as exc:
                    refused = exc  # (raised as itself, not in the task group's group)
            if refused is not None:
                raise refused
        record = self._snapshot(reference).record
        container_event(self._events, record, "extract-to-dir")

    async def container_changes(self, reference: str) -> list[dict[str, Any]]:
        """``docker diff``: what the container changed of its image (running or not)."""
        return await self._drivers.mounter.changes(self._actor(reference).id)

    async def container_top(self, reference: str, ps_args: str = "") -> dict[str, Any]:
        """``docker top``: the host's ``ps`` (``ps_args``, else ``-ef``) of the container's
        processes, as dockerd: its titles and one row per process (409 unless running)."""
        actor = self._actor(reference)
        actor.check(Request.TOP, reference)
        pids = await self._drivers.runtime.pids(actor.id)
        argv = ["ps", *(shlex.split(ps_args) if ps_args else ["-ef"])]
        try:
            result = await anyio.run_process(argv, check=False)
        except OSError as exc:
            raise errors.SystemError(f"Error running ps: {exc.strerror}") from exc
        if result.returncode != 0:
            said = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise errors.SystemError(f"ps: {said}")
        return ps_table(result.stdout.decode(errors="replace"), pids)

    def container_stats(
        self, reference: str, *, stream: bool = True, one_shot: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """``docker stats``: dockerd's ``StatsResponse`` from the container's cgroups and
        network namespace. Streamed: one a second (each with the one before as ``pre*``)
        until the container is removed; else one: at once with ``one_shot``, otherwise the
        second of two a second apart (so CPU use can be computed). A container that does not
        run gives dockerd's empty document. 404 for an unknown container."""
        if stream and one_shot:
            raise errors.InvalidParameter("cannot have stream=true and one-shot=true")
        container_id = self._actor(reference).id
        return self._stats(container_id, stream=stream, one_shot=one_shot)

    async def _stats(
        self, container_id: str, *, stream: bool, one_shot: bool
    ) -> AsyncIterator[dict[str, Any]]:
        previous: dict[str, Any] | None = None
        while (sample := await self._stats_sample(container_id, previous)) is not None:
            if not stream and (one_shot or sample["read"] == ZERO_TIME or previous is not None):
                yield sample
                return
            if stream:
                yield sample
            previous = sample
            await anyio.sleep(1)

    async def _stats_sample(
        self, container_id: str, previous: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """One document; None once the container is gone."""
        try:
            snapshot = self._snapshot(container_id)
        except errors.NotFound:
            return None
        record = snapshot.record
        part: dict[str, Any] = {}
        networks: dict[str, dict[str, int]] = {}
        if snapshot.process_exists and not snapshot.lifecycle.restarting:
            parent = record.host_config.cgroup_parent or self.config.cgroup_parent
            part = await anyio.to_thread.run_sync(
                functools.partial(read_cgroup_stats, f"{parent}/{record.id}", pid=record.pid)
            )
            mode = network_key(record.host_config.network_mode)
            if mode not in ("host", "none") and not mode.startswith("container:"):
                found = await anyio.to_thread.run_sync(read_network_stats, record.pid)
                # Ours are eth0, eth1…; a tunnel device the kernel adds everywhere is not.
                networks = {k: v for k, v in found.items() if k.startswith("eth")}
        now = datetime.datetime.now(datetime.UTC)
        return stats_document(record.id, record.name, part, networks, now, previous)

    async def container_update(self, reference: str, body: Mapping[str, Any]) -> list[str]:
        """``docker update``: resources and restart policy (dockerd's ``UpdateConfig``),
        merged as dockerd merges them and applied at once to a running container through
        the runtime (``runc update``); a stopped one gets them at its next start. dockerd's
        400s and 409s (``Cannot update container <id>: ...``); its warnings (none)."""
        actor = self._actor(reference)
        facts = self._host

        def change(host: HostConfig) -> HostConfig:
            try:
                return apply_update(host, body, facts)
            except errors.Conflict as exc:
                raise errors.Conflict(
                    f"Cannot update container {actor.id}: {exc.message}"
                ) from None

        await actor.request(Request.UPDATE, change)
        return []

    async def container_rename(self, reference: str, name: str) -> None:
        """``docker rename``: dockerd's 400 for an empty, invalid or unchanged name, 409 for
        one another container has; a ``rename`` event with the old name."""
        if not name:
            raise errors.InvalidParameter("Neither old nor new names may be empty")
        new = validate_name(name)
        actor = self._actor(reference)
        old = actor.record().name
        if new == old:
            raise errors.InvalidParameter(
                "Renaming a container with the same name as its current name"
            )
        self._index.reserve_name(new, actor.id)  # (its 409 if another has it)
        try:
            await actor.request(Request.RENAME, new)
        except BaseException:
            self._index.release_name(new)
            raise
        self._index.release_name(old)

    async def container_remove(
        self, reference: str, force: bool = False, volumes: bool = False
    ) -> None:
        """``docker rm``; ``force`` kills a running container first; ``volumes`` (``-v``)
        removes its anonymous volumes too, those no other container uses (as dockerd)."""
        actor = self._actor(reference)
        points = actor.record().mount_points or ()
        await actor.request(Request.REMOVE, force, reference)
        if volumes:
            await self._remove_anonymous_volumes(points)

    async def _remove_anonymous_volumes(self, points: Sequence[MountPoint] | None) -> None:
        """A removed container's anonymous volumes, those no other container uses."""
        in_use = self._volumes_in_use()
        for point in points or ():
            if point.type == "volume" and point.anonymous and point.name not in in_use:
                with contextlib.suppress(errors.NotFound, errors.Conflict):
                    await self.volume_remove(point.name)

    def container_attach(
        self,
        reference: str,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        detach_keys: str = "",
    ) -> AbstractAsyncContextManager[AttachSession]:
        """``docker attach``: ``async with daemon.container_attach("web", stdin=True) as s:``
        then ``await s.send(b"...")``, ``await s.send_eof()``, ``async for stream, data in s``.

        Attaching before the start is allowed: the output of the next run arrives, and input
        sent meanwhile reaches the process once it exists. The output ends with the run. A
        paused or restarting container refuses it (409) here, before anything is subscribed.
        ``detach_keys``: the sequence that ends the attachment, the process running on (with a
        terminal only, ctrl-p ctrl-q when none is given; dockerd's 400 for a bad one); the
        session's ``send`` then says so, and a ``detach`` event follows.
        """
        keys = attach_detach_keys(detach_keys)
        streams = frozenset(n for n, on in (("stdout", stdout), ("stderr", stderr)) if on)
        return self._actor(reference).attach(reference, streams, stdin, keys)

    async def container_close_stdin(self, reference: str) -> None:
        """What an attached client's EOF does: close stdin now, or once the process is ready.

        Library-only: the Engine API has no such route; a client half-closes an attach
        (``send_eof``), which closes stdin under dockerd's ``StdinOnce`` rule only."""
        await self._actor(reference).io.close_stdin()

    async def container_resize(self, reference: str, height: int, width: int) -> None:
        """``docker resize``: the terminal's new size (409 unless the container runs)."""
        await self._actor(reference).resize(height, width)

    def container_start_phases(self, reference: str) -> dict[str, float]:
        """Seconds spent in each phase of the container's latest start."""
        return self._actor(reference).last_start

    # -- exec -------------------------------------------------------------------------------

    async def exec_create(self, reference: str, config: Mapping[str, Any]) -> str:
        """``docker exec``'s first call: an exec instance in a running container (dockerd's
        409 otherwise); its ID. Nothing runs until :meth:`exec_start`."""
        parsed = parse_exec_config(config)
        actor = self._actor(reference)
        actor.check(Request.EXEC, reference)
        instance = ExecInstance(actor.id, parsed)
        self._forget_ended_execs(actor.id)
        self._execs[instance.id] = instance
        record = actor.record()
        container_event(self._events, record, f"exec_create: {instance.summary()}",
                        execID=instance.id)  # fmt: skip
        return instance.id

    def _exec(self, exec_id: str) -> ExecInstance:
        instance = self._execs.get(exec_id)
        if instance is None:
            raise errors.NotFound(f"No such exec instance: {exec_id}")
        return instance

    def _forget_ended_execs(self, container_id: str, keep: int = 64) -> None:
        """Ended execs stay inspectable, the last ``keep`` of a container (and none of a
        container that is gone)."""
        ended = [e for e in self._execs.values() if not e.running and e.started]
        for instance in ended:
            if instance.container_id not in self._actors:
                del self._execs[instance.id]
        mine = [e for e in ended if e.container_id == container_id]
        for instance in mine[: max(0, len(mine) - keep)]:
            self._execs.pop(instance.id, None)

    async def exec_start(
        self, exec_id: str, *, detach: bool = False, console_size: tuple[int, int] | None = None
    ) -> ExecIO:
        """Run an exec instance (once: dockerd's 409 for a second start); its input and output
        (``detach``: its output dropped; ``console_size``: its terminal's height and width
        from the start). It ends on its own; :meth:`exec_inspect` then has its exit code."""
        instance = self._exec(exec_id)
        if instance.started:
            done = "has already run" if instance.exit_code_known else "is already running"
            raise errors.Conflict(f"exec command {exec_id} {done}")
        actor = self._actor(instance.container_id)
        actor.check(Request.EXEC)
        spec = actor.running_spec()
        if spec is None:  # (started by an earlier daemon: its bundle's)
            path = self.exec_root / instance.container_id / "config.json"
            try:
                spec = json.loads(await anyio.to_thread.run_sync(path.read_bytes))
            except (OSError, ValueError) as exc:
                raise errors.SystemError(f"cannot exec: the container's spec: {exc}") from exc
        rootfs = str(spec.get("root", {}).get("path", ""))
        passwd, group = (
            await anyio.to_thread.run_sync(read_users, rootfs) if rootfs else (None, None)
        )
        process = exec_process(spec.get("process", {}), instance.config, passwd=passwd,
                               group=group)  # fmt: skip
        console_size = console_size or instance.config.console_size
        if instance.config.tty and console_size and all(console_size):
            process["consoleSize"] = {"height": console_size[0], "width": console_size[1]}
        config = instance.config
        attached = (("stdout", config.attach_stdout), ("stderr", config.attach_stderr))
        io = ExecIO(
            tty=config.tty,
            stdin=config.attach_stdin and not detach,
            keep_output=not detach,
            streams=frozenset(stream for stream, on in attached if on),
            detach_keys=detach_keys_for(config.detach_keys, config.tty),
        )
        io.on_detach = functools.partial(self._exec_detached, instance)
        if detach:
            io.begin()
        instance.started = instance.running = True
        self._exec_io[exec_id] = io
        record = actor.record()
        container_event(self._events, record, f"exec_start: {instance.summary()}",
                        execID=exec_id)  # fmt: skip
        self._task_group.start_soon(self._run_exec, instance, io, process)
        return io

    async def exec_start_detached(
        self, exec_id: str, *, console_size: tuple[int, int] | None = None
    ) -> None:
        """``docker exec -d``: :meth:`exec_start` with ``detach``; returns once it runs."""
        await self.exec_start(exec_id, detach=True, console_size=console_size)

    def _exec_detached(self, instance: ExecInstance) -> None:
        """The client let go of the exec with its detach keys (dockerd's ``exec_detach``)."""
        with contextlib.suppress(errors.NotFound):
            record = self._snapshot(instance.container_id).record
            container_event(self._events, record, "exec_detach", execID=instance.id)

    async def _run_exec(self, instance: ExecInstance, io: ExecIO, process: dict[str, Any]) -> None:
        code = 126
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(io.pump)
                try:
                    await io.begun()  # (the client's stream is there: no output before it)
                    code = await self._drivers.runtime.exec(
                        instance.container_id, process, io.stdio, console=io.console
                    )
                except errors.DockerError as exc:
                    # As dockerd: the runtime's word to the client, and 126 or 127.
                    code = translate_start_error(exc.message)[0]
                    await io.error(f"OCI runtime exec failed: {exc.message}")
                    log.info("exec.failed", exec_id=instance.id, error=exc.message)
                except Exception as exc:  # the exec fails, never the daemon
                    await io.error(f"OCI runtime exec failed: {exc}")
                    log.exception("exec.crashed", exec_id=instance.id)
                finally:
                    io.handed()
        finally:
            instance.running, instance.exit_code = False, code
            io.close()
            self._exec_io.pop(instance.id, None)
            with contextlib.suppress(errors.NotFound):
                record = self._actor(instance.container_id).record()
                container_event(self._events, record, "exec_die", execID=instance.id,
                                exitCode=str(code))  # fmt: skip

    async def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        """``GET /exec/{id}/json``: running, exit code, process config (404 once its container
        is gone, as dockerd's)."""
        instance = self._exec(exec_id)
        if instance.container_id not in self._actors:
            raise errors.NotFound(f"No such exec instance: {exec_id}")
        return instance.view()

    async def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        """``docker exec -t``'s terminal size."""
        instance = self._exec(exec_id)
        io = self._exec_io.get(exec_id)
        if io is None:
            raise errors.Conflict(f"exec {instance.id} is not running")
        io.resize(height, width)

    # -- networks ---------------------------------------------------------------------------

    def _networks(self) -> list[NetworkSpec]:
        return [*self._predefined, *self._registry]

    def _predefined_networks(self) -> list[NetworkSpec]:
        """dockerd's three, from the daemon's settings (made once: every start looks them up)."""
        config = self.config
        network = ipaddress.IPv4Network(config.bridge_ip or config.bridge_subnet, strict=False)
        gateway = config.bridge_ip.partition("/")[0] or str(next(network.hosts()))
        try:
            created = (self.data_root / "engine-id").stat().st_mtime
        except OSError:
            created = 0.0
        return predefined_networks(
            self.engine_id, created, bridge=config.bridge, subnet=str(network), gateway=gateway
        )

    def _network(self, reference: str) -> NetworkSpec:
        return find_network(self._networks(), reference)

    def _in_use(self) -> dict[str, list[ContainerSnapshot]]:
        """Network ID -> the containers whose running process is on it, and those starting
        that are to join it (by ID, or by name: a removal must not slip between a start's
        plan and its interfaces)."""
        users: dict[str, list[ContainerSnapshot]] = {}
        networks = self._networks()
        for snapshot in self._snapshots():
            record = snapshot.record
            if snapshot.process_exists:
                for endpoint in record.network_settings.get("Networks", {}).values():
                    if endpoint.get("NetworkID"):
                        users.setdefault(endpoint["NetworkID"], []).append(snapshot)
            elif snapshot.lifecycle.state in STARTING_STATES:
                joined = joined_networks(record.endpoints, record.host_config.network_mode)
                for spec in networks:
                    if spec.name in joined or any(
                        c.get("NetworkID") == spec.id for c in joined.values()
                    ):
                        users.setdefault(spec.id, []).append(snapshot)
        return users

    def _attachments(self, record: ContainerRecord) -> list[tuple[Attachment, list[str]]]:
        """The networks a container joins at start, with its names on each: ``NetworkMode``'s
        first (``eth0``), then the others it was connected to, by name. A network removed
        since (or never made) is dockerd's 404."""
        joined = joined_networks(record.endpoints, record.host_config.network_mode)
        networks = self._networks()
        primary = network_key(record.host_config.network_mode)
        with contextlib.suppress(errors.NotFound):  # (a mode naming the network's ID)
            primary = find_network(networks, primary).name
        planned = []
        for name in sorted(joined, key=lambda name: (name != primary, name)):
            config = joined[name]
            try:
                spec = find_network(networks, config.get("NetworkID") or name)
            except errors.NotFound:
                try:
                    spec = find_network(networks, name)
                except errors.NotFound as exc:
                    raise errors.NotFound(
                        f"failed to set up container networking: {exc.message}"
                    ) from None
            if spec.bridge:
                ipv4 = (config.get("IPAMConfig") or {}).get("IPv4Address", "")
                planned.append((attachment_of(spec, ipv4), dns_names(spec, record, config)))
        return planned

    def _endpoints_at_create(
        self, record: ContainerRecord, networking: Mapping[str, Any] | None
    ) -> dict[str, dict[str, Any]]:
        """``EndpointsConfig`` checked (a network that does not exist is let by, as dockerd:
        the start fails), and ``NetworkMode``'s network added."""
        if networking is not None and not isinstance(networking, Mapping):
            raise errors.InvalidParameter("invalid NetworkingConfig: expected an object")
        wanted = (networking or {}).get("EndpointsConfig") or {}
        if not isinstance(wanted, Mapping):
            raise errors.InvalidParameter("invalid EndpointsConfig: expected an object")
        mode = record.host_config.network_mode
        if mode.startswith("container:"):
            if wanted:
                raise errors.InvalidParameter(
                    "conflicting options: container type network can't be used with EndpointsConfig"
                )
            return {}
        networks = self._networks()
        endpoints: dict[str, dict[str, Any]] = {}
        for key in [*wanted, mode]:
            try:
                spec: NetworkSpec | None = find_network(networks, network_key(key))
            except errors.NotFound:
                spec = None
            name = spec.name if spec is not None else key
            if name in endpoints:
                continue
            try:
                endpoints[name] = endpoint_config(spec, wanted.get(key), key=key)
            except errors.InvalidParameter as exc:
                raise errors.InvalidParameter(
                    f"invalid config for network {key}: {exc.message}"
                ) from None
        if len(endpoints) > 1:
            for name in endpoints:
                if name in ("host", "none"):
                    refuse_shared_namespace(name)
        return endpoints

    async def networks_list(self, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``docker network ls``: the predefined networks (``bridge``, ``host``, ``none``) and
        the user-defined ones that pass ``filters`` (dockerd's keys: driver, id, label, name,
        scope, type, dangling)."""
        wanted = network_filters(filters)
        users = self._in_use()
        return [
            network_view(spec)
            for spec in self._networks()
            if network_matches(spec, wanted, in_use=spec.id in users)
        ]

    async def network_inspect(self, reference: str) -> dict[str, Any]:
        """``docker network inspect``: by name, ID or unique ID prefix; with the containers
        whose process is on it. 404 ``network X not found`` otherwise."""
        return network_view(self._network(reference), self._snapshots())

    async def network_create(self, body: Mapping[str, Any]) -> str:
        """``docker network create``: a bridge network with its own bridge, subnet (the
        request's, or a free one from the pool) and firewall rules; returns its ID."""
        network = self._drivers.network
        async with self._network_lock:
            routed = await network.routed_subnets()
            spec = new_network(body, self._networks(), routed, now=time.time())
            made = await network.create_network(bridge_of(spec))
            spec = dataclasses.replace(spec, own_bridge=made)
            try:
                await anyio.to_thread.run_sync(self._registry.add, spec)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):  # no bridge nor rules without a network
                    await network.remove_network(bridge_of(spec), keep_link=not made)
                if isinstance(exc, OSError):
                    raise errors.SystemError(f"failed to save network {spec.name}: {exc}") from exc
                raise
        self._network_event(spec, "create")
        log.info("network.created", name=spec.name, id=spec.id, subnet=spec.subnet)
        return spec.id

    async def network_remove(self, reference: str) -> None:
        """``docker network rm``: 403 for a predefined network or one a running container is
        on, 404 for an unknown one."""
        async with self._network_lock:
            spec = self._network(reference)
            await self._remove_network(spec)

    async def _remove_network(self, spec: NetworkSpec) -> None:
        if spec.builtin:
            raise errors.Forbidden(f"{spec.name} is a pre-defined network and cannot be removed")
        users = self._in_use().get(spec.id)
        if users:
            endpoints = ", ".join(
                f'name:"{u.record.name.lstrip("/")}" '
                f'id:"{u.record.network_settings["Networks"][spec.name]["EndpointID"][:12]}"'
                for u in users
            )
            raise errors.Forbidden(
                f"error while removing network: network {spec.name} has active endpoints "
                f"({endpoints})"
            )
        # Out of the table first: a start that plans after this finds no network to join.
        await anyio.to_thread.run_sync(self._registry.remove, spec.id)
        await self._drivers.network.remove_network(bridge_of(spec), keep_link=not spec.own_bridge)
        self._network_event(spec, "destroy")
        log.info("network.removed", name=spec.name, id=spec.id)

    async def networks_prune(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        """``docker network prune``: every user-defined network no running container is on
        (``until`` and ``label`` filters as dockerd); the names of those removed."""
        wanted = normalise(filters, ("until", "label", "label!"))
        until = min((timestamp(v, time.time()) for v in wanted.pop("until", ())), default=0.0)
        unlabelled = wanted.pop("label!", set())
        removed = []
        async with self._network_lock:
            users = self._in_use()
            for spec in self._networks():
                if spec.builtin or spec.id in users or (until and spec.created >= until):
                    continue
                if not network_matches(spec, wanted):
                    continue
                if unlabelled and any(network_matches(spec, {"label": {v}}) for v in unlabelled):
                    continue
                await self._remove_network(spec)
                removed.append(spec.name)
        self._events.publish("network", "prune", "", {"reclaimed": "0"})
        return removed

    async def network_connect(
        self, reference: str, container: str, endpoint: Mapping[str, Any] | None = None
    ) -> None:
        """``docker network connect``: a running container joins now (an interface more, its
        names served), a stopped one at its next start."""
        async with self._network_lock:  # (not removed meanwhile)
            spec = self._network(reference)
            actor = self._actor(container)
            refuse_connect(spec)
            config = endpoint_config(spec, endpoint)
            await actor.request(Request.CONNECT, spec, config)

    async def network_disconnect(self, reference: str, container: str, force: bool = False) -> None:
        """``docker network disconnect``: the container leaves the network (now, if it runs).
        ``force``: a network removed since is let go of by name."""
        async with self._network_lock:
            actor = self._actor(container)
            try:
                spec = self._network(reference)
            except errors.NotFound:
                if not force:
                    raise
                spec = NetworkSpec(reference, "", 0.0, "bridge")  # (its endpoint only)
            await actor.request(Request.DISCONNECT, spec, force)

    def _network_event(self, spec: NetworkSpec, action: str, **extra: str) -> None:
        attributes = {"name": spec.name, "type": spec.driver, **extra}
        self._events.publish("network", action, spec.id, attributes)

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
        details: bool = False,
    ) -> ContainerLogs:
        """``docker logs``: ``(stream, bytes)`` from the container's json-file log and its
        rotated files, read in worker threads a chunk at a time (any size, the loop never
        waits on it).

        ``since``/``until`` are seconds since the epoch (0: unbounded); ``tail`` keeps the last
        N lines (as dockerd, counted before the streams are chosen); ``follow`` goes on until
        the container stops; ``details`` puts each entry's attributes (``--log-opt labels``,
        ``env``, ``tag``) before it. Bad arguments and an unknown container raise here, before
        the first line is read. ``.tty`` says whether the output is one raw stream (a TTY's)
        rather than stdout and stderr apart.
        """
        query = LogQuery(
            frozenset(name for name, on in (("stdout", stdout), ("stderr", stderr)) if on),
            follow,
            tail,
            since,
            until,
            timestamps,
            details,
        )
        return self._actor(reference).logs(query)

    # -- images -----------------------------------------------------------------------------

    async def image_import(
        self,
        source: ImageSource,
        repo: str = "",
        tag: str = "",
        changes: Sequence[str] = (),
    ) -> str:
        """``docker import``: a root filesystem tarball becomes an image; returns its ID."""
        return await self._images.import_(source, repo=repo, tag=tag, changes=changes)

    async def image_save(self, names: Sequence[str]) -> AsyncIterator[bytes]:
        """``docker save``: the images named (a ``name:tag``, a repository's every tag, an
        ID) as one archive ``docker load`` reads (docker 25's layout). Errors come before
        the first chunk: 404 for a name no image has. A ``save`` event per image."""
        plan = await anyio.to_thread.run_sync(self._images.plan_save, list(names))
        for image in plan.images:
            name = image.repo_tags[0] if image.repo_tags else image.image_id
            self._events.publish("image", "save", image.image_id, {"name": name})
        return self._images.save_stream(plan)

    async def container_commit(
        self,
        reference: str,
        config: Mapping[str, Any] | None = None,
        *,
        repo: str = "",
        tag: str = "",
        author: str = "",
        comment: str = "",
        changes: Sequence[str] = (),
        pause: bool = True,
    ) -> str:
        """``docker commit``: the container's changes (its overlay upper layer) as a new
        image on its own, with ``config`` (else the container's) and the Dockerfile
        ``changes`` merged as dockerd's; paused meanwhile unless ``pause`` is False. dockerd's
        409 for a container being removed; a ``commit`` event; the new image's ID."""
        actor = self._actor(reference)
        snapshot = actor.snapshot()
        record = snapshot.record
        state = snapshot.lifecycle.state
        if state in (State.REMOVING, State.DEAD):
            what = "being removed" if state is State.REMOVING else "Dead"
            raise errors.Conflict(f"You cannot commit container {record.id} which is {what}")
        paused = False
        if pause and state is State.RUNNING:
            await actor.request(Request.PAUSE)
            paused = True
        try:
            upper = self._drivers.mounter.upper_dir(record.id)
            image_id = await self._images.commit(
                record.image,
                upper,
                dict(config) if config else None,
                container_id=record.id,
                container_config=msgspec.to_builtins(record.config),
                author=author,
                comment=comment,
                changes=list(changes),
                repo=repo,
                tag=tag,
                id_map=self.config.userns(),
            )
        finally:
            if paused:
                with anyio.CancelScope(shield=True), contextlib.suppress(errors.DockerError):
                    await actor.request(Request.UNPAUSE)
        reference_name = f"{repo}:{tag or 'latest'}" if repo else ""
        container_event(self._events, record, "commit", comment=comment, imageID=image_id,
                        imageRef=reference_name)  # fmt: skip
        return image_id

    async def image_pull(self, reference: str, tag: str = "", platform: str = "") -> None:
        """``docker pull``: dockerd's checks of the platform (400) and the reference (400),
        then a 404: asyncstart reaches no registry (``docker import``/``load`` bring images)."""
        if platform:
            parse_platform(platform)
        name = reference.removesuffix(":")
        check_pull_reference(name, tag)
        shown = f"{name}:{tag}" if tag else name
        raise errors.NotFound(
            f"No such image: {shown} (asyncstart does not pull from registries; "
            "use docker import or docker load)"
        )

    async def image_load(self, source: ImageSource) -> list[str]:
        """``docker load``: the images of a ``docker save`` archive."""
        return await self._images.load(source)

    async def images_list(self, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``docker images``: a row per image that passes ``filters`` (dockerd's keys:
        dangling, label, reference, before, since)."""
        wanted = image_filters(filters)
        rows = await anyio.to_thread.run_sync(self._images.list_images)
        if not wanted:
            return rows
        created: dict[str, float] = {}
        for reference in (*wanted.get("before", ()), *wanted.get("since", ())):
            image = await self.image_inspect(reference)  # (its 404)
            created[reference] = _epoch_of(image["Created"])
        for row in rows:
            row.setdefault("CreatedAt", _epoch_of(row["Created"]))
        return [
            {k: v for k, v in row.items() if k != "CreatedAt"}
            for row in rows
            if image_matches(row, wanted, created)
        ]

    async def image_inspect(self, reference: str) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self._images.inspect, reference)

    # -- volumes --------------------------------------------------------------------------

    async def volume_create(self, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``docker volume create``: ``Name`` (none: an anonymous one), ``Driver`` (``local``),
        ``DriverOpts`` (dockerd's checks, then refused: nothing is mounted from a device),
        ``Labels``; a name that exists gives that volume. A ``create`` event."""
        body = body or {}
        for key in ("Name", "Driver"):
            if not isinstance(body.get(key) or "", str):
                raise errors.InvalidParameter(f"invalid {key}: expected a string")
        volume = await self._volumes.create(
            body.get("Name") or None,
            body.get("Driver") or "local",
            body.get("DriverOpts"),
            body.get("Labels"),
        )
        self._events.publish("volume", "create", volume["Name"], {"driver": volume["Driver"]})
        return dict(volume)

    async def volumes_list(self, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``docker volume ls``: ``{"Volumes": [...], "Warnings": []}``; dockerd's filters."""
        volumes = await self._volumes.list(filters, in_use=self._volumes_in_use())
        return {"Volumes": [dict(v) for v in volumes], "Warnings": []}

    async def volume_inspect(self, name: str) -> dict[str, Any]:
        return dict(await self._volumes.get(name))

    async def volume_remove(self, name: str, force: bool = False) -> None:
        """``docker volume rm``: 404 for none (nothing with ``force``); a ``destroy`` event."""
        volume = None
        with contextlib.suppress(errors.NotFound):
            volume = await self._volumes.get(name)
        await self._volumes.remove(name, force=force, in_use=self._volumes_in_use())
        if volume is not None:
            self._events.publish("volume", "destroy", name, {"driver": volume["Driver"]})

    async def volumes_prune(self, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``docker volume prune``: unused anonymous volumes (every unused one with
        ``all=true``), ``label`` filters; dockerd's answer and ``prune`` event."""
        names, reclaimed = await self._volumes.prune(filters, in_use=self._volumes_in_use())
        for name in names:
            self._events.publish("volume", "destroy", name, {"driver": "local"})
        self._events.publish("volume", "prune", "", {"reclaimed": str(reclaimed)})
        return {"VolumesDeleted": names or None, "SpaceReclaimed": reclaimed}

    async def system_df(self, kinds: Sequence[str] = ()) -> dict[str, Any]:
        """``docker system df``: images (with how many containers use each), containers (with
        their writable layer's size), volumes and build cache (none here); ``kinds`` limits it
        to ``image``, ``container``, ``volume``, ``build-cache``, as dockerd's ``type``."""
        known = ("container", "image", "volume", "build-cache")
        for kind in kinds:
            if kind not in known:
                raise errors.InvalidParameter(f"unknown object type: {kind}")
        wanted = set(kinds) or set(known)
        snapshots = self._snapshots()
        document: dict[str, Any] = {}
        if "image" in wanted:
            users = collections.Counter(s.record.image for s in snapshots)
            images = await self.images_list()
            for row in images:
                row["Containers"] = users.get(row["Id"], 0)
            document["LayersSize"] = sum(row["Size"] for row in images)
            document["Images"] = images
        if "container" in wanted:
            rows = ps_rows(snapshots, all=True, limit=-1, wanted={}, now=time.time())
            for row in rows:
                row["SizeRw"] = await self._drivers.mounter.size(row["Id"])
            document["Containers"] = rows
        if "volume" in wanted:
            volumes = await self.volumes_list()
            in_use = self._volumes_in_use()
            for volume in volumes["Volumes"]:
                size = await self._volumes.usage(volume["Name"])
                count = len(in_use.get(volume["Name"], ()))
                volume["UsageData"] = {"Size": size, "RefCount": count}
            document["Volumes"] = volumes["Volumes"]
        if "build-cache" in wanted:
            document["BuildCache"] = []
        return document

    async def image_history(self, reference: str) -> list[dict[str, Any]]:
        """``docker history``: the image's layers and how they were made, newest first."""
        return await anyio.to_thread.run_sync(self._images.history, reference)

    async def images_prune(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        """``docker image prune``: images no container uses — untagged ones only unless
        ``dangling=false`` — passing ``until``/``label``/``label!``; the ``Untagged:`` and
        ``Deleted:`` lines of each removal, and a ``prune`` event."""
        wanted = normalise(filters, ("dangling", "until", "label", "label!"))
        dangling_only = wanted.pop("dangling", {"true"}) != {"false"}
        until = min((timestamp(v, time.time()) for v in wanted.pop("until", ())), default=0.0)
        used = {s.record.image for s in self._snapshots()}
        lines: list[str] = []
        for row in await self.images_list():
            labels = row.get("Labels") or {}
            if row["Id"] in used or (dangling_only and row["RepoTags"]):
                continue
            if until and _epoch_of(row["Created"]) >= until:
                continue
            if not all(has_label(labels, label) for label in wanted.get("label", ())):
                continue
            if any(has_label(labels, label) for label in wanted.get("label!", ())):
                continue
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                lines += await self.image_remove(row["Id"], force=True)
        self._events.publish("image", "prune", "", {"reclaimed": "0"})
        return lines

    async def image_tag(self, reference: str, repo: str, tag: str = "latest") -> None:
        self._images.tag(reference, repo, tag)

    async def image_remove(self, reference: str, force: bool = False) -> list[str]:
        """``docker rmi``; 409 while a container uses the image (:mod:`asyncstart.rmi`)."""
        users = [(s.record.image, s.id, s.process_exists) for s in self._snapshots()]
        decide = rmi.policy(reference, rmi.users_by_image(users), force=force)
        return await anyio.to_thread.run_sync(self._images.remove, reference, decide)

    # -- events, system ---------------------------------------------------------------------

    def subscribe_events(
        self,
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[dict[str, Any]]]:
        """Every event from now on: ``async with daemon.subscribe_events() as events:``.

        Library-only: the in-process bus itself; a client (and the API) use :meth:`events`."""
        return self._events.subscribe()

    @asynccontextmanager
    async def events(
        self,
        since: float = 0,
        until: float = 0,
        filters: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """dockerd's ``/events``: ``async with daemon.events(since=t) as events:`` gives the
        matching events since ``since`` (seconds since the epoch; 0: only new ones), then live
        ones until ``until`` (0: forever). Bad filters raise 400 on entering."""
        wanted = event_filters(filters)
        async with self._events.replay(since, until, lambda m: event_matches(m, wanted)) as it:
            yield it

    def statistics(self) -> DaemonStatistics:
        """How many containers run, are paused, are stopped; events dropped (slow readers).

        Library-only: a sync in-process counter; a client reads the counts in :meth:`info`."""
        return DaemonStatistics.of(self._snapshots(), events_dropped=self._events.dropped)

    async def runtime_versions(self) -> dict[str, str]:
        """The OCI runtimes' versions (``docker version``'s components), asked once.

        Library-only: a part of :meth:`version`, which a client has too."""
        if self._runtime_versions is None:
            found: dict[str, str] = {}
            for name, args in self._runtimes.items():
                try:
                    result = await anyio.run_process(
                        [args[0], "--version"], check=False, env=runtime_env()
                    )
                except OSError:
                    continue
                first = result.stdout.decode(errors="replace").partition("\n")[0]
                if result.returncode == 0 and first:
                    found[name] = first.split()[-1]
            self._runtime_versions = found
        return dict(self._runtime_versions)

    def system_info(self) -> dict[str, Any]:
        """What ``docker info`` says of the engine itself (:meth:`info` adds the host's facts).

        Library-only: sync, the engine's part alone; a client has :meth:`info`.

        Every field of dockerd's ``system.Info``; those about what asyncstart does not have
        (swarm, registries, plugins beyond its own drivers) say so as dockerd does without
        them."""
        stats = self.statistics()
        host = self._host
        runtimes = {name: {"path": args[0], **({"runtimeArgs": list(args[1:])} if args[1:] else {})}
                    for name, args in self._runtimes.items()}  # fmt: skip
        return {
            "ID": self.engine_id,
            "Containers": stats.containers,
            "ContainersRunning": stats.running,
            "ContainersPaused": stats.paused,
            "ContainersStopped": stats.stopped,
            "Driver": self._drivers.storage_driver,
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]]
            if self._drivers.storage_driver == "overlay2"
            else [],
            "Plugins": {
                "Volume": ["local"],
                "Network": ["bridge", "host", "null"],
                "Authorization": None,
                "Log": ["json-file"],
            },
            "MemoryLimit": True,
            "SwapLimit": host.swap_limit,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": _ip_forwarding(),
            "Debug": self.config.debug,
            "NFd": _open_fds(),
            "OomKillDisable": host.oom_kill_disable,
            "NGoroutines": _task_count(),
            "SystemTime": format_time(time.time()),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if host.cgroup2 else "1",
            "NEventsListener": self._events.listeners,
            "DockerRootDir": str(self.data_root),
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Labels": [],
            "DefaultRuntime": self._default_runtime,
            "Runtimes": runtimes,
            "ExperimentalBuild": self.config.experimental,
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": ""},
            "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            # What every container gets, as dockerd lists it (no AppArmor: no default profile
            # is loaded, so none is claimed).
            "SecurityOptions": [
                "name=seccomp,profile=builtin",
                *(["name=userns"] if host.userns else []),
                *(["name=cgroupns"] if host.cgroup2 else []),
            ],
            "CDISpecDirs": [],
            "Warnings": [] if host.swap_limit else ["WARNING: No swap limit support"],
        }

    async def info(self) -> dict[str, Any]:
        """``docker info``: what ``GET /info`` answers — :meth:`system_info` with the host's
        facts (kernel, OS, CPUs, memory, name) and the number of images."""
        images = await self.images_list()
        return {
            **self.system_info(),
            "Images": len(images),
            "KernelVersion": platform.release(),
            "OperatingSystem": _os_release().get("PRETTY_NAME") or platform.system(),
            "OSVersion": _os_release().get("VERSION_ID", ""),
            "OSType": "linux",
            "Architecture": platform.machine(),
            # No registry is reached (pulls are not supported); dockerd's defaults.
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "AllowNondistributableArtifactsCIDRs": None,
                "AllowNondistributableArtifactsHostnames": None,
                "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
                "IndexConfigs": {},
                "Mirrors": None,
            },
            "NCPU": os.cpu_count() or 1,
            "MemTotal": mem_total(),
            "GenericResources": None,
            "Name": socket.gethostname(),
            "ServerVersion": __version__,
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
        }

    async def version(self) -> dict[str, Any]:
        """``docker version``: what ``GET /version`` answers — the engine's versions, then
        each OCI runtime's (:meth:`runtime_versions`) as a component."""
        details = {
            "ApiVersion": API_VERSION,
            "Arch": go_arch(),
            "BuildTime": "",
            "Experimental": str(self.config.experimental).lower(),
            "GitCommit": "",
            "GoVersion": f"python{platform.python_version()}",
            "KernelVersion": platform.release(),
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
        }
        runtimes = await self.runtime_versions()
        components = [{"Name": "Engine", "Version": __version__, "Details": details}]
        components += [
            {"Name": name, "Version": version, "Details": {"GitCommit": ""}}
            for name, version in sorted(runtimes.items())
        ]
        return {
            "Platform": {"Name": "asyncstart"},
            "Components": components,
            "Version": __version__,
            **{k: v for k, v in details.items() if k != "Experimental"},
            "Experimental": self.config.experimental,
        }

    async def ping(self) -> str:
        """``GET /_ping``'s answer: ``"OK"`` (the daemon is open; the client's asks the socket)."""
        return "OK"


@functools.cache
def _os_release() -> dict[str, str]:
    """The host's ``os-release`` fields (dockerd's ``OperatingSystem``, ``OSVersion``), read
    once."""
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(candidate, encoding="utf-8") as file:
                fields = (line.strip().partition("=") for line in file)
                return {name: value.strip().strip('"') for name, _, value in fields if name}
        except OSError:
            continue
    return {}


def _ip_forwarding() -> bool:
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    except OSError:
        return False


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _task_count() -> int:
    """dockerd's ``NGoroutines``: here, the threads of the process (tasks are not counted
    by every event loop)."""
    return threading.active_count()


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
    await anyio.to_thread.run_sync(secure_roots, config)
    drivers = build_drivers(config, clock, runtime=runtime, mounter=mounter, network=network)
    engine_id = await anyio.to_thread.run_sync(read_engine_id, Path(config.data_root))
    async with asyncio_loop():
        daemon: Daemon | None = None
        try:
            async with anyio.create_task_group() as tg:
                daemon = Daemon(config, drivers, clock=clock, task_group=tg, engine_id=engine_id)
                await tg.start(drivers.runtime.run, daemon)
                await daemon._reopen()
                log.info(
                    "daemon.ready", containers=len(daemon._actors), runtime=drivers.runtime.name
                )
                try:
                    yield daemon
                finally:
                    tg.cancel_scope.cancel()
        finally:
            if daemon is not None:
                for actor in daemon._actors.values():
                    actor.shut_down()  # (an idle actor has no task the cancel would reach)
                await daemon._records.aclose()


def _make_directory(path: str, userns: tuple[int, int, int] | None) -> None:
    """A missing bind-mount source, as dockerd's ``MkdirAllAndChownNew(path, 0755)``: it and
    each missing parent 0755 (not the umask's), the remapped root's under a user namespace."""
    if os.path.lexists(path):
        return
    missing = []
    parent = path
    while parent != "/" and not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    try:
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):  # (made meanwhile: not ours)
                os.mkdir(directory, 0o755)
                # Through a descriptor: never through a link swapped in meanwhile.
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.fchmod(fd, 0o755)
                    if userns is not None:
                        os.fchown(fd, userns[0], userns[1])
                finally:
                    os.close(fd)
    except OSError as exc:
        raise errors.SystemError(f"error while creating mount source path '{path}': {exc}") from exc


def _check_archive_path(path: str) -> None:
    if not path:
        raise errors.InvalidParameter("bad parameter: path cannot be empty")


class PipeReader:
    """What a worker thread writes into a pipe, as chunks, until it closes its end. Closing
    this end (:meth:`aclose`, also when the stream was never read: the client left before)
    makes the writer's next write fail, and so end."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def __aiter__(self) -> PipeReader:
        return self

    async def __anext__(self) -> bytes:
        fd = self._fd
        if fd is None:
            raise StopAsyncIteration
        chunk = await anyio.to_thread.run_sync(os.read, fd, 256 * 1024)
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _epoch_of(created: str) -> float:
    try:
        return parse_time(created)
    except ValueError:
        return 0.0
