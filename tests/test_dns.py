"""The embedded DNS server: its wire functions on their own (queries built here, replies read
by a small parser here, hostile bytes from hypothesis), then :func:`serve` on loopback with
fake upstreams that the tests run on ``127.0.0.1`` too.
"""

from __future__ import annotations

import socket
import string
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncstart.network import dns
from asyncstart.network.dns import (
    Query,
    answer,
    empty,
    nxdomain,
    parse_query,
    ptr_answer,
    reverse_name,
    serve,
    servfail,
)

pytestmark = pytest.mark.anyio

LOOPBACK = "127.0.0.1"
QUICK = 0.2  # the upstreams' timeout in these tests


def name_wire(name: str) -> bytes:
    labels = [label.encode() for label in name.split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def build_query(
    name: str,
    qtype: int = dns.A,
    ident: int = 0x1234,
    *,
    rd: bool = True,
    flags: int | None = None,
    qdcount: int = 1,
    qname: bytes | None = None,
    tail: bytes = b"",
) -> bytes:
    """A query as a stub resolver sends it (``qname``: the name's bytes as they are)."""
    if flags is None:
        flags = 0x0100 if rd else 0
    header = struct.pack("!HHHHHH", ident, flags, qdcount, 0, 0, 0)
    wire = name_wire(name) if qname is None else qname
    return header + wire + struct.pack("!HH", qtype, dns.CLASS_IN) + tail


@dataclass
class Record:
    name: bytes  # as on the wire (a pointer or labels)
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes


@dataclass
class Reply:
    id: int
    flags: int
    question: bytes
    answers: list[Record] = field(default_factory=list)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def tc(self) -> bool:
        return bool(self.flags & 0x0200)

    def addresses(self) -> list[str]:
        return [socket.inet_ntoa(r.rdata) for r in self.answers if r.rtype == dns.A]


def read_name(data: bytes, offset: int) -> tuple[bytes, int]:
    """The name at ``offset`` as it is on the wire (a pointer ends it), and the offset after."""
    start = offset
    while True:
        length = data[offset]
        if length >= 0xC0:
            return data[start : offset + 2], offset + 2
        offset += 1 + length
        if length == 0:
            return data[start:offset], offset


def parse_reply(data: bytes) -> Reply:
    ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHHH", data)
    assert (qdcount, nscount, arcount) == (1, 0, 0)
    _, offset = read_name(data, 12)
    reply = Reply(ident, flags, data[12 : offset + 4])
    offset += 4
    for _ in range(ancount):
        owner, offset = read_name(data, offset)
        rtype, rclass, ttl, size = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        reply.answers.append(Record(owner, rtype, rclass, ttl, data[offset : offset + size]))
        offset += size
    assert offset == len(data)
    return reply


def query_of(name: str, qtype: int = dns.A, **kwargs: Any) -> Query:
    parsed = parse_query(build_query(name, qtype, **kwargs))
    assert parsed is not None
    return parsed


# The wire.


def test_query_round_trip() -> None:
    packet = build_query("Web.MyNet", dns.AAAA, 0xBEEF, tail=b"\x00\x00\x29\x10\x00" + bytes(6))
    query = parse_query(packet)
    assert query == Query(
        id=0xBEEF,
        name="web.mynet",
        qtype=dns.AAAA,
        qclass=dns.CLASS_IN,
        rd=True,
        question=name_wire("Web.MyNet") + struct.pack("!HH", dns.AAAA, 1),
        opcode=0,
    )
    assert query_of("x", rd=False).rd is False
    assert query_of("").name == ""  # the root


def test_answer_has_a_records_named_by_pointer() -> None:
    query = query_of("Web.MyNet")
    reply = parse_reply(answer(query, ["10.0.0.2", "fe80::1", "bogus", "10.0.0.3"], ttl=42))
    assert reply.id == 0x1234
    assert reply.flags == 0x8000 | 0x0100 | 0x0080  # QR, RD copied, RA; no AA, NOERROR
    assert reply.question == query.question  # the client's case kept
    assert reply.addresses() == ["10.0.0.2", "10.0.0.3"]
    assert {(r.name, r.rclass, r.ttl) for r in reply.answers} == {(b"\xc0\x0c", 1, 42)}
    no_rd = parse_reply(answer(query_of("web", rd=False), ["10.0.0.2"]))
    assert no_rd.flags == 0x8000 | 0x0080
    assert no_rd.answers[0].ttl == 600


def test_empty_servfail_nxdomain() -> None:
    query = query_of("web", dns.AAAA)
    for reply, rcode in ((empty(query), 0), (servfail(query), 2), (nxdomain(query), 3)):
        parsed = parse_reply(reply)
        assert (parsed.rcode, parsed.answers, parsed.id) == (rcode, [], 0x1234)
        assert parsed.flags & 0x8000


def test_ptr_answer() -> None:
    query = query_of("2.0.0.10.in-addr.arpa", dns.PTR)
    reply = parse_reply(ptr_answer(query, ["web.mynet", "db.", "x" * 64, "é.x"]))
    assert [(r.rtype, r.rdata) for r in reply.answers] == [
        (dns.PTR, name_wire("web.mynet")),
        (dns.PTR, name_wire("db")),
    ]


def test_large_answer_is_truncated_to_512_bytes() -> None:
    query = query_of("many")
    addresses = [f"10.0.{i // 256}.{i % 256}" for i in range(100)]
    data = answer(query, addresses)
    reply = parse_reply(data)
    assert reply.tc
    assert len(data) <= 512
    assert reply.addresses() == addresses[: len(reply.answers)]
    assert len(data) + 16 > 512  # as many as fit
    assert not parse_reply(answer(query, addresses[:10])).tc


def test_reverse_name() -> None:
    assert reverse_name("4.3.2.1.in-addr.arpa") == "1.2.3.4"
    assert reverse_name("4.3.2.1.IN-ADDR.ARPA.") == "1.2.3.4"
    assert reverse_name("0.0.255.10.in-addr.arpa") == "10.255.0.0"
    for name in (
        "3.2.1.in-addr.arpa",
        "5.4.3.2.1.in-addr.arpa",
        "04.3.2.1.in-addr.arpa",
        "256.3.2.1.in-addr.arpa",
        "٤.3.2.1.in-addr.arpa",
        "a.3.2.1.in-addr.arpa",
        "4..2.1.in-addr.arpa",
        "1.0.0.0.ip6.arpa",
        "web.mynet",
        "in-addr.arpa",
    ):
        assert reverse_name(name) is None, name


def test_hostile_queries_are_refused() -> None:
    good = build_query("web.mynet")
    assert parse_query(good) is not None
    for cut in range(len(good)):
        assert parse_query(good[:cut]) is None, cut
    refused = [
        build_query("web", qname=b"\xc0\x0c"),  # a pointer to itself: a loop
        build_query("web", qname=b"\x03web\xc0\x0c"),  # a pointer after a label
        build_query("web", qname=b"\x40" + b"a" * 64 + b"\x00"),  # a label of 64
        build_query("web", qname=b"\x80\x00"),  # a reserved label kind
        build_query("web", qname=(b"\x3f" + b"a" * 63) * 5 + b"\x00"),  # 321 octets
        build_query("web", qdcount=2),
        build_query("web", qdcount=0),
        build_query("web", flags=0x8100),  # a response
        build_query("web", flags=0x0900),  # opcode 1 (inverse query)
        build_query("web", flags=0x2900),  # opcode 5 (update)
        b"",
    ]
    for packet in refused:
        assert parse_query(packet) is None, packet
    longest = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"a" * 61 + b"\x00"
    assert len(longest) == 255
    parsed = parse_query(build_query("web", qname=longest))
    assert parsed is not None
    assert len(parsed.name) == 253


def test_odd_label_bytes_are_escaped() -> None:
    parsed = parse_query(build_query("x", qname=b"\x04A.\\\xff\x01B\x00"))
    assert parsed is not None
    assert parsed.name == "a\\046\\092\\255.b"


_HEADER_OF_ONE_QUESTION = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_parse_query_never_raises(data: bytes, with_header: bool) -> None:
    packet = _HEADER_OF_ONE_QUESTION + data if with_header else data
    query = parse_query(packet)
    if query is not None:
        assert query.question == packet[12 : 12 + len(query.question)]
        assert query.name == query.name.lower()


_LABEL = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=63)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_LABEL, max_size=3),  # up to 193 octets (the 255 edge: above)
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
def test_well_formed_names_are_read(labels: list[str], qtype: int, ident: int) -> None:
    name = ".".join(labels)
    query = parse_query(build_query(name, qtype, ident))
    assert query is not None
    assert (query.name, query.qtype, query.id) == (name.lower(), qtype, ident)
    assert query.question == name_wire(name) + struct.pack("!HH", qtype, 1)


# The server, on loopback.


NAMES = {"web": ["10.0.0.2"], "web.mynet": ["10.0.0.2"], "db": ["10.0.0.3", "10.0.0.4"]}
REVERSE = {"10.0.0.2": ["web.mynet"]}


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((LOOPBACK, 0))
    return sock


@asynccontextmanager
async def dns_server(
    upstreams: Sequence[tuple[str, int]] = (),
    resolve: Callable[[str], Sequence[str] | None] = NAMES.get,
    **options: Any,
) -> AsyncIterator[tuple[str, int]]:
    """:func:`serve` on ``127.0.0.1:<port>``; yields its address; its socket is closed after."""
    sock = udp_socket()
    address = sock.getsockname()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(sock, resolve, REVERSE.get, upstreams, **options))
        yield address
        tg.cancel_scope.cancel()
    assert sock.fileno() == -1


@asynccontextmanager
async def client(server: tuple[str, int]) -> AsyncIterator[anyio.abc.ConnectedUDPSocket]:
    async with await anyio.create_connected_udp_socket(*server, local_host=LOOPBACK) as udp:
        yield udp


async def ask(udp: anyio.abc.ConnectedUDPSocket, packet: bytes, wait: float = 2) -> Reply:
    await udp.send(packet)
    with anyio.fail_after(wait):
        return parse_reply(await udp.receive())


@asynccontextmanager
async def upstream(
    reply: Callable[[bytes], Sequence[bytes]] | None,
) -> AsyncIterator[tuple[tuple[str, int], list[bytes]]]:
    """A fake resolver on loopback: each query it gets is kept, and answered with the
    datagrams ``reply(query)`` gives (``None``: it never answers)."""
    seen: list[bytes] = []
    async with await anyio.create_udp_socket(local_host=LOOPBACK) as udp:

        async def answering() -> None:
            async for packet, sender in udp:
                seen.append(packet)
                if reply is not None:
                    for datagram in reply(packet):
                        await udp.sendto(datagram, *sender)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answering)
            address = udp.extra(anyio.abc.SocketAttribute.local_address)
            assert isinstance(address, tuple)
            yield address, seen
            tg.cancel_scope.cancel()


def upstream_answer(
    packet: bytes, address: str = "93.184.216.34", ident: int | None = None
) -> bytes:
    """The reply an upstream gives: its own A record, with a name written out in full."""
    query = parse_query(packet)
    assert query is not None
    flags = 0x8180  # QR, RD, RA
    header = struct.pack("!HHHHHH", query.id if ident is None else ident, flags, 1, 1, 0, 0)
    record = name_wire(query.name) + struct.pack("!HHIH", 1, 1, 30, 4)
    return header + query.question + record + socket.inet_aton(address)


async def test_known_name_gets_its_addresses() -> None:
    async with dns_server() as server, client(server) as udp:
        reply = await ask(udp, build_query("DB", ident=7))
        assert (reply.id, reply.rcode, reply.tc) == (7, 0, False)
        assert reply.addresses() == ["10.0.0.3", "10.0.0.4"]
        assert reply.question == name_wire("DB") + b"\x00\x01\x00\x01"
        reply = await ask(udp, build_query("web.mynet", ident=8))
        assert reply.addresses() == ["10.0.0.2"]


async def test_known_name_other_types_get_an_empty_noerror() -> None:
    async with dns_server() as server, client(server) as udp:
        for qtype in (dns.AAAA, 15, 16):  # AAAA, MX, TXT
            reply = await ask(udp, build_query("web", qtype, ident=qtype))
            assert (reply.id, reply.rcode, reply.answers) == (qtype, 0, [])


async def test_ptr_of_a_known_address() -> None:
    async with dns_server() as server, client(server) as udp:
        reply = await ask(udp, build_query("2.0.0.10.in-addr.arpa", dns.PTR))
        assert reply.rcode == 0
        assert [r.rdata for r in reply.answers] == [name_wire("web.mynet")]


async def test_unknown_name_is_forwarded_and_the_reply_relayed_verbatim() -> None:
    async with (
        upstream(lambda packet: [upstream_answer(packet)]) as (address, seen),
        dns_server([address]) as server,
        client(server) as udp,
    ):
        query = build_query("Example.COM", ident=0x4242)
        await udp.send(query)
        with anyio.fail_after(2):
            relayed = await udp.receive()
        assert seen == [query]
        assert relayed == upstream_answer(query)
        assert parse_reply(relayed).id == 0x4242
        # An unknown PTR, and a class other than IN of a known name, go upstream too.
        ptr = build_query("9.9.0.10.in-addr.arpa", dns.PTR, ident=2)
        assert (await ask(udp, ptr)).id == 2
        chaos = build_query("web", ident=3)[:-2] + b"\x00\x03"
        assert (await ask(udp, chaos)).id == 3
        assert seen[1:] == [ptr, chaos]


async def test_a_reply_with_another_id_is_not_relayed() -> None:
    def replies(packet: bytes) -> list[bytes]:
        return [upstream_answer(packet, "6.6.6.6", ident=0xFFFF), upstream_answer(packet)]

    async with (
        upstream(replies) as (address, _),
        dns_server([address]) as server,
        client(server) as udp,
    ):
        reply = await ask(udp, build_query("example.com", ident=5))
        assert (reply.id, reply.addresses()) == (5, ["93.184.216.34"])


async def test_large_upstream_replies_relayed_whole_up_to_4096_bytes() -> None:
    def padded(packet: bytes) -> list[bytes]:
        size = 1000 if packet.startswith(b"\x00\x01") else 5000
        reply = upstream_answer(packet)
        return [reply + bytes(size - len(reply))]  # trailing octets: verbatim is verbatim

    async with (
        upstream(padded) as (address, _),
        dns_server([address]) as server,
        client(server) as udp,
    ):
        query = build_query("big.example", ident=1)
        await udp.send(query)
        with anyio.fail_after(2):
            assert await udp.receive() == padded(query)[0]
        too_big = await ask(udp, build_query("huge.example", ident=2))
        assert (too_big.id, too_big.tc, too_big.rcode, too_big.answers) == (2, True, 0, [])


async def test_silent_upstream_gives_servfail_after_the_timeout() -> None:
    async with (
        upstream(None) as (address, seen),
        dns_server([address], timeout=QUICK) as server,
        client(server) as udp,
    ):
        start = anyio.current_time()
        reply = await ask(udp, build_query("example.com", ident=9))
        assert (reply.id, reply.rcode) == (9, dns.SERVFAIL)
        assert anyio.current_time() - start >= QUICK * 0.9
        assert len(seen) == 1


async def test_next_upstream_after_a_silent_one() -> None:
    async with (
        upstream(None) as (silent, _),
        upstream(lambda packet: [upstream_answer(packet)]) as (answering, seen),
        dns_server([silent, answering], timeout=QUICK) as server,
        client(server) as udp,
    ):
        reply = await ask(udp, build_query("example.com", ident=10))
        assert (reply.id, reply.addresses()) == (10, ["93.184.216.34"])
        assert len(seen) == 1


async def test_refused_upstream_is_skipped_at_once() -> None:
    closed = udp_socket()
    refused = closed.getsockname()
    closed.close()  # nothing listens there: ICMP port unreachable
    async with (
        upstream(lambda packet: [upstream_answer(packet)]) as (answering, _),
        dns_server([refused, answering], timeout=5) as server,
        client(server) as udp,
    ):
        reply = await ask(udp, build_query("example.com", ident=11), wait=1)
        assert reply.addresses() == ["93.184.216.34"]


async def test_no_upstream_gives_servfail() -> None:
    async with dns_server() as server, client(server) as udp:
        reply = await ask(udp, build_query("example.com", ident=12))
        assert (reply.id, reply.rcode) == (12, dns.SERVFAIL)


async def test_forwards_block_no_other_query_and_are_capped() -> None:
    async with (
        upstream(None) as (address, _),
        dns_server([address], timeout=QUICK, max_forwards=1) as server,
        client(server) as udp,
    ):
        await udp.send(build_query("slow.example", ident=1))
        await udp.send(build_query("over.the.cap", ident=2))
        await udp.send(build_query("web", ident=3))
        with anyio.fail_after(2):
            over, local, slow = [parse_reply(await udp.receive()) for _ in range(3)]
        # The one over the cap at once, the local one before the forward's timeout.
        assert (over.id, over.rcode) == (2, dns.SERVFAIL)
        assert (local.id, local.addresses()) == (3, ["10.0.0.2"])
        assert (slow.id, slow.rcode) == (1, dns.SERVFAIL)
        # The forward is over: the next one is taken, and waits its turn behind a local one.
        await udp.send(build_query("again.example", ident=4))
        await udp.send(build_query("web", ident=5))
        with anyio.fail_after(2):
            first, second = parse_reply(await udp.receive()), parse_reply(await udp.receive())
        assert (first.id, second.id, second.rcode) == (5, 4, dns.SERVFAIL)


async def test_garbage_gets_no_reply_and_the_server_keeps_serving() -> None:
    async with dns_server() as server, client(server) as udp:
        for garbage in (b"", b"\x00", b"hello", build_query("web", qname=b"\xc0\x0c"), bytes(600)):
            await udp.send(garbage)
        reply = await ask(udp, build_query("web", ident=13))
        assert reply.id == 13  # the first reply is this one's: nothing came for the garbage


async def test_a_failing_lookup_fails_its_query_only() -> None:
    def resolve(name: str) -> Sequence[str] | None:
        if name == "boom":
            raise RuntimeError("lookup bug")
        return NAMES.get(name)

    async with dns_server(resolve=resolve) as server, client(server) as udp:
        assert (await ask(udp, build_query("boom", ident=14))).rcode == dns.SERVFAIL
        assert (await ask(udp, build_query("web", ident=15))).addresses() == ["10.0.0.2"]


async def test_upstreams_must_be_addresses() -> None:
    sock = udp_socket()
    with pytest.raises(ValueError):
        await serve(sock, NAMES.get, REVERSE.get, [("dns.example", 53)])
    assert sock.fileno() == -1
