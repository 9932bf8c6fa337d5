"""Bridge networking for real (root): pyroute2, network namespaces, veth pairs, an IPAM.

Traffic stays inside namespaces these tests create, on a bridge and subnet of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import asyncstart
from asyncstart import errors
from asyncstart.images.busybox import build_busybox_tar, find_static_busybox
from asyncstart.network import rtnl

from .helpers import real_containers, remove_bridge
from .test_runc import _Roots, assert_nothing_left, open_clean

pytestmark = real_containers()

BRIDGE = "astest0"
SUBNET = "10.213.77.0/24"


def _veths() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert find_static_busybox() is not None
    return build_busybox_tar(tmp_path_factory.mktemp("image") / "busybox.tar")


@pytest.fixture
async def net(tmp_path: Path, busybox: Path) -> AsyncIterator[asyncstart.Daemon]:
    roots = _Roots(tmp_path)
    config = asyncstart.DaemonConfig(
        data_root=roots.data,
        exec_root=roots.exec,
        network="bridge",
        bridge=BRIDGE,
        bridge_subnet=SUBNET,
    )
    try:
        async with open_clean(config) as daemon:
            await daemon.image_import(str(busybox), repo="busybox")
            yield daemon
        assert_nothing_left(roots)
    finally:
        with contextlib.suppress(Exception):
            remove_bridge(BRIDGE)


async def _run(daemon: asyncstart.Daemon, *cmd: str, **host: object) -> str:
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": list(cmd)}, host_config=dict(host)
    )
    await daemon.container_start(cid)
    return cid


async def _output(daemon: asyncstart.Daemon, cid: str) -> str:
    with anyio.fail_after(30):
        status = await daemon.container_wait(cid)
    out = b"".join([d async for _, d in daemon.container_logs(cid)]).decode()
    assert status == {"StatusCode": 0}, out
    return out


async def test_two_containers_reach_each_other_and_the_gateway(net: asyncstart.Daemon) -> None:
    server = await _run(net, "sleep", "1000")
    info = (await net.container_inspect(server))["NetworkSettings"]
    address = info["IPAddress"]
    assert address.startswith("10.213.77.") and info["Gateway"] == "10.213.77.1"
    assert info["IPPrefixLen"] == 24 and info["MacAddress"].startswith("02:42:0a:d5:4d:")
    assert info["Networks"]["bridge"]["IPAddress"] == address
    assert info["SandboxKey"].endswith(server)
    client = await _run(net, "sh", "-c", f"ping -c 1 -W 3 {address} && ping -c 1 -W 3 10.213.77.1")
    assert "0% packet loss" in await _output(net, client)
    await net.container_remove(server, force=True)
    await net.container_remove(client)


async def test_none_has_only_loopback_and_host_sees_the_hosts_links(net: asyncstart.Daemon) -> None:
    none = await _run(net, "sh", "-c", "ls /sys/class/net", NetworkMode="none")
    assert (await _output(net, none)).split() == ["lo"]
    host = await _run(net, "sh", "-c", "ls /sys/class/net", NetworkMode="host")
    assert set((await _output(net, host)).split()) == set(os.listdir("/sys/class/net"))
    for cid in (none, host):
        await net.container_remove(cid)


async def test_fifty_concurrent_starts_get_fifty_addresses(net: asyncstart.Daemon) -> None:
    ids = [
        await net.container_create(config={"Image": "busybox", "Cmd": ["sleep", "1000"]})
        for _ in range(50)
    ]
    async with anyio.create_task_group() as tg:
        for cid in ids:
            tg.start_soon(net.container_start, cid)
    addresses = {(await net.container_inspect(cid))["NetworkSettings"]["IPAddress"] for cid in ids}
    assert len(addresses) == 50
    for cid in ids:
        await net.container_remove(cid, force=True)


async def test_start_stop_cycles_leave_nothing(net: asyncstart.Daemon, tmp_path: Path) -> None:
    cid = await net.container_create(config={"Image": "busybox", "Cmd": ["sleep", "1000"]})
    for _ in range(100):
        await net.container_start(cid)
        await net.container_kill(cid)
    await net.container_remove(cid)
    # (The lease file is in the exec root: it lives as long as the containers it names.)
    assert json.loads((_Roots(tmp_path).exec / "network" / "ipam.json").read_text()) == {BRIDGE: {}}
    # The kernel drops each veth with its namespace, shortly after: there is no event to wait
    # on for that, so this polls (bounded) — the engine itself never waits for it.
    with anyio.fail_after(10):
        while [v for v in _veths() if _master(v) == BRIDGE]:
            await anyio.sleep(0.05)


async def test_a_refusal_halfway_through_the_netlink_writes_leaves_nothing(
    net: asyncstart.Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel refuses the address (no IPv4 prefix is 33 bits long) after the veth pair is
    # made and inside the batch that brings loopback up: the start fails as dockerd's 500, the
    # namespace, its veths and the lease go.
    add_address = rtnl.add_address
    monkeypatch.setattr(
        rtnl, "add_address", lambda index, address, _: add_address(index, address, 33)
    )
    cid = await net.container_create(config={"Image": "busybox", "Cmd": ["sleep", "1000"]})
    with pytest.raises(
        errors.SystemError,
        match="^failed to set up container networking: .*configure the container's interfaces: "
        "Invalid argument$",
    ):
        await net.container_start(cid)
    assert list((_Roots(tmp_path).exec / "netns").glob("*")) == []
    leases = json.loads((_Roots(tmp_path).exec / "network" / "ipam.json").read_text())
    assert leases == {BRIDGE: {}}
    with anyio.fail_after(10):
        while [v for v in _veths() if _master(v) == BRIDGE]:
            await anyio.sleep(0.05)
    monkeypatch.undo()
    await net.container_start(cid)  # (and the next start is whole)
    assert (await net.container_inspect(cid))["NetworkSettings"]["IPAddress"].startswith(
        "10.213.77."
    )
    await net.container_remove(cid, force=True)


def _master(link: str) -> str:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{link}/master"))
    except OSError:
        return ""


async def test_an_unknown_network_fails_the_start_and_leaves_nothing(
    net: asyncstart.Daemon, tmp_path: Path
) -> None:
    cid = await net.container_create(
        config={"Image": "busybox", "Cmd": ["true"]}, host_config={"NetworkMode": "nope"}
    )
    # As dockerd: the create lets an unknown network by, the start fails with its 404.
    with pytest.raises(
        errors.NotFound, match="^failed to set up container networking: network nope not found$"
    ):
        await net.container_start(cid)
    assert list((tmp_path / "x" / "netns").glob("*")) == []
    await net.container_remove(cid)


async def test_the_files_that_name_the_container(net: asyncstart.Daemon) -> None:
    cid = await net.container_create(
        config={"Image": "busybox", "Hostname": "web", "Cmd": ["sh", "-c",
                "cat /etc/hostname /etc/hosts /etc/resolv.conf"]},
        host_config={"ExtraHosts": ["db:10.213.77.200"], "Dns": ["10.213.77.53"],
                     "DnsSearch": ["example.test"]},
    )  # fmt: skip
    await net.container_start(cid)
    out = await _output(net, cid)
    info = await net.container_inspect(cid)
    address = info["NetworkSettings"]["IPAddress"]
    assert out.startswith("web\n127.0.0.1\tlocalhost\n")
    assert "10.213.77.200\tdb\n" in out and f"{address}\tweb\n" in out
    assert "nameserver 10.213.77.53\nsearch example.test\n" in out
    assert info["HostsPath"].endswith(f"{cid}/hosts")
    await net.container_remove(cid)


async def test_container_mode_shares_the_targets_network(net: asyncstart.Daemon) -> None:
    target = await _run(net, "sleep", "1000")
    address = (await net.container_inspect(target))["NetworkSettings"]["IPAddress"]
    joiner = await _run(
        net, "sh", "-c", "ip -o -4 addr show eth0; hostname", NetworkMode=f"container:{target}"
    )
    out = await _output(net, joiner)
    assert f"inet {address}/24" in out and out.strip().endswith(target[:12])
    # dockerd's errors: itself, a target that does not run, one that does not exist.
    me = await net.container_create(
        name="selfish", config={"Image": "busybox", "Cmd": ["true"]},
        host_config={"NetworkMode": "container:selfish"},
    )  # fmt: skip
    with pytest.raises(errors.InvalidParameter, match="^cannot join own network namespace$"):
        await net.container_start(me)
    stopped = await net.container_create(config={"Image": "busybox", "Cmd": ["true"]})
    follower = await net.container_create(
        config={"Image": "busybox", "Cmd": ["true"]},
        host_config={"NetworkMode": f"container:{stopped}"},
    )
    with pytest.raises(errors.Conflict, match="non running container: " + stopped):
        await net.container_start(follower)
    ghost = await net.container_create(
        config={"Image": "busybox", "Cmd": ["true"]},
        host_config={"NetworkMode": "container:ghost"},
    )
    with pytest.raises(errors.NotFound, match="^No such container: ghost$"):
        await net.container_start(ghost)
    for cid in (joiner, me, stopped, follower, ghost):
        await net.container_remove(cid)
    await net.container_remove(target, force=True)


async def test_a_reopened_daemon_frees_what_dead_containers_held(
    tmp_path: Path, busybox: Path
) -> None:
    roots = _Roots(tmp_path)
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, network="bridge", bridge=BRIDGE,
        bridge_subnet=SUBNET,
    )  # fmt: skip
    try:
        async with asyncstart.open_daemon(config) as daemon:
            await daemon.image_import(str(busybox), repo="busybox")
            keeps = await _run(daemon, "sleep", "1000")
            dies = await _run(daemon, "sleep", "1000")
            pid = (await daemon.container_inspect(dies))["State"]["Pid"]
        os.kill(pid, 9)  # dies while no daemon watches
        async with open_clean(config) as daemon:
            assert set(json_leases(roots)) == {keeps}
            assert sorted(p.name for p in (roots.exec / "netns").iterdir()) == [keeps]
            state = (await daemon.container_inspect(dies))["State"]
            assert state["Status"] == "exited"
            # Its address is free again; the live one keeps its own.
            again = await _run(daemon, "sleep", "1000")
            assert set(json_leases(roots)) == {keeps, again}
        assert_nothing_left(roots)
    finally:
        remove_bridge(BRIDGE)


def json_leases(roots: _Roots) -> dict[str, str]:
    import json

    leases: dict[str, dict[str, str]] = json.loads(
        (roots.exec / "network" / "ipam.json").read_text()
    )
    return {cid: address for per_bridge in leases.values() for cid, address in per_bridge.items()}


async def test_a_published_port_answers_on_loopback(net: asyncstart.Daemon) -> None:
    import socket as _socket

    with _socket.socket() as probe:  # a free port on loopback for this test
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    server = await _run(net, "sh", "-c", "while true; do echo hello | nc -l -p 80; done",
                        PortBindings=bindings)  # fmt: skip
    info = await net.container_inspect(server)
    assert info["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    }
    row = (await net.containers_list(filters={"id": [server]}))[0]
    assert row["Ports"] == [
        {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": port, "Type": "tcp"}
    ]
    with anyio.fail_after(20):
        while True:  # until nc inside listens: each try is a real connection, no sleep
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                data = b""
                async for chunk in stream:
                    data += chunk
                if data:
                    break
    assert data == b"hello\n"
    # The same port for another container: dockerd's error, and nothing leaks.
    clash = await net.container_create(
        config={"Image": "busybox", "Cmd": ["sleep", "1000"]},
        host_config={"PortBindings": bindings},
    )
    with pytest.raises(errors.SystemError, match="port is already allocated"):
        await net.container_start(clash)
    state = (await net.container_inspect(clash))["State"]
    assert state["Status"] == "created" and not state["Running"]
    await net.container_remove(server, force=True)
    # Closed with the container: the port is free again (SO_REUSEADDR: past TIME_WAIT).
    with _socket.socket() as probe:
        probe.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()
    await net.container_remove(clash)


async def test_published_ports_answer_again_after_a_reopen(tmp_path: Path, busybox: Path) -> None:
    import socket as _socket

    roots = _Roots(tmp_path)
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, network="bridge", bridge=BRIDGE,
        bridge_subnet=SUBNET,
    )  # fmt: skip
    with _socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    try:
        async with asyncstart.open_daemon(config) as daemon:
            await daemon.image_import(str(busybox), repo="busybox")
            script = "while true; do echo hi | nc -l -p 80; done"
            # Bound, exposed and not published, and published by -P (IPv4 and IPv6).
            server = await daemon.container_create(
                config={"Image": "busybox", "Cmd": ["sh", "-c", script],
                        "ExposedPorts": {"81/tcp": {}, "82/tcp": {}}},
                host_config={"PortBindings": bindings | {"82/tcp": [{}]}},
            )  # fmt: skip
            await daemon.container_start(server)
            before = (await daemon.container_inspect(server))["NetworkSettings"]["Ports"]
            assert before["81/tcp"] is None and len(before["82/tcp"]) == 2
        async with open_clean(config) as daemon:
            with anyio.fail_after(20):
                while True:
                    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                        data = b"".join([chunk async for chunk in stream])
                    if data:
                        break
            assert data == b"hi\n"
            assert (await daemon.container_inspect(server))["NetworkSettings"]["Ports"] == before
            for ip in ("127.0.0.1", "::1"):  # the -P port listens again, on both families
                async with await anyio.connect_tcp(ip, int(before["82/tcp"][0]["HostPort"])):
                    pass
            await daemon.container_remove(server, force=True)
        assert_nothing_left(roots)
    finally:
        remove_bridge(BRIDGE)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def _link(name: str, kind: str, address: str | None) -> Iterator[None]:
    """A link of this test's own (removed after it), with an address if given."""
    remove_bridge(name)
    _ip(
        "link", "add", name, "type", kind, *(["peer", "name", name + "p"] if kind == "veth" else [])
    )
    try:
        if address:
            _ip("addr", "add", address, "dev", name)
        _ip("link", "set", name, "up")
        yield
    finally:
        remove_bridge(name)


async def _first_start(
    tmp_path: Path, busybox: Path, refused: str = "", **network: str
) -> dict[str, object]:
    """A container's start on a daemon with these bridge settings: its network settings, or
    (``refused``) the start's error, which must match, leaving nothing behind."""
    roots = _Roots(tmp_path)
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, network="bridge", **network
    )
    settings: dict[str, object] = {}
    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox), repo="busybox")
        cid = await daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        if refused:
            with pytest.raises(errors.SystemError, match=refused):
                await daemon.container_start(cid)
        else:
            await daemon.container_start(cid)
            settings = (await daemon.container_inspect(cid))["NetworkSettings"]
            await daemon.container_wait(cid)
        await daemon.container_remove(cid, force=True)
    assert_nothing_left(roots)
    return settings


async def test_a_bridge_with_other_addresses_is_refused_until_bip_names_them(
    tmp_path: Path, busybox: Path
) -> None:
    """A second daemon, or one restarted with another subnet, must never put containers on a
    bridge the host does not route their subnet to."""
    with _link("astestbip0", "bridge", "10.213.92.1/24"):
        await _first_start(
            tmp_path / "a",
            busybox,
            refused=r"has IPv4 address 10\.213\.92\.1/24, not the configured 10\.213\.91\.1/24",
            bridge="astestbip0",
            bridge_subnet="10.213.91.0/24",
        )
        # dockerd's --bip: the bridge's address, whose network is the containers' subnet.
        settings = await _first_start(
            tmp_path / "b", busybox, bridge="astestbip0", bridge_ip="10.213.92.1/24"
        )
        assert str(settings["IPAddress"]).startswith("10.213.92.")
        assert settings["Gateway"] == "10.213.92.1"


async def test_a_link_that_is_not_a_bridge_or_a_routed_subnet_is_refused(
    tmp_path: Path, busybox: Path
) -> None:
    with _link("astestbip1", "veth", None):
        await _first_start(
            tmp_path / "a", busybox, refused="astestbip1 exists and is not a bridge",
            bridge="astestbip1",
        )  # fmt: skip
    with _link("astestbip2", "veth", "10.213.93.1/24"):
        await _first_start(
            tmp_path / "b", busybox, refused=r"overlaps 10\.213\.93\.0/24",
            bridge="astestbip3", bridge_subnet="10.213.93.0/24",
        )  # fmt: skip
    assert not os.path.exists("/sys/class/net/astestbip3"), "no bridge made for a refused subnet"


async def test_publish_all_ports_takes_ephemeral_ports(net: asyncstart.Daemon) -> None:
    """``docker run -P``: every exposed port on a host port of the kernel's ephemeral range;
    without it, exposed ports are listed unpublished (``null``), as dockerd's inspect."""
    exposed = {"80/tcp": {}, "8080": {}}
    script = "while true; do echo hello | nc -l -p 80; done"
    server = await net.container_create(
        config={"Image": "busybox", "Cmd": ["sh", "-c", script], "ExposedPorts": exposed},
        host_config={"PublishAllPorts": True},
    )
    await net.container_start(server)
    ports = (await net.container_inspect(server))["NetworkSettings"]["Ports"]
    assert set(ports) == {"80/tcp", "8080/tcp"}
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
    low, high = map(int, ephemeral.split())
    # As dockerd: every IPv4 address, and every IPv6 one on the same port.
    host_port = ports["80/tcp"][0]["HostPort"]
    assert ports["80/tcp"] == [
        {"HostIp": "0.0.0.0", "HostPort": host_port},
        {"HostIp": "::", "HostPort": host_port},
    ]
    assert low <= int(host_port) <= high
    for loopback in ("127.0.0.1", "::1"):
        with anyio.fail_after(20):
            while True:  # until nc inside listens
                async with await anyio.connect_tcp(loopback, int(host_port)) as stream:
                    data = b"".join([chunk async for chunk in stream])
                if data:
                    break
        assert data == b"hello\n"
    quiet = await net.container_create(
        config={"Image": "busybox", "Cmd": ["sleep", "100"], "ExposedPorts": exposed},
        host_config={"PortBindings": {"9000/tcp": []}},  # bound to nothing: not published
    )
    await net.container_start(quiet)
    ports = (await net.container_inspect(quiet))["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": None, "8080/tcp": None, "9000/tcp": None}
    # ``docker ps`` lists them by number and protocol only.
    row = (await net.containers_list(filters={"id": [quiet]}))[0]
    assert {"PrivatePort": 8080, "Type": "tcp"} in row["Ports"] and len(row["Ports"]) == 3
    row = (await net.containers_list(filters={"id": [server]}))[0]
    assert {"IP": "::", "PrivatePort": 80, "PublicPort": int(host_port), "Type": "tcp"} in row[
        "Ports"
    ]
    for cid in (server, quiet):
        await net.container_remove(cid, force=True)


async def test_legacy_links_name_and_describe_the_linked_container(net: asyncstart.Daemon) -> None:
    """``--link db:store`` on the default bridge: ``store`` resolves to db (``/etc/hosts``)
    and dockerd's ``STORE_*`` variables describe it; a stopped one cannot be linked (409),
    and host networking refuses links at create (400)."""
    db = await net.container_create(
        name="db",
        config={"Image": "busybox", "Cmd": ["sleep", "1000"], "Env": ["SECRET=s3"],
                "ExposedPorts": {"6379/tcp": {}}},
    )  # fmt: skip
    await net.container_start(db)
    address = (await net.container_inspect(db))["NetworkSettings"]["IPAddress"]
    web = await net.container_create(
        name="web",
        config={"Image": "busybox", "Cmd": ["sh", "-c", "ping -c 1 -W 5 store && env"]},
        host_config={"Links": ["db:store"]},
    )
    await net.container_start(web)
    out = await _output(net, web)
    assert f"PING store ({address})" in out
    for line in (f"STORE_PORT=tcp://{address}:6379", "STORE_NAME=/web/store",
                 "STORE_ENV_SECRET=s3", f"STORE_PORT_6379_TCP_ADDR={address}"):  # fmt: skip
        assert line in out.splitlines(), line
    await net.container_stop(db, timeout=0)
    with pytest.raises(errors.Conflict, match="Cannot link to a non running container: /db AS"):
        await net.container_start(web)
    with pytest.raises(errors.InvalidParameter, match="host type networking can't be used"):
        await net.container_create(
            config={"Image": "busybox"}, host_config={"Links": ["db"], "NetworkMode": "host"}
        )
    for cid in (web, db):
        await net.container_remove(cid, force=True)
