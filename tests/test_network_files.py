"""The network files as pure text: hosts and resolv.conf as dockerd writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncstart import errors
from asyncstart.network.files import hostname_file, hosts_file, resolv_conf

HOST = """# generated
nameserver 127.0.0.53
nameserver 192.0.2.10
search corp.example
options edns0
"""


def test_hosts() -> None:
    text = hosts_file("web", "example.test", "10.1.2.3", ["db:10.9.9.9"])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-2:] == ["10.9.9.9\tdb", "10.1.2.3\tweb.example.test web"]
    assert hosts_file("web", "", None).count("\n") == 6
    assert hostname_file("web") == "web\n"


def test_resolv_conf_drops_loopback_and_takes_overrides() -> None:
    assert resolv_conf(HOST) == ("nameserver 192.0.2.10\nsearch corp.example\noptions edns0\n")
    assert resolv_conf(HOST, keep_loopback=True).startswith("nameserver 127.0.0.53\n")
    assert resolv_conf("nameserver 127.0.0.1\n") == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert resolv_conf(HOST, dns=["10.0.0.2"], search=["a.test"], options=["ndots:2"]) == (
        "nameserver 10.0.0.2\nsearch a.test\noptions ndots:2\n"
    )


def test_leases_hand_out_addresses_in_rotation_per_bridge_and_persist(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from asyncstart import errors
    from asyncstart.network.base import Bridge
    from asyncstart.network.ipam import Leases

    small = Bridge("astest9", "10.213.99.0/29", "10.213.99.1")  # hosts .1-.6, .1 the gateway
    other = Bridge("astest8", "10.213.98.0/29", "10.213.98.1")
    leases = Leases(tmp_path / "ipam.json")
    first = leases.allocate(small, "a")
    leases.release("a")
    assert leases.allocate(small, "b") != first, "a just released address is not reused at once"
    assert leases.allocate(other, "b") == "10.213.98.2"  # one address per network
    assert Leases(tmp_path / "ipam.json").leases("astest9") == {"b": "10.213.99.3"}
    for name in "cdef":
        leases.allocate(small, name)
    with pytest.raises(errors.SystemError, match="no available IPv4 addresses"):
        leases.allocate(small, "g")
    # A wanted address: given if free, refused if another container has it.
    assert leases.allocate(other, "g", "10.213.98.5") == "10.213.98.5"
    with pytest.raises(errors.Forbidden, match=r"^Address already in use: 10\.213\.98\.5$"):
        leases.allocate(other, "h", "10.213.98.5")
    with pytest.raises(errors.InvalidParameter, match="contain the IP address 10.213.97.5"):
        leases.allocate(other, "h", "10.213.97.5")  # (its network made anew elsewhere)
    leases.release("b", "astest8")
    assert leases.leases("astest9")["b"] and "b" not in leases.leases("astest8")
    leases.keep_only({"c"})
    assert list(leases.leases("astest9")) == ["c"] and leases.leases("astest8") == {}
    leases.forget("astest9")
    assert Leases(tmp_path / "ipam.json").leases("astest9") == {}


def test_leases_go_round_the_subnet_and_cover_every_usable_address() -> None:
    from asyncstart import errors
    from asyncstart.network.base import Bridge
    from asyncstart.network.ipam import Leases

    leases = Leases(None)  # in memory, as the fake driver keeps them
    wide = Bridge("astest7", "10.213.96.0/22", "10.213.96.1")
    handed = [leases.allocate(wide, f"c{n}") for n in range(1021)]
    assert handed[:2] == ["10.213.96.2", "10.213.96.3"] and handed[-1] == "10.213.99.254"
    assert len(set(handed)) == 1021  # every host but the gateway, no network or broadcast
    leases.release("c5")
    leases.release("c1")
    assert leases.allocate(wide, "again") == "10.213.96.3"  # after the last, round to the first
    pair = Bridge("astest5", "10.213.95.0/31", "10.213.95.0")  # a /31 has no broadcast
    assert leases.allocate(pair, "one") == "10.213.95.1"
    single = Bridge("astest6", "10.213.95.8/32", "10.213.95.1")
    assert leases.allocate(single, "only") == "10.213.95.8"
    with pytest.raises(errors.SystemError, match="no available IPv4 addresses"):
        leases.allocate(single, "more")


def test_leases_of_an_older_daemon_are_the_default_bridges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from asyncstart.network.ipam import Leases

    (tmp_path / "ipam.json").write_text('{"abc": "10.213.0.7"}')
    assert Leases(tmp_path / "ipam.json", legacy_bridge="asyncstart0").leases("asyncstart0") == {
        "abc": "10.213.0.7"
    }


def test_an_older_daemons_lease_file_in_the_data_root_is_taken_in_once(tmp_path: Path) -> None:
    from asyncstart.network.base import Bridge
    from asyncstart.network.ipam import Leases

    legacy = tmp_path / "data" / "ipam.json"
    legacy.parent.mkdir()
    legacy.write_text('{"astest9": {"keeps": "10.213.99.7"}}')
    leases = Leases(tmp_path / "run" / "ipam.json", legacy_path=legacy)
    assert leases.leases("astest9") == {"keeps": "10.213.99.7"}
    assert not legacy.exists()
    assert json.loads((tmp_path / "run" / "ipam.json").read_text()) == {
        "astest9": {"keeps": "10.213.99.7"}
    }
    bridge = Bridge("astest9", "10.213.99.0/24", "10.213.99.1")
    with pytest.raises(errors.Forbidden, match="Address already in use"):
        leases.allocate(bridge, "new", "10.213.99.7")  # (still taken)
    # Once moved, the exec root's file is the one read (a stale legacy one is dropped).
    legacy.write_text('{"astest9": {"stale": "10.213.99.9"}}')
    assert "stale" not in Leases(tmp_path / "run" / "ipam.json", legacy_path=legacy).leases(
        "astest9"
    )
    assert not legacy.exists()


def test_a_link_gives_dockerds_environment_and_hosts_line() -> None:
    from asyncstart.network.files import Link, hosts_file, link_env

    link = Link(
        alias="my-db",
        container_id="0123456789abcdef" * 4,
        name="db",
        address="10.213.0.5",
        exposed=["6379/tcp", "53/udp", "80"],
        env=["PATH=/bin", "HOME=/root", "PASSWORD=x=y", "BARE"],
    )
    assert link_env("/web", link) == [
        "MY_DB_NAME=/web/my-db",
        "MY_DB_PORT=udp://10.213.0.5:53",
        "MY_DB_PORT_53_UDP=udp://10.213.0.5:53",
        "MY_DB_PORT_53_UDP_ADDR=10.213.0.5",
        "MY_DB_PORT_53_UDP_PORT=53",
        "MY_DB_PORT_53_UDP_PROTO=udp",
        "MY_DB_PORT_80_TCP=tcp://10.213.0.5:80",
        "MY_DB_PORT_80_TCP_ADDR=10.213.0.5",
        "MY_DB_PORT_80_TCP_PORT=80",
        "MY_DB_PORT_80_TCP_PROTO=tcp",
        "MY_DB_PORT_6379_TCP=tcp://10.213.0.5:6379",
        "MY_DB_PORT_6379_TCP_ADDR=10.213.0.5",
        "MY_DB_PORT_6379_TCP_PORT=6379",
        "MY_DB_PORT_6379_TCP_PROTO=tcp",
        "MY_DB_ENV_PASSWORD=x=y",
    ]
    hosts = hosts_file("web", "", "10.213.0.6", links=[link])
    assert "10.213.0.5\tmy-db 0123456789ab db\n" in hosts
    assert hosts.index("my-db") < hosts.index("10.213.0.6\tweb")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("db", ("db", "db")), ("db:store", ("db", "store")), ("/db:/web/store", ("db", "store"))],
)
def test_link_forms(text: str, expected: tuple[str, str]) -> None:
    from asyncstart.settings import parse_link

    assert parse_link(text) == expected


@pytest.mark.parametrize("text", ["", ":alias", "/:x"])
def test_a_bad_link_is_refused(text: str) -> None:
    from asyncstart import errors
    from asyncstart.settings import parse_link

    with pytest.raises(errors.InvalidParameter, match="invalid link format"):
        parse_link(text)


def test_other_firewalls_that_drop_forwarding_are_named() -> None:
    """firewalld's inet table (or any other) dropping in the forward hook is worth a warning:
    only dockerd's ``ip filter`` gets our accepts."""
    import json

    from asyncstart.network.firewall import other_dropping_tables

    def chain(family: str, table: str, hook: str, policy: str) -> dict[str, object]:
        return {"chain": {"family": family, "table": table, "name": "x", "hook": hook,
                          "policy": policy}}  # fmt: skip

    listing = json.dumps({"nftables": [
        {"metainfo": {}},
        chain("ip", "asyncstart", "forward", "drop"),
        chain("ip", "filter", "forward", "drop"),
        chain("inet", "firewalld", "forward", "drop"),
        chain("inet", "firewalld", "forward", "drop"),
        chain("ip6", "filter", "forward", "drop"),
        chain("inet", "mine", "forward", "accept"),
        chain("inet", "mine", "input", "drop"),
    ]}).encode()  # fmt: skip
    assert other_dropping_tables(listing) == ["inet firewalld", "ip6 filter"]
    assert other_dropping_tables(b"") == [] and other_dropping_tables(b"not json") == []
