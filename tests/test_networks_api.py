"""User-defined networks over the Engine API, on the fake runtime and the fake network driver:
``docker network create/ls/inspect/rm/prune/connect/disconnect`` and containers created on
such networks, with dockerd's statuses and messages. docker-py drives the same routes at the
end (in a worker thread, against the server in the test's own loop)."""

from __future__ import annotations

import ipaddress
import json
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncstart import FakeMounter, FakeNetwork, FakeRuntime, errors

from .conftest import OpenEngine
from .test_api import Api, Raw, http, open_api, raw, sleeper

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(open_engine: OpenEngine, sock: Path) -> AsyncIterator[Api]:
    async with open_api(open_engine, sock) as opened:
        yield opened


# -- helpers --------------------------------------------------------------------------------


async def post(api: Api, path: str, body: Any = None) -> Raw:
    """A POST with a JSON body (bytes: sent as they are), answered as it is."""
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    return await raw(api.sock, http("POST", path, data, "Content-Type: application/json"))


async def create_net(api: Api, name: str, **body: Any) -> str:
    reply = await post(api, "/networks/create", {"Name": name, **body})
    assert reply.status == 201, reply.body
    return str(reply.json()["Id"])


def prune_path(filters: dict[str, list[str]]) -> str:
    return "/networks/prune?filters=" + urllib.parse.quote(json.dumps(filters))


def refused(reply: Raw, status: int, message: str) -> None:
    assert (reply.status, reply.json()["message"]) == (status, message)


def subnet_of(inspected: dict[str, Any]) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(inspected["IPAM"]["Config"][0]["Subnet"])


def bridge_name(network_id: str) -> str:
    return f"as-{network_id[:12]}"


async def names(api: Api, **filters: list[str]) -> list[str]:
    return [n["Name"] for n in await api.client.networks_list(filters or None)]


async def network_events(api: Api, since: float) -> list[dict[str, Any]]:
    """The network events from ``since`` until now (replayed from the daemon's history)."""
    return [
        event
        async for event in api.client.events(
            since=since, until=time.time(), filters={"type": ["network"]}
        )
    ]


async def on_network(api: Api, name: str, network: str, **endpoint: Any) -> str:
    """A sleeper created in ``network`` (``NetworkMode``), with its endpoint config."""
    return await api.client.container_create(
        name,
        {"Image": "busybox", "Cmd": ["sleep", "infinity"]},
        {"NetworkMode": network},
        {"EndpointsConfig": {network: endpoint}} if endpoint else None,
    )


# -- create, list, inspect ------------------------------------------------------------------


async def test_create_answers_201_and_the_network_is_listed_and_inspected(api: Api) -> None:
    reply = await post(
        api,
        "/networks/create",
        {"Name": "n1", "Labels": {"tier": "back"}, "Internal": True, "Attachable": True},
    )
    assert reply.status == 201
    body = reply.json()
    network_id = body["Id"]
    assert body == {"Id": network_id, "Warning": ""}
    assert re.fullmatch(r"[0-9a-f]{64}", network_id)
    assert bridge_name(network_id) in api.engine.network.bridges

    assert await names(api, type=["custom"]) == ["n1"]
    assert await names(api, type=["builtin"]) == ["bridge", "host", "none"]
    assert await names(api, label=["tier"]) == ["n1"]
    assert await names(api, label=["tier=back"]) == ["n1"]
    assert await names(api, label=["tier=front"]) == []
    assert await names(api, driver=["bridge"]) == ["bridge", "n1"]
    assert await names(api, dangling=["true"]) == ["n1"]
    assert await names(api, dangling=["false"]) == ["bridge", "host", "none"]
    assert await names(api, id=[network_id[:8]]) == ["n1"]

    for reference in ("n1", network_id, network_id[:12]):
        inspected = await api.client.network_inspect(reference)
        assert inspected["Id"] == network_id and inspected["Name"] == "n1"
    assert inspected["Driver"] == "bridge" and inspected["Scope"] == "local"
    # The first free /24 of the pool: 10.213.0.0/24 is the default bridge's.
    assert inspected["IPAM"] == {
        "Driver": "default",
        "Options": None,
        "Config": [{"Subnet": "10.213.1.0/24", "Gateway": "10.213.1.1"}],
    }
    assert inspected["Options"] == {} and inspected["Labels"] == {"tier": "back"}
    assert (inspected["Internal"], inspected["Attachable"]) == (True, True)
    assert inspected["EnableIPv6"] is False and inspected["Containers"] == {}
    listed = [n for n in await api.client.networks_list() if n["Name"] == "n1"]
    assert listed[0]["Containers"] == {} and listed[0]["Created"] == inspected["Created"]

    # A running container on it: no longer dangling; a stopped one does not count.
    await on_network(api, "web", "n1")
    assert await names(api, dangling=["true"]) == ["n1"]
    await api.client.container_start("web")
    assert await names(api, dangling=["true"]) == []
    assert await names(api, dangling=["false"]) == ["bridge", "host", "none", "n1"]
    plain = await api.client.network_inspect("n1")
    assert (plain["Internal"], plain["Attachable"]) == (True, True)


async def test_defaults_are_not_internal_nor_attachable(api: Api) -> None:
    await create_net(api, "plain")
    inspected = await api.client.network_inspect("plain")
    assert (inspected["Internal"], inspected["Attachable"], inspected["Labels"]) == (
        False,
        False,
        {},
    )
    assert inspected["Driver"] == "bridge"


async def test_the_pool_skips_the_bridge_other_networks_and_host_routes(api: Api) -> None:
    api.engine.network.routed = [ipaddress.IPv4Network("10.213.1.0/24")]
    a = await create_net(api, "a")
    b = await create_net(api, "b")
    assert subnet_of(await api.client.network_inspect(a)) == ipaddress.IPv4Network("10.213.2.0/24")
    assert subnet_of(await api.client.network_inspect(b)) == ipaddress.IPv4Network("10.213.3.0/24")
    # A user subnet takes its place in the pool too.
    await create_net(api, "own", IPAM={"Config": [{"Subnet": "10.213.4.0/24"}]})
    c = await create_net(api, "c")
    assert subnet_of(await api.client.network_inspect(c)) == ipaddress.IPv4Network("10.213.5.0/24")
    # A subnet freed is handed out again.
    await api.client.network_remove("a")
    d = await create_net(api, "d")
    assert subnet_of(await api.client.network_inspect(d)) == ipaddress.IPv4Network("10.213.2.0/24")
    # A user subnet the host routes is refused (403), as one another network has.
    reply = await post(
        api, "/networks/create", {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.213.1.0/25"}]}}
    )
    assert reply.status == 403
    assert "x" not in await names(api)


async def test_a_user_subnet_is_echoed_as_given(api: Api) -> None:
    await create_net(
        api, "gw", IPAM={"Config": [{"Subnet": "10.9.9.0/24", "Gateway": "10.9.9.254"}]}
    )
    await create_net(api, "nogw", IPAM={"Config": [{"Subnet": "10.9.8.0/24"}]})
    gw = await api.client.network_inspect("gw")
    assert gw["IPAM"]["Config"] == [{"Subnet": "10.9.9.0/24", "Gateway": "10.9.9.254"}]
    nogw = await api.client.network_inspect("nogw")
    assert nogw["IPAM"]["Config"] == [{"Subnet": "10.9.8.0/24"}]
    # The gateways containers get: the given one, else the subnet's first address.
    await on_network(api, "one", "gw")
    await on_network(api, "two", "nogw")
    for name in ("one", "two"):
        await api.client.container_start(name)
    one = (await api.client.container_inspect("one"))["NetworkSettings"]["Networks"]["gw"]
    two = (await api.client.container_inspect("two"))["NetworkSettings"]["Networks"]["nogw"]
    assert one["Gateway"] == "10.9.9.254"
    assert ipaddress.IPv4Address(one["IPAddress"]) in ipaddress.IPv4Network("10.9.9.0/24")
    assert one["IPAddress"] != "10.9.9.254"
    assert two["Gateway"] == "10.9.8.1"
    assert ipaddress.IPv4Address(two["IPAddress"]) in ipaddress.IPv4Network("10.9.8.0/24")
    assert two["IPAddress"] != "10.9.8.1" and two["IPPrefixLen"] == 24


CREATE_ERRORS: list[tuple[str, dict[str, Any] | bytes, int, str | None]] = [
    ("duplicate", {"Name": "taken"}, 409, "network with name taken already exists"),
    *[
        (
            f"predefined {name}",
            {"Name": name},
            403,
            f"operation is not permitted on predefined {name} network ",
        )
        for name in ("bridge", "host", "none", "default")
    ],
    ("empty name", {"Name": ""}, 400, "invalid name: name is empty"),
    ("no name", {"Driver": "bridge"}, 400, "invalid name: name is empty"),
    ("unknown driver", {"Name": "x", "Driver": "foo"}, 404, 'plugin "foo" not found'),
    (
        "host bits in subnet",
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.0.0.1/24"}]}},
        400,
        "invalid network config:\ninvalid subnet 10.0.0.1/24: it should be 10.0.0.0/24",
    ),
    (
        "nonsense subnet",
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "nonsense"}]}},
        400,
        "invalid network config:\ninvalid subnet nonsense: invalid CIDR block notation",
    ),
    (
        "gateway outside",
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.213.200.0/24", "Gateway": "10.9.9.1"}]}},
        400,
        "invalid network config:\ninvalid gateway 10.9.9.1: parent subnet 10.213.200.0/24 "
        "doesn't contain this address",
    ),
    (
        "overlap",
        {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.50.1.0/24"}]}},
        403,
        "invalid pool request: Pool overlaps with other one on this address space",
    ),
    ("ipv6", {"Name": "x", "EnableIPv6": True}, 400, None),
    # (docker 28: an IPv4-less network; not applied here, so it must be refused.)
    ("ipv4 off", {"Name": "x", "EnableIPv4": False}, 400, None),
    (
        "bridge option",
        {"Name": "x", "Options": {"com.docker.network.bridge.enable_icc": "false"}},
        400,
        None,
    ),
    ("mtu option", {"Name": "x", "Options": {"com.docker.network.driver.mtu": "1400"}}, 400, None),
    (
        "ip range",
        {
            "Name": "x",
            "IPAM": {"Config": [{"Subnet": "10.60.0.0/24", "IPRange": "10.60.0.128/25"}]},
        },
        400,
        None,
    ),
    ("malformed json", b'{"Name": "x"', 400, None),
    ("not an object", b'["x"]', 400, None),
]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CREATE_ERRORS],
)
async def test_create_errors_are_dockerds(
    api: Api, body: dict[str, Any] | bytes, status: int, message: str | None
) -> None:
    await create_net(api, "taken", IPAM={"Config": [{"Subnet": "10.50.0.0/16"}]})
    before = await api.client.networks_list()
    reply = await post(api, "/networks/create", body)
    assert reply.status == status, reply.body
    if message is not None:
        assert reply.json()["message"] == message
    else:
        assert reply.json()["message"]
    # Nothing made: no network listed, no bridge left with the driver.
    assert await api.client.networks_list() == before
    taken = before[-1]["Id"]
    assert api.engine.network.bridges == {bridge_name(taken)}


async def test_enable_ipv6_false_is_accepted(api: Api) -> None:
    network_id = await create_net(api, "v4", EnableIPv6=False, Internal=False)
    assert (await api.client.network_inspect(network_id))["EnableIPv6"] is False


# -- remove ---------------------------------------------------------------------------------


async def test_remove(api: Api) -> None:
    network_id = await create_net(api, "n1")
    assert bridge_name(network_id) in api.engine.network.bridges
    reply = await raw(api.sock, http("DELETE", "/networks/n1"))
    assert (reply.status, reply.body) == (204, b"")
    assert "n1" not in await names(api)
    assert api.engine.network.bridges == set()
    refused(await raw(api.sock, http("DELETE", "/networks/n1")), 404, "network n1 not found")
    refused(await raw(api.sock, http("DELETE", "/networks/nope")), 404, "network nope not found")
    for name in ("bridge", "host", "none"):
        refused(
            await raw(api.sock, http("DELETE", f"/networks/{name}")),
            403,
            f"{name} is a pre-defined network and cannot be removed",
        )
    # By ID prefix too.
    other = await create_net(api, "n2")
    assert (await raw(api.sock, http("DELETE", f"/networks/{other[:12]}"))).status == 204
    assert await names(api, type=["custom"]) == []


async def test_a_network_with_a_running_container_cannot_be_removed(api: Api) -> None:
    network_id = await create_net(api, "n1")
    cid = await on_network(api, "web", "n1")
    await api.client.container_start("web")
    endpoint = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]["n1"]
    reply = await raw(api.sock, http("DELETE", "/networks/n1"))
    assert reply.status == 403
    message = reply.json()["message"]
    assert message.startswith(
        'error while removing network: network n1 has active endpoints (name:"web" id:"'
    )
    assert message == (
        "error while removing network: network n1 has active endpoints "
        f'(name:"web" id:"{endpoint["EndpointID"][:12]}")'
    )
    assert "n1" in await names(api) and bridge_name(network_id) in api.engine.network.bridges
    # Once the container stops, it goes.
    await api.client.container_kill(cid)
    assert (await raw(api.sock, http("DELETE", "/networks/n1"))).status == 204


async def test_a_stopped_container_does_not_block_removal_and_then_fails_to_start(
    api: Api,
) -> None:
    await create_net(api, "n1")
    await on_network(api, "web", "n1")
    assert (await raw(api.sock, http("DELETE", "/networks/n1"))).status == 204
    reply = await post(api, "/containers/web/start")
    refused(reply, 404, "failed to set up container networking: network n1 not found")
    state = (await api.client.container_inspect("web"))["State"]
    assert state["Running"] is False
    assert api.engine.network.sandboxes == {}


async def test_a_network_made_again_under_its_name_is_the_containers_network(api: Api) -> None:
    await create_net(api, "n1")
    cid = await on_network(api, "web", "n1")
    await api.client.network_remove("n1")
    # A network of that name made again: the container finds it by name (asyncstart's
    # fallback when the ID it was created with is gone).
    network_id = await create_net(api, "n1")
    await api.client.container_start("web")
    assert list((await api.client.network_inspect("n1"))["Containers"]) == [cid]
    assert cid in api.engine.network.leases[bridge_name(network_id)]
    # It is that network's user now: removing or pruning it is refused.
    reply = await raw(api.sock, http("DELETE", "/networks/n1"))
    assert reply.status == 403, reply.body
    assert await api.client.networks_prune() == []
    assert "n1" in await names(api)
    endpoint = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]["n1"]
    assert endpoint["NetworkID"] == network_id


# -- prune and events -----------------------------------------------------------------------


async def test_prune_removes_unused_user_networks(api: Api) -> None:
    began = time.time()
    await create_net(api, "keep", Labels={"keep": "yes"})
    await create_net(api, "old")
    used = await create_net(api, "used")
    configured = await create_net(api, "configured")
    await on_network(api, "web", "used")
    await api.client.container_start("web")
    await on_network(api, "idle", "configured")  # created, never started

    # Created after "10m ago": none is old enough.
    reply = await post(api, prune_path({"until": ["10m"]}))
    assert (reply.status, reply.json()) == (200, {"NetworksDeleted": None})
    reply = await post(api, prune_path({"label": ["keep=yes"]}))
    assert (reply.status, reply.json()) == (200, {"NetworksDeleted": ["keep"]})
    reply = await post(api, prune_path({"label": ["nosuch"]}))
    assert reply.json() == {"NetworksDeleted": None}
    refused(
        await post(api, prune_path({"colour": ["red"]})),
        400,
        "invalid filter 'colour'",
    )
    until = {"until": [str(time.time() + 60)]}
    reply = await post(api, prune_path(until))
    assert reply.json() == {"NetworksDeleted": ["old", "configured"]}
    assert await names(api) == ["bridge", "host", "none", "used"]
    assert bridge_name(used) in api.engine.network.bridges
    assert bridge_name(configured) not in api.engine.network.bridges
    assert await api.client.networks_prune() == []

    events = await network_events(api, began)
    prunes = [e for e in events if e["Action"] == "prune"]
    assert len(prunes) == 5  # (the refused one made none)
    assert all(
        e["Actor"] == {"ID": "", "Attributes": {"reclaimed": "0"}} and e["Type"] == "network"
        for e in prunes
    )
    destroyed = [e["Actor"]["Attributes"]["name"] for e in events if e["Action"] == "destroy"]
    assert destroyed == ["keep", "old", "configured"]


async def test_create_and_destroy_events(api: Api) -> None:
    began = time.time()
    network_id = await create_net(api, "n1")
    await api.client.network_remove("n1")
    events = await network_events(api, began)
    assert [(e["Type"], e["Action"], e["Actor"]) for e in events] == [
        ("network", "create", {"ID": network_id, "Attributes": {"name": "n1", "type": "bridge"}}),
        ("network", "destroy", {"ID": network_id, "Attributes": {"name": "n1", "type": "bridge"}}),
    ]
    assert all(e["scope"] == "local" and "status" not in e for e in events)


# -- containers on user networks ------------------------------------------------------------


async def test_a_container_created_on_a_user_network(api: Api) -> None:
    network_id = await create_net(api, "n1", IPAM={"Config": [{"Subnet": "10.30.0.0/24"}]})
    endpoint = {"Aliases": ["db", "cache"], "IPAMConfig": {"IPv4Address": "10.30.0.50"}}
    cid = await on_network(api, "web", "n1", **endpoint)

    before = (await api.client.container_inspect("web"))["NetworkSettings"]
    assert list(before["Networks"]) == ["n1"]
    configured = before["Networks"]["n1"]
    assert configured["Aliases"] == ["db", "cache"]
    assert configured["IPAMConfig"] == {"IPv4Address": "10.30.0.50"}
    assert configured["NetworkID"] == network_id
    assert (configured["IPAddress"], configured["EndpointID"]) == ("", "")
    assert (await api.client.network_inspect("n1"))["Containers"] == {}

    began = time.time()
    await api.client.container_start("web")
    settings = (await api.client.container_inspect("web"))["NetworkSettings"]
    assert list(settings["Networks"]) == ["n1"]
    live = settings["Networks"]["n1"]
    assert live["IPAddress"] == "10.30.0.50" and live["IPPrefixLen"] == 24
    assert live["Gateway"] == "10.30.0.1"
    assert live["NetworkID"] == network_id and live["EndpointID"]
    assert live["Aliases"] == ["db", "cache"]
    assert live["IPAMConfig"] == {"IPv4Address": "10.30.0.50"}
    assert live["DNSNames"] == ["web", "db", "cache", cid[:12]]
    # dockerd fills the top-level address for the default bridge only.
    assert settings["IPAddress"] == "" and settings["Gateway"] == ""
    assert api.engine.network.leases[bridge_name(network_id)] == {cid: "10.30.0.50"}

    attached = (await api.client.network_inspect("n1"))["Containers"]
    assert attached == {
        cid: {
            "Name": "web",
            "EndpointID": live["EndpointID"],
            "MacAddress": live["MacAddress"],
            "IPv4Address": "10.30.0.50/24",
            "IPv6Address": "",
        }
    }
    # The default bridge has nothing of it.
    assert (await api.client.network_inspect("bridge"))["Containers"] == {}

    await api.client.container_kill("web")
    assert (await api.client.network_inspect("n1"))["Containers"] == {}
    assert api.engine.network.leases[bridge_name(network_id)] == {}
    stopped = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]["n1"]
    assert stopped["Aliases"] == ["db", "cache"] and stopped["NetworkID"] == network_id
    # The start's connect and the stop's disconnect, as events of the network.
    events = await network_events(api, began)
    assert [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]) for e in events] == [
        (action, network_id, {"container": cid, "name": "n1", "type": "bridge"})
        for action in ("connect", "disconnect")
    ]


async def test_before_api_1_45_the_short_id_and_hostname_are_aliases(api: Api) -> None:
    """As dockerd's inspect for older clients (docker-compose 1.29 asks for 1.41): on a
    user-defined network, ``Aliases`` also holds the short ID and the hostname; never on
    the default bridge."""
    await create_net(api, "n1")
    cid = await on_network(api, "web", "n1", Aliases=["db", "web"])
    await post(api, f"/containers/{cid}/start")
    await post(api, "/networks/bridge/connect", {"Container": cid})

    def aliases(reply: Raw) -> dict[str, Any]:
        assert reply.status == 200, reply.body
        networks = json.loads(reply.body)["NetworkSettings"]["Networks"]
        return {name: endpoint["Aliases"] for name, endpoint in networks.items()}

    old = aliases(await raw(api.sock, http("GET", f"/v1.44/containers/{cid}/json")))
    assert old == {"n1": ["db", "web", cid[:12]], "bridge": None}  # (hostname: the short ID)
    new = aliases(await raw(api.sock, http("GET", f"/v1.45/containers/{cid}/json")))
    assert new == {"n1": ["db", "web"], "bridge": None}


async def test_a_pool_network_gives_the_next_free_address(api: Api) -> None:
    network_id = await create_net(api, "n1")
    await on_network(api, "one", "n1")
    await on_network(api, "two", "n1")
    for name in ("one", "two"):
        await api.client.container_start(name)
    addresses = [
        (await api.client.container_inspect(name))["NetworkSettings"]["Networks"]["n1"]
        for name in ("one", "two")
    ]
    assert [a["IPAddress"] for a in addresses] == ["10.213.1.2", "10.213.1.3"]
    assert {a["Gateway"] for a in addresses} == {"10.213.1.1"}
    assert len(api.engine.network.leases[bridge_name(network_id)]) == 2
    assert len((await api.client.network_inspect(network_id))["Containers"]) == 2


async def test_several_endpoints_at_create(api: Api) -> None:
    a = await create_net(api, "a")
    b = await create_net(api, "b", IPAM={"Config": [{"Subnet": "10.40.0.0/24"}]})
    cid = await api.client.container_create(
        "web",
        {"Image": "busybox", "Cmd": ["sleep", "infinity"]},
        {"NetworkMode": "a"},
        {
            "EndpointsConfig": {
                "a": {"Aliases": ["front"]},
                "b": {"Aliases": ["back"], "IPAMConfig": {"IPv4Address": "10.40.0.9"}},
            }
        },
    )
    configured = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert sorted(configured) == ["a", "b"]
    assert (configured["a"]["NetworkID"], configured["b"]["NetworkID"]) == (a, b)
    await api.client.container_start("web")
    live = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert sorted(live) == ["a", "b"]
    assert ipaddress.IPv4Address(live["a"]["IPAddress"]) in ipaddress.IPv4Network("10.213.1.0/24")
    assert live["b"]["IPAddress"] == "10.40.0.9"
    assert live["a"]["DNSNames"] == ["web", "front", cid[:12]]
    assert live["b"]["DNSNames"] == ["web", "back", cid[:12]]
    leases = api.engine.network.leases
    assert cid in leases[bridge_name(a)] and leases[bridge_name(b)] == {cid: "10.40.0.9"}
    for network in (a, b):
        assert list((await api.client.network_inspect(network))["Containers"]) == [cid]


ENDPOINT_ERRORS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "static ip on the default bridge",
        "bridge",
        {"IPAMConfig": {"IPv4Address": "10.213.0.9"}},
        "invalid config for network bridge: invalid endpoint settings:\n"
        "user specified IP address is supported on user defined networks only",
    ),
    (
        "aliases on the default bridge",
        "bridge",
        {"Aliases": ["x"]},
        "invalid config for network bridge: invalid endpoint settings:\n"
        "network-scoped alias is supported only for containers in user defined networks",
    ),
    (
        "static ip on a pool network",
        "pool",
        {"IPAMConfig": {"IPv4Address": "10.213.1.9"}},
        "invalid config for network pool: invalid endpoint settings:\n"
        "user specified IP address is supported only when connecting to networks with user "
        "configured subnets",
    ),
    (
        "ip outside the subnet",
        "own",
        {"IPAMConfig": {"IPv4Address": "10.99.0.5"}},
        "invalid config for network own: invalid endpoint settings:\n"
        "no configured subnet or ip-range contain the IP address 10.99.0.5",
    ),
]


@pytest.mark.parametrize(
    ("network", "endpoint", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in ENDPOINT_ERRORS],
)
async def test_endpoint_config_errors_at_create(
    api: Api, network: str, endpoint: dict[str, Any], message: str
) -> None:
    await create_net(api, "pool")
    await create_net(api, "own", IPAM={"Config": [{"Subnet": "10.70.0.0/24"}]})
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "HostConfig": {"NetworkMode": network},
        "NetworkingConfig": {"EndpointsConfig": {network: endpoint}},
    }
    refused(await post(api, "/containers/create?name=web", body), 400, message)
    assert await api.client.containers_list(all=True) == []


async def test_host_mode_and_another_network_at_create_is_refused(api: Api) -> None:
    await create_net(api, "own")
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "HostConfig": {"NetworkMode": "host"},
        "NetworkingConfig": {"EndpointsConfig": {"own": {}}},
    }
    refused(
        await post(api, "/containers/create?name=web", body),
        400,
        "container sharing network namespace with another container or host cannot be "
        "connected to any other network",
    )
    assert await api.client.containers_list(all=True) == []


async def test_an_unknown_network_at_create_fails_the_start(api: Api) -> None:
    body = {
        "Image": "busybox",
        "Cmd": ["sleep", "infinity"],
        "HostConfig": {"NetworkMode": "ghost"},
    }
    reply = await post(api, "/containers/create?name=web", body)
    assert reply.status == 201
    refused(
        await post(api, "/containers/web/start"),
        404,
        "failed to set up container networking: network ghost not found",
    )
    assert (await api.client.container_inspect("web"))["State"]["Status"] == "created"
    assert api.engine.network.sandboxes == {}
    # Made since: the next start joins it.
    network_id = await create_net(api, "ghost")
    await api.client.container_start("web")
    live = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert list(live) == ["ghost"] and live["ghost"]["IPAddress"].startswith("10.213.1.")
    assert list((await api.client.network_inspect(network_id))["Containers"]) == [
        (await api.client.container_inspect("web"))["Id"]
    ]


# -- connect, disconnect --------------------------------------------------------------------


async def test_connect_a_stopped_container(api: Api) -> None:
    network_id = await create_net(api, "n1")
    cid = await sleeper(api)
    body = {"Container": "web", "EndpointConfig": {"Aliases": ["db"]}}
    reply = await post(api, "/networks/n1/connect", body)
    assert (reply.status, reply.body) == (200, b"")
    configured = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert sorted(configured) == ["bridge", "n1"]
    assert configured["n1"]["Aliases"] == ["db"] and configured["n1"]["NetworkID"] == network_id
    assert configured["n1"]["IPAddress"] == ""
    # Again: no change, no error.
    again = await post(api, "/networks/n1/connect", {"Container": "web"})
    assert (again.status, again.body) == (200, b"")
    assert (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]["n1"][
        "Aliases"
    ] == ["db"]
    assert api.engine.network.leases.get(bridge_name(network_id), {}) == {}

    await api.client.container_start("web")
    live = (await api.client.container_inspect("web"))["NetworkSettings"]
    assert sorted(live["Networks"]) == ["bridge", "n1"]
    assert live["IPAddress"] == live["Networks"]["bridge"]["IPAddress"] != ""
    assert live["Networks"]["n1"]["IPAddress"].startswith("10.213.1.")
    assert live["Networks"]["n1"]["DNSNames"] == ["web", "db", cid[:12]]
    assert cid in api.engine.network.leases[bridge_name(network_id)]
    assert list((await api.client.network_inspect("n1"))["Containers"]) == [cid]


async def test_the_default_route_follows_the_first_network_by_name(api: Api) -> None:
    """libnetwork's gateway choice among a running container's networks — the first by name
    that is not internal — moves with connects and disconnects (what the driver is told)."""
    subnets = {"aa": "10.31.1", "a0": "10.31.2", "zz": "10.31.3"}
    for name, prefix in subnets.items():
        await create_net(api, name, Internal=name == "a0",
                         IPAM={"Config": [{"Subnet": f"{prefix}.0/24"}]})  # fmt: skip
    cid = await sleeper(api)
    await api.client.container_start("web")
    routes = api.engine.network.routes
    bridge_gateway = (await api.client.container_inspect("web"))["NetworkSettings"]["Gateway"]
    assert routes[cid] == bridge_gateway != ""
    steps = [
        ("connect", "zz", bridge_gateway),  # "bridge" < "zz"
        ("connect", "a0", bridge_gateway),  # internal: no gateway
        ("connect", "aa", "10.31.1.1"),  # "aa" < "bridge"
        ("disconnect", "bridge", "10.31.1.1"),
        ("disconnect", "aa", "10.31.3.1"),
        ("disconnect", "zz", None),  # only the internal one left
    ]
    for action, network, expected in steps:
        reply = await post(api, f"/networks/{network}/{action}", {"Container": "web"})
        assert (reply.status, reply.body) == (200, b""), (action, network)
        assert routes[cid] == expected, (action, network)
    live = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert list(live) == ["a0"] and live["a0"]["Gateway"] == ""


async def test_connect_and_disconnect_a_running_container(api: Api) -> None:
    network_id = await create_net(api, "n1", IPAM={"Config": [{"Subnet": "10.31.0.0/24"}]})
    cid = await sleeper(api)
    await api.client.container_start("web")
    began = time.time()
    body = {
        "Container": cid[:12],
        "EndpointConfig": {"Aliases": ["db"], "IPAMConfig": {"IPv4Address": "10.31.0.7"}},
    }
    reply = await post(api, f"/networks/{network_id[:12]}/connect", body)
    assert (reply.status, reply.body) == (200, b"")
    live = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert sorted(live) == ["bridge", "n1"]
    assert live["n1"]["IPAddress"] == "10.31.0.7" and live["n1"]["Gateway"] == "10.31.0.1"
    assert live["n1"]["EndpointID"] and live["n1"]["NetworkID"] == network_id
    assert live["n1"]["DNSNames"] == ["web", "db", cid[:12]]
    assert api.engine.network.leases[bridge_name(network_id)] == {cid: "10.31.0.7"}
    attached = (await api.client.network_inspect("n1"))["Containers"]
    assert attached[cid]["IPv4Address"] == "10.31.0.7/24"
    # Once only, while it runs.
    refused(
        await post(api, "/networks/n1/connect", {"Container": "web"}),
        403,
        "endpoint with name web already exists in network n1",
    )
    # It is in use now: not dangling, not pruned, not removable.
    assert await names(api, dangling=["true"]) == []
    assert await api.client.networks_prune() == []

    reply = await post(api, "/networks/n1/disconnect", {"Container": "web", "Force": False})
    assert (reply.status, reply.body) == (200, b"")
    live = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert list(live) == ["bridge"]
    assert api.engine.network.leases[bridge_name(network_id)] == {}
    assert (await api.client.network_inspect("n1"))["Containers"] == {}
    refused(
        await post(api, "/networks/n1/disconnect", {"Container": "web"}),
        500,
        f"container {cid} is not connected to network n1",
    )

    events = [e for e in await network_events(api, began) if e["Actor"]["ID"] == network_id]
    assert [(e["Action"], e["Actor"]["Attributes"]) for e in events] == [
        ("connect", {"container": cid, "name": "n1", "type": "bridge"}),
        ("disconnect", {"container": cid, "name": "n1", "type": "bridge"}),
    ]
    # Still running, and stopping it leaves nothing of n1 behind.
    assert (await api.client.container_inspect("web"))["State"]["Running"] is True
    await api.client.container_kill("web")
    assert api.engine.network.addresses() == set()


async def test_disconnect_a_stopped_container(api: Api) -> None:
    await create_net(api, "n1")
    cid = await sleeper(api)
    refused(
        await post(api, "/networks/n1/disconnect", {"Container": "web"}),
        500,
        f"container {cid} is not connected to the network n1",
    )
    assert (await post(api, "/networks/n1/connect", {"Container": "web"})).status == 200
    assert (await post(api, "/networks/n1/disconnect", {"Container": "web"})).status == 200
    configured = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert list(configured) == ["bridge"]


async def test_connect_errors(api: Api) -> None:
    await create_net(api, "n1")
    await sleeper(api)
    refused(
        await post(api, "/networks/n1/connect", {"Container": "x"}), 404, "No such container: x"
    )
    refused(
        await post(api, "/networks/n1/disconnect", {"Container": "x"}), 404, "No such container: x"
    )
    refused(
        await post(api, "/networks/nope/connect", {"Container": "web"}),
        404,
        "network nope not found",
    )
    refused(
        await post(api, "/networks/nope/disconnect", {"Container": "web"}),
        404,
        "network nope not found",
    )
    refused(
        await post(api, "/networks/host/connect", {"Container": "web"}),
        400,
        "cannot connect container to host network - container must be created in host network mode",
    )
    refused(
        await post(api, "/networks/none/connect", {"Container": "web"}),
        400,
        "container cannot be connected to multiple networks with one of the networks in "
        "private (none) mode",
    )
    await sleeper(api, "hosted", HostConfig={"NetworkMode": "host"})
    refused(
        await post(api, "/networks/host/disconnect", {"Container": "hosted"}),
        400,
        "cannot disconnect container from host network - container was created in host "
        "network mode",
    )
    refused(
        await post(api, "/networks/n1/connect", {"Container": "hosted"}),
        400,
        "container sharing network namespace with another container or host cannot be "
        "connected to any other network",
    )
    await sleeper(api, "alone", HostConfig={"NetworkMode": "none"})
    refused(
        await post(api, "/networks/n1/connect", {"Container": "alone"}),
        400,
        "container cannot be connected to multiple networks with one of the networks in "
        "private (none) mode",
    )
    # Endpoint settings are checked as at create.
    refused(
        await post(
            api,
            "/networks/n1/connect",
            {"Container": "web", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.213.1.9"}}},
        ),
        400,
        "invalid endpoint settings:\nuser specified IP address is supported only when "
        "connecting to networks with user configured subnets",
    )
    # None of them connected anything.
    for name in ("web", "hosted", "alone"):
        networks = (await api.client.container_inspect(name))["NetworkSettings"]["Networks"]
        assert "n1" not in networks


async def test_disconnect_the_primary_network_while_stopped(api: Api) -> None:
    network_id = await create_net(api, "n1")
    cid = await on_network(api, "web", "n1")
    assert (await post(api, "/networks/n1/disconnect", {"Container": "web"})).status == 200
    assert "n1" not in (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    await api.client.container_start("web")
    inspected = await api.client.container_inspect("web")
    assert inspected["State"]["Running"] is True
    assert "n1" not in inspected["NetworkSettings"]["Networks"]
    assert cid not in api.engine.network.leases.get(bridge_name(network_id), {})
    assert api.engine.network.addresses() == set()
    assert (await api.client.network_inspect("n1"))["Containers"] == {}


# -- persistence ----------------------------------------------------------------------------


async def test_networks_survive_a_reopen(open_engine: OpenEngine, sock: Path) -> None:
    runtime, mounter = FakeRuntime(), FakeMounter()
    async with open_api(open_engine, sock, runtime=runtime, mounter=mounter) as api:
        kept = await create_net(
            api, "kept", Labels={"a": "b"}, IPAM={"Config": [{"Subnet": "10.32.0.0/24"}]}
        )
        pooled = await create_net(api, "pooled")
        await create_net(api, "gone")
        await api.client.network_remove("gone")
        await on_network(api, "web", "kept", IPAMConfig={"IPv4Address": "10.32.0.20"})
        before = {n["Name"]: n for n in await api.client.networks_list()}
    network = FakeNetwork()
    async with open_api(
        open_engine, sock, runtime=runtime, mounter=mounter, network=network
    ) as api:
        after = {n["Name"]: n for n in await api.client.networks_list()}
        assert list(after) == ["bridge", "host", "none", "kept", "pooled"]
        assert after == before
        assert after["kept"]["Id"] == kept and after["pooled"]["Id"] == pooled
        assert after["kept"]["IPAM"]["Config"] == [{"Subnet": "10.32.0.0/24"}]
        assert after["kept"]["Labels"] == {"a": "b"}
        # The driver was asked for their bridges again.
        assert network.bridges == {bridge_name(kept), bridge_name(pooled)}
        # The container created on one starts on it.
        await api.client.container_start("web")
        live = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
        assert live["kept"]["IPAddress"] == "10.32.0.20"
        # The pool still knows what is taken.
        fresh = await create_net(api, "fresh")
        assert subnet_of(await api.client.network_inspect(fresh)) == ipaddress.IPv4Network(
            "10.213.2.0/24"
        )


# -- docker-py ------------------------------------------------------------------------------


async def test_docker_py_networks(api: Api) -> None:
    docker = pytest.importorskip("docker")

    def work(host: str) -> None:
        client = docker.DockerClient(base_url=host, version="auto")
        try:
            net = client.networks.create("n1", labels={"tier": "back"})
            got = client.networks.get("n1")
            assert got.id == net.id and got.name == "n1"
            assert got.attrs["Labels"] == {"tier": "back"} and got.attrs["Driver"] == "bridge"
            assert [n.name for n in client.networks.list(names=["n1"])] == ["n1"]

            container = client.containers.create("busybox", ["sleep", "infinity"], name="web")
            net.connect(container, aliases=["db"])
            container.reload()
            configured = container.attrs["NetworkSettings"]["Networks"]["n1"]
            assert configured["Aliases"] == ["db"] and configured["NetworkID"] == net.id
            container.start()
            container.reload()
            live = container.attrs["NetworkSettings"]["Networks"]["n1"]
            subnet = ipaddress.IPv4Network(got.attrs["IPAM"]["Config"][0]["Subnet"])
            assert ipaddress.IPv4Address(live["IPAddress"]) in subnet
            net.reload()
            assert [c.id for c in net.containers] == [container.id]

            with pytest.raises(docker.errors.APIError) as in_use:
                net.remove()
            assert in_use.value.status_code == 403
            net.disconnect(container)
            container.reload()
            assert "n1" not in container.attrs["NetworkSettings"]["Networks"]
            net.remove()
            with pytest.raises(docker.errors.NotFound) as missing:
                client.networks.get("n1")
            assert missing.value.explanation == "network n1 not found"

            client.networks.create("n2")
            assert client.networks.prune()["NetworksDeleted"] == ["n2"]
            assert client.networks.prune()["NetworksDeleted"] is None
            container.remove(force=True)
        finally:
            client.close()

    with anyio.fail_after(60):
        await anyio.to_thread.run_sync(work, f"unix://{api.sock}")
    assert await names(api) == ["bridge", "host", "none"]


# -- what a review found ---------------------------------------------------------------------


async def test_a_removed_network_is_let_go_of_by_a_forced_disconnect(api: Api) -> None:
    await create_net(api, "gone")
    await on_network(api, "web", "gone")
    await api.client.network_connect("bridge", "web")
    await api.client.network_remove("gone")
    with pytest.raises(errors.NotFound, match="^network gone not found$"):
        await api.client.network_disconnect("gone", "web")
    # As dockerd: by name, with force, a stopped container lets go of a network that is gone.
    await api.client.network_disconnect("gone", "web", force=True)
    networks = (await api.client.container_inspect("web"))["NetworkSettings"]["Networks"]
    assert list(networks) == ["bridge"]
    await api.client.container_start("web")  # (not the 404 of the network it had)


async def test_a_gateway_priority_is_refused_not_ignored(api: Api) -> None:
    await create_net(api, "n1")
    await sleeper(api, "web")
    refused(
        await post(api, "/networks/n1/connect",
                   {"Container": "web", "EndpointConfig": {"GwPriority": 5}}),
        400,
        "an endpoint's GwPriority is not supported by asyncstart: the default route is "
        "through the first network by name that is not internal",
    )  # fmt: skip


async def test_an_internal_network_publishes_no_port(api: Api) -> None:
    await create_net(api, "inside", Internal=True)
    cid = await api.client.container_create(
        "web",
        {"Image": "busybox", "Cmd": ["sleep", "infinity"], "ExposedPorts": {"80/tcp": {}}},
        {"NetworkMode": "inside", "PortBindings": {"80/tcp": [{"HostPort": "0"}]}},
    )
    await api.client.container_start(cid)
    settings = (await api.client.container_inspect(cid))["NetworkSettings"]
    assert settings["Networks"]["inside"]["IPAddress"]
    assert not any(settings["Ports"].values()), "dockerd maps no port of an internal network"


def test_a_garbled_network_file_is_kept_aside_not_emptied(tmp_path: Path) -> None:
    from asyncstart.networks import NetworkRegistry

    path = tmp_path / "networks.json"
    path.write_text('[{"name": "n1", "id": "')  # torn mid-write
    assert list(NetworkRegistry(path)) == []
    assert not path.exists()
    assert (tmp_path / "networks.json.corrupt").read_text().startswith('[{"name"')
