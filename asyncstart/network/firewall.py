"""The firewall of bridge networks: what lets their containers reach past the bridge, and no
more.

Per network, made when the network is first used and found again by a restarted daemon (made
anew the same way: idempotent), never on the per-start path; every rule is marked with a
comment ``asyncstart:<bridge>`` so that it is found again:

- IPv4 forwarding on (``net.ipv4.ip_forward``, as dockerd sets it). If it was off, the host
  was routing nothing: as dockerd then sets the FORWARD policy to DROP, the forward chain of
  asyncstart's table drops by default, so that turning forwarding on does not make the host a
  router for anything but its containers;
- one table, ``ip asyncstart``, with per network: forwarding accepted from the bridge, and to
  it for replies (``ct state established,related``); anything else to the bridge from another
  link dropped (no one outside reaches a container's ports unless they are published, and no
  container of another network reaches it: dockerd's isolation — these drops are inserted at
  the top of the chain, the accepts added at its end); masquerade for traffic from its subnet
  that leaves by another link (so replies find their way back without the outside knowing
  the subnet). An ``--internal`` network forwards nothing past its bridge, and masquerades
  nothing;
- where another program's ``ip filter`` table drops in the forward hook (dockerd's FORWARD
  policy DROP; with ``br_netfilter`` even traffic between two containers of one bridge goes
  through it), an accept in asyncstart's table does not stop that drop: the same accepts go
  into dockerd's ``DOCKER-USER`` chain (its documented place for other rules; else into
  ``FORWARD``) — with the ``iptables`` command where it is installed, since that table belongs
  to iptables-nft and its own tools must be able to read every rule in it — after a return for
  traffic towards dockerd's bridges (``docker0``, ``br-*``), whose isolation stays dockerd's.

Driven through the ``nft`` command (nftables' own tool; its library's Python binding is a
distribution package, not on PyPI, and pyroute2's nftables support does not cover rules with
comments in other programs' chains), one atomic transaction per change. A host on
iptables-legacy is not seen by nft: its own rules apply as they are.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .. import errors
from .._log import get_logger

__all__ = [
    "Firewall",
    "Forward",
    "PortNat",
    "forwards",
    "nft_installed",
    "other_dropping_tables",
    "valid_bridge_name",
]

log = get_logger("asyncstart.network.firewall")

_FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
TABLE = "asyncstart"
#: Chains of another program's ``ip filter`` table that accepts must go into, in this order of
#: preference (dockerd's place for users' rules, then the chain it jumps from).
_OTHER_CHAINS = ("DOCKER-USER", "FORWARD")
#: dockerd's bridges, whose isolation rules stay in force (iptables' interface wildcards).
_DOCKER_BRIDGES = ("docker0", "br-+")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def nft_installed() -> bool:
    """Whether the ``nft`` command is there (without it, containers reach only the bridge)."""
    return shutil.which("nft") is not None


def valid_bridge_name(name: str) -> bool:
    """A name a bridge may have here: a Linux interface name that needs no quoting."""
    return _NAME.fullmatch(name) is not None


class Firewall:
    """The rules of one bridge network (see the module docstring)."""

    def __init__(self, bridge: str, subnet: str, *, internal: bool = False) -> None:
        if not valid_bridge_name(bridge):
            raise errors.InvalidParameter(
                f"invalid bridge name {bridge!r}: 1 to 15 of A-Z a-z 0-9 _ . -"
            )
        self.bridge = bridge
        self.subnet = subnet
        self.internal = internal
        self._mark = f"asyncstart:{bridge}"

    async def ensure(self) -> None:
        """Make (or make anew) the network's rules, and turn forwarding on."""
        forwarding = await anyio.to_thread.run_sync(_forwarding)
        policy = "accept" if forwarding else "drop"
        mark = f'comment "{self._mark}"'
        bridge = f'"{self.bridge}"'
        exists = await self._run(["nft", "list", "chain", "ip", TABLE, "forward"])
        script = [
            f"add table ip {TABLE}",
            # An existing chain keeps its policy: the drop set by the daemon that turned
            # forwarding on stays (given again, a policy would replace it).
            f"add chain ip {TABLE} forward"
            + (
                ""
                if exists.returncode == 0
                else f" {{ type filter hook forward priority filter - 1; policy {policy}; }}"
            ),
            f"add chain ip {TABLE} postrouting "
            "{ type nat hook postrouting priority srcnat; policy accept; }",
            *_PORTS_SKELETON,
            f"add element ip {TABLE} bridges {{ {bridge} }}",
            *await self._forget_ours(),
            # At the top (inserted: the last one first), whatever rules other networks have:
            # replies reach the bridge, nothing else from another link does — not from
            # another network either (dockerd's isolation).
            f"insert rule ip {TABLE} forward oifname {bridge} iifname != {bridge} drop {mark}",
            f"insert rule ip {TABLE} forward oifname {bridge} ct state established,related "
            f"accept {mark}",
            # Published ports: what the DNAT sent to a container.
            f"insert rule ip {TABLE} forward oifname {bridge} ct status dnat accept {mark}",
        ]
        if self.internal:  # nothing leaves either; within the bridge, all goes
            script += [
                f"insert rule ip {TABLE} forward iifname {bridge} oifname != {bridge} drop {mark}",
                f"add rule ip {TABLE} forward iifname {bridge} accept {mark}",
            ]
        else:
            script += [
                f"add rule ip {TABLE} forward iifname {bridge} accept {mark}",
                f"add rule ip {TABLE} postrouting ip saddr {self.subnet} oifname != {bridge} "
                f"masquerade {mark}",
            ]
        await self._nft_script(script)
        chain = await self._other_chain()
        if chain is not None:
            await self._forget_in(chain)
            if not self.internal:
                await self._accept_in(chain)
        if not forwarding:
            await anyio.to_thread.run_sync(_forwarding_on)
        log.info("network.firewall", bridge=self.bridge, subnet=self.subnet, chain=chain)
        listed = await self._run(["nft", "-j", "list", "chains"])
        for table in other_dropping_tables(listed.stdout):
            log.warning(
                "network.firewall_drops",
                bridge=self.bridge,
                table=table,
                reason="another firewall drops forwarded traffic there (firewalld, an inet "
                "table...): containers may not reach past the bridge until it allows them",
            )

    async def remove(self) -> None:
        """Remove the network's rules (asyncstart's table stays for the other networks)."""
        script = await self._forget_ours()
        listed = await self._run(["nft", "list", "set", "ip", TABLE, "bridges"])
        if f'"{self.bridge}"' in listed.stdout.decode(errors="replace"):
            script.append(f'delete element ip {TABLE} bridges {{ "{self.bridge}" }}')
        await self._nft_script(script)
        chain = await self._other_chain()
        if chain is not None:
            await self._forget_in(chain)

    # -- asyncstart's table ---------------------------------------------------------------

    async def _forget_ours(self) -> list[str]:
        """Deletions of this network's rules in asyncstart's table (none if it is not there)."""
        deletions = []
        for chain in ("forward", "postrouting"):
            for rule in await self._rules("ip", TABLE, chain):
                if rule.get("comment") == self._mark:
                    deletions.append(f"delete rule ip {TABLE} {chain} handle {rule['handle']}")
        return deletions

    async def _rules(self, family: str, table: str, chain: str) -> list[dict[str, Any]]:
        result = await self._run(["nft", "-j", "-a", "list", "chain", family, table, chain])
        if result.returncode != 0:
            return []  # no such table or chain
        with contextlib.suppress(ValueError, AttributeError):
            items = json.loads(result.stdout).get("nftables", [])
            return [item["rule"] for item in items if isinstance(item, dict) and "rule" in item]
        return []

    # -- another program's chain ----------------------------------------------------------

    async def _other_chain(self) -> str | None:
        """The chain of another program's ``ip filter`` table to put accepts in, if any."""
        result = await self._run(["nft", "-j", "list", "table", "ip", "filter"])
        if result.returncode != 0:
            return None
        names: set[str] = set()
        with contextlib.suppress(ValueError, AttributeError):
            for item in json.loads(result.stdout).get("nftables", []):
                if isinstance(item, dict) and "chain" in item:
                    names.add(item["chain"]["name"])
        return next((name for name in _OTHER_CHAINS if name in names), None)

    def _accepts(self) -> list[list[str]]:
        """The rules for another program's chain, in order, as iptables arguments."""
        mark = ["-m", "comment", "--comment", self._mark]
        returns = [
            ["-i", self.bridge, "-o", name, *mark, "-j", "RETURN"] for name in _DOCKER_BRIDGES
        ]
        return [
            *returns,
            ["-i", self.bridge, *mark, "-j", "ACCEPT"],
            ["-o", self.bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *mark,
             "-j", "ACCEPT"],
            ["-o", self.bridge, "-m", "conntrack", "--ctstate", "DNAT", *mark, "-j", "ACCEPT"],
        ]  # fmt: skip

    async def _accept_in(self, chain: str) -> None:
        if shutil.which("iptables"):
            # Inserted at the top, last first: they end up in order.
            for rule in reversed(self._accepts()):
                await self._checked(["iptables", "-w", "-I", chain, *rule])
            return
        # No iptables: the table is nft's own (no iptables tool will read it).
        mark = f'comment "{self._mark}"'
        bridge = f'"{self.bridge}"'
        rules = [
            *(f'oifname "{name.replace("+", "*")}" iifname {bridge} return {mark}'
              for name in _DOCKER_BRIDGES),
            f"iifname {bridge} accept {mark}",
            f"oifname {bridge} ct state established,related accept {mark}",
            f"oifname {bridge} ct status dnat accept {mark}",
        ]  # fmt: skip
        await self._nft_script(
            [f"insert rule ip filter {chain} {rule}" for rule in reversed(rules)]
        )

    async def _forget_in(self, chain: str) -> None:
        """Remove this network's rules from ``chain`` (a restarted daemon's included)."""
        if shutil.which("iptables"):
            listed = await self._run(["iptables", "-w", "-S", chain])
            for line in listed.stdout.decode(errors="replace").splitlines():
                words = shlex.split(line)  # (iptables quotes the comment)
                if words[:2] == ["-A", chain] and self._mark in words:
                    await self._run(["iptables", "-w", "-D", chain, *words[2:]])
            return
        deletions = [
            f"delete rule ip filter {chain} handle {rule['handle']}"
            for rule in await self._rules("ip", "filter", chain)
            if rule.get("comment") == self._mark
        ]
        await self._nft_script(deletions)

    # -- running the tools -----------------------------------------------------------------

    async def _nft_script(self, script: list[str]) -> None:
        if script:
            await self._checked(["nft", "-f", "-"], input="\n".join(script).encode() + b"\n")

    async def _checked(self, argv: list[str], input: bytes | None = None) -> None:
        result = await self._run(argv, input=input)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()
            raise errors.SystemError(
                f"failed to program the firewall of bridge {self.bridge}: {message}"
            )

    async def _run(
        self, argv: list[str], input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return await anyio.run_process(argv, input=input, check=False)
        except OSError as exc:
            raise errors.SystemError(
                f"failed to program the firewall of bridge {self.bridge}: {argv[0]}: {exc.strerror}"
            ) from exc


#: Published ports, for every network at once (made, never emptied, by each ``ensure``): maps
#: from a host port (any local address; or one address and port) to a container's address and
#: port, looked up from prerouting (other hosts) and output (the host's own non-loopback
#: addresses) for traffic not coming from a container's bridge (a container reaching a
#: published port goes through the proxy, as with dockerd's userland proxy). Loopback stays
#: the proxy's.
_PORTS_SKELETON = (
    f"add set ip {TABLE} bridges {{ type ifname; }}",
    *(
        f"add map ip {TABLE} {proto}_any {{ type inet_service : ipv4_addr . inet_service; }}"
        for proto in ("tcp", "udp")
    ),
    *(
        f"add map ip {TABLE} {proto}_addr "
        f"{{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}"
        for proto in ("tcp", "udp")
    ),
    f"add chain ip {TABLE} ports",
    f"flush chain ip {TABLE} ports",
    *(
        rule
        for proto in ("tcp", "udp")
        for rule in (
            f"add rule ip {TABLE} ports meta l4proto {proto} dnat ip to ip daddr . {proto} dport "
            f"map @{proto}_addr",
            f"add rule ip {TABLE} ports meta l4proto {proto} dnat ip to {proto} dport "
            f"map @{proto}_any",
        )
    ),
    f"add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat; "
    "policy accept; }",
    f"flush chain ip {TABLE} prerouting",
    f"add rule ip {TABLE} prerouting iifname != @bridges fib daddr type local jump ports",
    f"add chain ip {TABLE} output {{ type nat hook output priority -100; policy accept; }}",
    f"flush chain ip {TABLE} output",
    f"add rule ip {TABLE} output ip daddr != 127.0.0.0/8 fib daddr type local jump ports",
)


@dataclass(frozen=True, slots=True)
class Forward:
    """One published port's DNAT: ``proto`` traffic to ``host_ip`` (any local address if
    empty) port ``host_port`` goes to ``address`` port ``port``."""

    proto: str
    host_ip: str
    host_port: int
    address: str
    port: int

    def key(self) -> str:
        """The map and key: ``tcp_any { 8080 }``."""
        if self.host_ip:
            return f"{self.proto}_addr {{ {self.host_ip} . {self.host_port} }}"
        return f"{self.proto}_any {{ {self.host_port} }}"

    def element(self) -> str:
        """The map, key and value: ``tcp_any { 8080 : 10.213.0.2 . 80 }``."""
        return self.key().replace(" }", f" : {self.address} . {self.port} }}")


def forwards(address: str, ports: Mapping[str, Any]) -> list[Forward]:
    """The DNATs of a container's ``NetworkSettings.Ports``: those on IPv4 addresses that are
    not loopback (the proxy serves loopback, and IPv6)."""
    found = []
    for spec, hosts in ports.items():
        port, _, proto = spec.partition("/")
        for host in hosts or ():
            host_ip = str(host.get("HostIp") or "")
            try:
                ip = ipaddress.ip_address(host_ip or "0.0.0.0")
            except ValueError:
                continue
            if ip.version != 4 or ip.is_loopback:
                continue
            found.append(
                Forward(
                    proto or "tcp",
                    "" if ip.is_unspecified else host_ip,
                    int(host["HostPort"]),
                    address,
                    int(port),
                )
            )
    return found


class PortNat:
    """Published ports' DNATs (see :data:`_PORTS_SKELETON`): an element each, added at start
    and deleted when the container stops; run only for a container that publishes ports."""

    async def publish(self, forwards: Sequence[Forward]) -> None:
        if not forwards:
            return
        adds = [f"add element ip {TABLE} {f.element()}" for f in forwards]
        first = await _nft(adds)
        if first.returncode == 0:
            return
        # A key an earlier run left (a daemon that died): replaced.
        await _nft([f"delete element ip {TABLE} {f.key()}" for f in forwards], each=True)
        again = await _nft(adds)
        if again.returncode != 0:
            message = again.stderr.decode(errors="replace").strip()
            raise errors.SystemError(f"failed to program the published ports: {message}")

    async def unpublish(self, forwards: Sequence[Forward]) -> None:
        if forwards:
            await _nft([f"delete element ip {TABLE} {f.key()}" for f in forwards], each=True)


async def _nft(script: list[str], *, each: bool = False) -> subprocess.CompletedProcess[bytes]:
    """``nft -f -`` of ``script`` (one transaction; ``each``: line by line, whatever fails)."""
    batches = [[line] for line in script] if each else [script]
    result = subprocess.CompletedProcess[bytes]([], 0, b"", b"")
    for batch in batches:
        try:
            result = await anyio.run_process(
                ["nft", "-f", "-"], input="\n".join(batch).encode() + b"\n", check=False
            )
        except OSError as exc:
            return subprocess.CompletedProcess([], 1, b"", str(exc).encode())
    return result


def other_dropping_tables(listing: bytes) -> list[str]:
    """Tables (``family name``) of ``nft -j list chains`` output with a forward-hook chain
    that drops by default, besides asyncstart's and the ``ip filter`` table whose chains
    get our accepts."""
    found: list[str] = []
    with contextlib.suppress(ValueError, AttributeError):
        for item in json.loads(listing or b"{}").get("nftables", []):
            chain = item.get("chain") if isinstance(item, dict) else None
            if not chain or chain.get("hook") != "forward" or chain.get("policy") != "drop":
                continue
            table = f"{chain.get('family')} {chain.get('table')}"
            if table not in (f"ip {TABLE}", "ip filter") and table not in found:
                found.append(table)
    return found


def _forwarding() -> bool:
    return _FORWARDING.read_text().strip() == "1"


def _forwarding_on() -> None:
    _FORWARDING.write_text("1\n")
