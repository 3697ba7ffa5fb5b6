"""The passive sniffer: per device, the names and protocols IT needs to see, never blocking.

On the student interface it reads DNS queries, TLS ClientHello server names, QUIC Initial server
names (decrypted with the keys RFC 9001 derives from the connection ID) and VPN/proxy signatures,
and reports what the watchlist names: catalogued apps the proxy cannot inspect, and circumvention
(VPNs, DNS over HTTPS/TLS, proxies, Tor). Reports are audit records, aggregated per device so a
chatty device cannot flood the log, and Prometheus counters with bounded labels.

Hostile packets are counted as malformed and skipped; every table is bounded in size and time.
"""

from __future__ import annotations

import datetime
import logging
import select
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from schoolgate.sniffer.dnsquery import query_names
from schoolgate.sniffer.packets import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    PROTO_ESP,
    PROTO_TCP,
    PROTO_UDP,
    Segment,
    parse_frame,
)
from schoolgate.sniffer.quic import CryptoStream, crypto_frames, decrypt_initial, is_long_header
from schoolgate.sniffer.tlshello import (
    MAX_CLIENT_HELLO,
    Incomplete,
    Malformed,
    looks_like_client_hello,
    parse_handshake,
    parse_tls_stream,
)
from schoolgate.sniffer.watchlist import Match, Watchlist

log = logging.getLogger("schoolgate.sniffer")

# ---------------------------------------------------------------------------------------------
# Metrics. The sniffer is its own process (`schoolgate sniff`), so its series live in their own
# registry, served on `sniffer.metrics_port` by schoolgate.metrics_server; the proxy's registry
# (schoolgate.metrics) never carries them. Labels are bounded: `category` is a fixed set, `app` a
# catalog app name or a list label from configuration.

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


# ---------------------------------------------------------------------------------------------
# Observations


@dataclass(frozen=True)
class Observation:
    """One watchlisted thing a device did."""

    time: float
    device: str  # the device's IP address
    category: str
    app: str
    name: str  # the DNS name or server name, or the protocol for signatures
    source: str  # dns | tls | quic | port | signature
    server: str | None = None  # destination "address:port"
    frame_mac: str | None = None  # source MAC of the frame (the device, on its own segment)


class BoundedTable[K, V]:
    """An insertion-ordered map with a size cap and an age limit (oldest evicted first)."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry[0] > self._ttl:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, now: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (now, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def expire(self, now: float) -> None:
        while self._entries:
            key, (stamp, _) = next(iter(self._entries.items()))
            if now - stamp <= self._ttl:
                break
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class _TcpHello:
    data: bytearray
    next_seq: int


# WireGuard handshake initiation: type 1, three reserved zero bytes, 148 bytes in all.
WIREGUARD_INITIATION: Final = (b"\x01\x00\x00\x00", 148)
# OpenVPN P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7, key id 0) without tls-auth: opcode, session id
# (8), an empty ACK array (1) and message packet-id 0 (4).
OPENVPN_HARD_RESET: Final = 0x38
HTTP_CONNECT: Final = b"CONNECT "
SIGNATURES: Final = {
    "wireguard": Match("vpn", "wireguard"),
    "openvpn": Match("vpn", "openvpn"),
    "ipsec_esp": Match("vpn", "ipsec_esp"),
    "http_connect": Match("proxy", "http_connect"),
}


class PacketInspector:
    """Segments in, observations out. Keeps small bounded tables to join split ClientHellos."""

    def __init__(
        self,
        watchlist: Watchlist,
        stats: SnifferStats,
        metrics: SnifferMetrics,
        *,
        max_flows: int = 4096,
        flow_ttl_s: float = 10.0,
        repeat_ttl_s: float = 60.0,
    ) -> None:
        self.watchlist = watchlist
        self.stats = stats
        self.metrics = metrics
        self._tcp: BoundedTable[tuple[str, int, str, int], _TcpHello] = BoundedTable(
            max_flows, flow_ttl_s
        )
        self._quic: BoundedTable[tuple[str, int, bytes], CryptoStream] = BoundedTable(
            max_flows, flow_ttl_s
        )
        # Flows already reported: a VPN's datagrams or a QUIC client's repeated Initials count once.
        self._done: BoundedTable[tuple[Any, ...], bool] = BoundedTable(4 * max_flows, repeat_ttl_s)

    def malformed(self, protocol: str) -> None:
        self.stats.malformed[protocol] += 1
        self.metrics.malformed(protocol)

    def inspect(self, segment: Segment) -> list[Observation]:
        now = segment.time
        if segment.protocol == PROTO_UDP:
            return self._udp(segment, now)
        if segment.protocol == PROTO_TCP:
            return self._tcp_segment(segment, now)
        if segment.protocol == PROTO_ESP:
            return self._once(segment, ("esp", segment.src, segment.dst), "ipsec_esp")
        return []

    def _observation(self, segment: Segment, match: Match, name: str, source: str) -> Observation:
        return Observation(
            segment.time,
            segment.src,
            match.category,
            match.label,
            name,
            source,
            f"{segment.dst}:{segment.dport}" if segment.dport else segment.dst,
            segment.src_mac,
        )

    def _once(
        self, segment: Segment, key: tuple[Any, ...], signature: str, name: str | None = None
    ) -> list[Observation]:
        """A flow-level signature, reported once per flow (per `repeat_ttl_s`)."""
        if self._done.get(key, segment.time):
            return []
        self._done.put(key, True, segment.time)
        match = SIGNATURES[signature]
        return [self._observation(segment, match, name or signature, "signature")]

    def _names(self, segment: Segment, names: Sequence[str], source: str) -> list[Observation]:
        found = []
        for name in names:
            match = self.watchlist.match_name(name)
            if match is not None:
                found.append(self._observation(segment, match, name, source))
        return found

    def _port(self, segment: Segment, protocol: str) -> list[Observation]:
        match = self.watchlist.match_port(protocol, segment.dport)
        if match is None:
            return []
        key = (protocol, segment.src, segment.sport, segment.dst, segment.dport)
        if self._done.get(key, segment.time):
            return []
        self._done.put(key, True, segment.time)
        return [self._observation(segment, match, f"{protocol}/{segment.dport}", "port")]

    # -- UDP ---------------------------------------------------------------------------------

    def _udp(self, segment: Segment, now: float) -> list[Observation]:
        payload = segment.payload
        if segment.dport == 53:
            try:
                names = query_names(payload)
            except Malformed:
                self.malformed("dns")
                return []
            return self._names(segment, names or (), "dns")
        found = self._port(segment, "udp")
        flow = (segment.src, segment.sport, segment.dst, segment.dport)
        if payload[:4] == WIREGUARD_INITIATION[0] and len(payload) == WIREGUARD_INITIATION[1]:
            found += self._once(segment, ("wg", *flow), "wireguard")
        elif (
            len(payload) == 14 and payload[0] == OPENVPN_HARD_RESET and payload[9:14] == b"\x00" * 5
        ):
            found += self._once(segment, ("ovpn", *flow), "openvpn")
        elif is_long_header(payload):
            found += self._quic_datagram(segment, now)
        return found

    def _quic_datagram(self, segment: Segment, now: float) -> list[Observation]:
        try:
            packet = decrypt_initial(segment.payload)
        except Malformed:
            self.malformed("quic")
            return []
        if packet is None:
            return []
        key = (segment.src, segment.sport, packet.dcid)
        if self._done.get(("quic", *key), now):
            return []
        try:
            frames = crypto_frames(packet.payload)
        except Malformed:
            self.malformed("quic")
            return []
        stream = self._quic.get(key, now) or CryptoStream()
        for offset, data in frames:
            stream.add(offset, data)
        try:
            hello = parse_handshake(stream.contiguous())
        except Incomplete:
            self._quic.put(key, stream, now)
            return []
        except Malformed:
            self._quic.pop(key)
            self.malformed("quic")
            return []
        self._quic.pop(key)
        return self._hello_seen(segment, "quic", key, hello.sni, now)

    # -- TCP ---------------------------------------------------------------------------------

    def _tcp_segment(self, segment: Segment, now: float) -> list[Observation]:
        if segment.syn_only:
            return self._port(segment, "tcp")
        payload = segment.payload
        if not payload:
            return []
        flow = (segment.src, segment.sport, segment.dst, segment.dport)
        if self._done.get(("tls", *flow), now):
            return []  # a retransmitted ClientHello: one handshake, one observation
        pending = self._tcp.get(flow, now)
        if pending is not None:
            return self._continue_hello(segment, flow, pending, now)
        if looks_like_client_hello(payload):
            return self._parse_hello(segment, flow, _TcpHello(bytearray(payload), 0), now)
        if payload.startswith(HTTP_CONNECT):
            target = payload[len(HTTP_CONNECT) :].split(b" ", 1)[0][:300]
            name = target.decode("ascii", "replace").rsplit(":", 1)[0].lower()
            return self._once(segment, ("connect", *flow), "http_connect", name or None)
        return []

    def _continue_hello(
        self,
        segment: Segment,
        flow: tuple[str, int, str, int],
        pending: _TcpHello,
        now: float,
    ) -> list[Observation]:
        offset = (segment.seq - pending.next_seq) & 0xFFFFFFFF
        if offset >= 1 << 31:  # retransmitted or overlapping: keep only what is new
            overlap = (pending.next_seq - segment.seq) & 0xFFFFFFFF
            data = segment.payload[overlap:]
        elif offset == 0:
            data = segment.payload
        else:
            return []  # a gap (a segment still to come): wait for it until the flow expires
        if not data:
            return []
        pending.data += data
        return self._parse_hello(segment, flow, pending, now)

    def _parse_hello(
        self,
        segment: Segment,
        flow: tuple[str, int, str, int],
        pending: _TcpHello,
        now: float,
    ) -> list[Observation]:
        try:
            hello = parse_tls_stream(pending.data)
        except Incomplete:
            if len(pending.data) > MAX_CLIENT_HELLO:
                self._tcp.pop(flow)
                self.malformed("tls")
                return []
            pending.next_seq = (segment.seq + len(segment.payload)) & 0xFFFFFFFF
            self._tcp.put(flow, pending, now)
            return []
        except Malformed:
            self._tcp.pop(flow)
            self.malformed("tls")
            return []
        self._tcp.pop(flow)
        return self._hello_seen(segment, "tls", flow, hello.sni, now)

    def _hello_seen(
        self,
        segment: Segment,
        kind: str,
        key: tuple[Any, ...],
        sni: str | None,
        now: float,
    ) -> list[Observation]:
        """A whole ClientHello: remember the handshake (retransmissions are not new sightings)
        and report its server name."""
        self._done.put((kind, *key), True, now)
        return self._names(segment, [sni] if sni else [], kind)

    def expire(self, now: float) -> None:
        self._tcp.expire(now)
        self._quic.expire(now)
        self._done.expire(now)


# ---------------------------------------------------------------------------------------------
# Per-device aggregation and rate limiting


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


# ---------------------------------------------------------------------------------------------
# The sniffer


class DeviceIdentity:
    """MAC and hostname for an IP from the DHCP leases (`schoolgate.leases.LeaseTable`s)."""

    def __init__(self, tables: Sequence[Any] = ()) -> None:
        self.tables = tuple(tables)

    def lookup(self, ip: str) -> tuple[str | None, str | None]:
        for table in self.tables:
            lease = table.lookup(ip)
            if lease is not None:
                return lease.mac, lease.hostname
        return None, None


type Writer = Callable[..., None]


class Sniffer:
    """Frames in, audit records and metrics out. Thread-safe: capture and ticks may interleave."""

    def __init__(
        self,
        watchlist: Watchlist,
        write: Writer,
        *,
        identity: DeviceIdentity | None = None,
        aggregator: ReportAggregator | None = None,
        metrics: SnifferMetrics | None = None,
    ) -> None:
        self.stats = SnifferStats()
        self.metrics = metrics or SnifferMetrics()
        self.inspector = PacketInspector(watchlist, self.stats, self.metrics)
        self.aggregator = aggregator or ReportAggregator()
        self.identity = identity or DeviceIdentity()
        self._write = write
        self._lock = threading.Lock()
        self._last_expiry = 0.0

    def feed(self, frame: bytes, linktype: int, timestamp: float) -> None:
        """One captured frame. Never raises: what does not parse is counted and skipped."""
        with self._lock:
            self.stats.packets += 1
            self.metrics.packet()
            try:
                segment = parse_frame(frame, linktype, timestamp)
            except Malformed:
                self.inspector.malformed("frame")
                return
            except Exception:  # a parser bug must cost one frame, not the sniffer
                log.exception("sniffer: unexpected error dissecting a frame; skipped")
                self.inspector.malformed("error")
                return
            if segment is None:
                return
            try:
                observations = self.inspector.inspect(segment)
            except Exception:
                log.exception("sniffer: unexpected error inspecting a frame; skipped")
                self.inspector.malformed("error")
                return
            for observation in observations:
                self.stats.observations += 1
                self.metrics.observed(observation.category, observation.app)
                self._emit(self.aggregator.add(observation))
            if timestamp - self._last_expiry >= 1.0:
                self._last_expiry = timestamp
                self.inspector.expire(timestamp)
                self._emit(self.aggregator.flush_due(timestamp))
            self.metrics.devices(self.aggregator.devices)

    def tick(self, now: float) -> None:
        """Close ended windows when no packet arrives to do it (live capture)."""
        with self._lock:
            self.inspector.expire(now)
            self._emit(self.aggregator.flush_due(now))
            self.metrics.devices(self.aggregator.devices)

    def close(self) -> None:
        """Write what every open window holds (end of a pcap, service stop)."""
        with self._lock:
            self._emit(self.aggregator.flush_all())
            self.metrics.devices(0)

    def _emit(self, reports: Sequence[Report]) -> None:
        for report in reports:
            mac, hostname = self.identity.lookup(report.device)
            fields = dict(report.fields)
            frame_mac = fields.pop("frame_mac", None)
            kind = report.event.removeprefix("sniffer_")
            self.stats.records[kind] += 1
            suppressed = int(fields.get("observations", 0)) if kind == "suppressed" else 0
            self.stats.suppressed += suppressed
            self.metrics.record(kind, suppressed)
            self._write(
                report.event,
                device={"ip": report.device, "mac": mac or frame_mac, "hostname": hostname},
                **fields,
            )


# ---------------------------------------------------------------------------------------------
# Sources of frames


def pcap_frames(path: Path) -> Iterator[tuple[bytes, int, float]]:
    """(frame, linktype, timestamp) from a pcap or pcapng file, without dissecting."""
    from scapy.utils import RawPcapReader

    with RawPcapReader(str(path)) as reader:
        default_linktype = int(getattr(reader, "linktype", LINKTYPE_ETHERNET))
        nano = bool(getattr(reader, "nano", False))
        for data, metadata in reader:
            meta: Any = metadata  # pcap and pcapng readers give different metadata tuples
            if hasattr(meta, "sec"):
                stamp = meta.sec + meta.usec / (1e9 if nano else 1e6)
                linktype = default_linktype
            else:  # pcapng
                stamp = ((meta.tshigh << 32) | meta.tslow) / float(meta.tsresol)
                linktype = int(meta.linktype)
            yield bytes(data), linktype, float(stamp)


def replay(sniffer: Sniffer, path: Path) -> SnifferStats:
    """Feed a capture file through the sniffer and close its windows."""
    for frame, linktype, stamp in pcap_frames(path):
        sniffer.feed(frame, linktype, stamp)
    sniffer.close()
    return sniffer.stats


def capture_filter(watchlist: Watchlist) -> str:
    """A BPF prefilter that passes what the sniffer can use and little else.

    libpcap cannot index into IPv6 upper layers, so IPv6 TCP/UDP passes whole; IPv4 passes DNS
    queries, the first segment of TLS ClientHellos and plaintext CONNECTs, QUIC long-header packets,
    WireGuard/OpenVPN handshakes, ESP, and TCP connection attempts / UDP datagrams to watchlisted
    ports.
    A ClientHello split across TCP segments is then read as far as its first segment goes.
    """
    tcp_ports = sorted(port for proto, port in watchlist.ports if proto == "tcp")
    udp_ports = sorted(port for proto, port in watchlist.ports if proto == "udp")
    # A BPF load past the end of a packet rejects the packet outright, so every clause that reads
    # payload bytes first checks that they are there.
    tcp_data = "(ip[2:2] - ((ip[0] & 0x0f) << 2) - ((tcp[12] & 0xf0) >> 2))"
    payload = "tcp[((tcp[12:1] & 0xf0) >> 2)"
    clauses = [
        "udp dst port 53",
        "ip proto 50 or ip6 proto 50",
        "(ip6 and (tcp or udp))",
        f"(tcp and {tcp_data} >= 6 and {payload}:1] = 0x16 and {payload}+5:1] = 0x01)",
        f"(tcp and {tcp_data} >= 8 and {payload}:4] = 0x434f4e4e)",
        "(udp and udp[4:2] > 8 and not udp port 53 and udp[8] & 0xc0 = 0xc0)",
        "(udp and udp[4:2] = 156 and udp[8:4] = 0x01000000)",
        "(udp and udp[4:2] = 22 and udp[8] = 0x38)",
    ]
    if tcp_ports:
        ports = " or ".join(f"dst port {p}" for p in tcp_ports)
        clauses.append(f"(tcp and tcp[13] & 0x12 = 0x02 and ({ports}))")
    if udp_ports:
        ports = " or ".join(f"dst port {p}" for p in udp_ports)
        clauses.append(f"(udp and ({ports}))")
    return " or ".join(clauses)


# Linux ARPHRD_* (/sys/class/net/IFACE/type) to pcap link types: Ethernet and loopback frames
# carry an Ethernet header, tun-style interfaces (ARPHRD_NONE) raw IP.
_ARPHRD_LINKTYPES: Final = {1: LINKTYPE_ETHERNET, 772: LINKTYPE_ETHERNET, 65534: LINKTYPE_RAW}


def interface_linktype(interface: str) -> int:
    try:
        arphrd = int(Path(f"/sys/class/net/{interface}/type").read_text().strip())
    except (OSError, ValueError):
        return LINKTYPE_ETHERNET
    return _ARPHRD_LINKTYPES.get(arphrd, LINKTYPE_ETHERNET)


def capture(
    sniffer: Sniffer,
    interface: str,
    stop: threading.Event,
    *,
    bpf: str | None,
    tick_s: float = 1.0,
    ready: Callable[[], None] | None = None,
) -> None:
    """Read frames from `interface` until `stop` is set (scapy's Linux packet socket).

    `ready` is called once the socket (and its prefilter) is in place.
    """
    import scapy.layers.l2  # noqa: F401 - registers link-layer types, so scapy does not warn
    from scapy.arch.linux import L2ListenSocket

    linktype = interface_linktype(interface)
    from scapy.error import Scapy_Exception

    try:
        sock = L2ListenSocket(iface=interface, filter=bpf)
    except (ImportError, Scapy_Exception) as error:  # no libpcap to compile the prefilter with
        log.warning("sniffer: %s; capturing without a prefilter (more CPU)", error)
        sock = L2ListenSocket(iface=interface)
    try:
        if ready is not None:
            ready()
        last_tick = time.time()
        while not stop.is_set():
            readable, _, _ = select.select([sock], [], [], tick_s)
            if readable:
                _, data, stamp = sock.recv_raw()
                if data:
                    sniffer.feed(bytes(data), linktype, float(stamp or time.time()))
            now = time.time()
            if now - last_tick >= tick_s:
                last_tick = now
                sniffer.tick(now)
    finally:
        sock.close()
        sniffer.close()
