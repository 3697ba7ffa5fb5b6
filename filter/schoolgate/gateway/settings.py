"""The `gateway:` and `ca:` configuration sections: which clients the nftables ruleset sends
through the proxy, and the interception CA's lifetime."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schoolgate.config_reader import Network, Node


@dataclass(frozen=True)
class CaConfig:
    """The interception CA (`data_dir/ca`): see schoolgate.ca."""

    validity_days: int = 1825
    # An existing CA without name constraints is refused at start unless this is set (migration).
    allow_unconstrained: bool = False


@dataclass(frozen=True)
class GatewayConfig:
    """Which clients the gateway's nftables ruleset sends through the transparent proxy."""

    student_interfaces: tuple[str, ...] = ()
    vlan_parent: str | None = None  # student_vlans are its sub-interfaces: eth0 + 20 -> eth0.20
    student_vlans: tuple[int, ...] = ()
    exempt_subnets: tuple[Network, ...] = ()  # go direct: never redirected, never rejected
    reject_quic: bool = True  # UDP 443: apps fall back to inspectable TCP
    reject_dot: bool = True  # TCP/UDP 853 (DNS over TLS / QUIC): devices use the gateway's DNS

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
    )
