"""What the gateway's resolver refuses to resolve for pupils' devices.

Encrypted DNS is a way round the gateway: a device that resolves through DNS over HTTPS gets
answers the gateway never sees (Encrypted ClientHello keys among them). Port 853 is rejected by
the firewall; DNS over HTTPS runs on 443 to well-known names, which the resolver answers with
NXDOMAIN. Browsers also ask two canary names before they turn encrypted DNS on by themselves:
Firefox `use-application-dns.net` (NXDOMAIN: stay on the network's resolver) and Apple's iCloud
Private Relay `mask.icloud.com` / `mask-h2.icloud.com` (NXDOMAIN: the relay is off on this
network). Both behaviours are documented by their vendors for networks that filter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

CANARY_NAMES: Final = (
    "use-application-dns.net",  # Firefox: https://support.mozilla.org/kb/canary-domain-use-application-dnsnet
    "mask.icloud.com",  # Apple: Prepare your network for iCloud Private Relay
    "mask-h2.icloud.com",
)

# Public DNS-over-HTTPS endpoints built into browsers and operating systems, and the common
# public ones (each covers its subdomains).
DOH_NAMES: Final = (
    "dns.google",
    "dns.google.com",
    "dns64.dns.google",
    "cloudflare-dns.com",  # also mozilla.cloudflare-dns.com, chrome.cloudflare-dns.com
    "one.one.one.one",
    "1dot1dot1dot1.cloudflare-dns.com",
    "dns.quad9.net",
    "dns9.quad9.net",
    "dns10.quad9.net",
    "dns11.quad9.net",
    "doh.opendns.com",
    "doh.familyshield.opendns.com",
    "dns.nextdns.io",
    "doh.cleanbrowsing.org",
    "dns.adguard.com",
    "dns.adguard-dns.com",
    "doh.dns.sb",
    "dns.alidns.com",
    "doh.pub",
    "dns.controld.com",
    "freedns.controld.com",
    "doh.mullvad.net",
    "dns.mullvad.net",
    "doh.libredns.gr",
    "dns.switch.ch",
    "doh.applied-privacy.net",
    "ordns.he.net",
)


def normalise_name(name: str) -> str:
    """Lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


class NamePolicy:
    """Names the resolver answers with NXDOMAIN: the canaries, the DoH endpoints, and the
    school's own additions; each blocks itself and every subdomain."""

    def __init__(self, extra: Iterable[str] = (), *, block_doh: bool = True) -> None:
        names = set(CANARY_NAMES)
        if block_doh:
            names.update(DOH_NAMES)
        names.update(normalise_name(n) for n in extra)
        self.names = frozenset(n for n in names if n)

    def blocks(self, name: str) -> bool:
        """Whether `name` (or a domain above it) is refused."""
        label = normalise_name(name)
        while label:
            if label in self.names:
                return True
            _, _, label = label.partition(".")
        return False
