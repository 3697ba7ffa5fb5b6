"""What the gateway's fast path may forward in the kernel: the resolver's answers sorted into the
ruleset's sets (see nft.GatewayRuleset._fast_path).

An address joins `fast_*` when a name the catalog does not know resolved to it, for the answer's
TTL (bounded); it joins `catalogued_*` when a catalogued name (anywhere in the answer's CNAME
chain) resolved to it, for longer, and the ruleset never fast-paths an address in that set or in a
provider's ranges. So a pupil's own domain that answers with a catalogued server's address opens
no fast path to it once the gateway knows the address (it resolves every catalogued name on a
schedule, not only when pupils ask), and an address it cannot know is covered by the providers'
ranges. Where neither covers it (a16 F1: an upload host under a catalog wildcard), the
connection's first flight does (gateway.firstflight): `withdrawn_*` holds the addresses it
showed to be the proxy's. `fast_ready` is a heartbeat with a timeout: when the resolver stops,
or its updates fail, it lapses and every connection meets the proxy again.

This module decides and writes nft scripts; applying them is the caller's (a callable), so the
logic is tested without root.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from schoolgate.endpoints.catalog import Catalog
from schoolgate.gateway.fastpath_rules import FAST_SET_SIZE
from schoolgate.gateway.nft import FAMILY, TABLE

FAST_MIN_S: Final = 300  # a device keeps using an address past a short TTL
FAST_MAX_S: Final = 3600  # an address changes hands now and then: bounded trust
CATALOGUED_MIN_S: Final = 3600
CATALOGUED_MAX_S: Final = 86_400
READY_TIMEOUT_S: Final = 30  # the heartbeat's lifetime: the fast path ends this long after us
# Fast-path addresses one device's answers may add while they last, and all devices' together
# (under each set's size, so that a write never fails on a full set). Past either, an answer's
# new addresses meet the proxy. Adversarial pass a16 F6: one device's flood of names filled
# the set, and every write failed from then on.
FAST_PER_DEVICE: Final = 2_000
FAST_CAPACITY: Final = FAST_SET_SIZE - 1_024


@dataclass(frozen=True)
class Entry:
    address: str
    family: str  # "v4" | "v6"
    expires: float


def _family(text: str) -> tuple[str, str] | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if (
        address.is_loopback
        or address.is_unspecified
        or address.is_link_local
        or (address.is_multicast)
    ):
        return None  # never forwarded from a student interface (the ruleset drops martians)
    return str(address), f"v{address.version}"


class FastPathSets:
    """The resolver's view of the fast-path sets: it remembers what it put there (and until
    when), batches new answers into one nft transaction, and restates everything when the
    ruleset was reloaded (the heartbeat found `fast_ready` gone)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self._fast: dict[str, Entry] = {}
        self._catalogued: dict[str, Entry] = {}
        self._withdrawn: dict[str, Entry] = {}
        self._pending: list[tuple[str, Entry]] = []  # (set, entry) not yet written
        self._unwritten: list[tuple[str, Entry]] = []  # the script being written
        self._by_device: dict[str, dict[str, float]] = {}  # device -> its fast addresses
        self._pruned = float("-inf")
        self.capped = 0  # new fast addresses left to the proxy by the caps
        self._lock = threading.Lock()

    def catalogued(self, names: Iterable[str]) -> bool:
        """Whether any name of an answer (the question, CNAMEs, the answer's owner names)
        belongs to a catalogued app: then all its addresses are the proxy's."""
        return any(self.catalog.app_for_host(name) is not None for name in names if name)

    def answered(
        self, names: Iterable[str], addresses: Iterable[str], ttl_s: float, device: str = ""
    ) -> bool:
        """Sort one DNS answer, for `device` (who asked: a MAC or an address; empty for the
        gateway's own pass); True when something new waits to be written."""
        names = list(names)
        catalogued = self.catalogued(names)
        now = self.clock()
        if catalogued:
            lifetime = min(max(ttl_s, CATALOGUED_MIN_S), CATALOGUED_MAX_S)
        else:
            lifetime = min(max(ttl_s, FAST_MIN_S), FAST_MAX_S)
        added = False
        with self._lock:
            for text in addresses:
                found = _family(text)
                if found is None:
                    continue
                address, family = found
                entry = Entry(address, family, now + lifetime)
                if catalogued:
                    known = self._catalogued.get(address)
                    if known is None or known.expires < entry.expires - lifetime / 2:
                        self._catalogued[address] = entry
                        self._pending.append(("catalogued", entry))
                        added = True
                    continue
                if any(address in t and t[address].expires > now
                       for t in (self._catalogued, self._withdrawn)):  # fmt: skip
                    continue  # a catalogued server's address never moves to the fast path
                if self.catalog.providers.covers(address):
                    continue  # the ruleset would refuse it anyway; keep the set small
                known = self._fast.get(address)
                if known is None and not self._room(device, now):
                    self.capped += 1
                    continue
                if known is None or known.expires < now + lifetime / 2:
                    if device:
                        self._by_device.setdefault(device, {})[address] = entry.expires
                    self._fast[address] = entry
                    self._pending.append(("fast", entry))
                    added = True
        return added

    def _room(self, device: str, now: float) -> bool:
        """Whether one more fast address fits, for `device` and for all."""
        full = len(self._fast) >= FAST_CAPACITY
        if full or len(self._by_device.get(device, ())) >= FAST_PER_DEVICE:
            self._prune(now)
        if len(self._fast) >= FAST_CAPACITY:
            return False
        return not device or len(self._by_device.get(device, ())) < FAST_PER_DEVICE

    def _prune(self, now: float) -> None:
        """Forget expired fast addresses, and devices with none left (a device's count is
        otherwise kept until it reaches its cap, and phones change MACs)."""
        self._pruned = now
        for address in [a for a, e in self._fast.items() if e.expires <= now]:
            del self._fast[address]
        for device in list(self._by_device):
            mine = self._by_device[device]
            for address in [a for a, until in mine.items() if until <= now]:
                del mine[address]
            if not mine:
                del self._by_device[device]

    def withdraw(self, address: str) -> bool:
        """Take an address off the fast path for FAST_MAX_S: a connection to it named a
        catalogued server, or none, or spoke something other than TLS. True when it is new."""
        found = _family(address)
        if found is None:
            return False
        address, family = found
        now = self.clock()
        with self._lock:
            known = self._withdrawn.get(address)
            if known is not None and known.expires > now + FAST_MAX_S / 2:
                return False
            entry = Entry(address, family, now + FAST_MAX_S)
            self._withdrawn[address] = entry
            self._pending.append(("withdrawn", entry))
        return True

    def pending_script(self, heartbeat: bool = True) -> str:
        """The nft script for what is waiting (taken: a failure is logged, not retried; the
        next answer or restate writes it again), with the heartbeat re-armed if asked; empty
        when there is nothing to write."""
        now = self.clock()
        with self._lock:
            pending, self._pending = self._pending, []
            self._unwritten = pending
            if now - self._pruned >= FAST_MIN_S:
                self._prune(now)
        lines = [_refresh(kind, e.family, e.address, e.expires - now) for kind, e in pending]
        if heartbeat:
            lines.append(_refresh_ready())
        return "\n".join(lines) + "\n" if lines else ""

    def unwritten(self) -> None:
        """The last pending script could not be written: its catalogued and withdrawn entries
        wait for the next write, and its fast ones are forgotten, so that the next answer adds
        them again (a16 F6: a failed write left the service and the kernel apart)."""
        with self._lock:
            for kind, entry in self._unwritten:
                if kind != "fast":
                    self._pending.append((kind, entry))
                elif self._fast.get(entry.address) == entry:
                    del self._fast[entry.address]
            self._unwritten = []

    def restate_script(self) -> str:
        """Everything still valid, for a ruleset that was reloaded (its sets are empty)."""
        now = self.clock()
        with self._lock:
            self._pending = []
            for table in (self._fast, self._catalogued, self._withdrawn):
                for address in [a for a, e in table.items() if e.expires <= now]:
                    del table[address]
            entries = [("catalogued", e) for e in self._catalogued.values()]
            entries += [("withdrawn", e) for e in self._withdrawn.values()]
            entries += [("fast", e) for e in self._fast.values()]
        # Catalogued first: within one transaction the order does not matter to the kernel,
        # but a reader of the script sees what is excluded before what is allowed.
        lines = [_refresh(kind, e.family, e.address, e.expires - now) for kind, e in entries]
        lines.append(_refresh_ready())
        return "\n".join(lines) + "\n"

    def sizes(self) -> tuple[int, int]:
        """(fast, catalogued) addresses remembered."""
        with self._lock:
            return len(self._fast), len(self._catalogued)


def _refresh(kind: str, family: str, address: str, remaining_s: float) -> str:
    """Add, or re-arm the timeout of, one element: `add` leaves an existing element's timeout
    alone, so add (to be sure it exists), delete and add again, all in one transaction."""
    where = f"{FAMILY} {TABLE} {kind}_{family}"
    timeout = f"{max(1, int(remaining_s))}s"
    return (
        f"add element {where} {{ {address} }}\n"
        f"delete element {where} {{ {address} }}\n"
        f"add element {where} {{ {address} timeout {timeout} }}"
    )


def _refresh_ready() -> str:
    where = f"{FAMILY} {TABLE} fast_ready"
    return (
        f"add element {where} {{ tcp }}\ndelete element {where} {{ tcp }}\n"
        f"add element {where} {{ tcp timeout {READY_TIMEOUT_S}s }}"
    )


def ready_check_args() -> tuple[str, ...]:
    """nft arguments that fail when the heartbeat is gone (a reload, or we were away)."""
    return ("get", "element", FAMILY, TABLE, "fast_ready", "{ tcp }")


def stop_script() -> str:
    """Ends the fast path now (the resolver is stopping): every connection meets the proxy."""
    return f"flush set {FAMILY} {TABLE} fast_ready\n"


def catalogued_names(catalog: Catalog) -> list[str]:
    """Names the gateway resolves itself, on a schedule, so that it knows catalogued servers'
    addresses before a pupil's own domain can point at them: every exact host of the catalog
    (routes' and `resolve` lists' included), and for a wildcard `*.example.com` the domain
    itself and its www (adversarial pass a34: content.dropboxapi.com, under a wildcard only,
    was never resolved ahead)."""
    names: set[str] = {name for app in catalog.apps for name in app.resolve}
    for app in catalog.apps:
        patterns = [*app.hosts, *app.download_hosts]
        patterns += [p for route in app.upload_routes for p in route.hosts]
        patterns += [p for rule in app.learn_rules for p in rule.allow_hosts]
        for pattern in patterns:
            if pattern.startswith("*."):
                base = pattern[2:]
                names.update((base, f"www.{base}"))
            else:
                names.add(pattern)
    return sorted(names)
