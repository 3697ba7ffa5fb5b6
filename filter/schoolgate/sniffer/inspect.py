"""One frame in, observations out: DNS names, TLS and QUIC server names (joined across TCP
segments, bounded tables) and VPN or proxy signatures."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from schoolgate.sniffer.dnsquery import query_names
from schoolgate.sniffer.metrics import SnifferMetrics, SnifferStats
from schoolgate.sniffer.packets import (
    PROTO_ESP,
    PROTO_TCP,
    PROTO_UDP,
    Segment,
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
