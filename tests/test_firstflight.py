"""The fast path's first-flight check (gateway.firstflight): what a pending connection's client
must send before the kernel carries it, judged from packets as the kernel queues them.

The ClientHellos are real ones (Python's ssl module, in memory), cut into TCP segments as a
client's stack would send them; the a16 cases (a catalogued name at a pupil-resolved address,
SOCKS and SSH on port 443) are among them.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable, Iterator
from ipaddress import ip_address

import pytest

from schoolgate.endpoints.loader import parse_catalog
from schoolgate.gateway.fastpath import FastPathSets
from schoolgate.gateway.fastpath_rules import (
    CHECKED_PACKET,
    FAST_MARK,
    FAST_NAMED,
    FAST_QUEUE,
    NAMED_PACKET,
    REFUSED_PACKET,
    VERIFIED_PACKET,
)
from schoolgate.gateway.firstflight import (
    FIRST_FLIGHT_S,
    MAX_FLOWS,
    VERIFIED_S,
    FirstFlightCheck,
    Verdict,
    parse_segment,
)
from schoolgate.gateway.firstflight_queue import QUEUE_COPY, QueueReader, queue_rules
from schoolgate.sniffer.tlshello import EXT_ECH
from schoolgate.sniffer.tlsretry import HRR_RANDOM
from tests.support.alert_helpers import FakeClock

CATALOG = """
apps:
  chat:
    hosts: [chat.example, "*.chat.example"]
    inspection: full
    when_not_inspectable: block_by_sni
    learn:
      - method: POST
        path: /attachments
        json: "$.upload_url"
        allow_hosts: ["*.uploads.chat-cdn.example"]
        upload: {method: PUT, path: "/**", body: raw}
"""
CLIENT, SERVER, SERVER6, CLIENT6 = "192.0.2.2", "198.51.100.20", "2001:db8::20", "2001:db8::2"
ISN = 0xFFFFFF00  # wraps past 2**32 within the hello: sequence arithmetic is modular
SERVER_ISN = 7777
# A server's first message: a TLS 1.3 ServerHello record (not a HelloRetryRequest).
SERVER_HELLO = (b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03" + bytes(range(32)) + b"\x20"
                + bytes(32) + b"\x13\x01\x00\x00\x2e\x00\x2b\x00\x02\x03\x04"
                + b"\x00\x33\x00\x24\x00\x1d\x00\x20" + bytes(32))  # fmt: skip


def client_hello(server_name: str | None, *, padding: int = 0) -> bytes:
    """The first bytes a real TLS client sends (Python's ssl, no socket)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    return _padded(hello, padding) if padding else hello


def split_around_ccs(hello: bytes, at: int = 40) -> bytes:
    """A hello in two handshake records with a ChangeCipherSpec record between them."""
    body = hello[5:]
    first, rest = body[: at - 5], body[at - 5 :]
    return (b"\x16\x03\x03" + len(first).to_bytes(2, "big") + first + b"\x14\x03\x03\x00\x01\x01"
            + b"\x16\x03\x03" + len(rest).to_bytes(2, "big") + rest)  # fmt: skip


def _padded(record: bytes, extra: int) -> bytes:
    """The same hello with `extra` bytes more in one extension: a post-quantum-sized hello."""
    body = bytearray(record[5:])
    ext_at = _extensions_offset(bytes(body))
    ext_len = int.from_bytes(body[ext_at : ext_at + 2], "big")
    body[ext_at : ext_at + 2] = (ext_len + 4 + extra).to_bytes(2, "big")
    body += struct.pack("!HH", 0x0A0A, extra) + bytes(extra)  # a GREASE extension
    body[1:4] = (len(body) - 4).to_bytes(3, "big")
    return record[:3] + len(body).to_bytes(2, "big") + bytes(body)


def _extensions_offset(handshake: bytes) -> int:
    pos = 4 + 2 + 32
    pos += 1 + handshake[pos]
    pos += 2 + int.from_bytes(handshake[pos : pos + 2], "big")
    pos += 1 + handshake[pos]
    return pos


def with_extension(record: bytes, kind: int) -> bytes:
    """The hello with one more (empty) extension, e.g. ECH's."""
    body = bytearray(record[5:])
    ext_at = _extensions_offset(bytes(body))
    ext_len = int.from_bytes(body[ext_at : ext_at + 2], "big")
    body[ext_at : ext_at + 2] = (ext_len + 4).to_bytes(2, "big")
    body += struct.pack("!HH", kind, 0)
    body[1:4] = (len(body) - 4).to_bytes(3, "big")
    return record[:3] + len(body).to_bytes(2, "big") + bytes(body)


def packet(
    seq: int,
    payload: bytes = b"",
    *,
    flags: int = 0x18,
    source: str = CLIENT,
    destination: str = SERVER,
    sport: int = 40000,
    options: bytes = b"",
) -> bytes:
    """An IPv4 or IPv6 packet carrying one TCP segment (with a timestamps option, as Linux)."""
    options = options or b"\x01\x01\x08\x0a" + bytes(8)
    tcp = struct.pack("!HHIIBBHHH", sport, 443, seq % 2**32, 0, (20 + len(options)) // 4 << 4,
                      flags, 64240, 0, 0) + options + payload  # fmt: skip
    src, dst = ip_address(source), ip_address(destination)
    if src.version == 6:
        return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src.packed + dst.packed + tcp
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0)
    return header + src.packed + dst.packed + tcp


def server_ack(
    acknowledged: int,
    *,
    sport: int = 40000,
    payload: bytes = b"",
    flags: int = 0x10,
    source: str = SERVER,
    destination: str = CLIENT,
    sent: int = 0,
) -> bytes:
    """The server's segment acknowledging `acknowledged` bytes of the client's stream (its
    SYN-ACK with acknowledged=0 and flags=0x12), its payload `sent` bytes into its stream."""
    ack = (ISN + 1 + acknowledged) % 2**32
    options = b"\x01\x01\x08\x0a" + bytes(8)
    seq = SERVER_ISN if flags & 0x02 else SERVER_ISN + 1 + sent
    tcp = struct.pack("!HHIIBBHHH", 443, sport, seq, ack, 8 << 4, flags, 64240, 0, 0)
    tcp += options + payload
    src, dst = ip_address(source), ip_address(destination)
    if src.version == 6:
        return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src.packed + dst.packed + tcp
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0)
    return header + src.packed + dst.packed + tcp


def syn_ack(*, sport: int = 40000, source: str = SERVER, destination: str = CLIENT) -> bytes:
    return server_ack(0, sport=sport, flags=0x12, source=source, destination=destination)


def connection(
    stream: bytes,
    sizes: list[int] | None = None,
    *,
    source: str = CLIENT,
    destination: str = SERVER,
    sport: int = 40000,
) -> Iterator[bytes]:
    """SYN, the server's SYN-ACK, the handshake's ACK, then `stream` in segments of `sizes`
    (the rest in one)."""
    yield packet(ISN, flags=0x02, source=source, destination=destination, sport=sport)
    yield syn_ack(sport=sport, source=destination, destination=source)
    yield packet(ISN + 1, flags=0x10, source=source, destination=destination, sport=sport)
    pos = 0
    for size in [*(sizes or []), len(stream)]:
        if pos >= len(stream):
            break
        yield packet(ISN + 1 + pos, stream[pos : pos + size], source=source,
                     destination=destination, sport=sport)  # fmt: skip
        pos += size


@pytest.fixture
def check() -> FirstFlightCheck:
    sets = FastPathSets(parse_catalog(CATALOG))
    return FirstFlightCheck(lambda name: sets.catalogued([name]))


def verdicts(check: FirstFlightCheck, packets: Iterator[bytes]) -> list[Verdict]:
    return [check.judge(p).verdict for p in packets]


A = Verdict.ACCEPT


# -- what may go on in the kernel -------------------------------------------------------------


def test_a_hello_for_a_name_nobody_catalogued_is_verified_once_the_server_has_it(
    check: FirstFlightCheck,
) -> None:
    hello = client_hello("news.example")
    packets = list(connection(hello))
    assert verdicts(check, iter(packets[:-1])) == [A, A, A]
    judgement = check.judge(packets[-1])
    assert (judgement.verdict, judgement.server_name) == (Verdict.NAMED, "news.example")
    assert judgement.withdraw is None
    assert check.judge(server_ack(0)).verdict is A  # the server has nothing of it yet
    assert check.judge(server_ack(len(hello) - 1)).verdict is A
    assert check.judge(server_ack(len(hello), payload=SERVER_HELLO)).verdict == (Verdict.VERIFIED)
    assert len(check) == 0  # nothing kept once verified
    # the server's next segment, queued before the verdict changed the connection's state
    assert check.judge(server_ack(len(hello), payload=b"\x16\x03\x03" * 400)).verdict is A


def test_a_new_connection_on_the_same_addresses_and_ports_is_judged_afresh(
    check: FirstFlightCheck,
) -> None:
    """Adversarial pass a18 Y1: after a harmless connection was verified, a new one from the
    same port to the same server (curl --local-port) rode its verdict. The client's bytes
    start a new stream: its hello is judged."""
    harmless = client_hello("news.example")
    verdicts(check, connection(harmless))
    assert check.judge(server_ack(len(harmless), payload=SERVER_HELLO)).verdict is Verdict.VERIFIED
    again = [check.judge(p) for p in connection(client_hello("chat.example"))]
    assert again[-1].verdict is Verdict.REFUSED
    assert again[-1].reason == "catalogued server name"
    # and without its SYN (a bare SYN skips the queue)
    verdicts(check, connection(harmless, sport=40001))
    assert check.judge(server_ack(len(harmless), sport=40001, payload=SERVER_HELLO)).verdict is (
        Verdict.VERIFIED
    )
    judgement = check.judge(packet(ISN + 1, client_hello("chat.example"), sport=40001))
    assert judgement.verdict is Verdict.REFUSED
    # the server's memory is short: a late reply long after the verdict is no longer waved on
    clock = FakeClock(start=0.0)
    quick = FirstFlightCheck(lambda name: False, clock=clock)
    verdicts(quick, connection(harmless))
    assert quick.judge(server_ack(len(harmless), payload=SERVER_HELLO)).verdict is Verdict.VERIFIED
    clock.advance(VERIFIED_S + 1)
    assert quick.judge(server_ack(len(harmless), payload=b"x")).reason != (
        "queued before the connection was verified"
    )


def test_an_icmp_error_about_a_connection_is_let_through(check: FirstFlightCheck) -> None:
    """Path MTU discovery needs it, and it carries nothing to the server (a18 N1: one was
    logged as a refusal)."""
    inner = packet(ISN + 1, b"x" * 20)
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + inner[:28]
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0)
    error = header + ip_address(SERVER).packed + ip_address(CLIENT).packed + icmp
    assert check.judge(error).verdict is A


def test_a_hello_the_server_never_got_cannot_stand_in_for_the_one_it_did(
    check: FirstFlightCheck,
) -> None:
    """Adversarial pass a17 X1: a harmless hello in a segment the server drops (a lower TTL, a
    TCP MD5 option, an old timestamp) is read first; the kernel's real hello for a catalogued
    host follows at the same sequence numbers. The server acknowledges only the real one, so
    the connection stays named, and the differing bytes refuse it."""
    fake, real = client_hello("harmless.example"), client_hello("chat.example")
    syn, synack, ack, read = connection(fake)
    assert verdicts(check, iter([syn, synack, ack, read])) == [A, A, A, Verdict.NAMED]
    judgement = check.judge(packet(ISN + 1, real))
    assert (judgement.verdict, judgement.reason) == (Verdict.REFUSED, "resent bytes differ")
    # the same with the real hello cut in two, and a fake one of another length
    syn, synack, ack, read = connection(client_hello("h.example", padding=700), sport=40001)
    assert verdicts(check, iter([syn, synack, ack, read])) == [A, A, A, Verdict.NAMED]
    first = packet(ISN + 1, real[:100], sport=40001)
    assert check.judge(first).verdict is Verdict.REFUSED


def test_bytes_after_a_named_hello_wait_for_the_server_not_the_check(
    check: FirstFlightCheck,
) -> None:
    hello = client_hello("news.example")
    verdicts(check, connection(hello))
    assert check.judge(packet(ISN + 1 + len(hello), b"\x14\x03\x03\x00\x01\x01")).verdict is A
    # out of order, while the server's first message is unread (a retry request would make
    # the next bytes a second hello): held until the gap is filled
    assert check.judge(packet(ISN + 1 + len(hello) + 500, b"early")).verdict is Verdict.HOLD
    assert check.judge(packet(ISN + 1, hello)).verdict is A  # an identical resend
    assert check.judge(server_ack(len(hello) + 6, payload=SERVER_HELLO)).verdict is (
        Verdict.VERIFIED
    )


def test_a_hello_cut_into_segments_is_judged_whole(check: FirstFlightCheck) -> None:
    """A post-quantum ClientHello spans two or three segments; the name may sit in any."""
    hello = client_hello("news.example", padding=2400)
    assert len(hello) > 2800
    got = verdicts(check, connection(hello, [1200, 1200]))
    assert got == [A, A, A, A, A, Verdict.NAMED]
    assert check.judge(server_ack(len(hello), payload=SERVER_HELLO)).verdict is Verdict.VERIFIED


def test_ipv6_is_checked_the_same_way_but_its_addresses_are_never_withdrawn(
    check: FirstFlightCheck,
) -> None:
    """Adversarial pass a27: the proxy listens on IPv4 only, so a withdrawn IPv6 address was
    unreachable for every device for an hour, at one pupil's `curl -6 --resolve`."""
    assert verdicts(check, connection(client_hello("news.example"), source=CLIENT6,
                                      destination=SERVER6))[-1] == Verdict.NAMED  # fmt: skip
    hello = client_hello("chat.example")
    refused = [check.judge(p) for p in connection(hello, source=CLIENT6, destination=SERVER6,
                                                  sport=40001)][-1]  # fmt: skip
    assert (refused.verdict, refused.withdraw) == (Verdict.REFUSED, None)
    refused = [check.judge(p) for p in connection(hello, sport=40002)][-1]
    assert (refused.verdict, refused.withdraw) == (Verdict.REFUSED, SERVER)  # IPv4: the proxy's


def test_bytes_in_a_syn_are_refused(check: FirstFlightCheck) -> None:
    """Adversarial pass a22 T2: TCP Fast Open. The first bytes of a catalogued name's hello rode
    in the SYN, the server took them, and the check, starting at the SYN-ACK's acknowledgement,
    read a harmless hello hidden further on (in an ALPN name) and verified the connection. Which
    start the SYN-ACK confirms cannot be told from a bare SYN's (unqueued) placed past the SYN's
    bytes, so bytes in a SYN are refused. The address stays on the fast path (a24: one pupil's
    SYN took an IPv6 address from everyone for an hour); the ruleset clears the Fast Open
    option, so ordinary clients never put bytes in a SYN."""
    real = client_hello("chat.example")
    refused = check.judge(packet(ISN, real[:200], flags=0x02))
    assert (refused.verdict, refused.withdraw) == (Verdict.REFUSED, None)
    assert refused.reason == "bytes in a SYN (TCP Fast Open)"
    # and a whole harmless hello in a SYN too: nothing about a SYN's bytes is trusted
    harmless = check.judge(packet(ISN, client_hello("news.example"), flags=0x02, sport=40001))
    assert harmless.verdict is Verdict.REFUSED


DSS = bytes([30, 12, 0x20, 0x03]) + bytes(8)  # a multipath TCP data-sequence option


@pytest.mark.parametrize(
    "options",
    [
        DSS,
        b"\x01\x01\x08\x0a" + bytes(8) + DSS,  # after the timestamps
        b"\x01" * 4 + DSS,  # after padding
    ],
)
def test_a_multipath_tcp_segment_is_refused(check: FirstFlightCheck, options: bytes) -> None:
    """Adversarial pass a24: with multipath TCP a server's application reads bytes by their
    data-level sequence numbers, so a harmless hello the check read, and the server acknowledged,
    was not what it read. The ruleset clears the option from SYNs; a segment that carries one
    anyway is refused, the address kept (the pupil's own doing)."""
    hello = client_hello("news.example")
    verdicts(check, iter(list(connection(hello))[:3]))
    refused = check.judge(packet(ISN + 1, hello, options=options))
    assert (refused.verdict, refused.reason, refused.withdraw) == (
        Verdict.REFUSED, "multipath TCP", None
    )  # fmt: skip
    # an unknown option is no reason, nor a malformed length that ends the walk
    for other in (bytes([99, 4, 0, 0]), bytes([8, 0, 30, 4])):
        fresh = FirstFlightCheck(lambda name: False)
        verdicts(fresh, iter(list(connection(hello, sport=40002))[:3]))
        assert fresh.judge(packet(ISN + 1, hello, options=other, sport=40002)).verdict is (
            Verdict.NAMED
        )


RETRY_REQUEST = b"\x16\x03\x03\x00\x58\x02\x00\x00\x54\x03\x03" + HRR_RANDOM + b"\x20"
CCS = b"\x14\x03\x03\x00\x01\x01"


def test_a_second_hello_after_a_retry_request_must_name_the_same_server(
    check: FirstFlightCheck,
) -> None:
    """Adversarial pass a25 H1: the server's HelloRetryRequest asked for a second hello, which
    named a catalogued server; OpenSSL 3.0 took it. The second hello is read now: another name
    is refused and the address withdrawn; the same name is the hello the server must then
    acknowledge before the connection is verified."""
    first = client_hello("news.example")
    verdicts(check, connection(first))
    retry = check.judge(server_ack(len(first), payload=RETRY_REQUEST))
    assert retry.verdict is A  # the retry request goes to the client, nothing is verified
    other = CCS + client_hello("chat.example")
    refused = check.judge(packet(ISN + 1 + len(first), other))
    assert (refused.verdict, refused.withdraw) == (Verdict.REFUSED, SERVER)
    assert "names chat.example" in refused.reason

    same = CCS + client_hello("news.example")
    verdicts(check, connection(first, sport=40001))
    assert check.judge(server_ack(len(first), sport=40001, payload=RETRY_REQUEST)).verdict is A
    assert check.judge(packet(ISN + 1 + len(first), same, sport=40001)).verdict is A
    # the first hello acknowledged again is not enough: the second is what the server reads
    after_retry = len(RETRY_REQUEST)
    assert check.judge(server_ack(len(first), sport=40001, sent=after_retry)).verdict is A
    answer = server_ack(len(first) + len(same), sport=40001, payload=SERVER_HELLO,
                        sent=after_retry)  # fmt: skip
    assert check.judge(answer).verdict is Verdict.VERIFIED


def test_a_servers_answer_to_a_second_hello_not_read_whole_never_reaches_the_client(
    check: FirstFlightCheck,
) -> None:
    """Adversarial pass a34: a second hello the check could not read whole (split around a
    ChangeCipherSpec, which OpenSSL skips) was read by the server, and the check waited while
    the handshake and an upload went past. A server says nothing after its retry request until
    it has a hello, so its answer while the check still waits is refused, address withdrawn."""
    first = client_hello("news.example")
    verdicts(check, connection(first))
    whole_retry = RETRY_REQUEST + bytes(0x58 + 5 - len(RETRY_REQUEST))
    assert check.judge(server_ack(len(first), payload=whole_retry + CCS)).verdict is A
    second = CCS + client_hello("chat.example")
    assert check.judge(packet(ISN + 1 + len(first), second[:60])).verdict is A
    answer = server_ack(len(first) + 60, payload=SERVER_HELLO, sent=len(whole_retry + CCS))
    refused = check.judge(answer)
    assert (refused.verdict, refused.withdraw) == (Verdict.REFUSED, SERVER)
    assert "not read whole" in refused.reason
    assert len(check) == 0


def test_a_second_hello_sent_before_the_retry_request_is_judged_when_it_comes(
    check: FirstFlightCheck,
) -> None:
    """Both hellos at once, then the server's retry request: refused at the request, which
    never reaches the client."""
    first = client_hello("news.example")
    verdicts(check, connection(first + CCS + client_hello("chat.example")))
    refused = check.judge(server_ack(len(first), payload=RETRY_REQUEST))
    assert refused.verdict is Verdict.REFUSED


def test_the_servers_first_message_is_read_before_the_connection_is_verified(
    check: FirstFlightCheck,
) -> None:
    """A pupil's small MSS makes the server send its first message in small pieces: no
    verdict until the piece that tells a ServerHello from a retry request has been read. The
    pieces before are read and held back from the client (the server sends them again), so
    that an alert in place of a refused answer would reach it at a record's start."""
    hello = client_hello("news.example")
    verdicts(check, connection(hello))
    first = server_ack(len(hello), payload=SERVER_HELLO[:20])
    assert check.judge(first).verdict is Verdict.HOLD
    rest = server_ack(len(hello), payload=SERVER_HELLO[20:], sent=20)
    assert check.judge(rest).verdict is Verdict.VERIFIED
    assert check.judge(first).verdict is A  # sent again: let through


# -- what meets the proxy instead --------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        # a16 F1/F2: the pupil's name put the address in the fast set; the client names the app
        (client_hello("chat.example"), "catalogued server name"),
        (client_hello("WEB.Chat.Example."), "catalogued server name"),
        # an upload host a learn rule may hand out is the app's before any reply names it
        (client_hello("eu1.uploads.chat-cdn.example"), "catalogued server name"),
        (client_hello(None), "no server name"),
        (with_extension(client_hello("chat.example"), EXT_ECH), "catalogued server name"),
        # a16 F3: SOCKS5 and SSH on port 443 of a fast-pathed address; plain HTTP on 443
        (b"\x05\x01\x00", "not TLS"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "not TLS"),
        (b"POST /upload HTTP/1.1\r\nHost: chat.example\r\n\r\n", "not TLS"),
        # a34: a hello split around a ChangeCipherSpec record, which OpenSSL skips
        (split_around_ccs(client_hello("chat.example")), "not TLS"),
        # a record that never ends: past 20 KiB it is not a ClientHello
        (
            (
                b"\x16\x03\x01\x40\x00\x01\x00\xff\xf0".ljust(16_389, b"\0")
                + b"\x16\x03\x01\x40\x00"
            ).ljust(20_580, b"\0"),
            "no ClientHello in",
        ),
    ],
)
def test_anything_else_is_refused_and_its_address_withdrawn(
    check: FirstFlightCheck, stream: bytes, reason: str
) -> None:
    judgements = [check.judge(p) for p in connection(stream, [1400] * 20)]
    assert [j.verdict for j in judgements[:-1]] == [A] * (len(judgements) - 1)
    assert judgements[-1].verdict is Verdict.REFUSED
    assert judgements[-1].reason.startswith(reason)
    assert judgements[-1].withdraw == SERVER
    assert len(check) == 0


def test_a_refused_connections_resends_wait_for_its_withdrawal() -> None:
    """The service resets a connection refused with a withdrawal once the withdrawal is
    written, which may wait for the session book's turn (up to two seconds, a37 R3); a resend
    meanwhile, reset at once as a connection the check does not know, would send the client's
    retry down the fast path again. Resends are held (the client sends them again) instead,
    for a few seconds at most."""
    now = [0.0]
    sets = FastPathSets(parse_catalog(CATALOG))
    check = FirstFlightCheck(lambda name: sets.catalogued([name]), clock=lambda: now[0])
    stream = b"SSH-2.0-OpenSSH_9.6\r\n"
    judgements = [check.judge(p) for p in connection(stream)]
    assert judgements[-1].verdict is Verdict.REFUSED
    assert judgements[-1].withdraw == SERVER
    resend = packet(ISN + 1, stream)
    now[0] = 1.5
    assert check.judge(resend).verdict is Verdict.HOLD
    now[0] = 10.0  # long after: a connection the check does not know, refused as before
    assert check.judge(resend).verdict is Verdict.REFUSED


def test_bytes_before_the_hello_is_whole_are_let_through_but_nothing_after(
    check: FirstFlightCheck,
) -> None:
    """The first half of a hello reaches the server (it can answer nothing yet); the half that
    names a catalogued app is refused, so the handshake never completes."""
    got = verdicts(check, connection(client_hello("chat.example", padding=2400), [1200]))
    assert got == [A, A, A, A, Verdict.REFUSED]


# -- a client (or a pupil) playing with TCP ----------------------------------------------------


def test_a_later_segment_first_is_held_until_the_gap_is_filled(check: FirstFlightCheck) -> None:
    """Judging from the later segment would let the server read a different first one."""
    syn, synack, ack, first, second = connection(client_hello("news.example", padding=1500), [1000])
    assert verdicts(check, iter([syn, synack, ack, second])) == [A, A, A, Verdict.HOLD]
    assert verdicts(check, iter([first, second])) == [A, Verdict.NAMED]


def test_a_resent_segment_that_differs_is_refused(check: FirstFlightCheck) -> None:
    """Overlapping segments with different bytes: which copy the server keeps is its own."""
    hello = client_hello("news.example", padding=1500)
    syn, synack, ack, first, _ = connection(hello, [1000])
    assert verdicts(check, iter([syn, synack, ack, first])) == [A, A, A, A]
    forged = packet(ISN + 1, hello[:900] + b"X" * 100)
    assert check.judge(forged).verdict is Verdict.REFUSED
    assert check.judge(forged).withdraw is None


def test_an_identical_resend_is_harmless(check: FirstFlightCheck) -> None:
    hello = client_hello("news.example", padding=1500)
    syn, synack, ack, first, second = connection(hello, [1000])
    sent = [syn, synack, ack, first, first, syn, synack, second]
    assert verdicts(check, iter(sent)) == [A] * 7 + [Verdict.NAMED]


def test_the_servers_syn_ack_places_the_stream(check: FirstFlightCheck) -> None:
    """A client's bare SYN skips the queue; the server's SYN-ACK says where the stream starts.
    Without it (a restarted service) bytes cannot be placed, and are refused without
    withdrawing anything."""
    hello = client_hello("news.example")
    judgement = check.judge(packet(ISN + 1, hello))
    assert (judgement.verdict, judgement.reason, judgement.withdraw) == (
        Verdict.REFUSED, "no start seen", None
    )  # fmt: skip
    assert check.judge(syn_ack(sport=40001)).verdict is A
    assert check.judge(packet(ISN + 1, hello, sport=40001)).verdict is Verdict.NAMED
    assert check.judge(server_ack(len(hello), sport=40001, payload=SERVER_HELLO)).verdict is (
        Verdict.VERIFIED
    )


def test_a_hello_placed_before_the_streams_start_is_refused(check: FirstFlightCheck) -> None:
    """Adversarial pass a19 Z1: a harmless hello ending exactly at the stream's start, which
    the server drops as a duplicate and acknowledges up to its start, read as if the stream
    began there. The SYN-ACK placed the start: the hello lies before it."""
    fake = client_hello("harmless.example")
    assert check.judge(syn_ack()).verdict is A
    judgement = check.judge(packet(ISN + 1 - len(fake), fake))
    assert judgement.verdict is Verdict.REFUSED
    assert judgement.reason == "bytes from before the connection began"


def test_a_made_up_syn_cannot_move_a_confirmed_start(check: FirstFlightCheck) -> None:
    """a19 Z1b: after the handshake, a second SYN (queued: unusual options) claims a start
    before the real one, so that the hello before the real start looks like the stream's."""
    fake = client_hello("harmless.example")
    assert verdicts(check, iter([packet(ISN, flags=0x02), syn_ack()])) == [A, A]
    made_up = (ISN - len(fake)) % 2**32
    assert check.judge(packet(made_up, flags=0x02)).verdict is A  # ignored
    assert check.judge(packet(made_up + 1, fake)).verdict is Verdict.REFUSED


def test_a_server_that_acknowledged_two_starts_has_its_connection_refused(
    check: FirstFlightCheck,
) -> None:
    """Adversarial pass a20 C1: a server answering with SYN cookies acknowledges every SYN,
    keeps no state, and lets the client's bare (unread) ACK pick the start it keeps; a second
    SYN-ACK for a start placed before the first made the check read a hello the server took
    for a duplicate. Which start is real cannot be known: the connection is refused."""
    fake = client_hello("harmless.example")
    made_up = (ISN - len(fake)) % 2**32
    check.judge(packet(ISN, flags=0x02))
    assert check.judge(syn_ack()).verdict is A
    check.judge(packet(made_up, flags=0x02))
    assert check.judge(server_ack(-len(fake), flags=0x12)).verdict is A  # the second SYN-ACK
    refused = check.judge(packet(made_up + 1, fake))
    assert (refused.verdict, refused.withdraw) == (Verdict.REFUSED, None)
    assert refused.reason == "the server acknowledged two starts"
    # a retransmitted SYN-ACK for the same start is no contest
    check.judge(packet(ISN, flags=0x02, sport=40001))
    check.judge(syn_ack(sport=40001))
    check.judge(syn_ack(sport=40001))
    hello = client_hello("news.example")
    assert check.judge(packet(ISN + 1, hello, sport=40001)).verdict is Verdict.NAMED


def test_a_packet_the_queue_copied_in_part_is_refused(check: FirstFlightCheck) -> None:
    """Adversarial pass a20 D1: IPv4 fragments that conntrack reassembled into one segment
    longer than the queue copies (QUEUE_COPY): its end cannot be read."""
    check.judge(packet(ISN, flags=0x02))
    check.judge(syn_ack())
    whole = packet(ISN + 1, client_hello("news.example", padding=6000))
    judged = check.judge(whole[:QUEUE_COPY])
    assert (judged.verdict, judged.reason) == (
        Verdict.REFUSED,
        "a packet longer than the queue copies",
    )


def test_bytes_before_the_stream_began_are_refused(check: FirstFlightCheck) -> None:
    check.judge(next(connection(b"")))
    assert check.judge(packet(ISN - 100, client_hello("news.example"))).verdict == (Verdict.REFUSED)


def test_a_reset_forgets_the_connection(check: FirstFlightCheck) -> None:
    syn, synack, ack, first, _ = connection(client_hello("news.example", padding=1500), [1000])
    verdicts(check, iter([syn, synack, ack, first]))
    assert len(check) == 1
    assert check.judge(packet(ISN + 1001, flags=0x04)).verdict is A
    assert len(check) == 0


def test_quiet_and_surplus_connections_are_forgotten() -> None:
    clock = FakeClock(start=0.0)
    check = FirstFlightCheck(lambda name: False, clock=clock)
    check.judge(packet(ISN, flags=0x02, sport=1))
    clock.advance(FIRST_FLIGHT_S + 1)
    check.judge(packet(ISN, flags=0x02, sport=2))
    assert len(check) == 1  # the quiet one went
    for port in range(3, MAX_FLOWS + 10):
        check.judge(packet(ISN, flags=0x02, sport=port % 65536))
    assert len(check) == MAX_FLOWS
    check.judge(packet(ISN + 1, b"\x16", sport=2))  # forgotten: starts again, still bounded
    assert len(check) == MAX_FLOWS


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x45" + bytes(10),  # an IPv4 header cut short
        # an IPv4 fragment (conntrack reassembles before the forward hook; never trusted)
        packet(ISN, b"x")[:6] + b"\x20\x00" + packet(ISN, b"x")[8:],
        # an IPv6 extension header (next header 0: hop-by-hop) before TCP
        packet(ISN, b"x", source=CLIENT6, destination=SERVER6)[:6]
        + b"\x00"
        + packet(ISN, b"x", source=CLIENT6, destination=SERVER6)[7:],
        packet(ISN, b"x")[:32] + b"\xf0" + packet(ISN, b"x")[33:],  # data offset past the end
    ],
)
def test_packets_the_check_cannot_read_are_refused(check: FirstFlightCheck, raw: bytes) -> None:
    assert parse_segment(raw) is None
    assert check.judge(raw).verdict is Verdict.REFUSED


# -- the queue's reader and its rule ------------------------------------------------------------


class FakePacket:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.mark: int | None = None
        self.verdict = ""

    def get_payload(self) -> bytes:
        return self.payload

    def set_payload(self, payload: bytes) -> None:
        self.payload = payload

    def set_mark(self, mark: int) -> None:
        self.mark = mark

    def accept(self) -> None:
        self.verdict = "accept"

    def drop(self) -> None:
        self.verdict = "drop"


def test_the_reader_answers_every_packet_with_the_mark_the_ruleset_expects(
    check: FirstFlightCheck,
) -> None:
    withdrawn: list[str] = []
    written: list[Callable[[], None]] = []

    def withdraw(address: str, then: Callable[[], None]) -> None:
        withdrawn.append(address)
        written.append(then)

    reader = QueueReader(check, withdraw)
    syn, synack, ack, first, second = connection(client_hello("chat.example", padding=1500), [1000])
    answered = []
    for raw in (syn, synack, ack, second, first, second):
        queued = FakePacket(raw)
        reader(queued)
        answered.append((queued.verdict, queued.mark))
    # the refusal waits until the address is off the fast path: a retry at once meets the proxy
    assert answered == [("accept", CHECKED_PACKET), ("accept", CHECKED_PACKET),
                        ("accept", CHECKED_PACKET), ("drop", None), ("accept", CHECKED_PACKET),
                        ("", None)]  # fmt: skip
    assert withdrawn == [SERVER]
    written.pop()()
    assert (queued.verdict, queued.mark) == ("accept", REFUSED_PACKET)
    hello = client_hello("news.example")
    queued = FakePacket(list(connection(hello, sport=40001))[-1])
    reader(FakePacket(packet(ISN, flags=0x02, sport=40001)))
    reader(FakePacket(syn_ack(sport=40001)))
    reader(queued)
    assert (queued.verdict, queued.mark) == ("accept", NAMED_PACKET)
    queued = FakePacket(server_ack(len(hello), sport=40001, payload=SERVER_HELLO))
    reader(queued)
    assert (queued.verdict, queued.mark) == ("accept", VERIFIED_PACKET)
    assert reader.counts == {"accept": 6, "hold": 1, "named": 1, "verified": 1, "refused": 1}


def test_a_failing_check_refuses_rather_than_passes() -> None:
    def broken(name: str) -> bool:
        raise RuntimeError("a bug")

    reader = QueueReader(FirstFlightCheck(broken), lambda address, then: then())
    syn, synack, ack, hello = connection(client_hello("news.example"))
    for raw in (syn, synack, ack):
        reader(FakePacket(raw))
    queued = FakePacket(hello)
    reader(queued)
    assert (queued.verdict, queued.mark) == ("accept", REFUSED_PACKET)


def test_the_queue_rules_read_only_unread_packets_of_pending_and_named_connections() -> None:
    pending, syn_acks, named = (" ".join(rule) for rule in queue_rules())
    assert f"--mark {FAST_MARK:#x}" in pending
    assert "--ctdir ORIGINAL" in pending  # the client's side only, until the hello is read
    assert f"--mark {FAST_MARK:#x}" in syn_acks  # and the server's SYN-ACK, which places it
    assert "--tcp-flags SYN,ACK SYN,ACK" in syn_acks
    assert "--ctdir REPLY" in syn_acks
    assert f"--mark {FAST_NAMED:#x}" in named
    assert "--ctdir" not in named  # both ways: the server's acknowledgement is read too
    for rule in (pending, syn_acks, named):
        assert "-m mark --mark 0" in rule
        assert rule.endswith(f"-j NFQUEUE --queue-num {FAST_QUEUE}")
        assert "bypass" not in rule  # no reader: dropped, never passed unread


def test_urgent_data_and_two_server_names_are_refused(check: FirstFlightCheck) -> None:
    """The server takes an urgent byte out of its stream; and a hello with two names could be
    read by the filter at the first and by the server at the second (a17 X4)."""
    verdicts(check, connection(b""))
    assert check.judge(packet(ISN + 1, client_hello("news.example"), flags=0x38)).verdict == (
        Verdict.REFUSED
    )
    hello = bytearray(client_hello("aaaa.example"))
    at = hello.index(b"aaaa.example")
    # the server_name list: one entry (type 0, length 12, name) becomes two of 5 bytes each
    hello[at - 3 : at + 12] = b"\x00\x00\x04a.ex" + b"\x00\x00\x05b.exa"
    verdicts(check, connection(b"", sport=40001))
    judgement = check.judge(packet(ISN + 1, bytes(hello), sport=40001))
    assert judgement.verdict is Verdict.REFUSED
