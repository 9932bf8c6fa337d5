"""The config ``docker import`` writes: the ``--change`` instructions (``changes.py``), on this
machine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from ..hostinfo import go_arch
from .changes import apply_changes

__all__ = ["container_config", "import_config"]

#: dockerd gives an imported image this PATH when no ``ENV`` change sets an environment.
_DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def container_config(changes: Iterable[str]) -> dict[str, Any]:
    """The image config's ``config`` section from Dockerfile-like ``--change`` lines (every
    instruction dockerd allows: ``CMD``, ``ENTRYPOINT``, ``ENV``, ``EXPOSE``, ``HEALTHCHECK``,
    ``LABEL``, ``ONBUILD``, ``STOPSIGNAL``, ``USER``, ``VOLUME``, ``WORKDIR``); 400 with
    dockerd's message on any other, or on one it refuses."""
    config = apply_changes({}, changes)
    if not config.get("Env"):
        config["Env"] = list(_DEFAULT_ENV)
    return config


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
