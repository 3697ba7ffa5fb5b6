"""The passive sniffer end to end: pcaps generated here with scapy (in tmp) are replayed through
`schoolgate sniff --pcap` and the per-device audit records, counts and metrics checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.packet import Packet

from schoolgate.cli import main
from schoolgate.endpoints.loader import load_catalog
from schoolgate.errors import ConfigError
from schoolgate.pipeline.audit import read_records
from schoolgate.sniffer.capture import Sniffer, capture_filter, replay
from schoolgate.sniffer.inspect import Observation
from schoolgate.sniffer.metrics import REGISTRY
from schoolgate.sniffer.packets import LINKTYPE_ETHERNET
from schoolgate.sniffer.reports import ReportAggregator
from schoolgate.sniffer.watchlist import Match, Watchlist
from tests.support.sniffer_packets import (
    client_hello_handshake,
    crypto_frame,
    dns_query,
    dns_response,
    esp_packet,
    openssl_client_hello,
    openvpn_hard_reset,
    quic_initial,
    tcp_segments,
    udp_datagram,
    wireguard_initiation,
    write_pcap,
)

T0 = 1_767_000_000.0  # capture time of the first packet (2025-12-29)

# Devices on the student network: (MAC, IP); A and B have DHCP leases.
A = ("02:00:5e:10:00:0a", "10.20.0.10")
B = ("02:00:5e:10:00:0b", "10.20.0.11")
C = ("02:00:5e:10:00:0c", "10.20.0.12")
D = ("02:00:5e:10:00:0d", "10.20.0.13")
E = ("02:00:5e:10:00:0e", "10.20.0.14")
INTERNET = "198.51.100.20"


def metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scenario() -> list[Packet]:
    """One short capture with every kind of thing the sniffer reports, and some it must not."""
    packets: list[Packet] = []
    # A: asks for WhatsApp (un-inspectable) three times, Google DoH once, the BBC (not listed).
    for index in range(3):
        packets.append(dns_query(*A, "web.whatsapp.com", T0 + index, sport=41000 + index))
    packets.append(dns_query(*A, "dns.google", T0 + 4))
    packets.append(dns_query(*A, "www.bbc.co.uk", T0 + 5))
    packets.append(dns_response(*A, "web.whatsapp.com", T0 + 5.5))  # answers are not recorded
    # B: TLS to Signal, the ClientHello split in three TCP segments, the name in the second.
    hello = openssl_client_hello("chat.signal.org")
    name_at = hello.find(b"chat.signal.org")
    packets += tcp_segments(*B, INTERNET, 443, hello, T0 + 6, splits=(name_at - 5, name_at + 40))
    # B: a Telegram ClientHello retransmitted (counted once per handshake, not per copy).
    telegram = tcp_segments(
        *B, INTERNET, 443, openssl_client_hello("web.telegram.org"), T0 + 7, sport=50001
    )
    packets += [*telegram, telegram[-1]]
    # C: QUIC to Cloudflare's DoH, its ClientHello in two Initial packets, frames out of order.
    dcid = os.urandom(8)
    handshake = client_hello_handshake(openssl_client_hello("cloudflare-dns.com", alpn=("h3",)))
    half = len(handshake) // 2
    packets.append(
        udp_datagram(
            *C,
            INTERNET,
            443,
            quic_initial(dcid, crypto_frame(half, handshake[half:]), packet_number=1),
            T0 + 8,
        )
    )
    packets.append(
        udp_datagram(
            *C,
            INTERNET,
            443,
            quic_initial(dcid, crypto_frame(0, handshake[:half]), packet_number=0),
            T0 + 8.01,
        )
    )
    # D: WireGuard on an unusual port (the signature, not the port, finds it), OpenVPN, ESP.
    packets.append(udp_datagram(*D, INTERNET, 4242, wireguard_initiation(), T0 + 9))
    packets.append(udp_datagram(*D, INTERNET, 1194, openvpn_hard_reset(), T0 + 10))
    packets.append(esp_packet(*D, INTERNET, T0 + 11))
    # E: DNS over TLS (a connection attempt to 853) and a plaintext CONNECT to a public proxy.
    packets += tcp_segments(*E, "203.0.113.9", 853, b"", T0 + 12)[:1]
    packets += tcp_segments(
        *E, "203.0.113.9", 3128, b"CONNECT www.youtube.com:443 HTTP/1.1\r\n\r\n", T0 + 13
    )
    # Hostile and broken packets: each is counted and skipped.
    broken_quic = bytearray(quic_initial(os.urandom(8), crypto_frame(0, handshake)))
    broken_quic[700] ^= 0xFF
    packets.append(udp_datagram(*C, INTERNET, 443, bytes(broken_quic), T0 + 14))
    bad_hello = bytearray(openssl_client_hello("x.signal.org"))
    bad_hello[43] = 0xFF  # a session id longer than 32 bytes
    packets += tcp_segments(*E, INTERNET, 443, bytes(bad_hello), T0 + 15, sport=50002)[1:]
    packets.append(
        udp_datagram(*A, "10.20.0.1", 53, b"\x12\x34\x01\x00\x00\x09" + b"\xff" * 20, T0 + 16)
    )
    return packets


def broken_frame(path: Path) -> None:
    """Append a frame whose IPv4 header claims more than it has (scapy would not build it)."""
    data = path.read_bytes()
    frame = bytes.fromhex("02000000000102005e10000a0800") + b"\x4f\x00\x00\x14" + bytes(8)
    record = (int(T0) + 17).to_bytes(4, "little") + bytes(4) + len(frame).to_bytes(4, "little") * 2
    path.write_bytes(data + record + frame)


@pytest.fixture
def site(tmp_path: Path, data_dir: Path) -> Path:
    leases = tmp_path / "dnsmasq.leases"
    expiry = int(T0) + 86400
    leases.write_text(
        f"{expiry} {A[0]} {A[1]} pupil-ipad-1 *\n{expiry} {B[0]} {B[1]} pupil-laptop-2 *\n"
    )
    config = tmp_path / "schoolgate.yaml"
    config.write_text(
        yaml.safe_dump({"classifier": {"models": []}, "proxy": {"dhcp_leases": [str(leases)]}})
    )
    return config


def run_sniff(config: Path, pcap: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["sniff", "--config", str(config), "--pcap", str(pcap)]) == 0
    stats: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return stats


def records_by_device(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in read_records(data_dir / "audit" / "sniffer.jsonl"):
        found.setdefault(record["device"]["ip"], []).append(record)
    return found


def observed(records: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {
        (r["category"], r["app"], r["name"], r["source"])
        for r in records
        if r["event"] == "sniffer_observed"
    }


def test_pcap_replay_reports_each_device(
    site: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = write_pcap(tmp_path / "scenario.pcap", scenario())
    broken_frame(pcap)
    before = metric("schoolgate_sniffer_observations_total", {"category": "doh", "app": "google"})
    stats = run_sniff(site, pcap, capsys)
    by_device = records_by_device(data_dir)

    assert observed(by_device[A[1]]) == {
        ("uninspectable_app", "whatsapp", "web.whatsapp.com", "dns"),
        ("doh", "google", "dns.google", "dns"),
    }
    repeated = [r for r in by_device[A[1]] if r["event"] == "sniffer_repeated"]
    assert [(r["name"], r["count"]) for r in repeated] == [("web.whatsapp.com", 3)]
    first = next(r for r in by_device[A[1]] if r["event"] == "sniffer_observed")
    assert first["device"] == {"ip": A[1], "mac": A[0], "hostname": "pupil-ipad-1"}
    assert first["server"] == "10.20.0.1:53"

    assert observed(by_device[B[1]]) == {
        ("uninspectable_app", "signal", "chat.signal.org", "tls"),
        ("uninspectable_app", "telegram", "web.telegram.org", "tls"),
    }
    assert by_device[B[1]][0]["device"]["hostname"] == "pupil-laptop-2"

    assert observed(by_device[C[1]]) == {("doh", "cloudflare", "cloudflare-dns.com", "quic")}
    # No lease for C: the frame's source MAC identifies it, with no host name.
    assert by_device[C[1]][0]["device"] == {"ip": C[1], "mac": C[0], "hostname": None}

    assert observed(by_device[D[1]]) == {
        ("vpn", "wireguard", "wireguard", "signature"),
        ("vpn", "openvpn", "udp/1194", "port"),
        ("vpn", "openvpn", "openvpn", "signature"),
        ("vpn", "ipsec_esp", "ipsec_esp", "signature"),
    }
    assert observed(by_device[E[1]]) == {
        ("dot", "dot", "tcp/853", "port"),
        ("proxy", "http_connect", "www.youtube.com", "signature"),
    }
    assert set(by_device) == {A[1], B[1], C[1], D[1], E[1]}

    assert stats["malformed"] == {"quic": 1, "tls": 1, "dns": 1, "frame": 1}
    assert stats["packets"] == len(scenario()) + 1
    assert stats["observations"] == 13  # 4 DNS (WhatsApp 3 times) + 2 TLS + 1 QUIC + 4 D + 2 E
    after = metric("schoolgate_sniffer_observations_total", {"category": "doh", "app": "google"})
    assert after - before == 1


def test_rate_limit_summarises_a_chatty_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    config = tmp_path / "schoolgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "classifier": {"models": []},
                "sniffer": {"max_records_per_device": 5, "window_s": 60},
            }
        )
    )
    packets: list[Packet] = []
    for index in range(200):  # one name over and over
        packets.append(dns_query(*A, "dns.google", T0 + index * 0.1, sport=42000 + index))
    for index in range(40):  # forty different VPN names
        packets.append(dns_query(*A, f"node{index}.nordvpn.com", T0 + 21 + index * 0.1))
    packets.append(dns_query(*A, "dns.google", T0 + 61))  # the next window
    stats = run_sniff(config, write_pcap(tmp_path / "chatty.pcap", packets), capsys)
    records = read_records(data_dir / "audit" / "sniffer.jsonl")
    kinds = [r["event"] for r in records]
    assert kinds.count("sniffer_observed") == 6  # 5 in the first window, 1 in the next
    (suppressed,) = [r for r in records if r["event"] == "sniffer_suppressed"]
    assert suppressed["observations"] == 36
    assert suppressed["by_category"] == {"vpn": 36}
    assert suppressed["names"] == 36
    (repeated,) = [r for r in records if r["event"] == "sniffer_repeated"]
    assert (repeated["name"], repeated["count"]) == ("dns.google", 200)
    assert len(records) == 8  # 241 observations became 8 lines
    assert stats["observations"] == 241
    assert stats["suppressed"] == 36


def test_aggregator_bounds_devices_and_names() -> None:
    aggregator = ReportAggregator(window_s=300, max_records=100, max_devices=3, max_keys=4)

    def obs(device: int, name: str, when: float) -> Observation:
        return Observation(when, f"10.20.1.{device}", "vpn", "nordvpn", name, "dns")

    reports = []
    for device in range(10):
        reports += aggregator.add(obs(device, "nordvpn.com", float(device)))
        reports += aggregator.add(obs(device, "nordvpn.com", float(device) + 0.5))
    assert aggregator.devices == 3
    # Evicted devices were reported (their repeat summary) before being dropped.
    assert sum(r.event == "sniffer_repeated" for r in reports) == 7
    for index in range(10):
        aggregator.add(obs(9, f"n{index}.nordvpn.com", 20.0 + index))
    assert len(aggregator._devices["10.20.1.9"].entries) == 4
    closing = aggregator.flush_all()
    assert aggregator.devices == 0
    assert {r.device for r in closing} == {"10.20.1.7", "10.20.1.8", "10.20.1.9"}


def test_split_client_hello_is_joined_even_out_of_order_retransmitted(tmp_path: Path) -> None:
    hello = openssl_client_hello("upload.signal.org")
    packets = tcp_segments(*B, INTERNET, 443, hello, T0, splits=(100, 200, 300))
    syn, first, second, third, fourth = packets
    # The second segment is sent twice (a retransmission) and overlaps the third.
    reordered = [syn, first, second, second, third, fourth]
    found: list[tuple[str, dict[str, Any]]] = []
    sniffer = Sniffer(Watchlist.load(load_catalog()), lambda event, **f: found.append((event, f)))
    replay(sniffer, write_pcap(tmp_path / "split.pcap", reordered))
    assert [f["name"] for e, f in found if e == "sniffer_observed"] == ["upload.signal.org"]
    assert sniffer.stats.malformed == {}


def test_malformed_packets_are_counted_and_metered(tmp_path: Path) -> None:
    before = metric("schoolgate_sniffer_malformed_total", {"protocol": "dns"})
    sniffer = Sniffer(Watchlist.load(load_catalog()), lambda event, **f: None)
    for index in range(5):
        frame = udp_datagram(*A, "10.20.0.1", 53, b"\x00\x01\x01\x00\x00\x00garbage", T0 + index)
        sniffer.feed(bytes(frame), LINKTYPE_ETHERNET, T0 + index)
    sniffer.close()
    assert sniffer.stats.malformed == {"dns": 5}
    assert metric("schoolgate_sniffer_malformed_total", {"protocol": "dns"}) - before == 5


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=400), st.sampled_from([53, 443, 853, 1194, 4500, 51820, 4242]), st.booleans()
)
def test_hostile_payloads_never_crash_the_sniffer(payload: bytes, port: int, tcp: bool) -> None:
    sniffer = Sniffer(Watchlist.load(None), lambda event, **f: None)
    if tcp:
        frames = tcp_segments(
            *E,
            INTERNET,
            port,
            payload or b"x",
            T0,
            splits=(len(payload) // 2,) if len(payload) > 2 else (),
        )
    else:
        frames = [udp_datagram(*E, INTERNET, port, payload, T0)]
    for frame in frames:
        sniffer.feed(bytes(frame), LINKTYPE_ETHERNET, T0)
    sniffer.close()
    assert sniffer.stats.malformed.get("error", 0) == 0  # no unexpected exception anywhere


def test_prefilter_keeps_what_the_sniffer_needs_and_drops_bulk(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.fail("tcpdump is not installed: `make test` installs it (TEST_SYSTEM_DEPS)")
    bulk: list[Packet] = []
    for index in range(50):  # an upload and its replies: nothing for the sniffer
        bulk += tcp_segments(
            *A, INTERNET, 443, os.urandom(900), T0 + 20 + index, sport=52000 + index
        )[1:]
        bulk.append(udp_datagram(*A, INTERNET, 443, b"\x40" + os.urandom(600), T0 + 20 + index))
    # The scenario without its split ClientHello (a prefilter passes only the first segment).
    packets = [
        p
        for p in scenario()
        if not (p.haslayer("TCP") and p["IP"].src == B[1] and p["TCP"].sport == 50000)
    ]
    pcap = write_pcap(tmp_path / "all.pcap", packets + bulk)
    filtered = tmp_path / "filtered.pcap"
    watchlist = Watchlist.load(load_catalog())
    subprocess.run(
        [tcpdump, "-n", "-r", str(pcap), "-w", str(filtered), capture_filter(watchlist)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def names(path: Path) -> set[tuple[str, str, str]]:
        found: list[dict[str, Any]] = []
        sniffer = Sniffer(watchlist, lambda event, **f: found.append({"event": event, **f}))
        replay(sniffer, path)
        return {
            (f["category"], f["app"], f["name"]) for f in found if f["event"] == "sniffer_observed"
        }

    everything, kept = names(pcap), names(filtered)
    assert kept == everything
    assert len(everything) >= 10
    kept_frames = sum(1 for _ in open_pcap_frames(filtered))
    assert kept_frames <= len(packets)  # the bulk (100 frames) was dropped by the kernel filter


def open_pcap_frames(path: Path) -> list[bytes]:
    from schoolgate.sniffer.capture import pcap_frames

    return [frame for frame, _, _ in pcap_frames(path)]


def test_watchlist_lists_merge_and_errors_name_the_key(tmp_path: Path) -> None:
    site_list = tmp_path / "ours.yaml"
    site_list.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "names": {"proxy": {"school_blocklist": ["unblocker.example", "*.proxy.example"]}},
                "ports": [
                    {"label": "shadowsocks", "category": "proxy", "protocol": "tcp", "port": 8388}
                ],
            }
        )
    )
    watchlist = Watchlist.load(load_catalog(), [site_list])
    assert watchlist.match_name("a.b.unblocker.example") == Match("proxy", "school_blocklist")
    assert watchlist.match_name("x.proxy.example") == Match("proxy", "school_blocklist")
    assert watchlist.match_port("tcp", 8388) == Match("proxy", "shadowsocks")
    assert watchlist.match_name("dns.google") == Match("doh", "google")  # packaged list kept
    assert watchlist.match_name("web.whatsapp.com") == Match("uninspectable_app", "whatsapp")
    assert watchlist.match_name("www.instagram.com") == Match("uninspectable_app", "instagram")
    assert watchlist.match_name("drive.google.com") is None  # inspected by the proxy
    assert watchlist.match_name("www.bbc.co.uk") is None
    only_none = Watchlist.load(load_catalog(), reported=("none",))
    assert only_none.match_name("www.instagram.com") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"names": {"vpn": {"BadLabel": ["x.example"]}}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: names.vpn"):
        Watchlist.load(None, [bad])
    bad.write_text(yaml.safe_dump({"names": {"malware": {"x": ["x.example"]}}}))
    with pytest.raises(ConfigError, match=r"names.malware"):
        Watchlist.load(None, [bad])


def test_cli_needs_an_interface_or_a_pcap(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sniff", "--config", str(site)]) == 2
    assert "--interface" in capsys.readouterr().err
    assert main(["sniff", "--config", str(site), "--pcap", "/nonexistent.pcap"]) == 2


def test_sniffer_config_section_is_validated(tmp_path: Path) -> None:
    from schoolgate.config import parse_config

    config = parse_config(
        "sniffer: {interface: wlan0, window_s: 60, report_inspections: [none], metrics_port: 9112}",
        "site.yaml",
    )
    assert config.sniffer.interface == "wlan0"
    assert config.sniffer.report_inspections == ("none",)
    assert config.sniffer.metrics_port == 9112
    assert config.sniffer.audit_path == config.data_dir / "audit" / "sniffer.jsonl"
    with pytest.raises(ConfigError, match=r"site.yaml: sniffer.report_inspections\[0\]"):
        parse_config("sniffer: {report_inspections: [partial]}", "site.yaml")
    with pytest.raises(ConfigError, match=r"sniffer.metrics_host"):
        parse_config("sniffer: {metrics_host: localhost}", "site.yaml")
