"""sniffer.tlsretry: the second ClientHello a HelloRetryRequest asks for must name the same
server (adversarial pass a25 H1)."""

from __future__ import annotations

import pytest

from schoolgate.sniffer.tlsretry import HRR_RANDOM, MAX_WATCHED, RetryWatch, Watch
from tests.test_firstflight import SERVER_HELLO, client_hello

RETRY = b"\x16\x03\x03\x00\x58\x02\x00\x00\x54\x03\x03" + HRR_RANDOM + b"\x20"
CCS = b"\x14\x03\x03\x00\x01\x01"


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
