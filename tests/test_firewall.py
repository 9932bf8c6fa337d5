"""A network's firewall, for real, in network namespaces these tests make: one plays the host
(its forward hook drops by default, as on a host that runs Docker, with Docker's
``DOCKER-USER`` chain), another plays the world outside it. The daemon is a process of its own
in the "host" namespace (``nsenter --net``: the mounts stay the machine's).

The outside namespace has no route back to the containers' subnet: a reply reaches a container
only through the masquerade.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from asyncstart import Client

from . import test_runc
from .helpers import daemon_process, real_containers
from .test_runc import _Roots, assert_nothing_left

pytestmark = real_containers(
    ("needs nft", shutil.which("nft") is None),
    ("needs iptables", shutil.which("iptables") is None),
    ("needs nsenter", shutil.which("nsenter") is None),
)

busybox_tar = test_runc.busybox_tar

HOST, OUTSIDE = "astest-fwhost", "astest-fwout"
SUBNET = "10.213.210.0/24"
UPLINK, WORLD = "10.213.211.1", "10.213.211.2"  # the "host" and the "outside", a /30
#: Docker's layout, made as dockerd makes it (iptables): FORWARD drops by default and first
#: jumps to DOCKER-USER, which returns.
DOCKER_LIKE = [
    ["iptables", "-N", "DOCKER-USER"],
    ["iptables", "-A", "DOCKER-USER", "-j", "RETURN"],
    ["iptables", "-P", "FORWARD", "DROP"],
    ["iptables", "-I", "FORWARD", "-j", "DOCKER-USER"],
]


def _run(*argv: str, input: str | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, input=input).stdout


def _in(namespace: str, *argv: str, input: str | None = None) -> str:
    return _run("ip", "netns", "exec", namespace, *argv, input=input)


@contextlib.contextmanager
def _world() -> Iterator[None]:
    """The "host" (forward drops) and the "outside" namespaces, linked by a veth /30."""
    for name in (HOST, OUTSIDE):
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    try:
        for name in (HOST, OUTSIDE):
            _run("ip", "netns", "add", name)
            _in(name, "ip", "link", "set", "lo", "up")
        _run("ip", "-n", HOST, "link", "add", "uplink", "type", "veth", "peer", "eth0",
             "netns", OUTSIDE)  # fmt: skip
        _in(HOST, "ip", "addr", "add", f"{UPLINK}/30", "dev", "uplink")
        _in(HOST, "ip", "link", "set", "uplink", "up")
        _in(OUTSIDE, "ip", "addr", "add", f"{WORLD}/30", "dev", "eth0")
        _in(OUTSIDE, "ip", "link", "set", "eth0", "up")
        for argv in DOCKER_LIKE:
            _in(HOST, *argv)
        # (A new namespace may take the machine's setting.)
        _in(HOST, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
        yield
    finally:
        for name in (HOST, OUTSIDE):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@asynccontextmanager
async def _engine(roots: _Roots, sock: Path) -> AsyncIterator[Client]:
    """``asyncstart daemon`` in the "host" namespace, and a client of it."""
    into_host = ("nsenter", f"--net=/run/netns/{HOST}", "--")
    async with (
        daemon_process(roots.data, roots.exec, sock, "--bridge-subnet", SUBNET, prefix=into_host),
        Client(f"unix://{sock}") as client,
    ):
        try:
            yield client
        finally:
            # A test that failed half-way leaves no container (they outlive the daemon).
            with anyio.CancelScope(shield=True):
                for row in await client.containers_list(all=True):
                    await client.container_remove(row["Id"], force=True)


async def _exit_code(client: Client, *cmd: str) -> tuple[int, str]:
    cid = await client.container_create(config={"Image": "busybox", "Cmd": list(cmd)})
    await client.container_start(cid)
    code = (await client.container_wait(cid))["StatusCode"]
    text = b"".join([d async for _, d in client.container_logs(cid)]).decode()
    await client.container_remove(cid)
    return int(code), text


def _ours_in_docker_user() -> list[str]:
    """Our rules in DOCKER-USER, as iptables (dockerd's own tool) reads them back."""
    listed = _in(HOST, "iptables", "-S", "DOCKER-USER").splitlines()
    return [line for line in listed if "asyncstart:asyncstart0" in line]


def _forward_policy() -> str:
    listed = json.loads(_in(HOST, "nft", "-j", "list", "chain", "ip", "asyncstart", "forward"))
    [chain] = [item["chain"] for item in listed["nftables"] if "chain" in item]
    return str(chain["policy"])


async def test_containers_reach_each_other_and_the_outside_through_a_dropping_host(
    tmp_path: Path, busybox_tar: Path
) -> None:
    roots, sock = _Roots(tmp_path), tmp_path / "s.sock"
    with _world():
        # Without the daemon's rules, the host forwards nothing.
        assert _in(HOST, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "0"
        async with _engine(roots, sock) as client:
            await client.image_import(busybox_tar, repo="busybox", tag="latest")
            peer = await client.container_create(
                config={"Image": "busybox", "Cmd": ["sleep", "1000"]}
            )
            await client.container_start(peer)
            address = (await client.container_inspect(peer))["NetworkSettings"]["IPAddress"]
            # Container to container, across the bridge (br_netfilter puts it through FORWARD).
            code, text = await _exit_code(client, "ping", "-c", "1", "-W", "5", address)
            assert code == 0, text
            # Container to the outside, which knows no route back: only NAT brings the reply.
            code, text = await _exit_code(client, "ping", "-c", "1", "-W", "5", WORLD)
            assert code == 0, text
            # In DOCKER-USER, readable by iptables: returns towards dockerd's bridges, accepts.
            ours = _ours_in_docker_user()
            assert [line.split()[-1] for line in ours] == ["RETURN", "RETURN"] + ["ACCEPT"] * 3
            # Forwarding was off: turned on, with nothing forwarded but the containers' own.
            assert _in(HOST, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
            assert _forward_policy() == "drop"
            # The outside, even told the way, cannot open a connection to a container.
            _in(OUTSIDE, "ip", "route", "add", SUBNET, "via", UPLINK)
            refused = subprocess.run(
                ["ip", "netns", "exec", OUTSIDE, "ping", "-c", "1", "-W", "2", address],
                capture_output=True, check=False,
            )  # fmt: skip
            assert refused.returncode != 0
            await client.container_remove(peer, force=True)
        # A restarted daemon finds its rules again and makes them anew: not twice.
        async with _engine(roots, sock) as client:
            code, text = await _exit_code(client, "ping", "-c", "1", "-W", "5", WORLD)
            assert code == 0, text
            assert len(_ours_in_docker_user()) == 5
            assert _forward_policy() == "drop"
            rules = _in(HOST, "nft", "list", "table", "ip", "asyncstart")
            assert rules.count("masquerade") == 1
    assert_nothing_left(roots)
    assert not os.path.exists(f"/run/netns/{HOST}")


def _fetch(namespace: str, url: str) -> subprocess.CompletedProcess[str]:
    """An HTTP GET from ``namespace`` (Python's client: a static busybox of the host's may
    not run outside a container)."""
    code = (
        "import urllib.request; "
        f"print(urllib.request.urlopen({url!r}, timeout=2).read().decode(), end='')"
    )
    return subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


#: A web server whose CGI script answers who the container saw connect.
_WHO = (
    "mkdir -p /w/cgi-bin && echo '#!/bin/sh' > /w/cgi-bin/who && "
    "echo 'echo Content-Type: text/plain; echo; echo -n $REMOTE_ADDR' >> /w/cgi-bin/who && "
    "chmod +x /w/cgi-bin/who && exec httpd -f -p 80 -h /w"
)


async def test_a_published_port_is_reached_from_outside_through_the_dnat(
    tmp_path: Path, busybox_tar: Path
) -> None:
    """Another host reaches a published port straight (DNAT: the container sees the client's
    own address, not the proxy's); the host itself, on loopback, through the proxy; the
    mapping goes with the container."""
    roots, sock = _Roots(tmp_path), tmp_path / "s.sock"
    with _world():
        async with _engine(roots, sock) as client:
            await client.image_import(busybox_tar, repo="busybox", tag="latest")
            web = await client.container_create(
                config={"Image": "busybox", "Cmd": ["sh", "-c", _WHO],
                        "ExposedPorts": {"80/tcp": {}}},
                host_config={"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}},
            )  # fmt: skip
            await client.container_start(web)
            url = f"http://{UPLINK}:18080/cgi-bin/who"
            seen = ""
            for _ in range(50):  # httpd may not listen yet
                got = _fetch(OUTSIDE, url)
                if got.returncode == 0:
                    seen = got.stdout
                    break
                await anyio.sleep(0.1)
            # (httpd shows an IPv4 client as [::ffff:a.b.c.d].)
            assert seen == f"[::ffff:{WORLD}]", "the container sees the outside client itself"
            assert "tcp_any" in _in(HOST, "nft", "list", "map", "ip", "asyncstart", "tcp_any")
            assert ": 10.213.210." in _in(HOST, "nft", "list", "map", "ip", "asyncstart", "tcp_any")
            # The host itself, on loopback: the proxy (the container sees its gateway).
            local = _fetch(HOST, "http://127.0.0.1:18080/cgi-bin/who")
            assert (local.returncode, local.stdout) == (0, "[::ffff:10.213.210.1]"), local.stderr
            await client.container_remove(web, force=True)
            listed = _in(HOST, "nft", "list", "map", "ip", "asyncstart", "tcp_any")
            assert "18080" not in listed, "the mapping went with the container"
    assert_nothing_left(roots)
