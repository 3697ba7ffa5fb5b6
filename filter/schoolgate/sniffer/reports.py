"""Per-device aggregation and rate limiting: the first sighting of each name is reported at once,
repeats are summed up when the window closes, and a chatty device cannot flood the log."""

from __future__ import annotations

import datetime
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from schoolgate.sniffer.inspect import Observation


@dataclass(frozen=True)
class Report:
    """An audit record to write: event name and fields (device identity is added on writing)."""

    event: str
    device: str
    fields: dict[str, Any]


@dataclass
class _Entry:
    first: Observation
    last: float
    count: int
    written: bool


@dataclass
class _DeviceWindow:
    start: float
    last: float
    frame_mac: str | None
    entries: dict[tuple[str, str, str], _Entry] = field(default_factory=dict)
    written: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


class ReportAggregator:
    """Turns observations into few audit records per device.

    Per device and window (`window_s`): the first sighting of each (category, app, name) is
    written at once, up to `max_records` per device; repeats are counted and written as one
    `sniffer_repeated` record when the window closes; sightings over the limit go into one
    `sniffer_suppressed` record. At most `max_devices` devices and `max_keys` names per device
    are held; the least recently active device is reported and dropped first.
    """

    def __init__(
        self,
        window_s: float = 300.0,
        max_records: int = 50,
        max_devices: int = 4096,
        max_keys: int = 512,
    ) -> None:
        self.window_s = window_s
        self.max_records = max_records
        self.max_devices = max_devices
        self.max_keys = max_keys
        self._devices: OrderedDict[str, _DeviceWindow] = OrderedDict()

    @property
    def devices(self) -> int:
        return len(self._devices)

    def add(self, observation: Observation) -> list[Report]:
        reports: list[Report] = []
        window = self._devices.get(observation.device)
        if window is not None and observation.time - window.start >= self.window_s:
            reports += self._close(observation.device)
            window = None
        if window is None:
            while len(self._devices) >= self.max_devices:
                reports += self._close(next(iter(self._devices)))
            window = _DeviceWindow(observation.time, observation.time, observation.frame_mac)
            self._devices[observation.device] = window
        self._devices.move_to_end(observation.device)
        window.last = observation.time
        key = (observation.category, observation.app, observation.name)
        entry = window.entries.get(key)
        if entry is not None:
            entry.count += 1
            entry.last = observation.time
            if not entry.written:
                window.suppressed[observation.category] += 1
            return reports
        writable = window.written < self.max_records
        if len(window.entries) < self.max_keys:
            window.entries[key] = _Entry(observation, observation.time, 1, writable)
        if not writable:
            window.suppressed[observation.category] += 1
            return reports
        window.written += 1
        reports.append(
            Report(
                "sniffer_observed",
                observation.device,
                {
                    "category": observation.category,
                    "app": observation.app,
                    "name": observation.name,
                    "source": observation.source,
                    "server": observation.server,
                    "seen_at": _iso(observation.time),
                    "frame_mac": observation.frame_mac,
                },
            )
        )
        return reports

    def flush_due(self, now: float) -> list[Report]:
        """Close the windows that have ended by `now`."""
        due = [d for d, w in self._devices.items() if now - w.start >= self.window_s]
        return [report for device in due for report in self._close(device)]

    def flush_all(self) -> list[Report]:
        return [report for device in list(self._devices) for report in self._close(device)]

    def _close(self, device: str) -> list[Report]:
        window = self._devices.pop(device)
        reports = [
            Report(
                "sniffer_repeated",
                device,
                {
                    "category": entry.first.category,
                    "app": entry.first.app,
                    "name": entry.first.name,
                    "count": entry.count,
                    "first_seen": _iso(entry.first.time),
                    "last_seen": _iso(entry.last),
                    "window_s": self.window_s,
                    "frame_mac": window.frame_mac,
                },
            )
            for entry in window.entries.values()
            if entry.written and entry.count > 1
        ]
        if window.suppressed:
            reports.append(
                Report(
                    "sniffer_suppressed",
                    device,
                    {
                        "observations": sum(window.suppressed.values()),
                        "by_category": dict(window.suppressed),
                        "names": len([e for e in window.entries.values() if not e.written]),
                        "window_start": _iso(window.start),
                        "window_end": _iso(window.last),
                        "limit": self.max_records,
                        "frame_mac": window.frame_mac,
                    },
                )
            )
        return reports
