"""Who is really behind a client address: the kernel's neighbour table on the gateway.

A pupil chooses their own IP address (a static one in the staff range is one setting away); the
link layer address the gateway's kernel last saw for that IP, and the interface it arrived on,
are what the Wi-Fi actually carried. IPv4 neighbours come from `/proc/net/arp` (a file read,
no privilege), IPv6 ones from `ip -json -6 neigh` (the kernel offers no file for them). The
table is re-read at most once per `refresh_s` (and once more for an address it lacks), so a
lookup per connection stays a dict probe. A quarter of a second: a pupil who takes a staff
device's address right after its last request keeps the staff group no longer than that
(adversarial pass a8 found a second's window).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from schoolgate.gateway.leases import normalize_mac

ARP_TABLE: Final = Path("/proc/net/arp")
_ATF_COM: Final = 0x2  # the entry is complete (a MAC was resolved)
_VLAN_SUFFIX: Final = re.compile(r"\.(\d{1,4})$")
_IP_TIMEOUT_S: Final = 5
_MAX_MISSES: Final = 4096


@dataclass(frozen=True)
class Neighbour:
    """One resolved neighbour: its MAC and the gateway interface it is reached through."""

    mac: str
    interface: str


def parse_arp(text: str) -> dict[str, Neighbour]:
    """`/proc/net/arp` -> {ip: Neighbour}, complete entries only."""
    table: dict[str, Neighbour] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        ip, _hw_type, flags, mac_text, _mask, interface = fields[:6]
        try:
            complete = int(flags, 16) & _ATF_COM
        except ValueError:
            continue
        mac = normalize_mac(mac_text)
        if complete and mac is not None and mac != "00:00:00:00:00:00":
            table[ip] = Neighbour(mac, interface)
    return table


def parse_ip_neigh(text: str) -> dict[str, Neighbour]:
    """`ip -json neigh` -> {ip: Neighbour}, entries with a link layer address only."""
    try:
        entries = json.loads(text or "[]")
    except ValueError:
        return {}
    table: dict[str, Neighbour] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        mac = normalize_mac(str(entry.get("lladdr", "")))
        ip, interface = entry.get("dst"), entry.get("dev")
        if mac is None or not isinstance(ip, str) or not isinstance(interface, str):
            continue
        if "FAILED" in entry.get("state", ()) or "INCOMPLETE" in entry.get("state", ()):
            continue
        try:
            table[str(ipaddress.ip_address(ip))] = Neighbour(mac, interface)
        except ValueError:
            continue
    return table


def read_ipv6_neighbours() -> str:
    """`ip -json -6 neigh show`; empty when iproute2 is missing or fails."""
    binary = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if binary is None:
        return "[]"
    try:
        result = subprocess.run(
            [binary, "-json", "-6", "neigh", "show"],
            capture_output=True,
            text=True,
            timeout=_IP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "[]"
    return result.stdout if result.returncode == 0 else "[]"


class NeighbourTable:
    """IP -> Neighbour on this gateway (its own network namespace). Thread-safe."""

    def __init__(
        self,
        *,
        arp_path: Path = ARP_TABLE,
        read_v6: Callable[[], str] = read_ipv6_neighbours,
        refresh_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._arp_path = arp_path
        self._read_v6 = read_v6
        self._refresh_s = refresh_s
        self._missed: dict[str, float] = {}  # address -> when a miss last re-read the table
        self._clock = clock
        self._lock = threading.Lock()
        self._v4: dict[str, Neighbour] = {}
        self._v6: dict[str, Neighbour] = {}
        self._read_at: dict[int, float] = {}

    def lookup(self, ip: str) -> Neighbour | None:
        """The neighbour behind a client address (IPv4-mapped IPv6 is looked up as IPv4)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        key = str(address)
        with self._lock:
            # Re-read even on a hit: an address that changed hands must not keep its old MAC.
            if self._older_than(address.version, self._refresh_s):
                self._reload(address.version)
            found = (self._v4 if address.version == 4 else self._v6).get(key)
            # A device that has just joined is missing from a table read a moment ago: look
            # again, but for one address at most once per refresh_s (a routed client, which is
            # nobody's neighbour, must not cost a read per connection).
            now = self._clock()
            if found is None and now - self._missed.get(key, -self._refresh_s) >= self._refresh_s:
                if len(self._missed) >= _MAX_MISSES:
                    self._missed.clear()
                self._missed[key] = now
                self._reload(address.version)
                found = (self._v4 if address.version == 4 else self._v6).get(key)
            return found

    def _older_than(self, version: int, age_s: float) -> bool:
        read_at = self._read_at.get(version)
        return read_at is None or self._clock() - read_at >= age_s

    def _reload(self, version: int) -> None:
        self._read_at[version] = self._clock()
        if version == 4:
            try:
                self._v4 = parse_arp(self._arp_path.read_text(errors="replace"))
            except OSError:
                self._v4 = {}
        else:
            self._v6 = parse_ip_neigh(self._read_v6())


def vlan_of(interface: str, vlan_parent: str | None = None) -> int | None:
    """The VLAN id of a sub-interface named PARENT.VID (eth0.20 -> 20), else None."""
    if vlan_parent is not None and not interface.startswith(f"{vlan_parent}."):
        return None
    match = _VLAN_SUFFIX.search(interface)
    if match is None:
        return None
    vid = int(match.group(1))
    return vid if 1 <= vid <= 4094 else None
