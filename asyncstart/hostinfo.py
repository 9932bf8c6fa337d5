"""Facts about this machine, named as Docker names them."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

from .settings import HostFacts, parse_id_list

__all__ = ["absent_seccomp_arches", "apparmor_enabled", "go_arch", "host_facts", "mem_total"]

#: Go's GOARCH names where Python's machine name differs.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def go_arch(machine: str | None = None) -> str:
    """The architecture as Docker and images name it (Go's GOARCH): ``x86_64`` is ``amd64``,
    ``aarch64`` is ``arm64``, any other machine keeps its name. Default: this machine."""
    name = platform.machine() if machine is None else machine
    return _GOARCH.get(name, name)


def mem_total() -> int:
    """Bytes of memory (``docker info``'s ``MemTotal``); 0 if the kernel does not say."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def host_facts(*, userns: bool = False, root: Path = Path("/sys/fs/cgroup")) -> HostFacts:
    """What this machine offers containers (dockerd's ``sysinfo``), from the cgroup hierarchy
    under ``root`` and the CPUs this process may run on."""
    cgroup2 = (root / "cgroup.controllers").exists()
    if cgroup2:
        cpus = _read(root / "cpuset.cpus.effective")
        mems = _read(root / "cpuset.mems.effective")
        blkio = (root / "io.weight").exists() or (root / "io.bfq.weight").exists()
        swap = True  # memory.swap.max is in every child when the memory controller is
        swappiness = oom_control = False  # runc's v2 backend writes neither
    else:
        cpus = _read(root / "cpuset" / "cpuset.cpus")
        mems = _read(root / "cpuset" / "cpuset.mems")
        weights = ("blkio.weight", "blkio.bfq.weight")
        blkio = any((root / "blkio" / name).exists() for name in weights)
        swap = (root / "memory" / "memory.memsw.limit_in_bytes").exists()
        swappiness = (root / "memory" / "memory.swappiness").exists()
        oom_control = (root / "memory" / "memory.oom_control").exists()
    online = len(os.sched_getaffinity(0))
    return HostFacts(
        cpus=online,
        cpuset_cpus=parse_id_list(cpus) if cpus else frozenset(range(online)),
        cpuset_mems=parse_id_list(mems) if mems else frozenset({0}),
        cgroup2=cgroup2,
        blkio_weight=blkio,
        swap_limit=swap,
        memory_swappiness=swappiness,
        oom_kill_disable=oom_control,
        userns=userns,
    )


def apparmor_enabled() -> bool:
    """Whether the kernel enforces AppArmor (runc can then apply a profile by name)."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as file:
            enabled = file.read(1) == "Y"
    except OSError:
        return False
    return enabled and os.path.isdir("/sys/kernel/security/apparmor")


#: x32's system call numbers are x86_64's with this bit set.
_X32_SYSCALL_BIT = 0x40000000
_GETPID_X86_64 = 39


_X32_PROBE = f"""
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
result = libc.syscall({_X32_SYSCALL_BIT | _GETPID_X86_64})
sys.exit(3 if result == -1 and ctypes.get_errno() == errno.ENOSYS else 0)
"""


@functools.cache
def absent_seccomp_arches() -> frozenset[str]:
    """The architectures a seccomp filter would name that this kernel does not run (as
    libseccomp names them): x32 on an x86_64 kernel built or booted without it, found by
    asking for ``getpid`` through it (ENOSYS: absent). Asked by a child process, once: a
    sandbox that kills a foreign ABI's caller (systemd's ``SystemCallArchitectures=native``)
    then kills the child, not the daemon; anything but a clear ENOSYS keeps x32 filtered."""
    if platform.machine() != "x86_64":
        return frozenset()
    try:
        probe = subprocess.run([sys.executable, "-c", _X32_PROBE], timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset({"SCMP_ARCH_X32"}) if probe.returncode == 3 else frozenset()
