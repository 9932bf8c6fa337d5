"""``docker create``'s checks and defaults: from the client's JSON to a new container record.

dockerd's order of checks is kept (the host config, the runtime, the image, the name, then the
command), so a request with several faults gets the error dockerd would give first.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import errors
from .config import (
    Config,
    HostConfig,
    merge_image_defaults,
    parse_config,
    parse_host_config,
    validate_config,
    validate_host_config,
    validate_name,
)
from .images.store import ImageStore
from .logs import check_log_options
from .mounts import MountPoint, parse_mounts
from .names import generate_name
from .record import ContainerRecord, new_id
from .settings import HostFacts, fill_defaults, refuse_health_check, validate_platform
from .spec import MASKED_PATHS, READONLY_PATHS
from .store import encode_json
from .views import format_time

__all__ = ["new_record"]


def new_record(
    name: str | None,
    config: Config | Mapping[str, Any] | None,
    host_config: HostConfig | Mapping[str, Any] | None,
    *,
    images: ImageStore,
    runtimes: Mapping[str, object],
    default_runtime: str = "runc",
    name_taken: Callable[[str], bool],
    facts: HostFacts,
    daemon_root: str = "",
    inherited: Sequence[MountPoint] = (),
) -> ContainerRecord:
    """The record of a container to create, or dockerd's 400/404 for what is wrong. Its
    mount points are parsed (dockerd's 400s), with ``inherited`` (``VolumesFrom``'s, which the
    daemon finds); its volumes are the daemon's to make."""
    parsed = parse_config(dict(config) if isinstance(config, Mapping) else config)
    host = parse_host_config(dict(host_config) if isinstance(host_config, Mapping) else host_config)
    # Before any check reads a string of it: one no JSON can hold is the request's fault.
    encode_json((parsed, host))
    validate_config(parsed)
    validate_host_config(host)
    check_log_options(host.log_config.config)
    validate_platform(parsed, host, facts)
    if host.runtime and host.runtime not in runtimes:
        raise errors.InvalidParameter(f"unknown or invalid runtime name: {host.runtime}")
    image_id, image = images.container_image(parsed.image or "")
    if image is not None:  # (None: an image only the fake runtime's store lets by)
        merge_image_defaults(parsed, image)
        refuse_health_check(parsed)  # the image's, now merged
    canonical = validate_name(name) if name else generate_name(name_taken)
    if not parsed.cmd and not parsed.entrypoint:
        raise errors.InvalidParameter("No command specified")
    container_id = new_id()
    if not parsed.hostname:
        # dockerd: the host's name in host mode, else the short ID.
        host_mode = host.network_mode == "host"
        parsed.hostname = socket.gethostname() if host_mode else container_id[:12]
    fill_defaults(
        host, facts, runtime=default_runtime, masked=MASKED_PATHS, readonly=READONLY_PATHS
    )
    points = parse_mounts(
        host.binds,
        host.mounts,
        sorted((parsed.volumes or {}).keys()),
        new_id,
        tmpfs=(host.tmpfs or {}).keys(),
        inherited=inherited,
        volume_driver=host.volume_driver,
        daemon_root=daemon_root,
        source_exists=os.path.exists,
    )
    record = ContainerRecord(
        id=container_id,
        name=canonical,
        created=format_time(time.time()),
        image=image_id,
        config=parsed,
        host_config=host,
        mount_points=points,
    )
    return record
