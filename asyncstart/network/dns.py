"""The embedded DNS server: what dockerd answers at ``127.0.0.11`` inside each container on a
user-defined network.

Two halves, kept apart:

- the wire (RFC 1035), pure functions without I/O: :func:`parse_query` reads a datagram into
  a :class:`Query` or refuses it (``None``: anything malformed, anything but a standard query
  with one question; it never raises, whatever the bytes), and :func:`answer`,
  :func:`ptr_answer`, :func:`empty`, :func:`nxdomain` and :func:`servfail` write the replies.
  A reply echoes the question's bytes as they came (the case the client chose) and names it in
  its records by a pointer to offset 12; it sets RA and copies RD, not AA, as dockerd does. A
  reply of ours over 512 bytes keeps the records that fit and sets TC (no EDNS: the query's
  OPT record, if any, is not read);
- :func:`serve`: one UDP socket, already bound by the engine (to ``127.0.0.11:53`` in the
  container's network namespace), served until cancelled. A name the engine knows
  (``resolve``) gets its IPv4 addresses for A and an empty NOERROR for any other type (a
  container has no AAAA records); a PTR question for an ``in-addr.arpa`` name whose address
  the engine knows (``reverse``) gets its names. Anything else goes to the upstreams, as it
  came, one after another until one answers within ``timeout``, each from a socket of its own
  made here — in the daemon's network namespace, so that the host's resolvers, loopback ones
  included, are reachable. The first reply with the query's ID from the upstream's address
  goes back to the client as it is; none: SERVFAIL. Forwards run in tasks, at most
  ``max_forwards`` at a time (beyond: SERVFAIL at once), so a slow upstream holds up no other
  question. A datagram that is no query gets no reply. TCP is not served.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from .._log import get_logger

__all__ = [
    "AAAA",
    "CLASS_IN",
    "NOERROR",
    "NXDOMAIN",
    "PTR",
    "SERVFAIL",
    "A",
    "Query",
    "answer",
    "empty",
    "nxdomain",
    "parse_query",
    "ptr_answer",
    "reverse_name",
    "serve",
    "servfail",
]

log = get_logger("asyncstart.network.dns")

#: Record types and the one class served here.
A, PTR, AAAA = 1, 12, 28
CLASS_IN = 1
#: Response codes.
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3

#: The largest reply of ours sent over UDP (RFC 1035 without EDNS).
MAX_UDP = 512
#: The largest upstream reply relayed whole; a larger one goes back as a truncated reply.
MAX_RELAY = 4096
#: Seconds dockerd's records live in caches.
TTL = 600

_HEADER = struct.Struct("!HHHHHH")
_RECORD = struct.Struct("!HHIH")  # type, class, TTL, RDATA length (after the owner name)
_QR, _TC, _RD, _RA = 0x8000, 0x0200, 0x0100, 0x0080
#: The owner name of every record of ours: the question's name, at offset 12.
_QUESTION_NAME = b"\xc0\x0c"
_MAX_NAME = 255  # octets on the wire, length octets and the final zero included
_MAX_LABEL = 63
_REVERSE_SUFFIX = ".in-addr.arpa"
_OCTET = re.compile(r"0|[1-9][0-9]{0,2}")
#: Bytes of a label written as themselves in a name; any other is ``\\DDD``.
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("."), ord("\\")}
#: Datagrams read per wake-up before waiting again (others' turn).
_BATCH = 64
#: Read buffers: a query (its datagram is cut there, and then refused), an upstream's reply.
_QUERY_BUFFER = 4096
_REPLY_BUFFER = 65535

Address = tuple[Any, ...]
Lookup = Callable[[str], Sequence[str] | None]


@dataclass(frozen=True, slots=True)
class Query:
    """One standard query with one question, as :func:`parse_query` read it."""

    id: int
    #: The question's name: lower-cased, no trailing dot (``""``: the root); a byte that is no
    #: printable ASCII, a dot or a backslash in a label is written ``\\DDD`` (RFC 4343).
    name: str
    qtype: int
    qclass: int
    #: Recursion desired, copied into the reply.
    rd: bool
    #: The question section as it came (the name in the client's case), echoed in the reply.
    question: bytes
    opcode: int = 0


def parse_query(packet: bytes) -> Query | None:
    """The query in ``packet``, or ``None`` if it is malformed or no standard query with one
    question. Never raises. Records after the question (EDNS's OPT) are not read."""
    if len(packet) < _HEADER.size:
        return None
    ident, flags, qdcount, _, _, _ = _HEADER.unpack_from(packet)
    opcode = (flags >> 11) & 0xF
    if flags & _QR or opcode != 0 or qdcount != 1:
        return None
    labels: list[str] = []
    offset = _HEADER.size
    while True:
        if offset >= len(packet):
            return None
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length > _MAX_LABEL:  # a compression pointer (0xC0) or a reserved kind (0x40, 0x80)
            return None
        label = packet[offset : offset + length]
        if len(label) < length:
            return None
        offset += length
        if offset - _HEADER.size + 1 > _MAX_NAME:  # with the final zero still to come
            return None
        labels.append(_label_text(label))
    end = offset + 4
    if end > len(packet):
        return None
    qtype, qclass = struct.unpack_from("!HH", packet, offset)
    return Query(
        id=ident,
        name=".".join(labels).lower(),
        qtype=qtype,
        qclass=qclass,
        rd=bool(flags & _RD),
        question=packet[_HEADER.size : end],
        opcode=opcode,
    )


def _label_text(label: bytes) -> str:
    return "".join(chr(byte) if byte in _PLAIN else f"\\{byte:03d}" for byte in label)


def _encode_name(name: str) -> bytes | None:
    """``name`` (dots between labels, a trailing one or not) on the wire, uncompressed; ``None``
    if it cannot be (no ASCII, an empty or long label, too long)."""
    name = name.removesuffix(".")
    if not name:
        return b"\x00"
    wire = bytearray()
    for label in name.split("."):
        if not label.isascii() or not 0 < len(label) <= _MAX_LABEL:
            return None
        wire.append(len(label))
        wire += label.encode("ascii")
    wire.append(0)
    return bytes(wire) if len(wire) <= _MAX_NAME else None


def _record(rtype: int, ttl: int, rdata: bytes) -> bytes:
    return _QUESTION_NAME + _RECORD.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


def _response(query: Query, rcode: int, records: Sequence[bytes] = ()) -> bytes:
    """The reply to ``query``: the records that fit in :data:`MAX_UDP` (TC if not all did)."""
    flags = _QR | _RA | (_RD if query.rd else 0) | (query.opcode << 11) | rcode
    size = _HEADER.size + len(query.question)
    kept: list[bytes] = []
    for record in records:
        if size + len(record) > MAX_UDP:
            flags |= _TC
            break
        kept.append(record)
        size += len(record)
    header = _HEADER.pack(query.id, flags, 1, len(kept), 0, 0)
    return header + query.question + b"".join(kept)


def answer(query: Query, addresses: Sequence[str], ttl: int = TTL) -> bytes:
    """NOERROR with an A record per IPv4 address of ``addresses`` (others are left out)."""
    records = []
    for address in addresses:
        try:
            packed = ipaddress.IPv4Address(address).packed
        except ValueError:
            continue
        records.append(_record(A, ttl, packed))
    return _response(query, NOERROR, records)


def ptr_answer(query: Query, names: Sequence[str], ttl: int = TTL) -> bytes:
    """NOERROR with a PTR record per name (one that is no DNS name is left out)."""
    records = []
    for name in names:
        wire = _encode_name(name)
        if wire is not None:
            records.append(_record(PTR, ttl, wire))
    return _response(query, NOERROR, records)


def empty(query: Query) -> bytes:
    """NOERROR without records: the name is there, with nothing of this type."""
    return _response(query, NOERROR)


def servfail(query: Query) -> bytes:
    return _response(query, SERVFAIL)


def nxdomain(query: Query) -> bytes:
    return _response(query, NXDOMAIN)


def _too_long(query: Query, reply: bytes) -> bytes:
    """An upstream's reply over :data:`MAX_RELAY`: its header with TC, without records."""
    flags = (struct.unpack_from("!H", reply, 2)[0] | _TC) & 0xFFFF
    return _HEADER.pack(query.id, flags, 1, 0, 0, 0) + query.question


def reverse_name(name: str) -> str | None:
    """The IPv4 address a PTR name is about (``4.3.2.1.in-addr.arpa`` is ``1.2.3.4``), or
    ``None`` for any other name."""
    name = name.lower().removesuffix(".")
    if not name.endswith(_REVERSE_SUFFIX):
        return None
    octets = name.removesuffix(_REVERSE_SUFFIX).split(".")
    if len(octets) != 4:
        return None
    for octet in octets:
        if _OCTET.fullmatch(octet) is None or int(octet) > 255:
            return None
    return ".".join(reversed(octets))


async def serve(
    sock: socket.socket,
    resolve: Lookup,
    reverse: Lookup,
    upstreams: Sequence[tuple[str, int]],
    *,
    timeout: float = 2.0,
    max_forwards: int = 100,
    ttl: int = TTL,
) -> None:
    """Answer the queries that come to ``sock`` (bound, non-blocking UDP) until cancelled; the
    socket is closed at the end. ``resolve(name)``: a container's addresses on the network;
    ``reverse(address)``: its names; ``None`` or empty where unknown. ``upstreams``: IP
    addresses (not host names) and ports, asked in this order, ``timeout`` seconds each."""
    try:
        for host, _ in upstreams:
            ipaddress.ip_address(host)  # a ValueError here: connect() would look a name up
        server = _Server(sock, resolve, reverse, tuple(upstreams), timeout, max_forwards, ttl)
        log.debug("dns.serving", address=sock.getsockname(), upstreams=len(upstreams))
        async with anyio.create_task_group() as tg:
            while True:
                await anyio.wait_readable(sock)
                for _ in range(_BATCH):
                    try:
                        packet, client = sock.recvfrom(_QUERY_BUFFER)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        log.debug("dns.receive_failed", error=str(exc))
                        break
                    server.handle(tg, packet, client)
    finally:
        sock.close()


class _Server:
    """What :func:`serve` does with each datagram."""

    def __init__(
        self,
        sock: socket.socket,
        resolve: Lookup,
        reverse: Lookup,
        upstreams: tuple[tuple[str, int], ...],
        timeout: float,
        max_forwards: int,
        ttl: int,
    ) -> None:
        self.sock = sock
        self.resolve = resolve
        self.reverse = reverse
        self.upstreams = upstreams
        self.timeout = timeout
        self.max_forwards = max_forwards
        self.ttl = ttl
        self.forwards = 0

    def handle(self, tg: anyio.abc.TaskGroup, packet: bytes, client: Address) -> None:
        query = parse_query(packet)
        if query is None:
            log.debug("dns.malformed", client=client, size=len(packet))
            return
        try:
            reply = self._local(query)
        except Exception as exc:  # the engine's lookup: a failure of it fails this query only
            log.debug("dns.lookup_failed", name=query.name, error=repr(exc))
            reply = servfail(query)
        if reply is not None:
            self._send(reply, client)
        elif not self.upstreams:
            self._send(servfail(query), client)
        elif self.forwards >= self.max_forwards:
            log.debug("dns.forwards_full", name=query.name, forwards=self.forwards)
            self._send(servfail(query), client)
        else:
            self.forwards += 1
            tg.start_soon(self._forward, query, packet, client)

    def _local(self, query: Query) -> bytes | None:
        """The reply from what the engine knows, or ``None``: ask the upstreams."""
        if query.qclass != CLASS_IN:
            return None
        if query.qtype == PTR:
            address = reverse_name(query.name)
            names = self.reverse(address) if address is not None else None
            return ptr_answer(query, names, self.ttl) if names else None
        addresses = self.resolve(query.name)
        if not addresses:
            return None
        return answer(query, addresses, self.ttl) if query.qtype == A else empty(query)

    async def _forward(self, query: Query, packet: bytes, client: Address) -> None:
        try:
            for upstream in self.upstreams:
                reply = await _exchange(packet, upstream, self.timeout)
                if reply is not None:
                    if len(reply) > MAX_RELAY:
                        reply = _too_long(query, reply)
                    self._send(reply, client)
                    return
            self._send(servfail(query), client)
        finally:
            self.forwards -= 1

    def _send(self, reply: bytes, client: Address) -> None:
        try:
            self.sock.sendto(reply, client)
        except OSError as exc:  # a full buffer, a client gone: UDP, it may ask again
            log.debug("dns.reply_failed", client=client, error=str(exc))


async def _exchange(packet: bytes, upstream: tuple[str, int], timeout: float) -> bytes | None:
    """The reply of ``upstream`` to ``packet``, or ``None`` if it gave none in time.

    The socket is connected: the kernel drops datagrams from any other address, and an ICMP
    "port unreachable" fails the receive at once (next upstream, without waiting)."""
    host, port = upstream
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((host, port))
            sock.send(packet)
            with anyio.move_on_after(timeout):
                while True:
                    await anyio.wait_readable(sock)
                    try:
                        reply = sock.recv(_REPLY_BUFFER)
                    except BlockingIOError:
                        continue
                    # The same ID, and a response: anything else is not the reply (ignored).
                    if len(reply) >= _HEADER.size and reply[:2] == packet[:2] and reply[2] & 0x80:
                        return reply
    except OSError as exc:
        log.debug("dns.upstream_failed", upstream=f"{host}:{port}", error=str(exc))
        return None
    log.debug("dns.upstream_timeout", upstream=f"{host}:{port}", timeout=timeout)
    return None
