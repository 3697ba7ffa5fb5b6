"""Passive sniffer throughput: frames per second through `Sniffer.feed`, by kind of frame.

Bulk TCP data is what reaches Python when the BPF prefilter is off (or for IPv6); DNS queries,
ClientHellos and QUIC Initials are what the prefilter passes. One core, no audit file (records go
to a list), the packaged catalog and circumvention lists.
"""

from __future__ import annotations

import os
import time
from typing import Any

from schoolgate.endpoints.loader import load_catalog
from schoolgate.sniffer.capture import Sniffer
from schoolgate.sniffer.packets import LINKTYPE_ETHERNET
from schoolgate.sniffer.reports import ReportAggregator
from schoolgate.sniffer.watchlist import Watchlist
from tests.support.sniffer_packets import (
    client_hello_handshake,
    crypto_frame,
    dns_query,
    openssl_client_hello,
    quic_initial,
    tcp_segments,
    udp_datagram,
)

Figure = dict[str, Any]
FRAMES = 8_000


def _frames(kind: str, count: int) -> list[bytes]:
    """`count` frames from 200 devices (distinct flows, so no per-flow shortcut applies)."""
    hello = openssl_client_hello("web.whatsapp.com")
    handshake = client_hello_handshake(openssl_client_hello("chat.signal.org", alpn=("h3",)))
    frames: list[bytes] = []
    for index in range(count):
        mac, ip = (
            f"02:00:5e:10:{index // 200 % 256:02x}:{index % 200:02x}",
            f"10.20.{index % 200}.9",
        )
        sport = 20000 + index % 40000
        if kind == "tcp data":
            packet = tcp_segments(
                mac, ip, "198.51.100.20", 443, os.urandom(1200), 0.0, sport=sport
            )[1]
        elif kind == "dns query":
            name = "dns.google" if index % 2 else f"www{index}.example.org"
            packet = dns_query(mac, ip, name, 0.0, sport=sport)
        elif kind == "tls clienthello":
            packet = tcp_segments(mac, ip, "198.51.100.20", 443, hello, 0.0, sport=sport)[1]
        else:
            datagram = quic_initial(os.urandom(8), crypto_frame(0, handshake))
            packet = udp_datagram(mac, ip, "198.51.100.20", 443, datagram, 0.0, sport=sport)
        frames.append(bytes(packet))
    return frames


def _rate(frames: list[bytes]) -> float:
    sniffer = Sniffer(
        Watchlist.load(load_catalog()),
        lambda event, **fields: None,
        aggregator=ReportAggregator(window_s=3600, max_records=10**6, max_devices=10**4),
    )
    started = time.perf_counter()
    for index, frame in enumerate(frames):
        sniffer.feed(frame, LINKTYPE_ETHERNET, 1_767_000_000.0 + index * 1e-4)
    elapsed = time.perf_counter() - started
    sniffer.close()
    return len(frames) / elapsed


def run() -> list[Figure]:
    figures: list[Figure] = []
    for kind, count in (
        ("tcp data", FRAMES),
        ("dns query", FRAMES),
        ("tls clienthello", FRAMES // 4),
        ("quic initial", FRAMES // 10),
    ):
        rate = _rate(_frames(kind, count))
        figures.append(
            {
                "name": f"sniffer.{kind.replace(' ', '_')}",
                "value": rate,
                "unit": "frames/s",
                "target": None,
                "met": None,
                "note": f"{count} frames, one core",
            }
        )
    return figures
