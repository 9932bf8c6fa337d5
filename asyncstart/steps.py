"""The steps of the start saga: each ``do`` has an ``undo`` that takes back exactly what it did.

The actor runs them in order and, when one fails, undoes the ones that were done in reverse
order. A step knows one driver and the :class:`StartContext` it reads and fills; it never changes
the container's state (that is the actor's job).
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgspec

from . import errors
from .attach import StdioHub
from .hostinfo import absent_seccomp_arches, apparmor_enabled, go_arch
from .images import MountDriver
from .logs import LogOptions, LogSource, log_options
from .network import NetworkDriver
from .network.base import Attachment
from .network.files import Link, host_resolv_conf, hostname_file, hosts_file, link_env, resolv_conf
from .network.firewall import PortNat, forwards
from .network.ports import PortProxy
from .network.resolver import Resolver
from .record import ContainerRecord
from .runtime import Bundle, Runtime, Stdio, translate_start_error
from .runtime.base import RuntimeFailure
from .seccomp import parse_kernel_release
from .settings import parse_link
from .spec import build_spec
from .store import write_in_place
from .views import endpoint_view, joined_networks, network_files

__all__ = [
    "NETWORK_FILES",
    "MountStep",
    "NamesStep",
    "NetworkStep",
    "RuntimeStep",
    "SpecStep",
    "StartContext",
    "Step",
]


#: The files that name a container on its network, in its directory, each with its mode:
#: written at every start, made empty with the directory at create (the record store's
#: ``placeholders``).
NETWORK_FILES: Mapping[str, int] = {"hostname": 0o644, "hosts": 0o644, "resolv.conf": 0o644}


@dataclass(slots=True)
class StartContext:
    """What one start has produced so far; lives as long as the process it starts."""

    record: ContainerRecord
    checkpoint: str | None = None
    checkpoint_dir: str | None = None
    stdio: StdioHub = field(default_factory=StdioHub)
    rootfs: str | None = None
    network: dict[str, Any] | None = None
    #: The OCI spec, from the spec step until the runtime has it (its own copy on disk).
    spec: dict[str, Any] | None = None
    #: The spec's ``process`` and ``root`` as JSON, kept while the process runs: what an exec
    #: starts from. (Not the whole spec, and bytes, not dicts and lists: a running container
    #: keeps no more than it needs, and nothing the cycle collector must walk.)
    running: bytes | None = None
    pid: int = 0
    #: Set by a step that knows better than dockerd's default 128 (e.g. 127: not found).
    exit_code: int = 0
    #: The networks it joined, in order (``eth0`` first).
    attachments: list[Attachment] = field(default_factory=list)
    #: The environment its legacy links give the process (``<ALIAS>_PORT``...).
    link_env: list[str] = field(default_factory=list)
    #: Seconds spent in each phase of this start, for logs, the demo and benchmarks.
    durations: dict[str, float] = field(default_factory=dict)


class Step(Protocol):
    #: Short name for logs ("mount", "network", ...).
    name: str

    async def do(self, ctx: StartContext) -> None: ...

    async def undo(self, ctx: StartContext) -> None: ...


class MountStep:
    name = "mount"

    def __init__(self, mounter: MountDriver) -> None:
        self.mounter = mounter

    async def do(self, ctx: StartContext) -> None:
        ctx.rootfs = await self.mounter.mount(ctx.record.id)

    async def undo(self, ctx: StartContext) -> None:
        await self.mounter.unmount(ctx.record.id)
        ctx.rootfs = None


#: What NetworkStep needs of a container whose network another one joins (container:<id>):
#: its ID, pid (0 if not running) and network settings.
PeerLookup = Callable[[str], tuple[str, int, dict[str, Any]]]
#: The networks a container joins at start, in order, with the names it has on each
#: (dockerd's 404 for one that is gone).
AttachmentPlan = Callable[[ContainerRecord], list[tuple[Attachment, list[str]]]]


class NetworkStep:
    """The driver's network, then the files that name the container on it (hostname, hosts,
    resolv.conf), which the spec bind-mounts. ``container:<id>`` joins that container's."""

    name = "network"

    def __init__(
        self,
        network: NetworkDriver,
        files_root: Path | None = None,
        peers: PeerLookup | None = None,
        plan: AttachmentPlan | None = None,
    ) -> None:
        self.network = network
        #: ``files_root/<id>/`` receives the files (None: no files, as for the fake driver).
        self.files_root = files_root
        self.peers = peers
        self.plan = plan

    async def do(self, ctx: StartContext) -> None:
        record = ctx.record
        mode = record.host_config.network_mode
        if mode.startswith("container:"):
            ctx.network = self._join(record.id, mode.partition(":")[2])
            return
        links = self._links(record)
        ctx.link_env = [item for link in links for item in link_env(record.name, link)]
        planned = (
            self.plan(record) if self.plan is not None and mode not in ("host", "none") else []
        )
        ctx.attachments = [attachment for attachment, _ in planned]
        kind = "host" if mode == "host" else "bridge" if planned else "none"
        settings = await self.network.setup(record.id, kind, ctx.attachments)
        # Each endpoint as dockerd shows it: what was asked of it, and what it got.
        joined = joined_networks(record.endpoints, mode)
        for name, live in settings["Networks"].items():
            attachment, names = next(((a, n) for a, n in planned if a.network == name), (None, []))
            config = joined.get(name, {})
            if attachment is not None:  # (the network found now: its ID, if it was made anew)
                config = {**config, "NetworkID": attachment.network_id}
            settings["Networks"][name] = endpoint_view(config, live, names)
        ctx.network = settings
        if self.files_root is not None:
            try:
                ctx.network |= await anyio.to_thread.run_sync(
                    self._prepare_files, record, ctx.network, ctx.rootfs, links
                )
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await self.network.teardown(record.id)
                if isinstance(exc, OSError):
                    raise errors.SystemError(f"failed to write the network files: {exc}") from exc
                raise

    def _join(self, container_id: str, reference: str) -> dict[str, Any]:
        if self.peers is None:
            raise errors.InvalidParameter("container network mode is not available")
        target_id, pid, settings = self.peers(reference)
        if target_id == container_id:
            raise errors.InvalidParameter("cannot join own network namespace")
        if not pid:
            raise errors.Conflict(
                f"cannot join network namespace of a non running container: {target_id}"
            )
        shared = {k: v for k, v in settings.items() if k.endswith("Path") or k == "Hostname"}
        return {"SandboxKey": f"/proc/{pid}/ns/net", "Networks": {}, **shared}

    def _links(self, record: ContainerRecord) -> list[Link]:
        """The containers its legacy links name, each running (dockerd's errors otherwise)."""
        links = []
        for text in record.host_config.links or ():
            name, alias = parse_link(text)
            if self.peers is None:
                raise errors.InvalidParameter("links are not available")
            target_id, pid, settings = self.peers(name)
            parent = record.name.strip("/")
            if not pid:
                raise errors.Conflict(
                    f"Cannot link to a non running container: /{name} AS /{parent}/{alias}"
                )
            links.append(
                Link(
                    alias=alias,
                    container_id=target_id,
                    name=str(settings.get("Name", name)).strip("/"),
                    address=primary_address(settings),
                    exposed=list(settings.get("ExposedPorts") or ()),
                    env=list(settings.get("Env") or ()),
                )
            )
        return [link for link in links if link.address]

    def _prepare_files(
        self,
        record: ContainerRecord,
        network: dict[str, Any],
        rootfs: str | None,
        links: list[Link],
    ) -> dict[str, Any]:
        """In one trip to a worker thread: the files written, their mount targets made."""
        paths = self._write_files(record, network, links)
        if rootfs:
            _mount_targets(rootfs)
        return paths

    def _write_files(
        self, record: ContainerRecord, network: dict[str, Any], links: list[Link]
    ) -> dict[str, Any]:
        assert self.files_root is not None
        directory = self.files_root / record.id
        config, host_config = record.config, record.host_config
        host_mode = host_config.network_mode == "host"
        host_resolv = host_resolv_conf()
        if host_mode:
            with open("/etc/hosts") as file:
                hosts = file.read()
        else:
            hosts = hosts_file(
                config.hostname,
                config.domainname,
                primary_address(network) or None,
                host_config.extra_hosts or (),
                links,
            )
        embedded = any(
            endpoint.get("DNSNames") for endpoint in network.get("Networks", {}).values()
        )
        files = {
            "hostname": hostname_file(config.hostname),
            "hosts": hosts,
            "resolv.conf": resolv_conf(
                host_resolv,
                dns=host_config.dns or (),
                search=host_config.dns_search or (),
                options=host_config.dns_options or (),
                keep_loopback=host_mode,
                embedded=embedded,
            ),
        }
        for name, text in files.items():
            # Rewritten in place, as dockerd's (the container is not running yet, and a bind
            # mount follows the file's inode): no new inode per start (the record store made
            # them with the container's directory: NETWORK_FILES), which on ext4 costs an
            # inode-table search among the recently deleted ones.
            write_in_place(directory / name, text.encode(), NETWORK_FILES[name])
        return {
            "HostnamePath": str(directory / "hostname"),
            "HostsPath": str(directory / "hosts"),
            "ResolvConfPath": str(directory / "resolv.conf"),
        }

    async def undo(self, ctx: StartContext) -> None:
        if not ctx.record.host_config.network_mode.startswith("container:"):
            await self.network.teardown(ctx.record.id)
        ctx.network = None


class NamesStep:
    """On user-defined networks: the container's names in the daemon's table, and the
    embedded DNS server in its namespace (``resolver`` None: names are not served, as on the
    in-memory drivers)."""

    name = "names"

    def __init__(self, resolver: Resolver | None) -> None:
        self.resolver = resolver

    async def do(self, ctx: StartContext) -> None:
        if self.resolver is not None and ctx.network:
            dns = ctx.record.host_config.dns or ()
            forward = any(not a.bridge.internal for a in ctx.attachments)
            await self.resolver.attach(ctx.record.id, ctx.network, dns, forward=forward)

    async def undo(self, ctx: StartContext) -> None:
        if self.resolver is not None:
            self.resolver.stop(ctx.record.id)


class PortsStep:
    """Published ports (``HostConfig.PortBindings``, and with ``PublishAllPorts`` every
    exposed port on an ephemeral host port): listeners proxying to the container (what the
    host itself connects to, on loopback too), and the DNAT for other hosts' traffic."""

    name = "ports"

    def __init__(self, proxy: PortProxy, nat: PortNat | None = None) -> None:
        self.proxy = proxy
        #: The DNATs that bring other hosts' traffic straight to the container.
        self.nat = nat

    async def do(self, ctx: StartContext) -> None:
        record = ctx.record
        network = ctx.network or {}
        address = primary_address(network)
        if not address or all(a.bridge.internal for a in ctx.attachments):
            return  # host and none modes publish nothing, nor internal networks (as dockerd)
        bindings: dict[str, list[dict[str, Any]]] = {
            _port_key(k): [msgspec.to_builtins(b) for b in v or ()]
            for k, v in (record.host_config.port_bindings or {}).items()
        }
        exposed = [_port_key(k) for k in record.config.exposed_ports or {}]
        if record.host_config.publish_all_ports:
            for spec in exposed:
                if not bindings.get(spec):
                    bindings[spec] = [{}]  # -P: an ephemeral port, as dockerd
        if not bindings and not exposed:
            return
        # Exposed or bound to nothing: not published (null), as dockerd.
        ports: dict[str, Any] = dict.fromkeys([*exposed, *bindings])
        ports |= await self.proxy.publish(record.id, record.name, address, bindings)
        ctx.network = {**network, "Ports": ports}
        if self.nat is not None:
            try:
                await self.nat.publish(forwards(address, ports))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.proxy.unpublish(record.id)
                raise

    async def undo(self, ctx: StartContext) -> None:
        network = ctx.network or {}
        if self.nat is not None and network.get("Ports"):
            # Before the ports are free: a container that takes one next keeps its DNAT.
            await self.nat.unpublish(forwards(primary_address(network), network["Ports"]))
        await self.proxy.unpublish(ctx.record.id)


def primary_address(settings: Mapping[str, Any]) -> str:
    """The address of the container's first network (``eth0``), "" if it has none."""
    return next(
        (str(e["IPAddress"]) for e in settings.get("Networks", {}).values() if e.get("IPAddress")),
        "",
    )


def _port_key(spec: str) -> str:
    """``80`` is ``80/tcp``, as dockerd's ``nat.Port``."""
    return spec if "/" in spec else f"{spec}/tcp"


def _mount_targets(rootfs: str) -> None:
    """Make /etc/{hostname,hosts,resolv.conf} exist in the container's own layer, so runc can
    mount onto them even as a remapped root that may not create files in the image's /etc."""
    etc = os.path.join(rootfs, "etc")
    if not os.path.realpath(etc).startswith(os.path.realpath(rootfs) + os.sep):
        return  # /etc links out of the root: leave it to runc, which resolves inside
    with contextlib.suppress(FileExistsError):
        os.mkdir(etc)
        os.chmod(etc, 0o755)  # (not the umask's)
    for name in ("hostname", "hosts", "resolv.conf"):
        with contextlib.suppress(FileExistsError):  # (or a link: runc resolves it)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(os.path.join(etc, name), flags, 0o644)
            try:
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)


def _host_hard_limits() -> dict[str, int]:
    limits = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            limits[name] = resource.getrlimit(getattr(resource, name))[1]
    return limits


def _read_inside(root: str, relative: str) -> str | None:
    """A text file of the container's root filesystem, symlinks resolved *inside* that root
    (an absolute link in the image means a path in the image); None if absent."""
    path = relative
    for _ in range(16):  # as the kernel, give up on long chains
        host_path = os.path.join(root, path.lstrip("/"))
        if not os.path.islink(host_path):
            break
        target = os.readlink(host_path)
        path = target if target.startswith("/") else os.path.join(os.path.dirname(path), target)
        path = os.path.normpath("/" + path.lstrip("/"))
    else:
        return None
    real = os.path.realpath(os.path.join(root, path.lstrip("/")))
    if not real.startswith(os.path.realpath(root) + os.sep):
        return None  # a parent directory links out of the root: not the image's file
    try:
        # Never block on what a container may have put there (a FIFO, a device).
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return file.read(1 << 20).decode("utf-8", errors="replace")


def read_users(root: str) -> tuple[str | None, str | None]:
    return _read_inside(root, "etc/passwd"), _read_inside(root, "etc/group")


class SpecStep:
    """Builds the OCI spec (pure) from the record and what the earlier steps produced."""

    name = "spec"

    def __init__(
        self, *, cgroup_parent: str = "asyncstart", userns: tuple[int, int, int] | None = None
    ) -> None:
        self.cgroup_parent = cgroup_parent
        self.userns = userns
        # The daemon's own hard limits are the ceiling for any container's (read once).
        self.host_hard_limits = _host_hard_limits()
        # What the seccomp filter and SecurityOpt depend on (read once).
        self.arch = go_arch()
        self.kernel = parse_kernel_release(platform.release())
        self.apparmor = apparmor_enabled()
        self.absent_arches = absent_seccomp_arches()

    async def do(self, ctx: StartContext) -> None:
        record = ctx.record
        network = ctx.network or {}
        sandbox = network.get("SandboxKey", "")
        # host: no namespace of its own; "" : a new one (loopback only); else join that path.
        netns = None if record.host_config.network_mode == "host" else sandbox
        passwd = group = None
        names = [g for g in record.host_config.group_add or () if not g.isdigit()]
        if ctx.rootfs and (record.config.user or names):
            # A user or a group by name needs the image's files: off the event loop.
            passwd, group = await anyio.to_thread.run_sync(read_users, ctx.rootfs)
        ctx.spec = build_spec(
            record.id,
            record.config,
            record.host_config,
            rootfs=ctx.rootfs or "",
            netns=netns,
            host_hard_limits=self.host_hard_limits,
            cgroup_parent=self.cgroup_parent,
            passwd=passwd,
            group=group,
            network_files=network_files(network),
            mount_points=record.mount_points,
            hostname=network.get("Hostname"),
            extra_env=ctx.link_env,
            userns=self.userns,
            arch=self.arch,
            kernel=self.kernel,
            apparmor=self.apparmor,
            absent_arches=self.absent_arches,
        )

    async def undo(self, ctx: StartContext) -> None:
        ctx.spec = None


def container_stdio(
    record: ContainerRecord,
    logs: Callable[[str], str] | None,
    on_output: Callable[[str, bytes], None],
) -> Stdio:
    """The container's streams as the runtime needs them (at create, and when re-adopting).
    Its log options are read now, as dockerd's logger starts with the container: a ``tag``
    shows the name the container has at this start."""
    config = record.config
    return Stdio(
        open_stdin=config.open_stdin,
        stdin_once=config.stdin_once,
        tty=config.tty,
        log_path=logs(record.id) if logs else None,
        log_options=container_log_options(record),
        on_output=on_output,
    )


def container_log_options(record: ContainerRecord) -> LogOptions:
    """The container's log options now: rotation, and the attributes its entries carry (a
    ``tag`` shows the name it has now)."""
    config = record.config

    def source() -> LogSource:
        return LogSource(
            id=record.id,
            name=record.name,
            image_id=record.image,
            image_name=config.image,
            command=[*(config.entrypoint or ()), *(config.cmd or ())],
            labels=config.labels,
            env=config.env or (),
        )

    return log_options(record.host_config.log_config.config, source)


class RuntimeStep:
    """Has the runtime create and start the process. (Input kept for it and a pending stdin
    close are fed by the actor afterwards, in the background: the start never waits on them.)"""

    name = "create"

    def __init__(
        self,
        runtime: Runtime,
        bundles: Path,
        logs: Callable[[str], str] | None = None,
        runtimes: Mapping[str, tuple[str, ...]] | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.runtime = runtime
        #: With user-namespace remapping: the bundle belongs to the remapped root.
        self.owner = owner
        self.bundles = bundles
        #: ``HostConfig.Runtime`` name -> (path, *args)
        self.runtimes = dict(runtimes or {})
        #: Where a container's json-file log goes (None: discarded).
        self.logs = logs

    async def do(self, ctx: StartContext) -> None:
        record = ctx.record
        bundle = Bundle(self.bundles / record.id, ctx.spec or {}, owner=self.owner)
        stdio = container_stdio(record, self.logs, ctx.stdio.publish)
        try:
            binary, *args = self.runtimes.get(record.host_config.effective_runtime, ("",))
            ctx.pid = await self.runtime.create(
                record.id,
                bundle,
                stdio,
                checkpoint=ctx.checkpoint,
                checkpoint_dir=ctx.checkpoint_dir,
                runtime_args=tuple(args),
                binary=binary or None,
            )
        except RuntimeFailure as exc:
            ctx.exit_code, error = translate_start_error(exc.message)
            raise error from exc
        spec = ctx.spec or {}
        ctx.running = msgspec.json.encode({k: spec.get(k) for k in ("process", "root")})
        ctx.spec = None
        # A step that fails leaves nothing behind: from here on the process exists.
        try:
            await self.runtime.start(record.id)
        except BaseException as exc:
            with anyio.CancelScope(shield=True), contextlib.suppress(errors.DockerError):
                await self.undo(ctx)
            if isinstance(exc, RuntimeFailure):
                ctx.exit_code, error = translate_start_error(exc.message)
                raise error from exc
            raise

    async def undo(self, ctx: StartContext) -> None:
        await self.runtime.delete(ctx.record.id, force=True)
        ctx.pid = 0
        ctx.running = None
