"""Netlink for the network driver: pyroute2's asyncio API on asyncio and on trio, and network
namespace files made without forking.

pyroute2's ``AsyncIPRoute`` is asyncio code. Under asyncio it is awaited directly; under trio it
runs on the trio-asyncio loop that :func:`asyncio_loop` opens around the daemon (see
:mod:`.aioloop`: trio-asyncio's changes to asyncio last only as long as that).

pyroute2's own namespace helpers fork a process and block in ``poll``, so namespaces are made
here instead: a worker thread ``unshare``\\s its network namespace, bind-mounts
``/proc/thread-self/ns/net`` onto the file and opens a netlink socket in it (a socket stays in
the namespace it was created in), then ``setns``\\es back. A start's interfaces are then made
in the same thread, with blocking batches of pyroute2's messages (:mod:`.rtnl`): no event-loop
round trip per request.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio
import sniffio

from .. import errors
from .aioloop import open_trio_asyncio_loop, run_asyncio

__all__ = [
    "asyncio_loop",
    "configure_netns",
    "create_netns",
    "delete_netns",
    "netlink",
    "netlink_socket",
    "netns_socket",
    "socket_in",
]

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MNT_DETACH = 2
_NETLINK_ROUTE = 0


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    """Under trio, an asyncio loop for pyroute2 for the duration; under asyncio, nothing."""
    if sniffio.current_async_library() == "trio":
        async with open_trio_asyncio_loop():
            yield
    else:
        yield


async def netlink(call: Callable[[], Awaitable[T]]) -> T:
    """Await an asyncio coroutine function of pyroute2 on whichever loop runs us."""
    if sniffio.current_async_library() == "trio":
        return await run_asyncio(call)
    return await call()


def _create(path: Path, configure: Callable[[socket.socket, int], None]) -> None:
    """Make a network namespace file at ``path``, then ``configure(inside, netns)`` it with a
    netlink socket in it and a descriptor of it, this thread back in the daemon's namespace.
    Nothing stays if either fails."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    netns: int | None = None
    inside: socket.socket | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            path.touch(mode=0o444)
            _check(_libc.unshare(_CLONE_NEWNET), "unshare")
            try:
                _check(_libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none",
                                   _MS_BIND, None), f"bind {path}")  # fmt: skip
                netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                inside = netlink_socket()
            finally:
                _back(original)
        except OSError as exc:
            raise errors.SystemError(f"failed to create network namespace {path}: {exc}") from exc
        configure(inside, netns)
    except BaseException:
        _libc.umount2(str(path).encode(), _MNT_DETACH)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    finally:
        if inside is not None:
            inside.close()
        if netns is not None:
            os.close(netns)
        os.close(original)


def _back(original: int) -> None:
    """This worker thread back in the daemon's namespace. Should that ever fail, the thread —
    one of the pool's, that later calls reuse — would stay in another namespace and do their
    network work there: the process stops instead (as a Go runtime panics)."""
    if _libc.setns(original, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        os.write(2, f"asyncstart: setns back failed: {os.strerror(code)}: aborting\n".encode())
        os.abort()


def _entered(path: Path, make: Callable[[], socket.socket]) -> socket.socket:
    """``make()`` run with this thread in the namespace file ``path``, then back."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(target, _CLONE_NEWNET), f"setns {path}")
        finally:
            os.close(target)
        try:
            return make()
        finally:
            _back(original)
    finally:
        os.close(original)


def _delete(path: Path) -> None:
    # The kernel frees the namespace, and the veth in it, once nothing holds it.
    _libc.umount2(str(path).encode(), _MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def create_netns(path: Path, configure: Callable[[socket.socket, int], None]) -> None:
    """A new network namespace kept as the file ``path``, and ``configure(inside, netns)`` run
    with a netlink socket in it and a descriptor of it (blocking, in the same worker thread):
    nothing of it stays if that fails. A namespace that cannot be made is a SystemError;
    ``configure``'s errors are raised as they are."""
    await anyio.to_thread.run_sync(_create, path, configure)


def netlink_socket() -> socket.socket:
    """A route netlink socket in the calling thread's network namespace (it stays there)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)


def _configure_existing(path: Path, configure: Callable[[socket.socket, int], None]) -> None:
    netns = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _entered(path, netlink_socket) as inside:
            configure(inside, netns)
    finally:
        os.close(netns)


async def configure_netns(path: Path, configure: Callable[[socket.socket, int], None]) -> None:
    """``configure(inside, netns)`` the existing namespace file ``path``, as
    :func:`create_netns` does a new one (blocking, in a worker thread)."""
    await anyio.to_thread.run_sync(_configure_existing, path, configure)


async def netns_socket(path: Path) -> int:
    """A netlink socket inside the existing namespace file ``path`` (for pyroute2)."""
    try:
        sock = await anyio.to_thread.run_sync(_entered, path, netlink_socket)
    except OSError as exc:
        raise errors.SystemError(f"failed to enter network namespace {path}: {exc}") from exc
    return sock.detach()


async def socket_in(path: Path, make: Callable[[], socket.socket]) -> socket.socket:
    """A socket ``make()`` creates (and binds) inside the namespace file ``path``: it stays
    in that namespace, served from the daemon's."""
    return await anyio.to_thread.run_sync(_entered, path, make)


async def delete_netns(path: Path) -> None:
    await anyio.to_thread.run_sync(_delete, path)
