"""``docker create``'s checks and defaults: from the client's JSON to a new container record.

dockerd's order of checks is kept (the host config, the runtime, the image, the name, then the
command), so a request with several faults gets the error dockerd would give first.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import errors
from .config import (
    Config,
    HostConfig,
    merge_image_defaults,
    not_applied,
    parse_config,
    parse_host_config,
    validate_config,
    validate_host_config,
    validate_name,
)
from .images.store import ImageStore
from .names import generate_name
from .record import ContainerRecord, new_id
from .views import format_time

__all__ = ["new_record"]

#: Settings dockerd applies that this engine does not (yet) and its structs do not hold (those
#: it holds are checked by ``validate_config``/``validate_host_config``): accepted only with the
#: values that ask for nothing (what clients send by default), else refused at create.
_NOT_APPLIED: dict[str, dict[str, tuple[Any, ...]]] = {
    "HostConfig": {
        "PidMode": (None, ""),
        "IpcMode": (None, "", "private", "shareable"),  # its own namespace, as ours
        "UTSMode": (None, ""),
        "UsernsMode": (None, ""),
        "CgroupnsMode": (None, ""),
        "Devices": (None, []),
        "DeviceCgroupRules": (None, []),
        "DeviceRequests": (None, []),
        "GroupAdd": (None, []),
        "Init": (None, False),
        "Links": (None, []),
        "VolumesFrom": (None, []),
        "VolumeDriver": (None, ""),
        "PublishAllPorts": (None, False),
    },
    "Config": {},
}


def new_record(
    name: str | None,
    config: Config | Mapping[str, Any] | None,
    host_config: HostConfig | Mapping[str, Any] | None,
    *,
    images: ImageStore,
    runtimes: Mapping[str, object],
    name_taken: Callable[[str], bool],
) -> ContainerRecord:
    """The record of a container to create, or dockerd's 400/404 for what is wrong."""
    for section, given in (("Config", config), ("HostConfig", host_config)):
        if isinstance(given, Mapping):
            _refuse_not_applied(section, given)
    parsed = parse_config(dict(config) if isinstance(config, Mapping) else config)
    host = parse_host_config(dict(host_config) if isinstance(host_config, Mapping) else host_config)
    validate_config(parsed)
    validate_host_config(host)
    if host.runtime and host.runtime not in runtimes:
        raise errors.InvalidParameter(f"unknown or invalid runtime name: {host.runtime}")
    image_id, image = images.container_image(parsed.image or "")
    if image is not None:  # (None: an image only the fake runtime's store lets by)
        merge_image_defaults(parsed, image)
    canonical = validate_name(name) if name else generate_name(name_taken)
    if not parsed.cmd and not parsed.entrypoint:
        raise errors.InvalidParameter("No command specified")
    container_id = new_id()
    if not parsed.hostname:
        # dockerd: the host's name in host mode, else the short ID.
        host_mode = host.network_mode == "host"
        parsed.hostname = socket.gethostname() if host_mode else container_id[:12]
    record = ContainerRecord(
        id=container_id,
        name=canonical,
        created=format_time(time.time()),
        image=image_id,
        config=parsed,
        host_config=host,
    )
    return record


def _refuse_not_applied(section: str, given: Mapping[str, Any]) -> None:
    for key, neutral in _NOT_APPLIED[section].items():
        value = given.get(key)
        if value not in neutral:
            raise not_applied(section, key, value)
