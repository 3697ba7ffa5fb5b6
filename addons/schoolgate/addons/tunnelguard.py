"""How many different names a device, and the school, may ask the gateway's resolver for: a
DNS tunnel carries its data in the names it asks for."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("schoolgate.resolver")


class TunnelGuard:
    """Bounds how many *different* names a device may ask for: under one domain, at most `limit`
    a minute and `sustained` in ten minutes; under all domains together, `total` in ten minutes.

    A DNS tunnel carries data in the names it asks for (`<data>.tunnel.example`): every query is
    a new name, hundreds a minute. Ordinary browsing asks for a few dozen names of one domain at
    most (the pass a3 tunnel sent 724 to move one picture). A tunnel kept just under the minute's
    limit, or spread over a dozen domains, moved a picture in five minutes (pass a6): the
    ten-minute budgets stop that, leaving a documented residual of a few kilobytes a minute.
    A device is its MAC where the gateway's neighbour table knows it (pass a6: one laptop asked
    from six addresses of its subnet), else its address. And a domain gets at most
    `school_limit` different names in ten minutes from the whole school (passes a8 and a9: a
    picture needs some 600 names, and 2,000 let one through in seconds; a laptop with
    six virtual interfaces is six devices, and queries from addresses that never answer ARP
    have no MAC): a tunnel needs a zone of its own, so the big providers' shared apexes, which
    no pupil can delegate, are not counted. Past that budget only the devices that asked for
    `school_share` names or more under the domain are refused: one laptop's three MACs flooding a
    tenant domain that answers every name (an LMS, SharePoint) locked every device of the school
    out of its new names for ten minutes (pass a40 F7).
    """

    def __init__(
        self,
        limit: int = 120,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        sustained: int = 240,
        total: int = 1500,
        school_limit: int = 500,
        school_share: int = 25,
        long_window_s: float = 600.0,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.sustained = sustained
        self.total = total
        self.school_limit = school_limit
        self.school_share = school_share
        self.long_window_s = long_window_s
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], dict[str, float]] = OrderedDict()
        self._all: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._school: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._logged: dict[str, float] = {}

    def allows(self, device: str, name: str) -> bool:
        name = name.rstrip(".").lower()
        labels = name.split(".")
        # The registrable domain, roughly: school.co.uk, not co.uk (which every UK site shares).
        keep = 3 if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL else 2
        domain = ".".join(labels[-keep:])
        now = self.clock()
        since = now - self.long_window_s
        seen = _touch(self._seen, (device, domain), since)
        every = _touch(self._all, device, since)
        if name in seen:
            return True
        # The providers' shared apexes have no school-wide budget, so are not tracked for one.
        school = _touch(self._school, domain, since) if domain not in _SHARED_APEXES else {}
        if (
            _newer_than(seen, now - self.window_s) >= self.limit
            or len(seen) >= self.sustained
            or len(every) >= self.total
            or (
                len(school) >= self.school_limit
                and name not in school
                and len(seen) >= self.school_share
            )
        ):
            if now - self._logged.get(device, float("-inf")) > self.window_s:
                self._logged[device] = now
                log.warning("%s asked for too many different names (under %s): refused (a DNS "
                            "tunnel?)", device or "a device", domain)  # fmt: skip
            return False
        for names in (seen, every, school):
            names[name] = now
        return True


def _touch[K](tracked: OrderedDict[K, dict[str, float]], key: K, since: float) -> dict[str, float]:
    """The names first asked for under `key` after `since`, oldest first (a dict keeps the order
    they were added in, which is their time order); the key becomes the most recently used, and
    the least recently used keys are forgotten past _MAX_TRACKED."""
    names = tracked.pop(key, {})
    while names and next(iter(names.values())) <= since:
        del names[next(iter(names))]
    tracked[key] = names
    while len(tracked) > _MAX_TRACKED:
        tracked.popitem(last=False)
    return names


def _newer_than(names: dict[str, float], since: float) -> int:
    count = 0
    for at in reversed(names.values()):
        if at <= since:
            break
        count += 1
    return count


_MAX_TRACKED = 50_000
# Multi-tenant apexes with many distinct names a school asks for legitimately; their zones are
# the providers' own, so no tunnel can run under them.
_SHARED_APEXES = frozenset({
    "cloudfront.net", "amazonaws.com", "akamaihd.net", "akamaized.net", "akamaiedge.net",
    "azureedge.net", "fastly.net", "googleusercontent.com", "googlevideo.com", "gvt1.com",
    "fbcdn.net", "cdninstagram.com", "tiktokcdn.com", "edgekey.net", "cloudflare.net",
    "windows.net", "trafficmanager.net", "appspot.com", "googlesyndication.com",
    "doubleclick.net", "2mdn.net", "adnxs.com",
})  # fmt: skip
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "sch", "ltd", "plc"})
