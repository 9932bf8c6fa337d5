"""A container's bundle directory: ``config.json``, the runtime it was created with, the files
runc leaves there (pid file, JSON log) and the stdio FIFOs' names."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .runc_cli import RuntimeChoice

__all__ = ["BundleDir"]


@dataclass(frozen=True, slots=True)
class BundleDir:
    """The directory of one container's OCI bundle (``exec_root/<id>/``)."""

    path: Path

    @property
    def pid_file(self) -> Path:
        """Where runc writes the init's pid."""
        return self.path / "init.pid"

    @property
    def runc_log(self) -> Path:
        """runc's JSON log for ``create``/``restore`` (its error message)."""
        return self.path / "runc.log"

    @property
    def _runtime_file(self) -> Path:
        return self.path / "runtime.json"

    def fifo(self, stream: str) -> Path:
        """The FIFO of one standard stream (``stdin``, ``stdout``, ``stderr``)."""
        return self.path / f"init-{stream}"

    def make(self) -> None:
        """Create the directory (0700) if it is not there."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write(
        self, spec: dict[str, Any], *, owner: tuple[int, int] | None, runtime: RuntimeChoice
    ) -> None:
        """Write ``config.json`` (atomically) and record ``runtime``; the directory is 0700 and
        belongs to ``owner`` (the remapped root) if given."""
        os.chmod(self.path, 0o700)
        if owner is not None:
            os.chown(self.path, *owner)
        tmp = self.path / "config.json.tmp"
        tmp.write_bytes(msgspec.json.encode(spec))  # (several times json.dumps's speed)
        os.replace(tmp, self.path / "config.json")
        # A daemon that reopens on the container later must drive it with the same runtime.
        self._runtime_file.write_text(
            json.dumps({"binary": runtime.binary, "args": list(runtime.flags)})
        )

    def runtime(self) -> RuntimeChoice:
        """The runtime the bundle was created with (the daemon's if it is not recorded)."""
        try:
            recorded = json.loads(self._runtime_file.read_text())
            return RuntimeChoice(recorded.get("binary"), tuple(recorded.get("args", ())))
        except (OSError, ValueError):
            return RuntimeChoice()

    def read_pid(self) -> int:
        """The init's pid from runc's pid file."""
        return int(self.pid_file.read_text())

    def remove(self) -> None:
        """Delete the directory and everything in it, if it is there."""
        shutil.rmtree(self.path, ignore_errors=True)
