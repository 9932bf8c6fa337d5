"""The firewall of a bridge network: what lets its containers reach past the bridge.

Per network, made when the network is first used and found again by a restarted daemon (made
again the same way: idempotent), never on the per-start path:

- IPv4 forwarding on (``net.ipv4.ip_forward``, as dockerd sets it);
- a table of the network's own, ``ip asyncstart-<bridge>``: masquerade for traffic from its
  subnet leaving by another link (so a reply finds its way back without the outside knowing
  the subnet), and forwarding accepted to and from the bridge;
- on a host whose forward hook drops by default (Docker's ``ip filter FORWARD`` policy DROP,
  set by dockerd, with ``br_netfilter`` on), an accept in another table does not stop that
  drop: the same accepts go into dockerd's ``DOCKER-USER`` chain (dockerd's documented place
  for other rules), or into ``FORWARD`` itself where there is no ``DOCKER-USER``, each rule
  marked with a comment naming the bridge so that it is found and removed again.

Driven through the ``nft`` command (nftables' own tool; its library has no Python binding on
PyPI, and pyroute2's nftables support cannot add rules to another program's chains), one
atomic transaction per change. A host on iptables-legacy is not seen by nft: its own rules
apply as they are.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import structlog

from .. import errors

__all__ = ["Firewall", "nft_installed"]

log = structlog.get_logger("asyncstart.network.firewall")

_FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
#: Chains of other programs' ``ip filter`` table that accepts must go into, in this order of
#: preference (dockerd's place for users' rules, then the chain it jumps from).
_OTHER_CHAINS = ("DOCKER-USER", "FORWARD")


class Firewall:
    """The nftables rules of one bridge network (see the module docstring)."""

    def __init__(self, bridge: str, subnet: str, nft: str | None = None) -> None:
        self.bridge = bridge
        self.subnet = subnet
        self.nft = nft or shutil.which("nft") or "nft"
        self.table = f"asyncstart-{bridge}"
        self._mark = f"asyncstart:{bridge}"

    async def ensure(self) -> None:
        """Make (or make again) the network's rules, and turn forwarding on."""
        script = [
            f"add table ip {self.table}",
            f"delete table ip {self.table}",
            f"add table ip {self.table}",
            f"add chain ip {self.table} forward "
            "{ type filter hook forward priority filter - 1; policy accept; }",
            *(f"add rule ip {self.table} forward {rule}" for rule in self._accepts()),
            f"add chain ip {self.table} postrouting "
            "{ type nat hook postrouting priority srcnat; policy accept; }",
            f"add rule ip {self.table} postrouting "
            f'ip saddr {self.subnet} oifname != "{self.bridge}" masquerade',
        ]
        chain = await self._other_chain()
        if chain is not None:
            script += await self._forget_in(chain)
            script += [
                f'insert rule ip filter {chain} {rule} comment "{self._mark}"'
                for rule in reversed(self._accepts())
            ]
        await self._apply(script)
        await anyio.to_thread.run_sync(_forwarding_on)
        log.info("network.firewall", bridge=self.bridge, subnet=self.subnet, chain=chain)

    async def remove(self) -> None:
        """Remove the network's table and its rules in other programs' chains."""
        script = [f"add table ip {self.table}", f"delete table ip {self.table}"]
        chain = await self._other_chain()
        if chain is not None:
            script += await self._forget_in(chain)
        await self._apply(script)

    def _accepts(self) -> list[str]:
        return [
            f'iifname "{self.bridge}" accept',
            f'oifname "{self.bridge}" ct state related,established accept',
        ]

    async def _other_chain(self) -> str | None:
        """The chain of another program's ``ip filter`` table to put accepts in, if any."""
        ruleset = await self._json("list", "table", "ip", "filter")
        names = {
            item["chain"]["name"] for item in ruleset if "chain" in item
        }  # (no table: nothing)
        return next((name for name in _OTHER_CHAINS if name in names), None)

    async def _forget_in(self, chain: str) -> list[str]:
        """Deletions of this network's rules in ``chain`` (a restarted daemon's included)."""
        listed = await self._json("-a", "list", "chain", "ip", "filter", chain)
        return [
            f"delete rule ip filter {chain} handle {item['rule']['handle']}"
            for item in listed
            if "rule" in item and item["rule"].get("comment") == self._mark
        ]

    async def _json(self, *args: str) -> list[dict[str, Any]]:
        result = await self._run("-j", *args)
        if result.returncode != 0:
            return []
        with contextlib.suppress(ValueError):
            return [
                item
                for item in json.loads(result.stdout).get("nftables", [])
                if isinstance(item, dict)
            ]
        return []

    async def _apply(self, script: list[str]) -> None:
        result = await self._run("-f", "-", input="\n".join(script).encode() + b"\n")
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()
            raise errors.SystemError(
                f"failed to program the firewall of bridge {self.bridge}: {message}"
            )

    async def _run(
        self, *args: str, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return await anyio.run_process([self.nft, *args], input=input, check=False)
        except OSError as exc:
            raise errors.SystemError(
                f"failed to program the firewall of bridge {self.bridge}: {self.nft}: "
                f"{exc.strerror} (nftables is needed for containers to reach past the bridge)"
            ) from exc


def nft_installed() -> bool:
    """Whether the ``nft`` command is there (without it, containers reach only the bridge)."""
    return shutil.which("nft") is not None


def _forwarding_on() -> None:
    if _FORWARDING.read_text().strip() != "1":
        _FORWARDING.write_text("1\n")
