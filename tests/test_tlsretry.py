"""sniffer.tlsretry: the second ClientHello a HelloRetryRequest asks for must name the same
server (adversarial pass a25 H1)."""

from __future__ import annotations

import pytest

from schoolgate.sniffer.tlshello import Malformed, complete_client_hello
from schoolgate.sniffer.tlsretry import HRR_RANDOM, MAX_WATCHED, RetryWatch, Watch
from tests.test_firstflight import SERVER_HELLO, client_hello, split_around_ccs

RETRY = b"\x16\x03\x03\x00\x58\x02\x00\x00\x54\x03\x03" + HRR_RANDOM + b"\x20"
CCS = b"\x14\x03\x03\x00\x01\x01"
WHOLE_RETRY = RETRY + bytes(0x58 - len(RETRY) + 5)  # the request's whole record


def watch_of(first: str | None, server: bytes, client: bytes = b"") -> Watch:
    watch = RetryWatch(first)
    watch.client(client)
    watch.server(server)
    return watch.verdict().watch


def test_a_server_hello_ends_the_watch_and_a_retry_request_waits_for_the_second_hello() -> None:
    assert watch_of("news.example", SERVER_HELLO) is Watch.DONE
    assert watch_of("news.example", SERVER_HELLO[:30]) is Watch.WAIT  # not yet decidable
    assert watch_of("news.example", b"\x15\x03\x03\x00\x02\x02\x28") is Watch.DONE  # an alert
    assert watch_of("news.example", RETRY) is Watch.WAIT


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (CCS + client_hello("news.example"), Watch.DONE),
        (client_hello("news.example"), Watch.DONE),  # without the compatibility record
        (CCS + client_hello("NEWS.example."), Watch.DONE),  # the same name, spelt otherwise
        (CCS + client_hello("chat.example"), Watch.REFUSE),
        (CCS + client_hello(None), Watch.REFUSE),  # no name the second time
        (CCS + b"\x17\x03\x03\x00\x05hello", Watch.REFUSE),  # not a hello at all
        (CCS + client_hello("chat.example")[:40], Watch.WAIT),  # still arriving
    ],
    ids=["same", "no-ccs", "same-spelt-otherwise", "another", "none", "not-a-hello", "partial"],
)
def test_the_second_hello_must_name_the_first_ones_server(second: bytes, expected: Watch) -> None:
    assert watch_of("news.example", RETRY, second) is expected


def test_a_hello_that_came_before_the_retry_request_is_judged_with_it() -> None:
    watch = RetryWatch("news.example")
    watch.client(CCS + client_hello("chat.example"))
    assert watch.verdict().watch is Watch.WAIT  # the server has not answered yet
    watch.server(RETRY)
    verdict = watch.verdict()
    assert verdict.watch is Watch.REFUSE
    assert verdict.second is not None
    assert verdict.second.sni == "chat.example"


def test_bytes_past_the_limit_without_a_second_hello_are_refused() -> None:
    watch = RetryWatch("news.example")
    watch.server(RETRY)
    watch.client(b"\x14\x03\x03\xff\xff" + bytes(MAX_WATCHED))
    assert watch.verdict().watch is Watch.REFUSE


@pytest.mark.parametrize("name", ["chat.example", "news.example"])
def test_a_second_hello_interrupted_by_another_record_is_refused(name: str) -> None:
    """Adversarial pass a34: OpenSSL skips a ChangeCipherSpec record inside a hello, so a
    second hello split around one was whole to the server and never to the watch, which waited
    while the handshake and a banked upload went past. An interrupted hello is refused, even
    one that names the same server: no ordinary client sends one."""
    watch = RetryWatch("news.example")
    watch.server(RETRY)
    watch.client(CCS + split_around_ccs(client_hello(name)))
    verdict = watch.verdict()
    assert verdict.watch is Watch.REFUSE
    assert "type 20 inside the ClientHello" in verdict.reason


def test_a_server_that_answers_a_second_hello_the_watch_has_not_read_whole_is_refused() -> None:
    """Whatever else could make a server read a hello the watch has not: the server says
    nothing after its retry request (and a ChangeCipherSpec) until it has one, so anything more
    while the watch still waits is an answer to a hello nobody judged."""
    second = CCS + client_hello("chat.example")
    watch = RetryWatch("news.example")
    watch.server(WHOLE_RETRY)
    watch.client(second[:40])
    assert watch.verdict().watch is Watch.WAIT
    assert watch.verdict().unjudged  # a relay that can keep these bytes from the server does
    watch.server(CCS)  # middlebox compatibility: still waiting for the hello
    assert watch.verdict().watch is Watch.WAIT
    watch.server(SERVER_HELLO)
    verdict = watch.verdict()
    assert verdict.watch is Watch.REFUSE
    assert "not read whole" in verdict.reason


def test_a_retry_request_arriving_with_more_handshake_bytes_is_an_answer_too() -> None:
    watch = RetryWatch("news.example")
    watch.server(RETRY[:20])
    watch.server(WHOLE_RETRY[20:] + SERVER_HELLO[:10])
    assert watch.verdict().watch is Watch.REFUSE
    ordinary = RetryWatch("news.example")
    ordinary.server(WHOLE_RETRY + CCS)
    verdict = ordinary.verdict()
    assert (verdict.watch, verdict.unjudged) == (Watch.WAIT, True)
    ordinary.client(CCS + client_hello("news.example"))
    assert ordinary.verdict().watch is Watch.DONE
    assert not ordinary.verdict().unjudged


def test_a_second_hello_in_the_first_ones_record_is_refused() -> None:
    """Both hellos in one record: the first hello's end is its record's, so a watch fed the
    bytes after it would never see the second; no client sends more handshake bytes there."""
    first, second = client_hello("news.example"), client_hello("chat.example")
    both = first[5:] + second[5:]
    with pytest.raises(Malformed, match="more handshake bytes after the ClientHello"):
        complete_client_hello(b"\x16\x03\x01" + len(both).to_bytes(2, "big") + both)
    assert complete_client_hello(first + second) is not None  # records of their own: judged
