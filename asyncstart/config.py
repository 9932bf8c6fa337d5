"""Typed container configuration in the Docker Engine API's JSON shapes.

``Config`` and ``HostConfig`` are msgspec Structs whose wire names are Docker's field names, so a
body from ``docker create`` decodes straight into them and encodes back into the same keys for
``inspect``. Python attribute names are snake_case; the few fields whose Docker name is not plain
PascalCase say so with ``name=``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from . import errors
from .security import parse_security_opt
from .signals import parse_signal

__all__ = [
    "CAPABILITIES",
    "Config",
    "HostConfig",
    "Mount",
    "PortBinding",
    "RestartPolicy",
    "Ulimit",
    "capability_name",
    "merge_image_defaults",
    "not_applied",
    "parse_config",
    "parse_host_config",
    "validate_config",
    "validate_host_config",
]


class _Docker(msgspec.Struct, rename="pascal", omit_defaults=False, kw_only=True, gc=False):
    """Base: Docker's PascalCase keys, unknown keys ignored (newer clients send more)."""


class RestartPolicy(_Docker):
    name: str = "no"
    maximum_retry_count: int = 0


class Ulimit(_Docker):
    name: str
    soft: int
    hard: int


class PortBinding(_Docker):
    host_ip: str = msgspec.field(default="", name="HostIp")
    host_port: str = ""


class Mount(_Docker):
    type: str = "bind"
    source: str = ""
    target: str = ""
    read_only: bool = False
    consistency: str = ""
    bind_options: dict[str, Any] | None = None
    volume_options: dict[str, Any] | None = None
    tmpfs_options: dict[str, Any] | None = None


class LogConfig(_Docker):
    type: str = "json-file"
    config: dict[str, str] = msgspec.field(default_factory=dict)


class Config(_Docker):
    """The ``Config`` of ``POST /containers/create`` (what the image and the user ask to run)."""

    hostname: str = ""
    domainname: str = ""
    user: str = ""
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    exposed_ports: dict[str, dict[str, Any]] | None = None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    env: list[str] | None = None
    cmd: list[str] | None = None
    healthcheck: dict[str, Any] | None = None
    args_escaped: bool = False
    image: str = ""
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str = ""
    entrypoint: list[str] | None = None
    network_disabled: bool = False
    mac_address: str = ""
    on_build: list[str] | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    stop_signal: str = ""
    stop_timeout: int | None = None
    shell: list[str] | None = None


class HostConfig(_Docker):
    """The ``HostConfig`` of ``POST /containers/create`` (what the host grants the container).

    Every field dockerd's has, in its order, so inspect echoes the whole of it; each is applied
    or refused at create (``validate_host_config``), never held and ignored."""

    binds: list[str] | None = None
    container_id_file: str = msgspec.field(default="", name="ContainerIDFile")
    log_config: LogConfig = msgspec.field(default_factory=LogConfig)
    network_mode: str = "default"
    port_bindings: dict[str, list[PortBinding] | None] | None = None
    restart_policy: RestartPolicy = msgspec.field(default_factory=RestartPolicy)
    auto_remove: bool = False
    volume_driver: str = ""
    volumes_from: list[str] | None = None
    console_size: list[int] = msgspec.field(default_factory=lambda: [0, 0])
    annotations: dict[str, str] | None = None
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    cgroupns_mode: str = ""
    dns: list[str] | None = None
    dns_options: list[str] | None = None
    dns_search: list[str] | None = None
    extra_hosts: list[str] | None = None
    group_add: list[str] | None = None
    ipc_mode: str = ""
    cgroup: str = ""
    links: list[str] | None = None
    oom_score_adj: int = 0
    pid_mode: str = ""
    privileged: bool = False
    publish_all_ports: bool = False
    readonly_rootfs: bool = False
    security_opt: list[str] | None = None
    storage_opt: dict[str, str] | None = None
    tmpfs: dict[str, str] | None = None
    uts_mode: str = msgspec.field(default="", name="UTSMode")
    userns_mode: str = ""
    shm_size: int = 0
    sysctls: dict[str, str] | None = None
    runtime: str = ""
    isolation: str = ""
    # Resources
    cpu_shares: int = 0
    memory: int = 0
    nano_cpus: int = 0
    cgroup_parent: str = ""
    blkio_weight: int = 0
    blkio_weight_device: list[dict[str, Any]] | None = None
    blkio_device_read_bps: list[dict[str, Any]] | None = None
    blkio_device_write_bps: list[dict[str, Any]] | None = None
    blkio_device_read_iops: list[dict[str, Any]] | None = msgspec.field(
        default=None, name="BlkioDeviceReadIOps"
    )
    blkio_device_write_iops: list[dict[str, Any]] | None = msgspec.field(
        default=None, name="BlkioDeviceWriteIOps"
    )
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_realtime_period: int = 0
    cpu_realtime_runtime: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    devices: list[dict[str, Any]] | None = None
    device_cgroup_rules: list[str] | None = None
    device_requests: list[dict[str, Any]] | None = None
    memory_reservation: int = 0
    memory_swap: int = 0
    memory_swappiness: int | None = None
    oom_kill_disable: bool | None = None
    pids_limit: int | None = None
    ulimits: list[Ulimit] | None = None
    cpu_count: int = 0
    cpu_percent: int = 0
    io_maximum_iops: int = msgspec.field(default=0, name="IOMaximumIOps")
    io_maximum_bandwidth: int = msgspec.field(default=0, name="IOMaximumBandwidth")
    mounts: list[Mount] | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    init: bool | None = None

    @property
    def effective_runtime(self) -> str:
        """The OCI runtime by name: create fills ``Runtime`` in; a record from before it did
        ran on runc."""
        return self.runtime or "runc"


def _as_go_decodes(kind: type[Any], value: dict[str, Any]) -> dict[str, Any]:
    """Keys as Go's JSON decoder matches them — a field's name in any case — and a ``null``
    that leaves the field as it is (a client's ``{"memory": ...}`` is dockerd's Memory)."""
    names = {wire.lower(): wire for wire in kind.__struct_encode_fields__}
    return {
        names.get(key.lower(), key) if isinstance(key, str) else key: item
        for key, item in value.items()
        if item is not None
    }


def _convert(kind: type[Any], value: Any, what: str) -> Any:
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if isinstance(value, dict):
        value = _as_go_decodes(kind, value)
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise errors.InvalidParameter(f"invalid {what}: {exc}") from None


def parse_config(value: Config | dict[str, Any] | None) -> Config:
    """Decode a ``Config`` from its JSON shape; a wrong type is a 400 naming the field."""
    config: Config = _convert(Config, value, "Config")
    return config


def parse_host_config(value: HostConfig | dict[str, Any] | None) -> HostConfig:
    """Decode a ``HostConfig`` from its JSON shape; a wrong type is a 400 naming the field."""
    host_config: HostConfig = _convert(HostConfig, value, "HostConfig")
    return host_config


_RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
#: The Linux capabilities (capability.h), as the Engine API names them with ``CAP_``.
CAPABILITIES = tuple(
    "CAP_" + name
    for name in [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
)


def capability_name(name: str) -> str:
    """``net_admin`` and ``CAP_NET_ADMIN`` are one capability; ``ALL`` stays ``ALL``."""
    name = name.upper()
    return name if name == "ALL" or name.startswith("CAP_") else "CAP_" + name


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: dockerd's ``linuxMinMemory``.
_MIN_MEMORY = 6 * 1024 * 1024


def not_applied(section: str, key: str, value: Any) -> errors.InvalidParameter:
    """The 400 for a setting dockerd applies and this engine does not (yet): refused, never
    accepted and ignored."""
    return errors.InvalidParameter(
        f"asyncstart does not apply {section}.{key} yet: {key}={json.dumps(value)} is "
        "refused rather than ignored"
    )


def validate_config(config: Config) -> None:
    """dockerd's checks of a container's ``Config`` at create: 400 on violation."""
    if config.stop_signal:
        parse_signal(config.stop_signal)  # dockerd's "Invalid signal: ..." at create
    if config.working_dir and not config.working_dir.startswith("/"):
        raise errors.InvalidParameter(
            f"the working directory '{config.working_dir}' is invalid, it needs to be an "
            "absolute path"
        )


def validate_host_config(host_config: HostConfig) -> None:
    """dockerd's ``verifyContainerSettings`` for what this engine supports: 400 on violation."""
    policy = host_config.restart_policy
    if policy.name not in ("", *_RESTART_POLICIES):
        raise errors.InvalidParameter(
            f"invalid restart policy: unknown policy '{policy.name}'; "
            "use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        )
    count = policy.maximum_retry_count
    if policy.name == "on-failure" and count < 0:
        raise errors.InvalidParameter(
            "invalid restart policy: maximum retry count cannot be negative"
        )
    if policy.name not in ("", "on-failure") and count != 0:
        message = "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        if count < 0:
            message += " and cannot be negative"
        raise errors.InvalidParameter(message)
    if host_config.auto_remove and policy.name not in ("", "no"):
        raise errors.InvalidParameter("can't create 'AutoRemove' container with restart policy")
    for field, value in (
        ("Memory", host_config.memory),
        ("NanoCpus", host_config.nano_cpus),
        ("CpuShares", host_config.cpu_shares),
        ("ShmSize", host_config.shm_size),
        ("PidsLimit", host_config.pids_limit or 0),
    ):
        if not _INT64_MIN <= value <= _INT64_MAX:
            # What dockerd's JSON decoder answers for a number its int64 field cannot hold.
            raise errors.InvalidParameter(
                f"json: cannot unmarshal number {value} into Go struct field "
                f"HostConfig.{field} of type int64"
            )
    if host_config.memory < 0 or host_config.nano_cpus < 0 or host_config.cpu_shares < 0:
        raise errors.InvalidParameter("invalid resources: values cannot be negative")
    if 0 < host_config.memory < _MIN_MEMORY:
        raise errors.InvalidParameter("Minimum memory limit allowed is 6MB")
    if host_config.shm_size < 0:
        raise errors.InvalidParameter("SHM size can not be less than 0")
    if host_config.oom_score_adj < -1000 or host_config.oom_score_adj > 1000:
        raise errors.InvalidParameter(
            f"Invalid value {host_config.oom_score_adj}, range for oom score adj is [-1000, 1000]"
        )
    # dockerd's parseSecurityOpt (its 400s, a seccomp profile decoded and checked); what this
    # engine does not apply is refused.
    for option in parse_security_opt(host_config.security_opt).not_applied:
        raise not_applied("HostConfig", "SecurityOpt", option)
    for name in (*(host_config.cap_add or ()), *(host_config.cap_drop or ())):
        if capability_name(name) not in (*CAPABILITIES, "ALL"):
            raise errors.InvalidParameter(f'unknown capability: "{capability_name(name)}"')
    driver = host_config.log_config.type
    if driver not in ("", "json-file"):
        raise errors.InvalidParameter(
            f"asyncstart writes container logs with the json-file driver only, not {driver!r}"
        )
    for ulimit in host_config.ulimits or ():
        if ulimit.soft > ulimit.hard:
            raise errors.InvalidParameter(
                f"ulimit soft limit must be less than or equal to hard limit: "
                f"{ulimit.soft} > {ulimit.hard}"
            )


def merge_image_defaults(config: Config, image: dict[str, Any]) -> None:
    """Fill what the container leaves to its image (dockerd's ``merge``): the command and
    entrypoint if it names none, the image's environment, labels and exposed ports under its
    own, the working dir, user, stop signal and health check if unset. ``image`` is the image
    config's ``config`` section."""
    if not config.cmd and not config.entrypoint:
        config.cmd = image.get("Cmd")
    if config.entrypoint is None:
        config.entrypoint = image.get("Entrypoint")
    own = {item.partition("=")[0] for item in config.env or ()}
    inherited = [item for item in image.get("Env") or () if item.partition("=")[0] not in own]
    config.env = [*inherited, *(config.env or ())]
    config.working_dir = config.working_dir or image.get("WorkingDir", "")
    config.user = config.user or image.get("User", "")
    config.stop_signal = config.stop_signal or image.get("StopSignal") or ""
    config.labels = {**(image.get("Labels") or {}), **config.labels}
    if image.get("ExposedPorts"):
        config.exposed_ports = {**image["ExposedPorts"], **(config.exposed_ports or {})}
    if config.healthcheck is None and image.get("Healthcheck") is not None:
        config.healthcheck = dict(image["Healthcheck"])


NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def validate_name(name: str) -> str:
    """Return the canonical ``/name`` or raise dockerd's 400 for an invalid one."""
    bare = name[1:] if name.startswith("/") else name
    if not NAME_PATTERN.fullmatch(bare):
        raise errors.InvalidParameter(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return "/" + bare
