"""The config ``docker import`` writes: the ``--change`` instructions, on this machine."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable
from typing import Any

from .. import errors
from ..hostinfo import go_arch

__all__ = ["container_config", "import_config"]

_CHANGE_KEYS = {"CMD": "Cmd", "ENTRYPOINT": "Entrypoint", "ENV": "Env", "WORKDIR": "WorkingDir",
                "USER": "User"}  # fmt: skip
#: dockerd gives an imported image this PATH when no ``ENV`` change sets an environment.
_DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def container_config(changes: Iterable[str]) -> dict[str, Any]:
    """The image config's ``config`` section from Dockerfile-like ``--change`` lines (``CMD``,
    ``ENTRYPOINT``, ``ENV``, ``WORKDIR``, ``USER``); 400 on any other instruction."""
    config: dict[str, Any] = {"Env": []}
    for change in changes:
        keyword, _, rest = change.strip().partition(" ")
        key = _CHANGE_KEYS.get(keyword.upper())
        if key is None:
            raise errors.InvalidParameter(f"{keyword} is not a valid change command")
        rest = rest.strip()
        if key in ("Cmd", "Entrypoint"):
            config[key] = _command(keyword, rest)
        elif key == "Env":
            name, eq, value = rest.partition("=")
            if not eq:  # the legacy ``ENV NAME value`` form
                name, _, value = rest.partition(" ")
            env = [e for e in config["Env"] if not e.startswith(name + "=")]
            config["Env"] = [*env, f"{name}={value.strip()}"]
        else:
            config[key] = shlex.split(rest)[0] if rest else ""
    if not config["Env"]:
        config["Env"] = list(_DEFAULT_ENV)
    return config


def _command(keyword: str, rest: str) -> Any:
    """The exec form (JSON) as written; the shell form run by ``/bin/sh -c``."""
    if not rest.startswith("["):
        return ["/bin/sh", "-c", rest]
    try:
        return json.loads(rest)
    except json.JSONDecodeError as exc:
        raise errors.InvalidParameter(f"invalid {keyword}: {exc}") from None


def import_config(config: dict[str, Any], diff_id: str) -> bytes:
    """The serialised image config of a one-layer image made by ``docker import``."""
    document = {
        "architecture": go_arch(),
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "asyncstart import", "comment": "Imported from tarball"}],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
