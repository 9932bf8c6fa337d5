"""crun's compiled seccomp filters, kept: the program crun compiled for one container is handed
to the next with the same profile, so that crun does not compile it again.

At every create, crun turns the spec's seccomp profile into a BPF program with libseccomp: for
dockerd's default profile, about a third of crun's CPU at a start (some 6 ms on a 2-CPU VM).
crun keeps the program it loaded in its state (``<root>/<id>/seccomp.bpf``) and takes a program
as it is from the ``run.oci.seccomp_bpf_data`` annotation (base64; the profile's flags still
apply). A crun built with libgcrypt keeps such a cache itself (``<root>/.cache/seccomp``, by a
checksum of the profile, crun's and libseccomp's versions and the kernel); Debian's is built
without. So the engine keeps one, in memory, by what crun's checksum covers: the profile's
bytes, crun's and libseccomp's files (by their identity on disk: an upgraded one compiles
anew) and the kernel's release. Only a program crun compiled itself, for the very same
profile, is ever handed back to it.

Not for runc (it has no such annotation), a restore (CRIU restores the filter), or a spec whose
annotations already speak of seccomp (``run.oci.seccomp*``: a caller's own program, a receiver,
or ``fail_unknown_syscall``, which only a compile checks), or a profile with a listener (its
agent is sent the annotations).
"""

from __future__ import annotations

import base64
import functools
import os
import sysconfig
from pathlib import Path
from typing import Any

import msgspec

from .runc_cli import executable, is_crun

__all__ = ["ANNOTATION", "FilterCache", "FilterKey"]

#: crun's annotation for a ready program (base64 of the ``sock_filter`` array).
ANNOTATION = "run.oci.seccomp_bpf_data"
#: The file crun writes the program it loads to, in a container's state directory.
_STATE_FILE = "seccomp.bpf"

#: What the program crun compiled depends on, as crun's own cache checksums it: crun's binary
#: and libseccomp's library (each by its identity on disk: device, inode, size, mtime; an
#: upgrade replaces the file), the kernel's release (libseccomp asks the kernel what it
#: supports) and the profile's bytes.
FilterKey = tuple[tuple[int, ...], tuple[int, ...], str, bytes]


#: The running kernel's release (a process outlives no kernel).
_KERNEL = os.uname().release


class FilterCache:
    """The programs crun compiled, by (binary, profile); the ``limit`` most recently learnt."""

    def __init__(self, limit: int = 32) -> None:
        self._programs: dict[FilterKey, str] = {}
        self._limit = limit
        #: The last profile seen and its bytes: the spec builder shares one profile object
        #: among the containers with the same capabilities (kept referenced: its id is not
        #: reused).
        self._profile: tuple[object, bytes] = (None, b"")

    def prepare(
        self, binary: str, spec: dict[str, Any], *, restoring: bool = False
    ) -> tuple[dict[str, Any], FilterKey | None]:
        """The spec to write for a create by ``binary``: ``spec`` itself, or a copy that carries
        the program kept for its profile; and the key to :meth:`learn` the program under once
        crun has compiled it (None: nothing to learn)."""
        key = None if restoring else self._key(binary, spec)
        if key is None:
            return spec, None
        program = self._programs.get(key)
        if program is None:
            return spec, key
        annotations = {**(spec.get("annotations") or {}), ANNOTATION: program}
        return {**spec, "annotations": annotations}, None

    def learn(self, key: FilterKey | None, state_dir: Path) -> None:
        """Keep the program crun wrote to ``state_dir`` (the container it just created) under
        ``key`` (from :meth:`prepare`; None: nothing to do)."""
        if key is None or key in self._programs:
            return
        try:
            program = (state_dir / _STATE_FILE).read_bytes()
        except OSError:
            return
        if not program or len(program) % 8:  # (a sock_filter is 8 bytes)
            return
        if len(self._programs) >= self._limit:
            del self._programs[next(iter(self._programs))]
        self._programs[key] = base64.b64encode(program).decode()

    def _key(self, binary: str, spec: dict[str, Any]) -> FilterKey | None:
        if not is_crun(binary):
            return None
        seccomp = (spec.get("linux") or {}).get("seccomp")
        annotations = spec.get("annotations") or {}
        if (
            not seccomp
            or seccomp.get("listenerPath")  # (its agent is sent the annotations: kept small)
            or any(name.startswith("run.oci.seccomp") for name in annotations)
        ):
            return None
        crun = _identity(executable(binary))
        if crun is None:
            return None
        if self._profile[0] is not seccomp:
            self._profile = (seccomp, msgspec.json.encode(seccomp))
        library = _identity(_libseccomp()) or ()
        return (crun, library, _KERNEL, self._profile[1])


def _identity(path: str | None) -> tuple[int, ...] | None:
    """A file's identity on disk (through links), or None if there is none."""
    try:
        found = os.stat(path) if path else None
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns) if found else None


@functools.cache
def _libseccomp() -> str | None:
    """Where the dynamic linker finds libseccomp first (a link to the versioned file)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for directory in ("/usr/local/lib", "/lib", "/usr/lib", "/lib64", "/usr/lib64"):
        for candidate in (
            f"{directory}/{multiarch}/libseccomp.so.2",
            f"{directory}/libseccomp.so.2",
        ):
            if os.path.exists(candidate):
                return candidate
    return None
