"""The network files as pure text: hosts and resolv.conf as dockerd writes them."""

from __future__ import annotations

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


def test_ipam_hands_out_addresses_in_rotation_and_persists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from asyncstart.network.bridge import Ipam

    ipam = Ipam(tmp_path / "ipam.json", "10.213.99.0/29")  # hosts .1-.6, .1 the gateway
    first = ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") != first, "a just released address is not reused at once"
    assert Ipam(tmp_path / "ipam.json", "10.213.99.0/29").leases() == {"b": "10.213.99.3"}
    for name in "cdef":
        ipam.allocate(name)
    import pytest

    from asyncstart import errors

    with pytest.raises(errors.SystemError, match="no available IPv4 addresses"):
        ipam.allocate("g")
    ipam.keep_only({"c"})
    assert list(ipam.leases()) == ["c"]
