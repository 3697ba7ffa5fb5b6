"""The passive sniffer: per device, the names and protocols IT needs to see, never blocking.

On the student interface it reads DNS queries, TLS ClientHello server names, QUIC Initial server
names (decrypted with the keys RFC 9001 derives from the connection ID) and VPN/proxy signatures,
and reports what the watchlist names: catalogued apps the proxy cannot inspect, and circumvention
(VPNs, DNS over HTTPS/TLS, proxies, Tor). Reports are audit records, aggregated per device so a
chatty device cannot flood the log, and Prometheus counters with bounded labels.

Hostile packets are counted as malformed and skipped; every table is bounded in size and time."""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from schoolgate.sniffer.inspect import PacketInspector
from schoolgate.sniffer.metrics import SnifferMetrics, SnifferStats
from schoolgate.sniffer.packets import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    parse_frame,
)
from schoolgate.sniffer.reports import Report, ReportAggregator
from schoolgate.sniffer.tlshello import (
    Malformed,
)
from schoolgate.sniffer.watchlist import Watchlist

log = logging.getLogger("schoolgate.sniffer")


class DeviceIdentity:
    """MAC and hostname for an IP from the DHCP leases (`schoolgate.leases.LeaseTable`s)."""

    def __init__(self, tables: Sequence[Any] = ()) -> None:
        self.tables = tuple(tables)

    def lookup(self, ip: str, at: float | None = None) -> tuple[str | None, str | None]:
        """`at`: when the traffic was seen (a replayed capture's time), for lease expiry."""
        for table in self.tables:
            lease = table.lookup(ip, at=at)
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
        self._seen_at: float | None = None  # the newest frame's time (a pcap's own clock)

    def feed(self, frame: bytes, linktype: int, timestamp: float) -> None:
        """One captured frame. Never raises: what does not parse is counted and skipped."""
        with self._lock:
            self._seen_at = timestamp
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
            mac, hostname = self.identity.lookup(report.device, at=self._seen_at)
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
