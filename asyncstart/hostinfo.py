"""Facts about this machine, named as Docker names them."""

from __future__ import annotations

import platform

__all__ = ["go_arch", "mem_total"]

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
