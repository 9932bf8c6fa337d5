"""Reopening on the same roots: the daemon's records reconciled with what still runs.

Every record gets its actor. A container recorded as running whose process the runtime still
has is taken back (its output, published ports and names again); one whose process is gone
becomes an exit (code 255), so the same undo as at any exit gives back its mount and network.
What no record claims — runtime state, mounts, bundles, namespaces — is deleted.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from . import errors
from ._log import get_logger
from .actor import ContainerActor
from .lifecycle import Request
from .network.ports import PortProxy
from .network.resolver import Resolver
from .record import ContainerRecord
from .steps import primary_address
from .store import RecordStore
from .wiring import Drivers

__all__ = ["reconcile"]

log = get_logger("asyncstart.reconcile")


async def reconcile(
    records: RecordStore,
    adopt: Callable[[ContainerRecord], Awaitable[ContainerActor]],
    drivers: Drivers,
    ports: PortProxy,
    exec_root: Path,
    resolver: Resolver,
) -> None:
    """Give every record its actor (``adopt``), take live processes back, clean up the rest."""
    await anyio.to_thread.run_sync(drivers.images.sweep)
    loaded = await records.load_all()
    live: set[str] = set()
    for record in loaded:
        actor = await adopt(record)
        if await actor.request(Request.ADOPT):
            live.add(record.id)
            await _republish(ports, record)
            await _serve_names(resolver, record)
    # A container whose record could not be read keeps what it holds, for a person to decide.
    spared = live | records.quarantined
    await drivers.runtime.cleanup(spared)
    await drivers.mounter.cleanup(spared, {r.id for r in loaded} | spared)
    await drivers.network.cleanup(spared)
    for bundle in await anyio.to_thread.run_sync(lambda: list(exec_root.iterdir())):
        if bundle.is_dir() and bundle.name not in spared and len(bundle.name) == 64:
            await anyio.to_thread.run_sync(shutil.rmtree, bundle, True)


async def _serve_names(resolver: Resolver, record: ContainerRecord) -> None:
    """A live container's names and DNS server (they lived in the old daemon)."""
    try:
        await resolver.attach(record.id, record.network_settings, record.host_config.dns or ())
    except errors.DockerError as exc:
        log.error("network.dns_failed", container_id=record.id, error=exc.message)


async def _republish(ports: PortProxy, record: ContainerRecord) -> None:
    """A live container's published ports: listen again (the proxy lived in the old daemon)."""
    settings = record.network_settings
    address = primary_address(settings)
    if not settings.get("Ports") or not address:
        return
    try:
        await ports.publish(record.id, record.name, address, settings["Ports"])
    except errors.DockerError as exc:
        log.error("network.republish_failed", container_id=record.id, error=exc.message)
