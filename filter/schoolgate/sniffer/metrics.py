"""The sniffer's Prometheus series, on a registry of its own (`schoolgate sniff` is its own
process), and its running totals."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

REGISTRY: Final = CollectorRegistry()


PACKETS: Final = PromCounter(
    "schoolgate_sniffer_packets_total", "Frames the sniffer examined.", registry=REGISTRY
)


MALFORMED: Final = PromCounter(
    "schoolgate_sniffer_malformed_total",
    "Frames skipped because a layer did not parse, by protocol.",
    ["protocol"],
    registry=REGISTRY,
)


OBSERVATIONS: Final = PromCounter(
    "schoolgate_sniffer_observations_total",
    "Watchlisted names and protocols seen (queries, handshakes, flows), by category and app.",
    ["category", "app"],
    registry=REGISTRY,
)


RECORDS: Final = PromCounter(
    "schoolgate_sniffer_audit_records_total",
    "Audit records the sniffer wrote, by kind (observed, repeated, suppressed).",
    ["kind"],
    registry=REGISTRY,
)


SUPPRESSED: Final = PromCounter(
    "schoolgate_sniffer_suppressed_observations_total",
    "Observations summarised instead of written one by one (per-device rate limit).",
    registry=REGISTRY,
)


DEVICES: Final = Gauge(
    "schoolgate_sniffer_tracked_devices", "Devices with an open report window.", registry=REGISTRY
)


MALFORMED_KINDS: Final = ("frame", "dns", "tls", "quic", "error")


class SnifferMetrics:
    """The seam between the sniffer and Prometheus; tests and other exporters can replace it."""

    def packet(self) -> None:
        PACKETS.inc()

    def malformed(self, protocol: str) -> None:
        MALFORMED.labels(protocol).inc()

    def observed(self, category: str, app: str) -> None:
        OBSERVATIONS.labels(category, app).inc()

    def record(self, kind: str, suppressed: int = 0) -> None:
        RECORDS.labels(kind).inc()
        if suppressed:
            SUPPRESSED.inc(suppressed)

    def devices(self, count: int) -> None:
        DEVICES.set(count)


@dataclass
class SnifferStats:
    """What one run saw; printed by `schoolgate sniff --pcap` and read by tests."""

    packets: int = 0
    observations: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "observations": self.observations,
            "malformed": dict(self.malformed),
            "records": dict(self.records),
            "suppressed": self.suppressed,
        }
