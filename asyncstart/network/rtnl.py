"""A container's interfaces in a few netlink writes: the start path's rtnetlink, blocking, for
the worker thread that makes the namespace.

pyroute2 encodes each message (its ``ifinfmsg``, ``ifaddrmsg`` and ``rtmsg``); what pyroute2's
request layer would add per call — a socket, an asyncio transport, argument processing, one
round trip per request — is left out: the messages of one side go to the kernel in one write
(:meth:`Batch.send`), which the kernel applies in order, answering each. One start: the veths
from the host's side, then inside the namespace the interfaces' indexes, then loopback,
addresses, links up and the default route.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

__all__ = ["LOOPBACK", "Batch", "add_address", "add_veth", "default_route", "get_link", "up"]

#: Loopback's index in every network namespace (the kernel's LOOPBACK_IFINDEX).
LOOPBACK = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_ERROR = struct.Struct("=i")  # nlmsgerr's error, after its header
_INDEX = struct.Struct("=i")  # ifinfmsg's index, 4 bytes into it
_MAIN_TABLE = 254
_STATIC = 4  # the route's protocol (RTPROT_STATIC), as pyroute2's route("add") gives it
_UNICAST = 1
_CREATE = NLM_F_CREATE | NLM_F_EXCL
#: How long the kernel may take to answer one batch (it answers in microseconds to
#: milliseconds; a thread, which a cancellation cannot abandon, never waits for ever).
_TIMEOUT = 5.0


def add_veth(host_if: str, master: int, ifname: str, netns_fd: int, mac: str) -> Any:
    """A veth pair: ``host_if`` on the host, up, on the bridge ``master``; its peer ``ifname``
    born in the namespace ``netns_fd`` with ``mac`` (down: a peer cannot come up before its
    pair exists)."""
    message = ifinfmsg()
    message["flags"] = message["change"] = IFF_UP
    peer = {"attrs": [("IFLA_IFNAME", ifname), ("IFLA_NET_NS_FD", netns_fd), ("IFLA_ADDRESS", mac)]}
    info = [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]
    message["attrs"] = [
        ("IFLA_IFNAME", host_if),
        ("IFLA_MASTER", master),
        ("IFLA_LINKINFO", {"attrs": info}),
    ]
    return _request(message, RTM_NEWLINK, _CREATE)


def get_link(ifname: str) -> Any:
    """Ask for the link called ``ifname`` (its index is in the reply)."""
    message = ifinfmsg()
    message["attrs"] = [("IFLA_IFNAME", ifname)]
    return _request(message, RTM_GETLINK)


def up(index: int) -> Any:
    """Bring the link ``index`` up."""
    message = ifinfmsg()
    message["index"] = index
    message["flags"] = message["change"] = IFF_UP
    return _request(message, RTM_NEWLINK)


def add_address(index: int, address: str, prefixlen: int) -> Any:
    message = ifaddrmsg()
    message["family"] = socket.AF_INET
    message["prefixlen"] = prefixlen
    message["index"] = index
    message["attrs"] = [("IFA_ADDRESS", address), ("IFA_LOCAL", address)]
    return _request(message, RTM_NEWADDR, _CREATE)


def default_route(gateway: str) -> Any:
    """The default route through ``gateway``, made or put in place of the one there is."""
    message = rtmsg()
    message["family"] = socket.AF_INET
    message["table"] = _MAIN_TABLE
    message["proto"] = _STATIC
    message["type"] = _UNICAST
    message["attrs"] = [("RTA_GATEWAY", gateway)]
    return _request(message, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE)


def _request(message: Any, kind: int, flags: int = 0) -> Any:
    message["header"]["type"] = kind
    message["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    return message


class Batch:
    """Batches of requests on a blocking rtnetlink socket, one batch at a time."""

    def __init__(self, sock: socket.socket) -> None:
        """``sock``: a route netlink socket (``netlink.netlink_socket``), of the namespace it
        was made in; closed with the batch."""
        sock.settimeout(_TIMEOUT)
        self._sock = sock
        self._sequence = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, messages: Sequence[Any], what: str) -> list[bytes]:
        """Send ``messages`` in one write; once the kernel answered each, return their replies
        (a message's own reply, b"" for a bare acknowledgement), or raise the first refusal as
        OSError (``what`` failed). The kernel applies every message, even after a refusal.
        (Requests only, each answered once: no dump.)"""
        if not messages:
            return []
        data = bytearray()
        first = self._sequence + 1
        for message in messages:
            self._sequence += 1
            message["header"]["sequence_number"] = self._sequence
            message.encode()
            data += message.data
        self._sock.send(data)
        replies = [b""] * len(messages)
        answered = [False] * len(messages)
        error = 0
        while not all(answered):
            chunk = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(chunk):
                length, kind, _, sequence, _ = _HEADER.unpack_from(chunk, offset)
                slot = sequence - first
                if 0 <= slot < len(messages):
                    if kind == NLMSG_ERROR:
                        code = -_ERROR.unpack_from(chunk, offset + _HEADER.size)[0]
                        error = error or code
                        answered[slot] = True
                    else:
                        replies[slot] = bytes(chunk[offset : offset + length])
                offset += (length + 3) & ~3
                if length == 0:
                    break
        if error:
            raise OSError(error, f"{what}: {os.strerror(error)}")
        return replies


def link_index(reply: bytes) -> int:
    """The index in a link's reply (``ifinfmsg``: family, pad, type, then the index)."""
    return int(_INDEX.unpack_from(reply, _HEADER.size + 4)[0])
