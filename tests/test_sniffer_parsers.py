"""The sniffer's parsers on hostile bytes: TLS ClientHello, QUIC Initial (RFC 9001 vectors), DNS
queries, frames. Each either returns what the bytes say or raises its documented error."""

from __future__ import annotations

import contextlib
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schoolgate.sniffer.dnsquery import query_names
from schoolgate.sniffer.packets import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    PROTO_TCP,
    PROTO_UDP,
    parse_frame,
)
from schoolgate.sniffer.quic import (
    VERSION_2,
    CryptoStream,
    crypto_frames,
    decrypt_initial,
    initial_keys,
)
from schoolgate.sniffer.tlshello import Incomplete, Malformed, parse_handshake, parse_tls_stream
from tests.support.sniffer_packets import (
    RFC9001_CLIENT_HP,
    RFC9001_CLIENT_IV,
    RFC9001_CLIENT_KEY,
    RFC9001_CRYPTO_FRAME,
    RFC9001_DCID,
    RFC9001_PROTECTED_PACKET,
    RFC9001_UNPROTECTED_HEADER,
    client_hello_handshake,
    crypto_frame,
    dns_query,
    ipv6_dns_query,
    openssl_client_hello,
    protect,
    quic_initial,
    vlan_dns_query,
)

HELLO = openssl_client_hello("upload.signal.org")

# ---------------------------------------------------------------------------------------------
# QUIC: RFC 9001 appendix A


def test_initial_keys_match_rfc9001_appendix_a1() -> None:
    keys = initial_keys(RFC9001_DCID)
    assert keys.key == RFC9001_CLIENT_KEY
    assert keys.iv == RFC9001_CLIENT_IV
    assert keys.hp == RFC9001_CLIENT_HP


def test_rfc9001_client_initial_decrypts_to_its_client_hello() -> None:
    packet = decrypt_initial(RFC9001_PROTECTED_PACKET)
    assert packet is not None
    assert packet.dcid == RFC9001_DCID
    assert packet.packet_number == 2
    ((offset, data),) = crypto_frames(packet.payload)
    assert offset == 0
    hello = parse_handshake(data)
    assert hello.sni == "example.com"
    assert hello.alpn == ("alpn",)


def test_the_test_generator_reproduces_rfc9001_appendix_a2() -> None:
    """The tests' own packet protection is the RFC's, so packets built with it are real ones."""
    payload = RFC9001_CRYPTO_FRAME + bytes(1162 - len(RFC9001_CRYPTO_FRAME))
    assert protect(RFC9001_UNPROTECTED_HEADER, 4, payload, RFC9001_DCID, 1) == (
        RFC9001_PROTECTED_PACKET
    )


def test_any_flipped_bit_fails_authentication() -> None:
    for position in (0, 30, 600, 1199):  # protected header bits, sample, body, tag
        damaged = bytearray(RFC9001_PROTECTED_PACKET)
        damaged[position] ^= 0x04
        with pytest.raises(Malformed):
            decrypt_initial(bytes(damaged))


def test_quic_v2_initial_round_trips() -> None:
    hello = client_hello_handshake(HELLO)
    datagram = quic_initial(os.urandom(12), crypto_frame(0, hello), version=VERSION_2)
    packet = decrypt_initial(datagram)
    assert packet is not None
    assert packet.version == VERSION_2
    assert parse_handshake(crypto_frames(packet.payload)[0][1]).sni == "upload.signal.org"


def test_non_initial_long_headers_are_not_decrypted() -> None:
    handshake_type = bytearray(RFC9001_PROTECTED_PACKET)
    handshake_type[0] = 0xE0 | (handshake_type[0] & 0x0F)  # long header, type Handshake
    assert decrypt_initial(bytes(handshake_type)) is None
    unknown_version = bytearray(RFC9001_PROTECTED_PACKET)
    unknown_version[1:5] = b"\x0a\x0a\x0a\x0a"
    assert decrypt_initial(bytes(unknown_version)) is None
    assert decrypt_initial(b"\x40" + bytes(30)) is None  # a short header


def test_crypto_stream_reorders_and_is_bounded() -> None:
    data = client_hello_handshake(HELLO)
    stream = CryptoStream()
    stream.add(300, data[300:])
    stream.add(100, data[100:300])
    assert stream.contiguous() == b""
    stream.add(0, data[:150])  # overlaps the next chunk
    assert stream.contiguous() == data
    small = CryptoStream(max_chunks=2, max_bytes=100)
    assert small.add(0, b"x" * 60)
    assert not small.add(60, b"y" * 60)  # over the byte cap
    assert small.add(60, b"y" * 10)
    assert not small.add(70, b"z")  # over the chunk cap


def test_crypto_frames_refuse_frames_an_initial_cannot_carry() -> None:
    with pytest.raises(Malformed):
        crypto_frames(b"\x08\x00\x00")  # a STREAM frame
    with pytest.raises(Malformed):
        crypto_frames(b"\x06\x00\x44\x00abc")  # CRYPTO longer than the packet
    assert crypto_frames(b"\x00\x01" + crypto_frame(5, b"abc") + b"\x00\x00") == [(5, b"abc")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=1300), st.integers(0, 1199), st.integers(1, 255))
def test_quic_decryption_of_hostile_datagrams_only_raises_malformed(
    noise: bytes, position: int, flip: int
) -> None:
    for datagram in (
        b"\xc3\x00\x00\x00\x01" + noise,
        _flip(RFC9001_PROTECTED_PACKET, position, flip),
    ):
        try:
            packet = decrypt_initial(datagram)
            if packet is not None:
                crypto_frames(packet.payload)
        except Malformed:
            pass


# ---------------------------------------------------------------------------------------------
# TLS ClientHello


def test_openssl_client_hello_gives_sni_and_alpn() -> None:
    hello = parse_tls_stream(HELLO)
    assert hello.sni == "upload.signal.org"
    assert hello.alpn == ("h2", "http/1.1")
    assert not hello.ech


def test_client_hello_without_sni_and_with_upper_case_sni() -> None:
    assert parse_tls_stream(openssl_client_hello(None)).sni is None
    assert parse_tls_stream(openssl_client_hello("Upload.Signal.ORG")).sni == "upload.signal.org"


def test_truncated_hello_is_incomplete_until_the_name_is_read() -> None:
    name_at = HELLO.find(b"upload.signal.org")
    assert name_at > 0
    with pytest.raises(Incomplete):
        parse_tls_stream(HELLO[: name_at - 10])
    assert parse_tls_stream(HELLO[: name_at + 40]).sni == "upload.signal.org"


def test_client_hello_split_across_tls_records() -> None:
    handshake = client_hello_handshake(HELLO)
    cut = 40
    records = b""
    for part in (handshake[:cut], handshake[cut:]):
        records += b"\x16\x03\x01" + struct.pack("!H", len(part)) + part
    assert parse_tls_stream(records).sni == "upload.signal.org"


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda h: b"\x17" + h[1:], "not a handshake record"),
        (lambda h: h[:5] + b"\x02" + h[6:], "a ServerHello"),
        (lambda h: h[:9] + b"\x07\x07" + h[11:], "not TLS"),
        (lambda h: h[:43] + b"\xff" + h[44:], "session id too long"),
    ],
)
def test_malformed_client_hellos(damage: object, why: str) -> None:
    assert callable(damage)
    with pytest.raises(Malformed):
        parse_tls_stream(damage(HELLO))


def test_server_name_with_impossible_characters_is_malformed() -> None:
    evil = HELLO.replace(b"upload.signal.org", b"upload/signal\x00rg")
    with pytest.raises(Malformed):
        parse_tls_stream(evil)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(HELLO) - 1), st.integers(1, 255), st.integers(1, len(HELLO)))
def test_mutated_client_hellos_only_raise_parse_errors(position: int, flip: int, cut: int) -> None:
    try:
        hello = parse_tls_stream(_flip(HELLO, position, flip)[:cut])
    except (Malformed, Incomplete):
        return
    assert hello.sni is None or all(c.isalnum() or c in "-._" for c in hello.sni)


# ---------------------------------------------------------------------------------------------
# DNS


def test_dns_query_names() -> None:
    packet = dns_query("02:00:00:00:00:05", "10.20.0.5", "Web.WhatsApp.com", 0.0)
    payload = bytes(packet["UDP"].payload)
    assert query_names(payload) == ["web.whatsapp.com"]
    response = bytes(packet["UDP"].payload)
    flags = bytearray(response)
    flags[2] |= 0x80
    assert query_names(bytes(flags)) is None


def test_dns_compression_loops_and_overruns_are_malformed() -> None:
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    with pytest.raises(Malformed):
        query_names(header + b"\xc0\x0c\x00\x01\x00\x01")  # points at itself
    with pytest.raises(Malformed):
        query_names(header + b"\x3fabc")  # label longer than the message
    with pytest.raises(Malformed):
        query_names(header[:4] + b"\x00\x09" + header[6:] + b"\x00\x00\x01\x00\x01")
    with pytest.raises(Malformed):
        query_names(b"\x00\x01")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_dns_payloads_only_raise_malformed(payload: bytes) -> None:
    try:
        names = query_names(payload)
    except Malformed:
        return
    assert names is None or all(len(n) <= 255 for n in names)


# ---------------------------------------------------------------------------------------------
# Frames


def test_frames_with_vlan_tags_ipv6_and_cooked_headers() -> None:
    vlan = bytes(vlan_dns_query("02:00:00:00:00:07", "10.20.0.7", "dns.google", 0.0, vlan=20))
    segment = parse_frame(vlan, LINKTYPE_ETHERNET, 1.0)
    assert segment is not None
    assert (segment.src, segment.dport, segment.protocol) == ("10.20.0.7", 53, PROTO_UDP)
    assert segment.src_mac == "02:00:00:00:00:07"
    v6 = bytes(ipv6_dns_query("02:00:00:00:00:08", "fd00:20::8", "dns.google", 0.0))
    segment = parse_frame(v6, LINKTYPE_ETHERNET, 1.0)
    assert segment is not None
    assert segment.src == "fd00:20::8"
    assert query_names(segment.payload) == ["dns.google"]
    ip_only = v6[14:]
    raw = parse_frame(ip_only, LINKTYPE_RAW, 1.0)
    assert raw is not None
    assert raw.src == "fd00:20::8"
    cooked = b"\x00\x00\x00\x01\x00\x06" + bytes.fromhex("020000000008") + b"\x00\x00\x86\xdd"
    sll = parse_frame(cooked + ip_only, LINKTYPE_LINUX_SLL, 1.0)
    assert sll is not None
    assert sll.src_mac == "02:00:00:00:00:08"
    assert sll.protocol == PROTO_UDP


def test_broken_frames_are_malformed_not_crashes() -> None:
    good = bytes(dns_query("02:00:00:00:00:05", "10.20.0.5", "dns.google", 0.0))
    with pytest.raises(Malformed):
        parse_frame(good[:20], LINKTYPE_ETHERNET, 0.0)  # IPv4 header cut
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x41  # header length 4 bytes
    with pytest.raises(Malformed):
        parse_frame(bytes(bad_ihl), LINKTYPE_ETHERNET, 0.0)
    bad_tcp = bytearray(good)
    bad_tcp[23] = PROTO_TCP  # UDP bytes read as TCP: data offset out of range
    with pytest.raises(Malformed):
        parse_frame(bytes(bad_tcp[: 14 + 20 + 12]), LINKTYPE_ETHERNET, 0.0)
    assert parse_frame(b"\x00" * 14, LINKTYPE_ETHERNET, 0.0) is None  # not IP
    assert parse_frame(good, 147, 0.0) is None  # a link type we do not read


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=200), st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL])
)
def test_random_frames_only_raise_malformed(frame: bytes, linktype: int) -> None:
    with contextlib.suppress(Malformed):
        parse_frame(frame, linktype, 0.0)


def _flip(data: bytes, position: int, value: int) -> bytes:
    damaged = bytearray(data)
    damaged[position % len(damaged)] ^= value
    return bytes(damaged)
