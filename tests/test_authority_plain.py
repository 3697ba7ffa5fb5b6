"""Plain HTTP names its host twice, or not at all (adversarial pass a40 F2): a request-target in
absolute form, which origin servers follow (RFC 9112 §3.2.2), naming a catalogued upload host
behind a `Host` of a site the filter passes, reached the upload host unjudged; so did a `Host`
of another site, or none, sent to an address the resolver gave out for catalogued hosts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.net.http.http1 import read_request_head
from mitmproxy.test import taddons, tflow

from schoolgate.addons.authority import AuthorityCheck
from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.addons.uploads import UploadInspector
from schoolgate.config import load_config
from schoolgate.gateway.addressbook import AddressBook
from tests.support.proxy_harness import MEDIA_HOST, OTHER_HOST, make_upstream_pki, write_config
from tests.test_addons_inprocess import audit_decisions

UPLOAD_ADDRESS = "198.51.100.20"  # the resolver gave it out for MEDIA_HOST only
SHARED_ADDRESS = "198.51.100.21"  # ... for MEDIA_HOST and OTHER_HOST
OTHER_ADDRESS = "198.51.100.22"  # ... for OTHER_HOST only


@pytest.fixture
def ref(data_dir: Path, tmp_path: Path) -> Iterator[RuntimeRef]:
    config = write_config(tmp_path, 8080, make_upstream_pki(tmp_path / "pki"))
    runtime = Runtime.from_config(load_config(config))
    book = AddressBook(tmp_path / "addresses.sqlite")
    book.record(MEDIA_HOST, [UPLOAD_ADDRESS, SHARED_ADDRESS], ttl_s=3600)
    book.record(OTHER_HOST, [SHARED_ADDRESS, OTHER_ADDRESS], ttl_s=3600)
    runtime.address_book = book
    try:
        yield RuntimeRef(runtime)
    finally:
        book.close()
        runtime.close()


def plain_flow(head: list[bytes], destination: str) -> Any:
    """A plain HTTP request as mitmproxy reads it from a device, to `destination`:80."""
    flow = tflow.tflow()
    flow.request = read_request_head(head)
    flow.request.content = b"\xff\xd8 picture"
    flow.client_conn.tls = False
    flow.client_conn.sni = None
    flow.server_conn.address = (destination, 80)
    return flow


def run(ref: RuntimeRef, flow: Any) -> None:
    check, uploads = AuthorityCheck(ref), UploadInspector(ref)
    with taddons.context(check, uploads):
        check.requestheaders(flow)
        uploads.requestheaders(flow)


@pytest.mark.parametrize(
    "head",
    [
        [
            f"POST http://{MEDIA_HOST}/upload/raw/a.jpg HTTP/1.1".encode(),
            f"Host: {OTHER_HOST}".encode(),
        ],
        [
            f"POST http://{OTHER_HOST}/upload/raw/a.jpg HTTP/1.1".encode(),
            f"Host: {MEDIA_HOST}".encode(),
        ],
    ],
)
def test_a_target_and_a_host_that_disagree_are_refused(ref: RuntimeRef, head: list[bytes]) -> None:
    flow = plain_flow(head, SHARED_ADDRESS)
    run(ref, flow)
    assert flow.response is not None
    assert flow.response.status_code == 400


@pytest.mark.parametrize(
    "head",
    [
        [b"POST /upload/raw/a.jpg HTTP/1.1", f"Host: {OTHER_HOST}".encode()],
        [b"POST /upload/raw/a.jpg HTTP/1.0"],  # no Host at all
        [b"POST /upload/raw/a.jpg HTTP/1.1", f"Host: {UPLOAD_ADDRESS}".encode()],
    ],
)
def test_another_host_or_none_at_a_catalogued_address_is_refused(
    ref: RuntimeRef, data_dir: Path, head: list[bytes]
) -> None:
    flow = plain_flow(head, UPLOAD_ADDRESS)
    run(ref, flow)
    assert flow.response is not None
    assert flow.response.status_code == 421
    (record,) = audit_decisions(data_dir)
    assert record["decision"] == "block"
    assert "fronting" in record["failure_detail"]


@pytest.mark.parametrize(
    ("head", "destination"),
    [
        # the catalogued host at its address: held for inspection, as ever
        ([b"POST /upload/raw/a.jpg HTTP/1.1", f"Host: {MEDIA_HOST}".encode()], UPLOAD_ADDRESS),
        (
            [
                f"POST http://{MEDIA_HOST}/upload/raw/a.jpg HTTP/1.1".encode(),
                f"Host: {MEDIA_HOST.upper()}:80".encode(),
            ],
            UPLOAD_ADDRESS,
        ),
    ],
)
def test_the_catalogued_host_at_its_address_is_held(
    ref: RuntimeRef, head: list[bytes], destination: str
) -> None:
    flow = plain_flow(head, destination)
    run(ref, flow)
    assert flow.response is None
    assert not flow.request.stream  # held: its body is judged


@pytest.mark.parametrize(
    ("host", "destination"),
    [
        (OTHER_HOST, SHARED_ADDRESS),  # a front end both share: not fronting we can tell
        (OTHER_HOST, OTHER_ADDRESS),
        (OTHER_HOST, "203.0.113.9"),  # an address the resolver never gave out
    ],
)
def test_other_sites_browse_as_before(ref: RuntimeRef, host: str, destination: str) -> None:
    flow = plain_flow([b"GET /news HTTP/1.1", f"Host: {host}".encode()], destination)
    run(ref, flow)
    assert flow.response is None


def test_a_response_already_set_is_left_alone(ref: RuntimeRef) -> None:
    flow = plain_flow([b"GET / HTTP/1.0"], UPLOAD_ADDRESS)
    flow.response = http.Response.make(204)
    run(ref, flow)
    assert flow.response.status_code == 204
