"""The fast path's check and TLS <= 1.2 session resumption (adversarial pass a27 R12): a
session the gateway did not see issued under the hello's name is refused with an alert the
client gets in place of the server's answer; one it saw issued is let go. Real OpenSSL
handshakes made in memory (tests.test_tlsresume), carried in hand-made packets."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from schoolgate.gateway.alertpacket import alert_packet
from schoolgate.gateway.fastpath_rules import TOLD_PACKET
from schoolgate.gateway.firstflight import FirstFlightCheck, Verdict
from schoolgate.gateway.firstflight_queue import QueueReader
from schoolgate.sniffer.tlshello import complete_client_hello
from schoolgate.sniffer.tlsresume import ACCESS_DENIED_ALERT
from tests.test_firstflight import (
    CLIENT6,
    ISN,
    SERVER6,
    SERVER_ISN,
    FakePacket,
    connection,
    packet,
    server_ack,
)
from tests.test_tlsresume import CATALOGUED, HARMLESS, Handshake, contexts, handshake

__all__ = ["contexts"]  # the fixture, shared

type Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


def hello_length(made: Handshake) -> int:
    whole = complete_client_hello(made.client)
    assert whole is not None
    return whole[1]


def open_named(check: FirstFlightCheck, made: Handshake, sport: int) -> int:
    """SYN to hello of `made`'s connection, judged; the hello's length."""
    end = hello_length(made)
    judged = [check.judge(p).verdict for p in connection(made.client[:end], sport=sport)]
    assert judged[-1] is Verdict.NAMED
    return end


def test_a_session_made_elsewhere_is_refused_with_an_alert(contexts: Contexts) -> None:
    server, client = contexts
    check = FirstFlightCheck(lambda name: name == CATALOGUED)
    home = handshake(server, client, CATALOGUED)  # outside school: the book never saw it
    at_school = handshake(server, client, HARMLESS, home.session)
    assert at_school.reused
    end = open_named(check, at_school, 40100)
    answer = server_ack(end, sport=40100, payload=at_school.first_flight)
    judged = check.judge(answer)
    assert (judged.verdict, judged.alert) == (Verdict.REFUSED, True)
    assert "not issued under news.example" in judged.reason
    # the queue's reader turns the server's packet into the alert, and the ruleset's mark
    reader = QueueReader(FirstFlightCheck(lambda name: name == CATALOGUED), _no_withdraw)
    for raw in connection(at_school.client[:end], sport=40100):
        reader(FakePacket(raw))
    queued = FakePacket(answer)
    reader(queued)
    assert (queued.verdict, queued.mark) == ("accept", TOLD_PACKET)
    told = IP(queued.payload)
    assert bytes(told[TCP].payload) == ACCESS_DENIED_ALERT
    assert told[TCP].flags.F


def test_a_session_issued_through_the_check_resumes_under_its_name(contexts: Contexts) -> None:
    server, client = contexts
    check = FirstFlightCheck(lambda name: name == CATALOGUED)
    made = handshake(server, client, HARMLESS)
    end = open_named(check, made, 40200)
    flight = len(made.first_flight)
    # the server's first flight: the connection stays read, for the ticket it promised
    first = check.judge(server_ack(end, sport=40200, payload=made.first_flight))
    assert first.verdict is Verdict.ACCEPT
    rest = made.client[end:]
    assert check.judge(packet(ISN + 1 + end, rest, sport=40200)).verdict is Verdict.ACCEPT
    last = server_ack(end + len(rest), sport=40200, payload=made.server[flight:], sent=flight)
    assert check.judge(last).verdict is Verdict.VERIFIED
    assert len(check.sessions) >= 1
    # its resumption under the same name is let go, under another refused
    again = handshake(server, client, HARMLESS, made.session)
    assert again.reused
    end = open_named(check, again, 40201)
    answer = server_ack(end, sport=40201, payload=again.first_flight)
    assert check.judge(answer).verdict is Verdict.VERIFIED
    other = handshake(server, client, CATALOGUED.replace("media", "other"), made.session)
    end = open_named(check, other, 40202)
    answer = server_ack(end, sport=40202, payload=other.first_flight)
    assert check.judge(answer).verdict is Verdict.REFUSED


def test_the_servers_bytes_are_read_in_order_and_the_client_waits_for_them(
    contexts: Contexts,
) -> None:
    server, client = contexts
    check = FirstFlightCheck(lambda name: name == CATALOGUED)
    home = handshake(server, client, CATALOGUED)
    at_school = handshake(server, client, HARMLESS, home.session)
    end = open_named(check, at_school, 40300)
    flight = at_school.first_flight
    hello = 5 + int.from_bytes(flight[3:5], "big")
    # a gap: the later bytes wait for the missing ones (the server sends them again)
    later = server_ack(end, sport=40300, payload=flight[hello:], sent=hello)
    assert check.judge(later).verdict is Verdict.HOLD
    # only the ServerHello (its id is the offered one: that alone shows a resumption)
    assert check.judge(server_ack(end, sport=40300, payload=flight[:hello])).verdict is (
        Verdict.REFUSED
    )


def test_a_client_that_sends_before_the_server_shows_a_resumption_is_held(
    contexts: Contexts,
) -> None:
    server, client = contexts
    check = FirstFlightCheck(lambda name: name == CATALOGUED)
    made = handshake(server, client, HARMLESS)  # a new session: no echo to go by
    end = open_named(check, made, 40400)
    hello = 5 + int.from_bytes(made.first_flight[3:5], "big")
    shown = server_ack(end, sport=40400, payload=made.first_flight[:hello])
    assert check.judge(shown).verdict is Verdict.HOLD  # read, held back: not judged yet
    early = packet(ISN + 1 + end, b"\x17\x03\x03\x00\x05upload", sport=40400)
    assert check.judge(early).verdict is Verdict.HOLD


def test_the_alert_goes_where_the_clients_stream_stands(contexts: Contexts) -> None:
    """a29: with the server's answer in tiny segments the client got part of the ServerHello
    and then the alert's bytes inside it. The pieces are held back until judged, and the alert
    goes at the start of the server's stream."""
    server, client = contexts
    check = FirstFlightCheck(lambda name: name == CATALOGUED)
    home = handshake(server, client, CATALOGUED)
    at_school = handshake(server, client, HARMLESS, home.session)
    end = open_named(check, at_school, 40500)
    flight = at_school.first_flight
    assert check.judge(server_ack(end, sport=40500, payload=flight[:30])).verdict is (Verdict.HOLD)
    judged = check.judge(server_ack(end, sport=40500, payload=flight[30:], sent=30))
    assert (judged.verdict, judged.alert_at) == (Verdict.REFUSED, SERVER_ISN + 1)


def test_the_alert_packet_is_a_well_formed_segment() -> None:
    raw = server_ack(10, payload=b"\x16\x03\x03" + bytes(200))
    told = IP(alert_packet(raw))
    again = IP(bytes(told))
    del again.chksum
    del again[TCP].chksum
    again = IP(bytes(again))  # scapy computes both checksums afresh
    assert (told.chksum, told.len) == (again.chksum, 20 + 32 + len(ACCESS_DENIED_ALERT))
    assert told[TCP].chksum == again[TCP].chksum
    assert (told[TCP].seq, told[TCP].options) == (IP(raw)[TCP].seq, IP(raw)[TCP].options)
    assert bytes(told[TCP].payload) == ACCESS_DENIED_ALERT
    raw6 = server_ack(10, payload=b"\x16" * 300, source=SERVER6, destination=CLIENT6)
    told6 = IPv6(alert_packet(raw6))
    again6 = IPv6(bytes(told6))
    del again6[TCP].chksum
    again6 = IPv6(bytes(again6))
    assert told6.plen == 32 + len(ACCESS_DENIED_ALERT)
    assert told6[TCP].chksum == again6[TCP].chksum
    assert bytes(told6[TCP].payload) == ACCESS_DENIED_ALERT


def _no_withdraw(address: str, then: Callable[[], None]) -> None:
    raise AssertionError(f"a refused resumption withdrew {address}")
