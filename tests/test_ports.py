"""The userland proxy of published ports, on loopback: TCP and UDP, ephemeral host ports,
dockerd's errors. (Through real containers: ``test_network``.)"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncstart import errors
from asyncstart.network.ports import PortProxy

pytestmark = pytest.mark.anyio

LOOPBACK = "127.0.0.1"


async def _udp_echo(task_group: anyio.abc.TaskGroup) -> int:
    """A UDP server on loopback answering each datagram with ``echo:`` and it; its port."""
    server = await anyio.create_udp_socket(local_host=LOOPBACK)

    async def serve() -> None:
        async with server:
            async for data, (host, port) in server:
                await server.sendto(b"echo:" + data, host, port)

    task_group.start_soon(serve)
    return int(server.extra(anyio.abc.SocketAttribute.local_port))


async def test_udp_is_proxied_per_client_on_an_ephemeral_port() -> None:
    async with anyio.create_task_group() as tg:
        target = await _udp_echo(tg)
        proxy = PortProxy(tg)
        ports = await proxy.publish(
            "c1", "/web", LOOPBACK, {f"{target}/udp": [{"HostIp": LOOPBACK, "HostPort": ""}]}
        )
        [binding] = ports[f"{target}/udp"]
        published = int(binding["HostPort"])
        ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = map(int, ephemeral.split())
        assert binding["HostIp"] == LOOPBACK and low <= published <= high
        # Two clients, each answered on its own.
        for name in (b"one", b"two"):
            async with await anyio.create_connected_udp_socket(LOOPBACK, published) as client:
                with anyio.fail_after(5):
                    await client.send(name)
                    assert await client.receive() == b"echo:" + name
        await proxy.unpublish("c1")
        # Closed with the container: the port is free again.
        async with await anyio.create_udp_socket(local_host=LOOPBACK, local_port=published):
            pass
        tg.cancel_scope.cancel()


async def test_tcp_and_udp_on_one_port_and_a_taken_port() -> None:
    async with anyio.create_task_group() as tg:
        proxy = PortProxy(tg)
        ports = await proxy.publish(
            "c1", "/web", LOOPBACK, {"80/tcp": [{"HostIp": LOOPBACK}], "80/udp": [{}]}
        )
        assert set(ports) == {"80/tcp", "80/udp"}
        assert ports["80/udp"][0]["HostIp"] == "0.0.0.0"
        taken = ports["80/tcp"][0]["HostPort"]
        with pytest.raises(errors.SystemError, match="port is already allocated"):
            await proxy.publish(
                "c2", "/other", LOOPBACK, {"81/tcp": [{"HostIp": LOOPBACK, "HostPort": taken}]}
            )
        with pytest.raises(errors.InvalidParameter, match="unsupported protocol"):
            await proxy.publish("c3", "/x", LOOPBACK, {"80/sctp": [{}]})
        await proxy.unpublish("c1")
        tg.cancel_scope.cancel()


async def test_a_host_port_range_takes_its_first_free_port() -> None:
    async with anyio.create_task_group() as tg:
        proxy = PortProxy(tg)
        first = await proxy.publish("c1", "/a", LOOPBACK, {"80/tcp": [{"HostIp": LOOPBACK}]})
        taken = int(first["80/tcp"][0]["HostPort"])
        span = f"{taken}-{taken + 1}"
        ports = await proxy.publish(
            "c2", "/b", LOOPBACK, {"80/tcp": [{"HostIp": LOOPBACK, "HostPort": span}]}
        )
        assert ports["80/tcp"] == [{"HostIp": LOOPBACK, "HostPort": str(taken + 1)}]
        for bad in ("8001-8000", "x", "0", "70000"):
            with pytest.raises(errors.InvalidParameter, match=f"^invalid hostPort: {bad}$"):
                await proxy.publish("c3", "/c", LOOPBACK, {"80/tcp": [{"HostPort": bad}]})
        for container in ("c1", "c2"):
            await proxy.unpublish(container)
        tg.cancel_scope.cancel()
