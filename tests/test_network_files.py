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
