"""The `gateway:` and `ca:` configuration sections: which clients the nftables ruleset sends
through the proxy, and the interception CA's lifetime."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from schoolgate.config_reader import Network, Node, listen_host


@dataclass(frozen=True)
class CaConfig:
    """The interception CA (`data_dir/ca`): see schoolgate.ca."""

    validity_days: int = 1825
    # An existing CA without name constraints is refused at start unless this is set (migration).
    allow_unconstrained: bool = False


@dataclass(frozen=True, order=True)
class PortRange:
    """A protocol and a port or port range that pupils' devices may use through the gateway,
    to anywhere or only to the networks in `to` (`udp/3478-3481 to 52.112.0.0/14`)."""

    protocol: str  # "tcp" | "udp"
    first: int
    last: int
    to: tuple[str, ...] = ()

    @property
    def ports(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def __str__(self) -> str:
        where = f" to {','.join(self.to)}" if self.to else ""
        return f"{self.protocol}/{self.ports}{where}"

    @classmethod
    def parse(cls, text: str) -> PortRange | None:
        spec, _, where = text.strip().lower().partition(" to ")
        match = re.fullmatch(r"(tcp|udp)/(\d{1,5})(?:-(\d{1,5}))?", spec.strip())
        if match is None:
            return None
        first = int(match[2])
        last = int(match[3]) if match[3] else first
        if not 1 <= first <= last <= 65535:
            return None
        to: list[str] = []
        for item in where.split(",") if where.strip() else ():
            try:
                to.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                return None
        return cls(match[1], first, last, tuple(to))


# What devices need besides the web and DNS: the clock (NTP, packets of at most 256 bytes), and
# only to the networks their vendors publish, Apple push and the call ports of Teams, FaceTime and
# Meet. A port open to anywhere is a tunnel for whoever runs a server on it (adversarial pass
# a3): Google push falls back to 443 by design, as Teams and Meet calls do to their relays.
_APPLE: Final = ("17.0.0.0/8",)
_TEAMS_MEDIA: Final = ("52.112.0.0/14", "52.122.0.0/15")
_MEET_MEDIA: Final = ("74.125.250.0/24", "142.250.82.0/24")
DEFAULT_FORWARD_ALLOW: tuple[PortRange, ...] = (
    PortRange("udp", 123, 123),  # NTP
    PortRange("tcp", 5223, 5223, _APPLE),  # Apple push (APNs)
    PortRange("tcp", 2197, 2197, _APPLE),
    PortRange("udp", 3478, 3481, _TEAMS_MEDIA + _APPLE),  # Teams media, FaceTime
    PortRange("udp", 16384, 16387, _APPLE),  # FaceTime
    PortRange("udp", 19302, 19309, _MEET_MEDIA),  # Google Meet
)


@dataclass(frozen=True)
class GatewayConfig:
    """Which clients the gateway's nftables ruleset sends through the transparent proxy."""

    student_interfaces: tuple[str, ...] = ()
    vlan_parent: str | None = None  # student_vlans are its sub-interfaces: eth0 + 20 -> eth0.20
    student_vlans: tuple[int, ...] = ()
    exempt_subnets: tuple[Network, ...] = ()  # go direct: never redirected, never rejected
    reject_quic: bool = True  # UDP 443: apps fall back to inspectable TCP
    reject_dot: bool = True  # TCP/UDP 853 (DNS over TLS / QUIC): devices use the gateway's DNS
    # Everything else pupils' devices send through the gateway (not web, not DNS): "reject"
    # all but `forward_allow` (VPNs, SSH, Tor, game and proxy ports are closed), or "allow".
    forward_default: str = "reject"
    forward_allow: tuple[PortRange, ...] = DEFAULT_FORWARD_ALLOW
    # IPv4 from student interfaces only from (MAC, address) pairs the DHCP server leased
    # (proxy.dhcp_leases), as switches do with DHCP snooping: a device that forges a new MAC and
    # address per frame (adversarial pass a9) is then not a new device each time.
    leased_pairs_only: bool = False
    # Web traffic to addresses that only non-catalogued names resolved to (through the
    # gateway's resolver) is forwarded in the kernel, never through the proxy; false: every
    # TCP 80/443 connection meets the proxy. Needs resolver.enabled (it fills the sets).
    fast_path: bool = False  # off by default: see docs/gateway.md, "The fast path"

    @property
    def interfaces(self) -> tuple[str, ...]:
        """Every student interface name, VLAN sub-interfaces included."""
        vlans = tuple(f"{self.vlan_parent}.{vid}" for vid in self.student_vlans)
        return tuple(dict.fromkeys((*self.student_interfaces, *vlans)))


def parse_ca(node: Node) -> CaConfig:
    node.mapping(allowed={"validity_days", "allow_unconstrained"})
    defaults = CaConfig()
    return CaConfig(
        validity_days=node.child("validity_days").integer(
            defaults.validity_days, minimum=1, maximum=3650
        ),
        allow_unconstrained=node.child("allow_unconstrained").flag(defaults.allow_unconstrained),
    )


# Linux interface names: at most 15 characters, no slash or space; nft gets them quoted.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$")


def _ifname(node: Node, name: str) -> str:
    if not _IFNAME.match(name):
        node.fail(
            f"{name!r} is not a network interface name such as wlan0 or eth0.20 "
            "(letters, digits, '.', '-', '_', ':', at most 15 characters)"
        )
    return name


def parse_gateway(node: Node) -> GatewayConfig:
    node.mapping(
        allowed={
            "student_interfaces",
            "vlan_parent",
            "student_vlans",
            "exempt_subnets",
            "reject_quic",
            "reject_dot",
            "forward_default",
            "forward_allow",
            "leased_pairs_only",
            "fast_path",
        }
    )
    interfaces = tuple(
        _ifname(child, child.text()) for child in node.child("student_interfaces").elements()
    )
    vlans_node = node.child("student_vlans")
    vlans = tuple(child.integer(0, minimum=1, maximum=4094) for child in vlans_node.elements())
    parent_node = node.child("vlan_parent")
    parent = parent_node.optional_text()
    if parent is not None:
        _ifname(parent_node, parent)
    if vlans and parent is None:
        parent_node.fail("is required when student_vlans are listed (e.g. eth0 for eth0.20)")
    for vid, child in zip(vlans, vlans_node.elements(), strict=True):
        _ifname(child, f"{parent}.{vid}")
    defaults = GatewayConfig()
    return GatewayConfig(
        student_interfaces=interfaces,
        vlan_parent=parent,
        student_vlans=vlans,
        exempt_subnets=tuple(child.network() for child in node.child("exempt_subnets").elements()),
        reject_quic=node.child("reject_quic").flag(defaults.reject_quic),
        reject_dot=node.child("reject_dot").flag(defaults.reject_dot),
        forward_default=node.child("forward_default").choice(
            ("reject", "allow"), defaults.forward_default
        ),
        forward_allow=parse_port_ranges(node.child("forward_allow"), defaults.forward_allow),
        leased_pairs_only=node.child("leased_pairs_only").flag(defaults.leased_pairs_only),
        fast_path=node.child("fast_path").flag(defaults.fast_path),
    )


def parse_port_ranges(node: Node, default: tuple[PortRange, ...] = ()) -> tuple[PortRange, ...]:
    """A list of `proto/ports [to networks]` entries; `default` when the key is absent."""
    if node.missing:
        return default
    ranges = []
    for child in node.elements():
        found = PortRange.parse(child.text())
        if found is None:
            child.fail("is not a port such as tcp/5223, udp/123 or udp/3478-3481")
        ranges.append(found)
    return tuple(ranges)


@dataclass(frozen=True)
class ResolverConfig:
    """The gateway's resolver for pupils' devices (`schoolgate resolve`, its own service)."""

    enabled: bool = False  # the gateway install turns it on; `make run` has no gateway
    listen_host: str = "0.0.0.0"
    # A high port needs no capability: the gateway's ruleset redirects pupils' port 53 to it.
    listen_port: int = 8053
    upstream: tuple[str, ...] = ()  # name servers; empty: the gateway's own (/etc/resolv.conf)
    block_doh: bool = True  # public DNS-over-HTTPS names answered with NXDOMAIN
    block_names: tuple[str, ...] = ()  # more names (and their subdomains) to answer NXDOMAIN
    strip_ech: bool = True  # Encrypted ClientHello keys removed from HTTPS/SVCB answers
    min_ttl_s: int = 1800  # how long an answer stays in the address book at least
    # Where `schoolgate nft fastpath` listens for the resolver's reports (gateway.fast_path);
    # None: fastpath.sock in data_dir. The gateway install puts it in the service's /run dir.
    fast_path_socket: Path | None = None


def parse_resolver(node: Node) -> ResolverConfig:
    node.mapping(
        allowed={
            "enabled",
            "listen_host",
            "listen_port",
            "upstream",
            "block_doh",
            "block_names",
            "strip_ech",
            "min_ttl_s",
            "fast_path_socket",
        }
    )
    defaults = ResolverConfig()
    upstream = []
    for child in node.child("upstream").elements():
        network = child.network()
        if network.num_addresses != 1:
            child.fail("is a network, not the address of a name server")
        upstream.append(str(network.network_address))
    names = []
    for child in node.child("block_names").elements():
        name = child.text().strip().rstrip(".").lower()
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]{0,62}\.)*[a-z0-9_-]{1,63}", name):
            child.fail(f"{name!r} is not a domain name")
        names.append(name)
    return ResolverConfig(
        enabled=node.child("enabled").flag(defaults.enabled),
        listen_host=listen_host(node.child("listen_host"), defaults.listen_host),
        listen_port=node.child("listen_port").integer(
            defaults.listen_port, minimum=1, maximum=65535
        ),
        upstream=tuple(upstream),
        block_doh=node.child("block_doh").flag(defaults.block_doh),
        block_names=tuple(names),
        strip_ech=node.child("strip_ech").flag(defaults.strip_ech),
        min_ttl_s=node.child("min_ttl_s").integer(defaults.min_ttl_s, minimum=0, maximum=86400),
        fast_path_socket=node.child("fast_path_socket").path_value(),
    )
