"""The ``runc`` command line — and that of runtimes that share it (crun) —: which binary and
global flags, argv, running it, its errors.

Every failure is a :class:`RuntimeFailure` carrying runc's own message: from its JSON log for
``create``/``restore`` (its stderr says less), from its output otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import RuntimeFailure
from .spawn import run_process

__all__ = [
    "RuncCli",
    "RuntimeChoice",
    "create_failure",
    "launcher",
    "runc_error",
    "runtime_env",
    "runtime_environb",
    "starts_in_one_call",
]


@dataclass(frozen=True, slots=True)
class RuntimeChoice:
    """The runtime a container was created with (``HostConfig.Runtime``): every later runc call
    for it must use the same one."""

    #: The runtime's binary; None: the daemon's.
    binary: str | None = None
    #: Its global flags, given after the daemon's own.
    flags: tuple[str, ...] = ()


#: crun (before 1.9) refuses a hybrid cgroup layout whose cgroup2 half has controllers of its
#: own ("cgroups in hybrid mode not supported"). Run in a mount namespace of its own without
#: that mount, it sees the v1 hierarchies alone and uses them: every limit is still applied
#: (the controllers the v1 hierarchies have). The namespace is a copy of the daemon's, so the
#: root filesystems and network namespaces it mounts are there; nothing is unmounted outside.
_HIDE_UNIFIED = ("unshare", "--mount", "--propagation", "private", "sh", "-c")
_UMOUNT_UNIFIED = "umount -l /sys/fs/cgroup/unified"
#: What the launcher's shell runs then, by default: the runtime (``$0``) with its arguments.
EXEC_RUNTIME = 'exec "$0" "$@"'


#: What runtime processes (and conmon, which passes its environment on) must not inherit from
#: the daemon's environment: systemd's, for a service (the daemon's, or a program's that embeds
#: the engine), which the runtimes take as meant for the container.
#:
#: - ``NOTIFY_SOCKET`` (a ``Type=notify`` service): runc and crun pass that socket into the
#:   container and wait for it to say ``READY=1`` there; ``runc run --detach`` does not return
#:   until then, and most containers never do. (containerd keeps it from every runc too.)
#: - ``LISTEN_FDS`` (socket activation), with ``LISTEN_PID`` and ``LISTEN_FDNAMES``: crun hands
#:   that many of its descriptors from 3 on to the container, whatever they are (its own log
#:   file, open for writing, was one), and sets ``LISTEN_PID=1`` in its environment.
#:
#: dockerd passes neither to a container.
_WITHHELD = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


_WITHHELD_B = tuple(name.encode() for name in _WITHHELD)


def runtime_env() -> dict[str, str] | None:
    """The environment of a runtime process: the daemon's, less what the runtime must not
    inherit (``_WITHHELD``); None when that is the daemon's as it is (nothing to copy)."""
    if not any(name in os.environ for name in _WITHHELD):
        return None
    return {name: value for name, value in os.environ.items() if name not in _WITHHELD}


def runtime_environb() -> dict[bytes, bytes]:
    """:func:`runtime_env` as bytes, always a copy (for a caller that adds to it): no decoding
    and encoding of the whole environment again at every start."""
    return {name: value for name, value in os.environb.items() if name not in _WITHHELD_B}


#: The subcommands that set a container's cgroups up.
_MAKES_CGROUPS = frozenset({"create", "run", "restore", "exec", "update"})


@functools.cache
def executable(name: str) -> str:
    """The file ``name`` runs as, found on PATH once (a path is itself)."""
    return shutil.which(name) or name


@functools.cache
def launcher(
    binary: str, then: str = EXEC_RUNTIME, cgroup_root: Path = Path("/sys/fs/cgroup")
) -> tuple[str, ...]:
    """What runs ``binary`` on this host: nothing but itself, or, for crun on a hybrid cgroup
    layout with cgroup2 controllers, the mount namespace that hides the cgroup2 half — a
    shell that hides it, then runs ``then`` (a shell line; ``$0``: the runtime's binary, which
    follows the launcher, and ``$@``: its arguments)."""
    if not is_crun(binary):
        return ()
    try:
        controllers = (cgroup_root / "unified" / "cgroup.controllers").read_text().split()
    except OSError:
        return ()  # unified (cgroup2 only, which crun handles) or legacy
    return (*_HIDE_UNIFIED, f"{_UMOUNT_UNIFIED} || exit; {then}") if controllers else ()


def starts_in_one_call(binary: str) -> bool:
    """Whether, with the daemon as the init's reaper, ``run --detach`` may create and start
    at once. Not with crun: its ``run --detach`` returns before its own child, the init's
    parent, has exited, so an init that ends at once can still be that child's zombie when the
    daemon asks for its code (ECHILD: the code is lost). ``crun create`` returns once the
    process waits to be started, so ``create`` + ``start`` it is. (Under conmon, which reaps
    whatever comes to it, crun runs detached too.)"""
    return not is_crun(binary)


def is_crun(binary: str) -> bool:
    return os.path.basename(binary) == "crun"


def runc_error(log_file: Path, fallback: str) -> str:
    """The last error runc wrote to its JSON log, else ``fallback``."""
    message = ""
    with contextlib.suppress(OSError):
        for line in log_file.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = entry.get("msg", "")
    return message or fallback.strip() or "runc failed"


def create_failure(log_file: Path, said: str, binary: str, command: str) -> RuntimeFailure:
    """A failed ``create``/``run``/``restore``: the runtime's logged error, else what it
    ``said``, else that it gave no reason (and, for a restore, what that usually means)."""
    silent = f"{os.path.basename(binary)} {command} failed and gave no reason"
    if command == "restore":
        silent += " (restoring a checkpoint needs CRIU and a runtime built with it)"
    return RuntimeFailure(runc_error(log_file, said or silent))


class RuncCli:
    """Runs ``runc`` on one state root (``--root``), with the daemon's binary and global flags.

    A call for a container names its :class:`RuntimeChoice`; a call without one (the state
    root's own queries after a restart: ``state``, ``list``) uses the daemon's binary alone.
    """

    def __init__(self, state_root: Path, binary: str, global_args: tuple[str, ...]) -> None:
        self.state_root = state_root
        self.binary = binary
        self.global_args = global_args

    def binary_of(self, runtime: RuntimeChoice | None) -> str:
        """The binary a container's runtime choice runs: its own, else the daemon's."""
        return (runtime.binary if runtime else None) or self.binary

    def argv(
        self, *args: str, runtime: RuntimeChoice | None = None, log_file: Path | None = None
    ) -> list[str]:
        """The command line for ``runc [global flags] args``."""
        binary = self.binary_of(runtime)
        # Only what makes cgroups needs the launcher: start, kill, pause, delete and the rest
        # work where they are (three processes fewer each).
        prefix = launcher(binary) if args and args[0] in _MAKES_CGROUPS else ()
        argv = [*prefix, binary, "--root", str(self.state_root)]
        if log_file is not None:
            argv += ["--log", str(log_file), "--log-format", "json"]
        if runtime is not None:
            argv += [*self.global_args, *runtime.flags]
        return argv + list(args)

    async def run(
        self,
        *args: str,
        runtime: RuntimeChoice | None = None,
        log_file: Path | None = None,
        fds: dict[str, int] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run runc to its end; ``fds`` gives its ``stdin``/``stdout``/``stderr`` (else none
        for stdin, and captured output)."""
        argv = self.argv(*args, runtime=runtime, log_file=log_file)
        fds = fds or {}
        try:
            return await run_process(
                argv,
                stdin=fds.get("stdin", subprocess.DEVNULL),
                stdout=fds.get("stdout", subprocess.PIPE),
                stderr=fds.get("stderr", subprocess.PIPE),
                env=runtime_env(),
            )
        except OSError as exc:
            raise RuntimeFailure(f"failed to run {argv[0]}: {exc.strerror}") from exc

    async def checked(self, *args: str, runtime: RuntimeChoice) -> None:
        """Run runc; a non-zero exit raises :class:`RuntimeFailure` with its output."""
        result = await self.run(*args, runtime=runtime)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise RuntimeFailure(f"runc {args[0]} failed: {message}")

    async def quietly(self, *args: str, runtime: RuntimeChoice | None = None) -> None:
        """Run runc for a clean-up whose failure changes nothing."""
        with contextlib.suppress(RuntimeFailure):
            await self.run(*args, runtime=runtime)

    async def create(
        self,
        container_id: str,
        bundle: Path,
        *,
        runtime: RuntimeChoice,
        pid_file: Path,
        log_file: Path,
        fds: dict[str, int],
        console_socket: str | None = None,
        checkpoint: str | None = None,
        checkpoint_dir: str | None = None,
        no_pivot: bool = False,
        start: bool = True,
    ) -> None:
        """``runc run --detach`` — create and start in one runc — (``start`` False: ``create``
        only; or ``restore`` from ``checkpoint``), the process's stdio on ``fds`` or, with a
        ``console_socket``, a pty sent there."""
        extra = ["--no-pivot"] if no_pivot else []
        if console_socket is not None:
            extra += ["--console-socket", console_socket]
        if checkpoint:
            images = os.path.join(checkpoint_dir or "", checkpoint)
            args = ["restore", "--detach", "--image-path", images]
        else:
            args = ["run", "--detach"] if start else ["create"]
        args += ["--bundle", str(bundle), "--pid-file", str(pid_file), *extra, container_id]
        result = await self.run(*args, runtime=runtime, log_file=log_file, fds=fds)
        if result.returncode != 0:
            # (Its stderr is the container's: a runtime that logs nothing leaves only this.)
            stderr = (result.stderr or b"").decode(errors="replace")
            binary = self.binary_of(runtime)
            raise create_failure(log_file, stderr, binary, args[0])

    async def state(
        self, container_id: str, *, runtime: RuntimeChoice | None = None
    ) -> dict[str, Any] | None:
        """``runc state``: the container's state document, None if runc does not know it."""
        result = await self.run("state", container_id, runtime=runtime)
        if result.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    async def containers(self, *, runtime: RuntimeChoice | None = None) -> list[dict[str, Any]]:
        """``runc list``: every container of the state root that runtime knows."""
        result = await self.run("list", "--format", "json", runtime=runtime)
        entries: list[dict[str, Any]] = json.loads(result.stdout or b"null") or []
        return entries

    def has_state(self, container_id: str) -> bool:
        """Whether the runtime may know the container: runc and crun keep a directory per
        container in their root (a stat of the exec root, which is not worth a thread)."""
        return os.path.lexists(self.state_root / container_id)

    async def delete(self, container_id: str, *, runtime: RuntimeChoice, force: bool) -> None:
        """``runc delete``; a container runc does not know is already deleted, and one with
        no state (:meth:`has_state`) is not asked about: no runtime is run for a removal after
        the exit's clean-up."""
        if not self.has_state(container_id):
            return
        args = ["delete", *(["--force"] if force else []), container_id]
        result = await self.run(*args, runtime=runtime)
        if result.returncode != 0:
            message = (result.stderr or b"").decode(errors="replace")
            if "not exist" not in message and "not found" not in message:
                raise RuntimeFailure(f"runc delete failed: {message.strip()}")
