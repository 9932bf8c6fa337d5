"""A minimal busybox root filesystem tarball, built from the host's static busybox binary.

The test and demo image: ``/bin/busybox``, a symlink per applet, and the few files a process
expects (``/etc/passwd``, ``/etc/group``, empty mount points).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

__all__ = ["build_busybox_tar", "find_static_busybox", "missing_for_real_containers"]

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def find_static_busybox() -> str | None:
    """The path of a busybox binary that runs without shared libraries, if the host has one."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if candidate and Path(candidate).is_file():
            with open(candidate, "rb") as binary:
                if b"ld-linux" not in binary.read(1 << 20):
                    return candidate
    return None


def missing_for_real_containers() -> list[str]:
    """What this host lacks to run the busybox image on runc (empty: nothing)."""
    return [
        reason
        for reason, missing in (
            ("needs root", os.geteuid() != 0),
            ("needs runc", shutil.which("runc") is None),
            ("needs a static busybox", find_static_busybox() is None),
        )
        if missing
    ]


def build_busybox_tar(target: Path, busybox: str | None = None) -> Path:
    """Write the image's rootfs tar to ``target``; raises FileNotFoundError without busybox."""
    binary = busybox or find_static_busybox()
    if binary is None:
        raise FileNotFoundError("no static busybox binary (Debian: apt-get install busybox-static)")
    applets = subprocess.run(
        [binary, "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    now = int(time.time())

    def entry(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, now
        return info

    with tarfile.open(target, "w") as archive:
        for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys",
                          "dev", "tmp", "root", "var", "run"):  # fmt: skip
            archive.addfile(
                entry(directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755)
            )
        with open(binary, "rb") as source:
            data = source.read()
        info = entry("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        for applet in applets:
            if applet == "bin/busybox":
                continue
            link = entry(applet, tarfile.SYMTYPE, 0o777)
            link.linkname = "/bin/busybox"
            archive.addfile(link)
        for name, text in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            payload = text.encode()
            info = entry(name, tarfile.REGTYPE, 0o644)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return target
