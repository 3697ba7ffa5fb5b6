"""Frames to transport segments: Ethernet (with VLAN tags), Linux cooked capture, raw IP.

scapy captures and reads the pcaps; the dissection is ours because the sniffer needs the exact
payload bytes (scapy re-serialises what it dissected, and a malformed DNS or TLS payload does not
survive that round trip) and because a dozen struct reads cost a fraction of a scapy dissection
on a gateway that sees every student packet. Returns None for anything that is not IPv4/IPv6
TCP, UDP or ESP; raises `Malformed` for frames that claim to be and are not.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final

from schoolgate.sniffer.tlshello import Malformed

# pcap link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_LINUX_SLL2: Final = 276
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
PROTO_TCP, PROTO_UDP, PROTO_ESP = 6, 17, 50
_IPV6_EXTENSIONS: Final = frozenset({0, 43, 60, 44})  # hop-by-hop, routing, dest opts, fragment


@dataclass(frozen=True)
class Segment:
    """One transport-layer packet, as the sniffer needs it."""

    time: float
    src_mac: str | None
    src: str
    dst: str
    protocol: int  # PROTO_TCP, PROTO_UDP or PROTO_ESP
    sport: int = 0
    dport: int = 0
    payload: bytes = b""
    tcp_flags: int = 0
    seq: int = 0

    @property
    def syn_only(self) -> bool:
        """A TCP connection attempt: SYN without ACK."""
        return self.tcp_flags & 0x12 == 0x02


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_frame(data: bytes, linktype: int, timestamp: float) -> Segment | None:
    """Dissect one captured frame down to its transport segment."""
    src_mac: str | None = None
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            raise Malformed("Ethernet frame shorter than its header")
        src_mac = _mac(data[6:12])
        ethertype = int.from_bytes(data[12:14], "big")
        pos = 14
        for _ in range(2):  # at most two VLAN tags (802.1Q, QinQ)
            if ethertype not in (ETH_VLAN, ETH_QINQ):
                break
            if len(data) < pos + 4:
                raise Malformed("VLAN tag cut short")
            ethertype = int.from_bytes(data[pos + 2 : pos + 4], "big")
            pos += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            raise Malformed("cooked header cut short")
        if int.from_bytes(data[4:6], "big") == 6:
            src_mac = _mac(data[6:12])
        ethertype = int.from_bytes(data[14:16], "big")
        pos = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            raise Malformed("cooked v2 header cut short")
        ethertype = int.from_bytes(data[0:2], "big")
        if data[11] == 6:
            src_mac = _mac(data[12:18])
        pos = 20
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14):
        if not data:
            raise Malformed("empty raw IP packet")
        ethertype = ETH_IPV4 if data[0] >> 4 == 4 else ETH_IPV6 if data[0] >> 4 == 6 else 0
        pos = 0
    else:
        return None
    if ethertype == ETH_IPV4:
        return _ipv4(data, pos, timestamp, src_mac)
    if ethertype == ETH_IPV6:
        return _ipv6(data, pos, timestamp, src_mac)
    return None


def _ipv4(data: bytes, pos: int, timestamp: float, src_mac: str | None) -> Segment | None:
    if len(data) < pos + 20:
        raise Malformed("IPv4 header cut short")
    if data[pos] >> 4 != 4:
        raise Malformed("not IPv4")
    header = (data[pos] & 0x0F) * 4
    total = int.from_bytes(data[pos + 2 : pos + 4], "big")
    if header < 20 or total < header or len(data) < pos + header:
        raise Malformed("IPv4 lengths are inconsistent")
    if int.from_bytes(data[pos + 6 : pos + 8], "big") & 0x1FFF:
        return None  # a later fragment: no transport header in it
    src = socket.inet_ntop(socket.AF_INET, data[pos + 12 : pos + 16])
    dst = socket.inet_ntop(socket.AF_INET, data[pos + 16 : pos + 20])
    end = min(len(data), pos + total)
    return _transport(data[pos + header : end], data[pos + 9], src, dst, timestamp, src_mac)


def _ipv6(data: bytes, pos: int, timestamp: float, src_mac: str | None) -> Segment | None:
    if len(data) < pos + 40:
        raise Malformed("IPv6 header cut short")
    if data[pos] >> 4 != 6:
        raise Malformed("not IPv6")
    payload_length = int.from_bytes(data[pos + 4 : pos + 6], "big")
    next_header = data[pos + 6]
    src = socket.inet_ntop(socket.AF_INET6, data[pos + 8 : pos + 24])
    dst = socket.inet_ntop(socket.AF_INET6, data[pos + 24 : pos + 40])
    end = min(len(data), pos + 40 + payload_length)
    pos += 40
    for _ in range(8):  # bounded walk over extension headers
        if next_header not in _IPV6_EXTENSIONS:
            break
        if end < pos + 8:
            raise Malformed("IPv6 extension header cut short")
        if next_header == 44:
            if int.from_bytes(data[pos + 2 : pos + 4], "big") & 0xFFF8:
                return None  # a later fragment
            size = 8
        else:
            size = (data[pos + 1] + 1) * 8
        next_header = data[pos]
        pos += size
    else:
        raise Malformed("too many IPv6 extension headers")
    return _transport(data[pos:end], next_header, src, dst, timestamp, src_mac)


def _transport(
    data: bytes, protocol: int, src: str, dst: str, timestamp: float, src_mac: str | None
) -> Segment | None:
    if protocol == PROTO_UDP:
        if len(data) < 8:
            raise Malformed("UDP header cut short")
        length = int.from_bytes(data[4:6], "big")
        if length < 8:
            raise Malformed("UDP length below its header")
        return Segment(
            timestamp,
            src_mac,
            src,
            dst,
            PROTO_UDP,
            int.from_bytes(data[0:2], "big"),
            int.from_bytes(data[2:4], "big"),
            data[8:length],
        )
    if protocol == PROTO_TCP:
        if len(data) < 20:
            raise Malformed("TCP header cut short")
        offset = (data[12] >> 4) * 4
        if offset < 20 or offset > len(data):
            raise Malformed("TCP data offset out of range")
        return Segment(
            timestamp,
            src_mac,
            src,
            dst,
            PROTO_TCP,
            int.from_bytes(data[0:2], "big"),
            int.from_bytes(data[2:4], "big"),
            data[offset:],
            data[13],
            int.from_bytes(data[4:8], "big"),
        )
    if protocol == PROTO_ESP:
        return Segment(timestamp, src_mac, src, dst, PROTO_ESP)
    return None
