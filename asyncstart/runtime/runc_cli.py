"""The ``runc`` command line: which binary and global flags, argv, running it, its errors.

Every failure is a :class:`RuntimeFailure` carrying runc's own message: from its JSON log for
``create``/``restore`` (its stderr says less), from its output otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .base import RuntimeFailure

__all__ = ["RuncCli", "RuntimeChoice", "runc_error"]


@dataclass(frozen=True, slots=True)
class RuntimeChoice:
    """The runtime a container was created with (``HostConfig.Runtime``): every later runc call
    for it must use the same one."""

    #: The runtime's binary; None: the daemon's.
    binary: str | None = None
    #: Its global flags, given after the daemon's own.
    flags: tuple[str, ...] = ()


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


class RuncCli:
    """Runs ``runc`` on one state root (``--root``), with the daemon's binary and global flags.

    A call for a container names its :class:`RuntimeChoice`; a call without one (the state
    root's own queries after a restart: ``state``, ``list``) uses the daemon's binary alone.
    """

    def __init__(self, state_root: Path, binary: str, global_args: tuple[str, ...]) -> None:
        self.state_root = state_root
        self.binary = binary
        self.global_args = global_args

    def argv(
        self, *args: str, runtime: RuntimeChoice | None = None, log_file: Path | None = None
    ) -> list[str]:
        """The command line for ``runc [global flags] args``."""
        binary = (runtime.binary if runtime else None) or self.binary
        argv = [binary, "--root", str(self.state_root)]
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
            return await anyio.run_process(
                argv,
                check=False,
                stdin=fds.get("stdin", subprocess.DEVNULL),
                stdout=fds.get("stdout", subprocess.PIPE),
                stderr=fds.get("stderr", subprocess.PIPE),
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
    ) -> None:
        """``runc run --detach`` — create and start in one runc — (or ``restore`` from
        ``checkpoint``), the process's stdio on ``fds`` or, with a ``console_socket``, a pty
        sent there."""
        extra = ["--no-pivot"] if no_pivot else []
        if console_socket is not None:
            extra += ["--console-socket", console_socket]
        if checkpoint:
            images = os.path.join(checkpoint_dir or "", checkpoint)
            args = ["restore", "--detach", "--image-path", images]
        else:
            args = ["run", "--detach"]
        args += ["--bundle", str(bundle), "--pid-file", str(pid_file), *extra, container_id]
        result = await self.run(*args, runtime=runtime, log_file=log_file, fds=fds)
        if result.returncode != 0:
            raise RuntimeFailure(
                runc_error(log_file, (result.stderr or b"").decode(errors="replace"))
            )

    async def state(
        self, container_id: str, *, runtime: RuntimeChoice | None = None
    ) -> dict[str, Any] | None:
        """``runc state``: the container's state document, None if runc does not know it."""
        result = await self.run("state", container_id, runtime=runtime)
        if result.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    async def containers(self) -> list[dict[str, Any]]:
        """``runc list``: every container of the state root."""
        result = await self.run("list", "--format", "json")
        entries: list[dict[str, Any]] = json.loads(result.stdout or b"null") or []
        return entries

    async def delete(self, container_id: str, *, runtime: RuntimeChoice, force: bool) -> None:
        """``runc delete``; a container runc does not know is already deleted."""
        args = ["delete", *(["--force"] if force else []), container_id]
        result = await self.run(*args, runtime=runtime)
        if result.returncode != 0:
            message = (result.stderr or b"").decode(errors="replace")
            if "not exist" not in message and "not found" not in message:
                raise RuntimeFailure(f"runc delete failed: {message.strip()}")
