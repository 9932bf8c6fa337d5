"""``docker exec``: what an exec instance is, dockerd's checks of its config, the OCI process it
runs, and what ``GET /exec/{id}/json`` shows. Pure; the daemon runs them
(:meth:`asyncstart.Daemon.exec_create`, ``exec_start``) through the container's runtime.

An exec runs in a running container with the container's process as its model: its
environment (the exec's own added), user, working directory, capabilities (all of them when
privileged), AppArmor profile and ``noNewPrivileges``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .config import CAPABILITIES
from .detach import detach_sequence
from .ids import random_hex
from .spec import user_ids

__all__ = [
    "ExecConfig",
    "ExecInstance",
    "console_size",
    "container_exec_ids",
    "exec_process",
    "parse_exec_config",
    "ps_table",
]


@dataclass(frozen=True, slots=True)
class ExecConfig:
    """What ``POST /containers/{id}/exec`` asked."""

    cmd: tuple[str, ...]
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    privileged: bool = False
    detach_keys: str = ""
    #: The terminal's height and width, for a start that gives none.
    console_size: tuple[int, int] | None = None


def parse_exec_config(body: Mapping[str, Any]) -> ExecConfig:
    """dockerd's checks of an exec's config (its 400s); what is not applied is refused."""
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd:
        raise errors.InvalidParameter("No exec command specified")
    if not isinstance(cmd, list) or not all(isinstance(arg, str) for arg in cmd):
        raise errors.InvalidParameter("invalid Cmd: expected a list of strings")
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(item, str) for item in env):
        raise errors.InvalidParameter("invalid Env: expected a list of strings")
    for item in env:
        if not item.partition("=")[0]:
            raise errors.InvalidParameter(f"invalid environment variable: {item}")
    working_dir = body.get("WorkingDir") or ""
    if not isinstance(working_dir, str) or (working_dir and not working_dir.startswith("/")):
        raise errors.InvalidParameter(
            f"the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )
    for key in ("User", "DetachKeys"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise errors.InvalidParameter(f"invalid {key}: expected a string")
    detach_keys = body.get("DetachKeys") or ""
    if detach_keys:
        try:
            detach_sequence(detach_keys)
        except errors.InvalidParameter:
            raise errors.SystemError(f"Invalid escape keys ({detach_keys}) provided") from None
    return ExecConfig(
        cmd=tuple(cmd),
        tty=bool(body.get("Tty")),
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")),
        env=tuple(env),
        user=body.get("User") or "",
        working_dir=working_dir,
        privileged=bool(body.get("Privileged")),
        detach_keys=detach_keys,
        console_size=console_size(body.get("ConsoleSize")),
    )


def console_size(value: Any) -> tuple[int, int] | None:
    """``ConsoleSize``: [height, width], unsigned numbers (dockerd's 400 otherwise)."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)
    ):
        raise errors.InvalidParameter("invalid ConsoleSize: expected [height, width]")
    return value[0], value[1]


def exec_process(
    container_process: Mapping[str, Any],
    config: ExecConfig,
    *,
    passwd: str | None,
    group: str | None,
) -> dict[str, Any]:
    """The OCI process of an exec, modelled on the container's (its ``config.json``'s)."""
    process: dict[str, Any] = copy.deepcopy(dict(container_process))
    process["args"] = list(config.cmd)
    process["terminal"] = config.tty
    process.pop("consoleSize", None)
    env = {item.partition("=")[0]: item for item in process.get("env") or ()}
    env |= {item.partition("=")[0]: item for item in config.env}
    if config.tty:
        env.setdefault("TERM", "TERM=xterm")
    process["env"] = list(env.values())
    if config.working_dir:
        process["cwd"] = config.working_dir
    if config.user:
        process["user"] = user_ids(config.user, passwd, group)
    if config.privileged:
        every = list(CAPABILITIES)
        process["capabilities"] = {k: every for k in ("bounding", "effective", "permitted")}
    return process


@dataclass(slots=True)
class ExecInstance:
    """One exec: created, then started once, then ended with its exit code."""

    container_id: str
    config: ExecConfig
    id: str = field(default_factory=lambda: random_hex(32))
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0

    @property
    def exit_code_known(self) -> bool:
        return self.exit_code is not None

    def view(self) -> dict[str, Any]:
        """dockerd's ``GET /exec/{id}/json``."""
        config = self.config
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": config.tty,
                "entrypoint": config.cmd[0],
                "arguments": list(config.cmd[1:]),
                "privileged": config.privileged,
                **({"user": config.user} if config.user else {}),
            },
            "OpenStdin": config.attach_stdin,
            "OpenStderr": config.attach_stderr,
            "OpenStdout": config.attach_stdout,
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": config.detach_keys,
            "Pid": self.pid,
        }

    def summary(self) -> str:
        """What events name it by: dockerd's entrypoint, a space, the arguments."""
        return f"{self.config.cmd[0]} {' '.join(self.config.cmd[1:])}"


def container_exec_ids(execs: Sequence[ExecInstance], container_id: str) -> list[str] | None:
    """Inspect's ``ExecIDs``: the container's exec instances not yet ended (null if none),
    as dockerd's."""
    ids = [e.id for e in execs if e.container_id == container_id and not e.exit_code_known]
    return ids or None


def ps_table(output: str, pids: Sequence[int]) -> dict[str, Any]:
    """dockerd's ``docker top`` answer from ``ps`` output: the header's titles, and the rows of
    the container's processes (by the ``PID`` column; the last column may hold spaces)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise errors.SystemError("Error running ps: no output")
    titles = lines[0].split()
    if "PID" not in titles:
        raise errors.SystemError("Couldn't find PID field in ps output")
    column = titles.index("PID")
    wanted = {str(pid) for pid in pids}
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > column and fields[column] in wanted:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}
