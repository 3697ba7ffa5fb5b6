"""The published address ranges of providers whose shared servers carry catalogued apps.

A content-delivery network serves every customer's names from the same addresses: an address
that answered for a harmless name also serves a catalogued app's name over a fresh TLS
connection. The gateway's fast path (`gateway.fast_path`) forwards connections to addresses that
only non-catalogued names resolved to without the proxy, so an address inside these ranges never
takes it, whatever name resolved to it. Each provider entry cites where its list is published;
a school refreshes them with its own endpoints file (same provider name replaces the entry).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

type Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Provider:
    """One provider's published ranges, the list's source and the apps it carries."""

    name: str
    source: str
    serves: tuple[str, ...]
    ranges: tuple[Network, ...]


class ProviderRanges:
    """Every provider's ranges, merged, for membership tests and for the nftables sets."""

    def __init__(self, providers: Sequence[Provider] = ()) -> None:
        self.providers = tuple(providers)
        self.v4 = _collapse(n for p in providers for n in p.ranges if n.version == 4)
        self.v6 = _collapse(n for p in providers for n in p.ranges if n.version == 6)
        self._starts = {
            4: [int(n.network_address) for n in self.v4],
            6: [int(n.network_address) for n in self.v6],
        }

    def covers(self, address: str) -> bool:
        """Whether `address` (an IPv4-mapped IPv6 address counts as IPv4) lies in a range."""
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        networks = self.v4 if parsed.version == 4 else self.v6
        index = bisect.bisect_right(self._starts[parsed.version], int(parsed)) - 1
        return index >= 0 and parsed in networks[index]


def _collapse(networks: Iterable[Network]) -> list[Network]:
    """Sorted, non-overlapping: nftables refuses overlapping intervals in one set."""
    return list(ipaddress.collapse_addresses(networks))  # type: ignore[type-var]
