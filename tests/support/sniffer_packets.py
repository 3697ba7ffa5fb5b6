"""Packets for the sniffer tests, built with scapy and written to tmp pcaps (never committed).

TLS ClientHellos come from the real OpenSSL behind Python's `ssl` (a memory BIO handshake that
never touches the network). QUIC Initial packets are protected here, independently of
`schoolgate.quic`'s decryption: only the key derivation is shared, and it is checked against
RFC 9001 appendix A.1; this protection code reproduces RFC 9001 appendix A.2 byte for byte.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from schoolgate.sniffer.quic import VERSION_1, VERSIONS, initial_keys

GATEWAY_MAC = "02:00:00:00:00:01"
GATEWAY_IP = "10.20.0.1"

# RFC 9001 appendix A: the client's Initial packet (packet number 2, DCID 8394c8f03e515708).
RFC9001_DCID = bytes.fromhex("8394c8f03e515708")
RFC9001_CLIENT_KEY = bytes.fromhex("1f369613dd76d5467730efcbe3b1a22d")
RFC9001_CLIENT_IV = bytes.fromhex("fa044b2f42a3fd3b46fb255c")
RFC9001_CLIENT_HP = bytes.fromhex("9f50449e04a0e810283a1e9933adedd2")
RFC9001_UNPROTECTED_HEADER = bytes.fromhex("c300000001088394c8f03e5157080000449e00000002")
RFC9001_CRYPTO_FRAME = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff"
)
RFC9001_PROTECTED_PACKET = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)


# ---------------------------------------------------------------------------------------------
# TLS


def openssl_client_hello(
    server_name: str | None, alpn: Sequence[str] = ("h2", "http/1.1")
) -> bytes:
    """The TLS records a real OpenSSL client sends first (no network: memory BIOs)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    data = outgoing.read()
    assert data[:1] == b"\x16", "OpenSSL did not start with a handshake record"
    return data


def client_hello_handshake(records: bytes) -> bytes:
    """The handshake message inside a single TLS record (what QUIC CRYPTO frames carry)."""
    length = int.from_bytes(records[3:5], "big")
    return records[5 : 5 + length]


# ---------------------------------------------------------------------------------------------
# QUIC


def varint(value: int) -> bytes:
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def protect(header: bytes, pn_length: int, payload: bytes, dcid: bytes, version: int) -> bytes:
    """Encrypt a client Initial payload and apply header protection (RFC 9001 sections 5.3-5.4)."""
    keys = initial_keys(dcid, version)
    packet_number = int.from_bytes(header[-pn_length:], "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ packet_number).to_bytes(12, "big")
    ciphertext = AESGCM(keys.key).encrypt(nonce, payload, header)
    pn_offset = len(header) - pn_length
    sample = ciphertext[4 - pn_length : 4 - pn_length + 16]
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    first = header[0] ^ (mask[0] & 0x0F)
    protected_pn = bytes(b ^ m for b, m in zip(header[pn_offset:], mask[1:], strict=False))
    return bytes([first]) + header[1:pn_offset] + protected_pn + ciphertext


def quic_initial(
    dcid: bytes,
    frames: bytes,
    *,
    packet_number: int = 0,
    scid: bytes = b"",
    version: int = VERSION_1,
    size: int = 1200,
) -> bytes:
    """A client Initial datagram of `size` bytes carrying `frames` (padded with PADDING)."""
    pn_length = 2
    type_bits = VERSIONS[version].initial_type
    first = 0xC0 | (type_bits << 4) | (pn_length - 1)
    prefix = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + varint(0)  # no token
    )
    # Length covers the packet number, the payload and the 16-byte AEAD tag; 2-byte varint.
    payload_length = size - len(prefix) - 2 - pn_length - 16
    assert payload_length >= len(frames), "frames do not fit in the datagram"
    payload = frames + b"\x00" * (payload_length - len(frames))
    header = prefix + varint(pn_length + len(payload) + 16).rjust(2, b"\x40")
    header += packet_number.to_bytes(pn_length, "big")
    return protect(header, pn_length, payload, dcid, version)


# ---------------------------------------------------------------------------------------------
# Frames


def at(packet: Packet, when: float) -> Packet:
    packet.time = when
    return packet


def ether(mac: str) -> Ether:
    return Ether(src=mac, dst=GATEWAY_MAC)


def dns_query(mac: str, ip: str, name: str, when: float, sport: int = 40000) -> Packet:
    frame = ether(mac) / IP(src=ip, dst=GATEWAY_IP) / UDP(sport=sport, dport=53)
    return at(frame / DNS(id=sport & 0xFFFF, rd=1, qd=DNSQR(qname=name)), when)


def dns_response(mac: str, ip: str, name: str, when: float) -> Packet:
    frame = (
        Ether(src=GATEWAY_MAC, dst=mac) / IP(src=GATEWAY_IP, dst=ip) / UDP(sport=53, dport=40000)
    )
    return at(frame / DNS(id=1, qr=1, qd=DNSQR(qname=name)), when)


def tcp_segments(
    mac: str,
    ip: str,
    dst: str,
    dport: int,
    payload: bytes,
    when: float,
    *,
    splits: Sequence[int] = (),
    sport: int = 50000,
    seq: int = 1000,
) -> list[Packet]:
    """The client's SYN, then `payload` cut at `splits` into PSH/ACK segments."""
    packets = [
        at(
            ether(mac)
            / IP(src=ip, dst=dst)
            / TCP(sport=sport, dport=dport, flags="S", seq=seq - 1),
            when,
        )
    ]
    cuts = [0, *splits, len(payload)]
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        segment = TCP(sport=sport, dport=dport, flags="PA", seq=seq + start, ack=1)
        packets.append(
            at(
                ether(mac) / IP(src=ip, dst=dst) / segment / Raw(payload[start:end]),
                when + 0.001 * (index + 1),
            )
        )
    return packets


def udp_datagram(
    mac: str, ip: str, dst: str, dport: int, payload: bytes, when: float, sport: int = 51000
) -> Packet:
    return at(ether(mac) / IP(src=ip, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload), when)


def wireguard_initiation() -> bytes:
    """Type 1, reserved zeros, sender index, ephemeral key, encrypted static and timestamp, MACs."""
    return b"\x01\x00\x00\x00" + os.urandom(144)


def openvpn_hard_reset() -> bytes:
    return b"\x38" + os.urandom(8) + b"\x00" + b"\x00\x00\x00\x00"


def esp_packet(mac: str, ip: str, dst: str, when: float) -> Packet:
    return at(ether(mac) / IP(src=ip, dst=dst, proto=50) / Raw(os.urandom(64)), when)


def vlan_dns_query(mac: str, ip: str, name: str, when: float, vlan: int) -> Packet:
    frame = Ether(src=mac, dst=GATEWAY_MAC) / Dot1Q(vlan=vlan) / IP(src=ip, dst=GATEWAY_IP)
    return at(frame / UDP(sport=40001, dport=53) / DNS(rd=1, qd=DNSQR(qname=name)), when)


def ipv6_dns_query(mac: str, ip: str, name: str, when: float) -> Packet:
    frame = ether(mac) / IPv6(src=ip, dst="fd00:20::1") / UDP(sport=40002, dport=53)
    return at(frame / DNS(rd=1, qd=DNSQR(qname=name)), when)


def write_pcap(path: Path, packets: Sequence[Packet]) -> Path:
    wrpcap(str(path), list(packets))
    return path
