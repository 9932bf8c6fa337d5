"""Seccomp and ``SecurityOpt`` in real containers (root, runc, the busybox image).

Networking is ``none`` on the loopback driver: no bridge, so these run beside the bridge tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import asyncstart
from asyncstart.images.busybox import build_busybox_tar

from .helpers import real_containers
from .test_runc import _Roots, assert_nothing_left, open_clean

pytestmark = real_containers()

#: The reproduction of the issue: a user namespace in which the container's root may mount.
ESCAPE = ["unshare", "-U", "-r", "-m", "sh", "-c", "mount -t tmpfs x /tmp && echo mounted"]


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_tar(tmp_path_factory.mktemp("image") / "busybox.tar")


@pytest.fixture
def roots(tmp_path: Path) -> _Roots:
    return _Roots(tmp_path)


@pytest.fixture
async def daemon(roots: _Roots, busybox_tar: Path) -> AsyncIterator[asyncstart.Daemon]:
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", network="loopback"
    )
    async with open_clean(config) as opened:
        await opened.image_import(str(busybox_tar), repo="busybox", tag="latest")
        yield opened


async def run(daemon: asyncstart.Daemon, cmd: list[str], **host: Any) -> tuple[int, str, str]:
    """Run ``cmd`` to its end: (exit code, stdout, stderr); the container is removed."""
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": cmd},
        host_config={"NetworkMode": "none", **host},
    )
    await daemon.container_start(cid)
    status = (await daemon.container_wait(cid))["StatusCode"]
    out = {"stdout": b"", "stderr": b""}
    async for stream, data in daemon.container_logs(cid):
        out[stream] += data
    await daemon.container_remove(cid)
    return status, out["stdout"].decode(), out["stderr"].decode()


def status_line(text: str, field: str) -> str:
    return next(
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field)
    )


async def test_the_default_profile_is_applied_and_stops_the_namespace_escape(
    daemon: asyncstart.Daemon, roots: _Roots
) -> None:
    code, out, _ = await run(daemon, ["cat", "/proc/self/status"])
    assert code == 0
    assert status_line(out, "Seccomp:") == "2", "filter mode"
    assert status_line(out, "NoNewPrivs:") == "0"
    code, out, err = await run(daemon, ESCAPE)
    assert code != 0 and "mounted" not in out
    assert "Operation not permitted" in err
    assert_nothing_left(roots)


async def test_what_containers_do_still_works_under_the_filter(daemon: asyncstart.Daemon) -> None:
    """Processes, pipes, signals, files, sockets on lo: the demo's and the tests' commands."""
    script = (
        "set -e; sleep 0.05 & wait $!; echo a | cat | wc -c; mkdir -p /tmp/d; "
        "echo x > /tmp/d/f; mv /tmp/d/f /tmp/d/g; ln -s g /tmp/d/h; chmod 600 /tmp/d/g; "
        "cat /tmp/d/h; rm -r /tmp/d; sleep 30 & kill -TERM $!; wait $! || echo term=$?; "
        "nc -l -p 8080 > /tmp/got & sleep 0.2; "
        "echo over-tcp | nc 127.0.0.1 8080; sleep 0.2; cat /tmp/got; id -u; date +%Y >/dev/null; "
        "chroot / true; echo done"
    )
    code, out, err = await run(daemon, ["sh", "-c", script])
    assert (code, err.replace("Terminated\n", "")) == (0, "")  # the shell's job notice
    assert out.split() == ["2", "x", "term=143", "over-tcp", "0", "done"]


async def test_unconfined_has_no_filter_and_lets_the_escape_through(
    daemon: asyncstart.Daemon,
) -> None:
    options = {"SecurityOpt": ["seccomp=unconfined"]}
    code, out, _ = await run(daemon, ["cat", "/proc/self/status"], **options)
    assert (code, status_line(out, "Seccomp:")) == (0, "0")
    code, out, err = await run(daemon, ESCAPE, **options)
    assert (code, out.strip()) == (0, "mounted"), err


async def test_sys_admin_added_lets_unshare_and_mount_through(daemon: asyncstart.Daemon) -> None:
    code, out, err = await run(daemon, ESCAPE, CapAdd=["SYS_ADMIN"])
    assert (code, out.strip()) == (0, "mounted"), err
    code, out, _ = await run(daemon, ["cat", "/proc/self/status"], CapAdd=["SYS_ADMIN"])
    assert status_line(out, "Seccomp:") == "2", "still filtered: the filter follows the caps"


async def test_a_user_profile_is_the_filter(daemon: asyncstart.Daemon) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        ],
    }  # fmt: skip
    # As the docker CLI sends --security-opt seccomp=<file>: the file's JSON, compacted.
    options = {"SecurityOpt": ["seccomp=" + json.dumps(profile, separators=(",", ":"))]}
    code, out, err = await run(
        daemon, ["sh", "-c", "mkdir /tmp/x || echo refused; touch /tmp/y && echo touched"],
        **options,
    )  # fmt: skip
    assert (code, out.split()) == (0, ["refused", "touched"])
    assert "Permission denied" in err  # errnoRet 13
    code, out, err = await run(daemon, ESCAPE, **options)  # unshare allowed by this profile
    assert code != 0 and "mounted" not in out


@pytest.mark.parametrize(
    ("option", "expected"),
    [("no-new-privileges=true", "1"), ("no-new-privileges:true", "1"),
     ("no-new-privileges", "1"), ("no-new-privileges=false", "0")],
)  # fmt: skip
async def test_no_new_privileges_reaches_the_process(
    daemon: asyncstart.Daemon, option: str, expected: str
) -> None:
    code, out, _ = await run(daemon, ["cat", "/proc/self/status"], SecurityOpt=[option])
    assert (code, status_line(out, "NoNewPrivs:")) == (0, expected)


async def test_apparmor_and_labels_are_kept_not_applied_on_this_host(
    daemon: asyncstart.Daemon,
) -> None:
    """No AppArmor or SELinux here: dockerd accepts the options and applies nothing."""
    options = ["apparmor=docker-default", "label=type:svirt_apache_t", "label=disable"]
    assert await run(daemon, ["true"], SecurityOpt=options) == (0, "", "")
