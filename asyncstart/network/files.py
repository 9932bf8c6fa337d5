"""The files that name a container on its network: ``hostname``, ``hosts``, ``resolv.conf``.
Pure functions; the network step writes them and the spec bind-mounts them."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "EMBEDDED_DNS",
    "Link",
    "embed_resolver",
    "host_resolv_conf",
    "hostname_file",
    "hosts_file",
    "link_env",
    "resolv_conf",
    "upstreams",
]

_HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
#: What dockerd falls back to when the host only has loopback resolvers.
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
#: Where a container on a user-defined network finds the engine's DNS server.
EMBEDDED_DNS = "127.0.0.11"


@dataclass(frozen=True, slots=True)
class Link:
    """A legacy link (``--link name:alias``) as the linking container sees it."""

    alias: str
    #: The linked container: its ID, name (no slash), address, exposed ports, environment.
    container_id: str
    name: str
    address: str
    exposed: Sequence[str] = ()
    env: Sequence[str] = ()


def link_env(parent: str, link: Link) -> list[str]:
    """dockerd's environment for a link: ``<ALIAS>_NAME``, ``<ALIAS>_PORT`` (the lowest exposed
    port) and ``<ALIAS>_PORT_<port>_<PROTO>[_ADDR|_PORT|_PROTO]`` per port, and the linked
    container's environment as ``<ALIAS>_ENV_<name>`` (not HOME or PATH)."""
    prefix = link.alias.upper().replace("-", "_")
    env = [f"{prefix}_NAME=/{parent.strip('/')}/{link.alias}"]
    ports = sorted(
        (int(number), proto or "tcp")
        for number, _, proto in (spec.partition("/") for spec in link.exposed)
        if number.isdigit()
    )
    for index, (number, proto) in enumerate(ports):
        url = f"{proto}://{link.address}:{number}"
        if index == 0:
            env.append(f"{prefix}_PORT={url}")
        key = f"{prefix}_PORT_{number}_{proto.upper()}"
        env += [f"{key}={url}", f"{key}_ADDR={link.address}", f"{key}_PORT={number}",
                f"{key}_PROTO={proto}"]  # fmt: skip
    for item in link.env:
        name, sep, value = item.partition("=")
        if sep and name not in ("HOME", "PATH"):
            env.append(f"{prefix}_ENV_{name}={value}")
    return env


def hostname_file(hostname: str) -> str:
    return hostname + "\n"


def hosts_file(
    hostname: str,
    domainname: str,
    address: str | None,
    extra_hosts: Sequence[str] = (),
    links: Sequence[Link] = (),
) -> str:
    """dockerd's /etc/hosts: localhost lines, ExtraHosts (``name:ip``), linked containers (by
    alias, ID and name), the container itself."""
    lines = [_HOSTS_HEADER]
    for entry in extra_hosts:
        name, _, ip = entry.partition(":")
        lines.append(f"{ip}\t{name}\n")
    for link in links:
        aliases = dict.fromkeys([link.alias, link.container_id[:12], link.name])
        lines.append(f"{link.address}\t{' '.join(aliases)}\n")
    if address:
        names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
        lines.append(f"{address}\t{names}\n")
    return "".join(lines)


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(
    host: str,
    *,
    dns: Sequence[str] = (),
    search: Sequence[str] = (),
    options: Sequence[str] = (),
    keep_loopback: bool = False,
    embedded: bool = False,
) -> str:
    """The host's resolv.conf as a container sees it: loopback nameservers dropped (they would
    point at the container itself) unless it shares the host's network, and HostConfig's Dns,
    DnsSearch and DnsOptions in place of the host's.

    ``embedded``: the container is on a user-defined network, whose names the embedded DNS
    server at 127.0.0.11 answers (it forwards the rest to :func:`upstreams`), as dockerd's
    (``options ndots:0`` unless the container sets ndots)."""
    nameservers: list[str] = []
    kept: list[str] = []
    host_search: list[str] = []
    host_options: list[str] = []
    for line in host.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            if keep_loopback or not _is_loopback(words[1]):
                nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            host_search = words[1:]
        elif words[0] == "options":
            host_options.extend(words[1:])
        else:
            kept.append(line)
    if dns:
        nameservers = list(dns)
    elif not nameservers:
        nameservers = list(DEFAULT_NAMESERVERS)
    if embedded:
        nameservers = [EMBEDDED_DNS]
    out = [f"nameserver {server}\n" for server in nameservers]
    chosen_search = list(search) or host_search
    if chosen_search:
        out.append("search " + " ".join(chosen_search) + "\n")
    chosen_options = list(options) or host_options
    if embedded and not any(option.startswith("ndots:") for option in chosen_options):
        chosen_options = ["ndots:0", *chosen_options]
    if chosen_options:
        out.append("options " + " ".join(chosen_options) + "\n")
    out.extend(line + "\n" for line in kept)
    if embedded:
        out.append(f"\n# ExtServers: [{' '.join(upstreams(host, dns))}]\n")
    return "".join(out)


def embed_resolver(
    path: str, host_config_dns: Sequence[str], search: Sequence[str], options: Sequence[str]
) -> None:
    """A running container's ``resolv.conf`` rewritten, in place (it is bind-mounted), to name
    the embedded DNS server: it has joined its first user-defined network. One that already
    names it is left as it is."""
    with open(path, "r+") as file:
        if f"nameserver {EMBEDDED_DNS}" in file.read():
            return
        text = resolv_conf(host_resolv_conf(), dns=host_config_dns, search=search,
                           options=options, embedded=True)  # fmt: skip
        file.seek(0)
        file.write(text)
        file.truncate()


def host_resolv_conf() -> str:
    """The host's ``/etc/resolv.conf`` ("" if it has none)."""
    try:
        with open("/etc/resolv.conf") as file:
            return file.read()
    except OSError:
        return ""


def upstreams(host: str, dns: Sequence[str] = ()) -> list[str]:
    """Where the embedded DNS server forwards names it does not know: HostConfig's Dns, else
    the host's nameservers — loopback ones too, as it asks from the host's namespace."""
    if dns:
        return list(dns)
    return [
        words[1]
        for words in (line.split() for line in host.splitlines())
        if len(words) > 1 and words[0] == "nameserver"
    ]
