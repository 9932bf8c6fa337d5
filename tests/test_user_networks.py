"""User-defined networks for real, driven as users drive them: the docker CLI and
docker-compose (1.29, Debian's) against a served daemon on runc.

Names are looked up by the containers themselves (busybox's resolver and wget) through the
embedded DNS server at 127.0.0.11. Whatever it forwards goes to a fake upstream server this
test runs on a loopback address (each container is given it with ``--dns``): no query leaves
the machine. Every test checks that nothing is left: containers, namespaces, mounts, and the
networks' bridges and firewall rules.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

import asyncstart
from asyncstart.network import dns

from . import test_runc
from .helpers import real_containers, remove_bridge, user_bridges
from .test_docker_cli import Cli, served
from .test_runc import _Roots, assert_nothing_left, open_clean

pytestmark = real_containers(
    ("needs the docker CLI", shutil.which("docker") is None),
    ("needs nft", shutil.which("nft") is None),
)

busybox_tar = test_runc.busybox_tar

BRIDGE, SUBNET = "asnet0", "10.213.89.0/24"
#: An address the user networks' subnets are given in these tests (clear of the pool's).
STATIC_SUBNET = "10.213.90.0/24"
#: What the fake upstream answers for the one name it knows.
OUTSIDE_NAME, OUTSIDE_ADDRESS = "outside.test", "192.0.2.77"
#: httpd serving /etc (so /hostname is the container's hostname: its short ID).
WEB = ["sh", "-c", "exec httpd -f -p 80 -h /etc"]


@pytest.fixture(scope="module", autouse=True)
def _own_bridge() -> Iterator[None]:
    yield
    remove_bridge(BRIDGE)


@pytest.fixture(autouse=True)
def _networks_of_a_failed_test() -> Iterator[None]:
    """A test that fails half-way leaves its networks (as dockerd's stay): removed after it,
    so that the next test's subnets are free. A test that passes has removed them itself."""
    before = user_bridges()
    yield
    for bridge in user_bridges() - before:
        remove_bridge(bridge)


@asynccontextmanager
async def fake_upstream() -> AsyncIterator[str]:
    """A DNS server on a loopback address of its own, port 53: ``outside.test`` is
    192.0.2.77, anything else NXDOMAIN. Yields its address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(20):
        address = f"127.0.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
        try:
            sock.bind((address, 53))
            break
        except OSError:
            continue
    else:
        sock.close()
        pytest.fail("no loopback address with a free port 53")
    sock.setblocking(False)

    async def answer() -> None:
        while True:
            await anyio.wait_readable(sock)
            packet, client = sock.recvfrom(512)
            query = dns.parse_query(packet)
            if query is None:
                continue
            if query.name == OUTSIDE_NAME and query.qtype == dns.A:
                reply = dns.answer(query, [OUTSIDE_ADDRESS])
            elif query.name == OUTSIDE_NAME:
                reply = dns.empty(query)  # (no IPv6 address)
            else:
                reply = dns.nxdomain(query)
            sock.sendto(reply, client)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            yield address
            tg.cancel_scope.cancel()
    finally:
        sock.close()


def _firewall() -> str:
    listed = subprocess.run(
        ["nft", "list", "table", "ip", "asyncstart"], capture_output=True, text=True, check=False
    )
    return listed.stdout


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


async def _network(cli: Cli, name: str, *flags: str) -> str:
    """Create a network; its bridge."""
    network_id = (await cli.out("network", "create", *flags, name)).strip()
    return f"as-{network_id[:12]}"


async def _output(cli: Cli, *args: str) -> tuple[int, str]:
    """``docker run --rm`` of ``args``: exit code and output (both streams)."""
    result = await cli.run("run", "--rm", *args, ok=False)
    return result.returncode, (result.stdout + result.stderr).decode()


def _assert_network_gone(bridge: str) -> None:
    assert not _link_exists(bridge), f"bridge {bridge} left"
    assert f"asyncstart:{bridge}" not in _firewall(), f"rules of {bridge} left"


async def test_containers_find_each_other_by_name_on_their_networks_only(
    tmp_path: Path, busybox_tar: Path
) -> None:
    async with fake_upstream() as upstream, served(tmp_path, busybox_tar, bridge=BRIDGE,
                                                   subnet=SUBNET) as cli:  # fmt: skip
        dns_flag = f"--dns={upstream}"
        front_bridge = await _network(cli, "astest-front")
        back_bridge = await _network(cli, "astest-back", "--subnet", STATIC_SUBNET)
        assert _link_exists(front_bridge) and _link_exists(back_bridge)
        [back] = json.loads(await cli.out("network", "inspect", "astest-back"))
        # What the CLI sent, as dockerd echoes it (no gateway asked: none shown).
        assert back["IPAM"] == {"Driver": "default", "Options": {},
                                "Config": [{"Subnet": STATIC_SUBNET}]}  # fmt: skip
        web = (
            await cli.out("run", "-d", "--name", "web", "--network", "astest-front",
                          "--network-alias", "www", dns_flag, "busybox", *WEB)
        ).strip()  # fmt: skip
        short = web[:12]
        # By name, alias, <name>.<network> and short ID; /etc/resolv.conf points at the
        # embedded server; a name it does not know is forwarded (to the fake upstream).
        script = (
            "cat /etc/resolv.conf; for n in web www web.astest-front " + short + "; do "
            "for i in $(seq 50); do wget -q -O - http://$n/hostname && break; "
            "sleep 0.1; done; done; nslookup " + OUTSIDE_NAME
        )
        code, out = await _output(cli, "--network", "astest-front", dns_flag, "busybox", "sh",
                                  "-c", script)  # fmt: skip
        assert code == 0, out
        assert "nameserver 127.0.0.11\n" in out and "options ndots:0" in out
        assert out.count(f"{short}\n") == 4, out
        assert OUTSIDE_ADDRESS in out, out
        # Another network neither reaches nor resolves it.
        web_ip = json.loads(await cli.out("inspect", "web"))[0]["NetworkSettings"]["Networks"][
            "astest-front"
        ]["IPAddress"]
        code, out = await _output(cli, "--network", "astest-back", dns_flag, "busybox", "sh",
                                  "-c", f"ping -c 1 -W 1 {web_ip} || nslookup web")  # fmt: skip
        assert code != 0 and "NXDOMAIN" in out, out
        # The default bridge has no embedded server.
        code, out = await _output(cli, "busybox", "cat", "/etc/resolv.conf")
        assert "127.0.0.11" not in out
        # A static address, and a running container joining a second network with an alias.
        await cli.out("run", "-d", "--name", "db", "--network", "astest-back", "--ip",
                      "10.213.90.50", dns_flag, "busybox", "sleep", "1000")  # fmt: skip
        info = json.loads(await cli.out("inspect", "db"))[0]["NetworkSettings"]["Networks"]
        assert info["astest-back"]["IPAddress"] == "10.213.90.50"
        await cli.out("network", "connect", "--alias", "api", "astest-back", "web")
        code, out = await _output(cli, "--network", "astest-back", dns_flag, "busybox", "sh",
                                  "-c", "wget -q -O - http://api/hostname")  # fmt: skip
        assert code == 0 and out.startswith(f"{short}\n"), out
        networks = json.loads(await cli.out("network", "inspect", "astest-back"))[0]
        assert sorted(c["Name"] for c in networks["Containers"].values()) == ["db", "web"]
        # Removing a network a container runs on is refused.
        refused = await cli.fails("network", "rm", "astest-back")
        assert "has active endpoints" in refused
        # Disconnected: the interface and the names go.
        await cli.out("network", "disconnect", "astest-back", "web")
        code, out = await _output(cli, "--network", "astest-back", dns_flag, "busybox", "sh",
                                  "-c", "nslookup api; ping -c 1 -W 1 10.213.90.2")  # fmt: skip
        assert code != 0 and "NXDOMAIN" in out, out
        # A container of the default bridge that joins a user-defined network is told of the
        # embedded server (its resolv.conf, bind-mounted, rewritten in place).
        await cli.out("run", "-d", "--name", "plain", dns_flag, "busybox", "sleep", "1000")
        [plain] = json.loads(await cli.out("inspect", "plain"))
        assert "127.0.0.11" not in Path(plain["ResolvConfPath"]).read_text()
        await cli.out("network", "connect", "astest-front", "plain")
        assert "nameserver 127.0.0.11\n" in Path(plain["ResolvConfPath"]).read_text()
        await cli.out("rm", "-f", "plain")
        # A host's bridge given by name is used, and stays when the network goes.
        subprocess.run(["ip", "link", "add", "astest-own", "type", "bridge"], check=True)
        try:
            await cli.out("network", "create", "-o", "com.docker.network.bridge.name=astest-own",
                          "--subnet", "10.213.91.0/24", "astest-host-bridge")  # fmt: skip
            await cli.out("network", "rm", "astest-host-bridge")
            assert _link_exists("astest-own"), "a bridge the network did not make stays"
            assert "asyncstart:astest-own" not in _firewall()
        finally:
            subprocess.run(["ip", "link", "del", "astest-own"], check=False)
        await cli.out("rm", "-f", "web", "db")
        await cli.out("network", "rm", "astest-front", "astest-back")
        _assert_network_gone(front_bridge)
        _assert_network_gone(back_bridge)
        assert (await cli.out("network", "ls", "-q", "--filter", "type=custom")) == ""


async def test_the_default_route_goes_through_the_first_network_by_name(
    tmp_path: Path, busybox_tar: Path
) -> None:
    """libnetwork's choice of the gateway among a container's networks: the first by name that
    is not internal. A connect or a disconnect that changes the choice moves the route; an
    internal network's endpoint has no gateway."""
    subnets = {"astest-zz": "10.213.94", "astest-aa": "10.213.95", "astest-a0": "10.213.96"}
    async with served(tmp_path, busybox_tar, bridge=BRIDGE, subnet=SUBNET) as cli:
        bridges = [
            await _network(cli, name, "--subnet", f"{prefix}.0/24",
                           *(["--internal"] if name == "astest-a0" else []))
            for name, prefix in subnets.items()
        ]  # fmt: skip

        async def via(container: str) -> str:
            """The gateway of its default route, as the container sees it ("" for none)."""
            routes = await cli.out("exec", container, "ip", "route")
            default = [line.split() for line in routes.splitlines() if line.startswith("default")]
            assert len(default) <= 1, routes
            return default[0][2] if default else ""

        await cli.out("run", "-d", "--name", "rr", "--network", "astest-zz", "busybox",
                      "sleep", "600")  # fmt: skip
        assert await via("rr") == "10.213.94.1"
        await cli.out("network", "connect", "astest-a0", "rr")  # internal: no gateway
        assert await via("rr") == "10.213.94.1"
        await cli.out("network", "connect", "astest-aa", "rr")  # before astest-zz by name
        assert await via("rr") == "10.213.95.1"
        networks = json.loads(await cli.out("inspect", "rr"))[0]["NetworkSettings"]["Networks"]
        gateways = {name: endpoint["Gateway"] for name, endpoint in networks.items()}
        assert gateways == {"astest-zz": "10.213.94.1", "astest-aa": "10.213.95.1",
                            "astest-a0": ""}  # fmt: skip
        await cli.out("network", "disconnect", "astest-aa", "rr")
        assert await via("rr") == "10.213.94.1"
        await cli.out("network", "disconnect", "astest-zz", "rr")  # only an internal one left
        assert await via("rr") == ""
        await cli.out("rm", "-f", "rr")
        # Two networks at the start: the same choice, whichever is the NetworkMode.
        await cli.out("create", "--name", "ss", "--network", "astest-zz", "busybox",
                      "sleep", "600")  # fmt: skip
        await cli.out("network", "connect", "astest-aa", "ss")
        await cli.out("start", "ss")
        assert await via("ss") == "10.213.95.1"
        await cli.out("rm", "-f", "ss")
        for name, bridge in zip(subnets, bridges, strict=True):
            await cli.out("network", "rm", name)
            _assert_network_gone(bridge)


async def test_a_restarted_daemon_keeps_its_networks_rules_and_names(
    tmp_path: Path, busybox_tar: Path
) -> None:
    roots = _Roots(tmp_path)
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", bridge=BRIDGE,
        bridge_subnet=SUBNET,
    )  # fmt: skip
    async with fake_upstream() as upstream:
        async with asyncstart.open_daemon(config) as daemon:  # (its containers outlive it)
            await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
            network_id = await daemon.network_create({"Name": "astest-kept"})
            bridge = f"as-{network_id[:12]}"
            host = {"NetworkMode": "astest-kept", "Dns": [upstream]}
            web = await daemon.container_create(
                name="web", config={"Image": "busybox", "Cmd": WEB}, host_config=host
            )
            await daemon.container_start(web)
            # Waits for a file the test makes after the restart, then looks web up.
            script = "while [ ! -e /go ]; do sleep 0.1; done; wget -q -O - http://web/hostname"
            client = await daemon.container_create(
                config={"Image": "busybox", "Cmd": ["sh", "-c", script]}, host_config=host
            )
            await daemon.container_start(client)
            rules = _firewall().count(f"asyncstart:{bridge}")
            assert rules > 0
        async with open_clean(config) as daemon:
            [kept] = await daemon.networks_list({"name": ["astest-kept"]})
            assert kept["Id"] == network_id and _link_exists(bridge)
            assert _firewall().count(f"asyncstart:{bridge}") == rules, "made anew, not twice"
            (roots.data / "overlay" / client / "merged" / "go").touch()
            assert (await daemon.container_wait(client))["StatusCode"] == 0
            logs = b"".join([d async for _, d in daemon.container_logs(client)]).decode()
            assert logs == f"{web[:12]}\n"
            await daemon.container_remove(client)
            await daemon.container_remove(web, force=True)
            assert await daemon.networks_prune() == ["astest-kept"]
            _assert_network_gone(bridge)
    assert_nothing_left(roots)


COMPOSE = """\
version: "3"
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo hello-from-web > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]
    stop_signal: SIGKILL  # (httpd as pid 1 ignores SIGTERM)
    dns: [UPSTREAM]
  fetch:
    image: busybox
    command: ["sh", "-c", "for i in $$(seq 100); do
      wget -q -O - http://web/index.html && exit 0; sleep 0.1; done; exit 1"]
    dns: [UPSTREAM]
"""


@pytest.mark.skipif(
    shutil.which("docker-compose") is None and os.environ.get("CI") != "true",
    reason="needs docker-compose (CI installs it: there, its absence fails)",
)
async def test_docker_compose_up_and_down(tmp_path: Path, busybox_tar: Path) -> None:
    """docker-compose 1.29: one service fetches from the other by its service name; ``down``
    leaves no network, bridge, rule or namespace behind."""
    project = tmp_path / "proj"
    project.mkdir()
    async with fake_upstream() as upstream, served(tmp_path, busybox_tar, bridge=BRIDGE,
                                                   subnet=SUBNET) as cli:  # fmt: skip
        (project / "docker-compose.yml").write_text(COMPOSE.replace("UPSTREAM", upstream))
        env = {**cli.env, "DOCKER_HOST": cli.host}

        async def compose(*args: str) -> str:
            with anyio.fail_after(60):
                result = await anyio.run_process(
                    ["docker-compose", "-p", "astestc", *args], cwd=project, env=env,
                    check=False, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            assert result.returncode == 0, result.stderr.decode()
            return (result.stdout + result.stderr).decode()

        started = time.monotonic()
        await compose("up", "-d")
        print(f"docker-compose up -d: {time.monotonic() - started:.2f} s")
        [network] = json.loads(await cli.out("network", "inspect", "astestc_default"))
        bridge = f"as-{network['Id'][:12]}"
        assert network["Labels"]["com.docker.compose.project"] == "astestc"
        assert (await cli.out("wait", "astestc_fetch_1")).strip() == "0"
        assert "hello-from-web" in await cli.out("logs", "astestc_fetch_1")
        web = json.loads(await cli.out("inspect", "astestc_web_1"))[0]
        assert "web" in web["NetworkSettings"]["Networks"]["astestc_default"]["Aliases"]
        await compose("down")
        assert (await cli.out("ps", "-aq")) == ""
        assert (await cli.out("network", "ls", "-q", "--filter", "type=custom")) == ""
        _assert_network_gone(bridge)
