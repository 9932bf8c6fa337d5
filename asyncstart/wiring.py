"""The daemon's configuration, and the drivers and saga it is built from.

``DaemonConfig.runtime`` chooses the family of drivers — ``runc`` (overlay root filesystems, a
bridge, runc) or ``fake`` (in memory) — here and nowhere else; any driver may also be handed in
(the tests' fakes). The start saga is assembled here from those drivers.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import errors
from .clock import Clock
from .fsdirs import spread_subdirectories
from .images import FakeMounter, MountDriver
from .images.fake import FakeImageStore
from .images.overlay import OverlayMounter
from .images.source import ImportLimits
from .images.store import ImageStore
from .lifecycle import State
from .network import FakeNetwork, NetworkDriver
from .network.bridge import DEFAULT_BRIDGE, DEFAULT_SUBNET, BridgeNetwork
from .network.firewall import PortNat, nft_installed
from .network.loopback import LoopbackNetwork
from .network.ports import PortProxy
from .network.resolver import Resolver
from .runtime import FakeRuntime, Runtime
from .runtime.conmon import ConmonRuntime, conmon_binary
from .runtime.runc import RuncRuntime
from .saga import Saga
from .steps import (
    AttachmentPlan,
    MountStep,
    NamesStep,
    NetworkStep,
    PeerLookup,
    PortsStep,
    RuntimeStep,
    SpecStep,
    Step,
)
from .store import RecordStore

__all__ = [
    "DaemonConfig",
    "Drivers",
    "build_drivers",
    "build_saga",
    "read_engine_id",
    "secure_roots",
]


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
    #: dockerd's ``--debug``: ``docker info`` says so (the log level is the program's).
    debug: bool = False
    #: Checkpoint/restore is experimental in dockerd too.
    experimental: bool = False
    #: OCI runtimes a container may name in ``HostConfig.Runtime``: name -> (path, *args),
    #: as dockerd's ``runtimes`` setting (``--add-runtime``). ``runc`` is always there, and
    #: ``crun`` where it is installed.
    runtimes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: The runtime of a container that names none (dockerd's ``--default-runtime``); empty:
    #: the host's best, crun where it is installed (about 0.6x runc's start here), else runc.
    default_runtime: str = ""
    #: What watches each container and keeps its output and exit code while no engine runs:
    #: ``conmon`` (a conmon process per container), ``none`` (the engine itself: a container
    #: that ends or prints while the engine is down loses its exit code or that output);
    #: empty: conmon where it is installed.
    monitor: str = ""
    #: User-namespace remapping, ``"UID:GID[:SIZE]"``: container root is that host uid/gid
    #: (dockerd's ``--userns-remap``, given as numbers). Empty: no remapping.
    userns_remap: str = ""
    #: The runc runtime's networking: ``bridge`` (pyroute2: a bridge, a namespace, veth and
    #: address per container; ``NetworkMode`` none/host/container:<id> as dockerd) or
    #: ``loopback`` (every container in a namespace with lo only).
    network: str = "bridge"
    bridge: str = DEFAULT_BRIDGE
    bridge_subnet: str = DEFAULT_SUBNET
    #: dockerd's ``--bip``: the bridge's own address and prefix (``10.213.7.1/24``); its
    #: network is then the subnet. Empty: ``bridge_subnet``, gateway its first address.
    bridge_ip: str = ""
    #: What one ``docker import`` or ``docker load`` may unpack (bytes, archive members).
    import_limits: ImportLimits = field(default_factory=ImportLimits)

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

    def runtime_table(self) -> dict[str, tuple[str, ...]]:
        """``HostConfig.Runtime`` names -> (path, *global flags); ``runc`` always, ``crun``
        if installed. The default runtime must be one of them."""
        table: dict[str, tuple[str, ...]] = {"runc": ("runc",)}
        if shutil.which("crun"):
            table["crun"] = ("crun",)
        table.update({name: tuple(value) for name, value in self.runtimes.items()})
        if self.runtime_name() not in table:
            raise errors.InvalidParameter(
                f"default runtime {self.runtime_name()} is not one of the runtimes: "
                f"{', '.join(sorted(table))}"
            )
        return table

    def monitor_binary(self) -> str | None:
        """conmon's path if containers are to run under it, else None."""
        if self.monitor not in ("", "conmon", "none"):
            raise errors.InvalidParameter(
                f"unknown monitor {self.monitor!r}: expected conmon or none"
            )
        if self.monitor == "none":
            return None
        found = conmon_binary()
        if found is None and self.monitor == "conmon":
            raise errors.InvalidParameter("monitor conmon is not installed")
        return found

    def runtime_name(self) -> str:
        """The default runtime's name: ``default_runtime``, else crun if installed, else runc."""
        return self.default_runtime or ("crun" if shutil.which("crun") else "runc")


@dataclass(frozen=True, slots=True)
class Drivers:
    """What the daemon runs containers with."""

    runtime: Runtime
    mounter: MountDriver
    network: NetworkDriver
    images: ImageStore
    #: dockerd's ``Driver`` (``docker info``, inspect's ``GraphDriver``).
    storage_driver: str
    #: Whether containers get hostname/hosts/resolv.conf files (not on the in-memory drivers).
    network_files: bool
    #: Published ports' DNAT, for other hosts (bridge networking with nftables).
    nat: PortNat | None = None


def build_drivers(
    config: DaemonConfig,
    clock: Clock,
    *,
    runtime: Runtime | None = None,
    mounter: MountDriver | None = None,
    network: NetworkDriver | None = None,
) -> Drivers:
    """The drivers ``config.runtime`` names, for those not handed in."""
    data_root, exec_root = Path(config.data_root), Path(config.exec_root)
    if config.runtime == "fake":
        return Drivers(
            runtime=runtime or FakeRuntime(clock=clock),
            mounter=mounter or FakeMounter(),
            network=network or FakeNetwork(),
            images=FakeImageStore(data_root / "image", config.import_limits),
            storage_driver="fake",
            network_files=False,
        )
    if config.runtime != "runc":
        raise errors.InvalidParameter(f"unknown runtime specified {config.runtime}")
    images = ImageStore(data_root / "image", config.import_limits)
    userns = config.userns()
    owner = userns[:2] if userns else None
    if network is None and config.network == "bridge":
        network = BridgeNetwork(
            state=exec_root / "network" / "ipam.json",
            legacy_state=data_root / "network" / "ipam.json",
            netns_dir=exec_root / "netns",
            bridge=config.bridge,
            subnet=config.bridge_ip or config.bridge_subnet,
            gateway=config.bridge_ip.partition("/")[0],
        )
    if runtime is None:
        runtimes = list(config.runtime_table().values())
        conmon = config.monitor_binary()
        if conmon is None:
            runtime = RuncRuntime(exec_root / "runc", runtimes=runtimes)
        else:
            runtime = ConmonRuntime(exec_root / "runc", conmon=conmon, runtimes=runtimes)
    return Drivers(
        runtime=runtime,
        mounter=mounter or OverlayMounter(data_root / "overlay", images, owner),
        network=network or LoopbackNetwork(),
        images=images,
        storage_driver="overlay",
        network_files=True,
        nat=PortNat() if isinstance(network, BridgeNetwork) and nft_installed() else None,
    )


#: How many starts prepare at once, per CPU the daemon may run on (see :mod:`.saga`): a few,
#: so that the first reach the runtime at once. (50 starts at once on 2 CPUs, crun: 1, 2, 4 or
#: 8 at a time all did about the same: some 7% more starts per second than all 50 together,
#: and half the median latency.)
_PREPARING_PER_CPU = 2


def build_saga(
    config: DaemonConfig,
    drivers: Drivers,
    clock: Clock,
    *,
    records: RecordStore,
    ports: PortProxy,
    peers: PeerLookup,
    plan: AttachmentPlan,
    resolver: Resolver | None,
) -> Saga:
    """The start saga: each step with the lifecycle state it runs in."""
    userns = config.userns()
    steps: Sequence[tuple[State, Step]] = (
        (State.MOUNTING, MountStep(drivers.mounter)),
        (
            State.NETWORKING,
            NetworkStep(
                drivers.network,
                files_root=records.root if drivers.network_files else None,
                peers=peers,
                plan=plan,
            ),
        ),
        (State.NETWORKING, NamesStep(resolver if drivers.network_files else None)),
        (State.NETWORKING, PortsStep(ports, drivers.nat)),
        (State.SPEC_READY, SpecStep(cgroup_parent=config.cgroup_parent, userns=userns)),
        (
            State.SPEC_READY,
            RuntimeStep(
                drivers.runtime,
                Path(config.exec_root),
                records.log_file,
                config.runtime_table(),
                owner=userns[:2] if userns else None,
            ),
        ),
    )
    return Saga(steps, preparing=_PREPARING_PER_CPU * len(os.sched_getaffinity(0)))


#: dockerd's modes: the roots closed to other users (the data root only traversable by its
#: group, the remapped root's with user namespaces), and below the data root what holds
#: container or image content closed too. (name, mode, holds one directory per container);
#: "" is the data root itself.
_DATA_MODES = (
    ("", 0o710, False),
    ("containers", 0o710, True),
    ("overlay", 0o710, True),
    ("image", 0o700, False),
    ("network", 0o700, False),
)


def secure_roots(config: DaemonConfig) -> None:
    """Make the roots and close them to other users — at every open, so that a root made
    before (0755, as this engine once made them) is closed too. Otherwise a container plus any
    local user is host root: a setuid binary the container leaves in its upper directory runs
    as root for whoever can reach it. The directories that hold one directory per container
    spread them over the file system (:func:`~asyncstart.fsdirs.spread_subdirectories`)."""
    data_root, exec_root = Path(config.data_root), Path(config.exec_root)
    exec_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(exec_root, 0o700)
    spread_subdirectories(exec_root)  # each container's bundle (on tmpfs, as /run is: no-op)
    userns = config.userns()
    for name, mode, per_container in _DATA_MODES:
        path = data_root / name if name else data_root
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        os.chmod(path, mode)
        if userns and mode & 0o010:
            # The remapped root reaches its root filesystem and files through these.
            os.chown(path, -1, userns[1])
        if per_container:
            spread_subdirectories(path)


def read_engine_id(data_root: Path) -> str:
    """A stable identity for this data root, as dockerd's ``engine-id`` file (made once)."""
    path = data_root / "engine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        engine_id = str(uuid.uuid4())
        path.write_text(engine_id + "\n")
        return engine_id
