"""A server's queued TCP segment rewritten to carry a TLS alert to the client instead of its
own bytes, and to end the stream (FIN): how the fast path refuses a TLS <= 1.2 session
resumption (sniffer.tlsresume). A reset alone would leave the session in the client's cache,
and its next connection would offer it again; a fatal alert makes the client drop it."""

from __future__ import annotations

from typing import Final

from schoolgate.sniffer.tlsresume import ACCESS_DENIED_ALERT

FIN: Final = 0x01
PSH: Final = 0x08
ACK: Final = 0x10


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def alert_packet(
    packet: bytes, alert: bytes = ACCESS_DENIED_ALERT, seq: int | None = None
) -> bytes:
    """`packet` (IPv4 or IPv6 with TCP, as parse_segment reads it) with its payload replaced
    by `alert` and FIN set, at sequence number `seq` (where the client's stream stands: the
    server's bytes not yet let through are not the client's); ports and options are kept."""
    version = packet[0] >> 4
    header = (packet[0] & 0x0F) * 4 if version == 4 else 40
    offset = (packet[header + 12] >> 4) * 4
    tcp = bytearray(packet[header : header + offset]) + alert
    tcp[13] = ACK | PSH | FIN
    if seq is not None:
        tcp[4:8] = seq.to_bytes(4, "big")
    tcp[16:18] = b"\0\0"
    if version == 4:
        ip = bytearray(packet[:header])
        ip[2:4] = (header + len(tcp)).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = _checksum(bytes(ip)).to_bytes(2, "big")
        pseudo = bytes(ip[12:20]) + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
    else:
        ip = bytearray(packet[:40])
        ip[4:6] = len(tcp).to_bytes(2, "big")
        pseudo = bytes(ip[8:40]) + len(tcp).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    tcp[16:18] = _checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
    return bytes(ip + tcp)
