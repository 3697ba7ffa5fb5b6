"""The gateway's nftables ruleset, rendered from the configuration's `gateway` and `proxy` sections.

Everything lives in one table, `inet schoolgate`, so loading replaces only our rules and
`nft delete table inet schoolgate` removes all of them without disturbing anyone else's. Only
packets arriving on student interfaces are matched (prerouting, forward, and input for the proxy
port); the output chain is never hooked, so the gateway's own traffic, the proxy's upstream
connections included, always goes direct.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass
from string import Template

from schoolgate.config import Config
from schoolgate.errors import ConfigError, SchoolgateError
from schoolgate.gateway.fastpath_rules import (
    FAST_VERIFIED,
    fast_path_off,
    fast_path_rules,
    set_elements,
)
from schoolgate.gateway.leases import LeaseTable
from schoolgate.gateway.settings import PortRange

TABLE = "schoolgate"
FAMILY = "inet"
NFT_TIMEOUT_S = 30


# Exempt and non-student traffic leaves each chain first: only what remains is touched.
_TEMPLATE = Template("""\
#!/usr/sbin/nft -f
# schoolgate gateway ruleset, rendered by `schoolgate nft render` from $source.
# Do not edit: change the configuration's gateway section, then reload schoolgate-nft.

# Declared, deleted, then defined: one atomic replace that also works on the first load.
table $table
delete table $table

table $table {
\tset student_ifaces {
\t\ttype ifname
\t\telements = { $ifaces }
\t}

\tset exempt_v4 {
\t\ttype ipv4_addr
\t\tflags interval$exempt_v4
\t}

$leased_set$fast_sets\tset exempt_v6 {
\t\ttype ipv6_addr
\t\tflags interval$exempt_v6
\t}

\t# A source address that would not be routed back out of the interface it came in on is
\t# forged (an exempt or staff address typed in elsewhere, one-way UDP out): dropped first.
\tchain antispoof {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiifname != @student_ifaces return
\t\tudp sport 68 udp dport 67 accept comment "dhcp"$unleased
\t\tip6 saddr { ::, fe80::/10 } accept comment "neighbour discovery"
\t\tfib saddr . iif oif missing counter drop comment "spoofed"
\t\t# No host sends to "this host" or to loopback across a wire: the proxy would dial the
\t\t# gateway's own loopback for it (adversarial pass a13 reached a console on 127.0.0.1:443).
\t\tip daddr { 0.0.0.0/8, 127.0.0.0/8 } counter drop comment "martian"
\t\tip6 daddr { ::, ::1 } counter drop comment "martian6"
\t}

\t# Web traffic to any of the gateway's own addresses is never the proxy's to pass on: the
\t# proxy would dial the gateway itself and hand pupils whatever IT serves on 80/443 (a console
\t# on 443, adversarial pass a12). Left unredirected, the input chain refuses it.
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname != @student_ifaces return
\t\tip saddr @exempt_v4 return
\t\tip6 saddr @exempt_v6 return
\t\t${onboarding}${dns}
\t\tfib daddr type local tcp dport { 80, 443 } counter return comment "own address"$fast_rules
\t\ttcp dport { 80, 443 } counter redirect to :$port comment "proxy"
\t}

\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;$fast_count$inbound
\t\tiifname != @student_ifaces return
\t\tip saddr @exempt_v4 return
\t\tip6 saddr @exempt_v6 return$rejects$forward_policy
\t}
$fast_chain
\t# From pupils the gateway itself offers only DHCP, DNS and the proxy: anything else it runs
\t# (SSH, a Prometheus, Grafana) is for the management side. A direct connection to the
\t# transparent port has no original destination to restore (the proxy would dial itself):
\t# only redirected connections may reach it.
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tiifname != @student_ifaces return
\t\tct state established,related accept
\t\ttcp dport $port ct status dnat accept
\t\ttcp dport $port counter reject with tcp reset comment "direct"$dns_input$onboarding_input
\t\tudp dport { 67, 547 } accept comment "dhcp"
\t\tmeta l4proto { tcp, udp } th dport 53 accept comment "dns"
\t\ticmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } accept
\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded } accept
\t\ticmpv6 type { parameter-problem, echo-request, nd-router-solicit } accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept comment "neighbours"
\t\ticmpv6 type { mld-listener-query, mld-listener-report, mld2-listener-report } accept
\t\tmeta l4proto tcp counter reject with tcp reset comment "gateway"
\t\tcounter reject comment "gateway"
\t}
}
""")


def _per_device(match: str, name: str, rate: str, families: str = "46") -> list[str]:
    """Drop what `match` matches past `rate` for one device: keyed by source MAC (a device with
    forty addresses is one device) and by source address (student interfaces without Ethernet
    framing have no MAC to key on). `families`: the IP versions `match` can be ("4", "6")."""
    keys = [("mac", "ether saddr")]
    keys += [("ip4", "ip saddr")] if "4" in families else []
    keys += [("ip6", "ip6 saddr")] if "6" in families else []
    return [
        f"{match} meter {name}_{label} {{ {key} limit rate over {rate} }} "
        f'counter drop comment "{name} rate"'
        for label, key in keys
    ]


def _port_rules(ports: tuple[PortRange, ...], match: str, comment: str) -> list[str]:
    """One rule per protocol and destination list (ports open to anywhere share one)."""
    rules = []
    groups: dict[tuple[str, tuple[str, ...], bool], list[PortRange]] = {}
    for port in ports:
        ntp = (port.protocol, port.first, port.last) == ("udp", 123, 123)
        groups.setdefault((port.protocol, port.to, ntp), []).append(port)
    for (protocol, to, ntp), chosen in sorted(groups.items()):
        listed = ", ".join(p.ports for p in sorted(chosen))
        # NTP is 48 bytes (more with extensions): bigger packets on its port are a tunnel,
        # dropped before any flow is accepted (GatewayRuleset._ntp_bounds); here as well, for
        # a group's own ports, which come after.
        size = " udp length <= 256" if ntp else ""
        for family, where in _destinations(to):
            rules.append(
                f"{match}{where}{protocol} dport {{ {listed} }}{size} accept "
                f'comment "{comment}{family}"'
            )
    return rules


def _destinations(to: tuple[str, ...]) -> list[tuple[str, str]]:
    """(" v4"/" v6" label, "ip daddr { ... } " match) for a port's destinations; anywhere: one."""
    if not to:
        return [("", "")]
    out = []
    for version, keyword in ((4, "ip"), (6, "ip6")):
        nets = [n for n in to if ipaddress.ip_network(n).version == version]
        if nets:
            out.append((f" ipv{version}", f"{keyword} daddr {{ {', '.join(nets)} }} "))
    return out


class NftError(SchoolgateError):
    """nft refused the ruleset or is not installed."""


@dataclass(frozen=True)
class GatewayRuleset:
    """Renders the ruleset text for one configuration; refuses configurations it cannot serve."""

    config: Config

    def render(self) -> str:
        self._check()
        gateway = self.config.gateway
        v4 = [str(n) for n in gateway.exempt_subnets if n.version == 4]
        v6 = [str(n) for n in gateway.exempt_subnets if n.version == 6]
        rejects: list[str] = []
        if gateway.reject_quic:
            rejects.append('udp dport 443 counter reject comment "quic"')
        if gateway.reject_dot:
            rejects += [
                'tcp dport 853 counter reject with tcp reset comment "dot"',
                'udp dport 853 counter reject comment "dot"',
            ]
        dns_redirect = dns_input = onboarding_redirect = onboarding_input = ""
        proxy = self.config.proxy
        if proxy.onboarding:
            # http://<gateway>/ is the onboarding page (the CA for pupils' own devices).
            onboarding_redirect = (
                f"fib daddr type local tcp dport 80 counter redirect to :{proxy.onboarding_port} "
                'comment "onboarding"\n\t\t'
            )
            onboarding_input = f"\n\t\ttcp dport {proxy.onboarding_port} ct status dnat accept"
        resolver = self.config.resolver
        if resolver.enabled:
            # Every DNS query a pupil's device sends, to the gateway or to a server of its own
            # choosing, is answered by the gateway's resolver (ECH stripped, DoH names refused).
            dns_redirect = (
                "meta l4proto { tcp, udp } th dport 53 counter "
                f'redirect to :{resolver.listen_port} comment "resolver"\n\t\t'
            )
            dns_input = (
                f"\n\t\tmeta l4proto {{ tcp, udp }} th dport {resolver.listen_port} "
                "ct status dnat accept"
            )
        return _TEMPLATE.substitute(
            source=self.config.source,
            table=f"{FAMILY} {TABLE}",
            port=self.config.proxy.listen_port,
            ifaces=", ".join(f'"{name}"' for name in gateway.interfaces),
            exempt_v4=set_elements(v4),
            exempt_v6=set_elements(v6),
            rejects="".join(f"\n\t\t{rule}" for rule in rejects),
            inbound=self._inbound(),
            unleased=self._unleased_rule(),
            leased_set=self._leased_set(),
            dns=dns_redirect,
            dns_input=dns_input,
            onboarding=onboarding_redirect,
            onboarding_input=onboarding_input,
            forward_policy="".join(f"\n\t\t{rule}" for rule in self._forward_policy()),
            **self._fast_path(),
        )

    @property
    def fast_path(self) -> bool:
        """Whether the ruleset has the fast path (it needs the resolver to fill its sets)."""
        return self.config.gateway.fast_path and self.config.resolver.enabled

    def _fast_path(self) -> dict[str, str]:
        return fast_path_rules(self.config) if self.fast_path else fast_path_off()

    def _leased_pairs(self) -> list[tuple[str, str]]:
        """(MAC, IPv4) of every lease in the configured lease files, read now."""
        pairs: set[tuple[str, str]] = set()
        for path in self.config.proxy.dhcp_leases:
            for lease in LeaseTable(path).held():
                if lease.mac and ipaddress.ip_address(lease.ip).version == 4:
                    pairs.add((lease.mac, lease.ip))
        return sorted(pairs)

    def leased_update(self) -> str:
        """An nft script that replaces the leased pairs in the loaded table in one transaction
        (the rest of the ruleset, its meters and counters, untouched)."""
        where = f"{FAMILY} {TABLE} leased_v4"
        pairs = ", ".join(f"{mac} . {ip}" for mac, ip in self._leased_pairs())
        return f"flush set {where}\n" + (f"add element {where} {{ {pairs} }}\n" if pairs else "")

    def _leased_set(self) -> str:
        if not self.config.gateway.leased_pairs_only:
            return ""
        pairs = self._leased_pairs()
        elements = ", ".join(f"{mac} . {ip}" for mac, ip in pairs)
        body = f"\n\t\telements = {{ {elements} }}" if pairs else ""
        return f"\tset leased_v4 {{\n\t\ttype ether_addr . ipv4_addr{body}\n\t}}\n\n"

    def _unleased_rule(self) -> str:
        """IPv4 from a pair the DHCP server did not lease is dropped before anything else (only
        DHCP itself passes): re-rendered, and so re-read, whenever the lease files change."""
        if not self.config.gateway.leased_pairs_only:
            return ""
        return (
            "\n\t\tmeta nfproto ipv4 ether saddr . ip saddr != @leased_v4 counter drop "
            'comment "unleased"'
        )

    def _inbound(self) -> str:
        """No connection into a pupil's device from outside (adversarial pass a6: where pupils
        have routable addresses, a relay connected in and the picture left as its reply)."""
        if self.config.gateway.forward_default == "allow":
            return ""
        return (
            "\n\t\toifname @student_ifaces iifname != @student_ifaces ct state new "
            'counter drop comment "inbound"'
        )

    def _ntp_bounds(self) -> list[str]:
        """NTP is 48 bytes (more with NTS extensions), a packet a minute or so once a clock is
        set: bigger or faster on its port is a tunnel (passes a3 and a6), whether the flow is
        new or established. What still fits (240 bytes a second a device) is a documented
        residual; a school can narrow NTP to its own servers in forward_allow."""
        if not any(p.protocol == "udp" and p.first <= 123 <= p.last
                   for p in self.config.gateway.forward_allow):  # fmt: skip
            return []
        return [
            # The packet's length, not the UDP header's (pass a8: a header claiming 200 bytes
            # carried 1,418): 256 bytes of UDP behind an IPv6 header at most.
            'udp dport 123 meta length > 296 counter drop comment "ntp size"',
            *_per_device("udp dport 123", "ntp", "1/second burst 8 packets"),
        ]

    def _forward_policy(self) -> list[str]:
        """What pupils' devices may send through the gateway besides web traffic (which is
        redirected to the proxy before it gets here): the listed ports, logged refusals for the
        rest (VPNs, SSH, Tor, proxies), unless the school sets forward_default: allow."""
        gateway = self.config.gateway
        if gateway.forward_default == "allow":
            return []
        errors4 = "icmp type { destination-unreachable, time-exceeded, parameter-problem }"
        errors6 = (
            "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, "
            "parameter-problem }"
        )
        rules = [
            # What an established flow carries is bounded too: a reply from the pupil's own
            # server opens no wider door (adversarial pass a6: full-size NTP and ping after one
            # reply). An ICMP payload is a tunnel (pass a3): a ping is the size `ping` sends,
            # an error no bigger than RFC 1812 allows and only about a flow the gateway tracks
            # (conntrack calls it related). Sizes are the packet's own, never a header's claim,
            # and rates are per device, by MAC as well as by address: a pupil can take forty
            # addresses of the subnet (pass a8).
            'icmp type echo-request meta length > 84 counter drop comment "ping size"',
            'icmpv6 type echo-request meta length > 104 counter drop comment "ping size"',
            *_per_device("icmp type echo-request", "ping", "2/second burst 5 packets", "4"),
            *_per_device("icmpv6 type echo-request", "ping6", "2/second burst 5 packets", "6"),
            f'{errors4} meta length > 576 counter drop comment "icmp size"',
            f'{errors6} meta length > 1280 counter drop comment "icmp size"',
            *_per_device(errors4, "icmperr", "1/second burst 5 packets", "4"),
            *_per_device(errors6, "icmperr6", "1/second burst 5 packets", "6"),
            *self._ntp_bounds(),
            "ct state established,related accept",
            *(
                [f'tcp dport 443 ct mark {FAST_VERIFIED:#x} accept comment "fast path"']
                if self.fast_path
                else []
            ),
            "icmp type echo-request accept",
            "icmpv6 type echo-request accept",
            # Only reached without the resolver (which redirects DNS): the school's own server.
            'meta l4proto { tcp, udp } th dport 53 accept comment "dns"',
        ]
        rules += _port_rules(gateway.forward_allow, "", "allowed")
        for group in self.config.policy.groups:
            if not group.forward_allow or gateway.vlan_parent is None:
                continue
            ifaces = ", ".join(f'"{gateway.vlan_parent}.{vid}"' for vid in sorted(group.vlans))
            label = re.sub(r"[^A-Za-z0-9_. -]", "_", group.name)[:60]  # nft comment text
            rules += _port_rules(group.forward_allow, f"iifname {{ {ifaces} }} ", label)
        rules += [
            'log prefix "schoolgate-forward: " level info limit rate 10/minute',
            'meta l4proto tcp counter reject with tcp reset comment "forward"',
            'counter reject comment "forward"',
        ]
        return rules

    def _check(self) -> None:
        source, gateway, proxy = self.config.source, self.config.gateway, self.config.proxy
        if not gateway.interfaces:
            raise ConfigError(
                source,
                "gateway.student_interfaces",
                "no student interface: list the interface(s) pupils connect through, e.g. [wlan0]",
            )
        if proxy.mode != "transparent":
            raise ConfigError(
                source,
                "proxy.mode",
                f"is {proxy.mode!r}, but the gateway redirects traffic to a transparent proxy: "
                "set it to transparent",
            )
        if ipaddress.ip_address(proxy.listen_host).is_loopback:
            raise ConfigError(
                source,
                "proxy.listen_host",
                f"{proxy.listen_host} cannot receive redirected traffic (nftables redirects to the "
                "student interface's address): use 0.0.0.0",
            )


def nft_binary() -> str:
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise NftError("nft is not installed: apt-get install nftables")
    return found


def nft(*args: str, stdin: str | None = None) -> str:
    """Run nft; raises NftError with nft's own message on failure."""
    result = subprocess.run(
        [nft_binary(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=NFT_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise NftError(f"nft {' '.join(args)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def load(ruleset: str, *, check_only: bool = False) -> None:
    """Load (or with check_only, only validate) a rendered ruleset, atomically."""
    nft(*(["-c"] if check_only else []), "-f", "-", stdin=ruleset)


def remove() -> bool:
    """Delete the schoolgate table if it exists; False when there was none (idempotent)."""
    tables = nft("list", "tables")
    if f"table {FAMILY} {TABLE}" not in tables.splitlines():
        return False
    nft("delete", "table", FAMILY, TABLE)
    return True
