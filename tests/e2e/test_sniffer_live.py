"""One live capture: `schoolgate sniff --interface` on the gateway side of a veth pair in test
namespaces (TEST-NET addresses only), with the BPF prefilter attached, stopped by SIGTERM."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from schoolgate.pipeline.audit import read_records
from tests.support.netns import (
    CLIENT_IP,
    GATEWAY_CLIENT_IP,
    SERVER_IP,
    Topology,
    build_topology,
    call_in_netns,
    netns_exec,
    probe_netns,
)
from tests.support.proxy_harness import VENV_BIN, free_port
from tests.support.sniffer_packets import (
    client_hello_handshake,
    crypto_frame,
    openssl_client_hello,
    quic_initial,
    wireguard_initiation,
)

pytestmark = [pytest.mark.slow, pytest.mark.netns]


@pytest.fixture
def topology() -> Iterator[Topology]:
    reason = probe_netns()
    if reason is not None:
        pytest.skip(reason)
    topo = build_topology()
    try:
        yield topo
    finally:
        topo.destroy()


def send_from_client(ns: str) -> None:
    """A DNS query for a DoH resolver, a QUIC Initial to WhatsApp, WireGuard, and DoT."""
    query = (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + b"\x03dns\x06google\x00\x00\x01\x00\x01"
    )
    hello = client_hello_handshake(openssl_client_hello("web.whatsapp.com", alpn=("h3",)))
    datagrams = [
        ((GATEWAY_CLIENT_IP, 53), query),
        ((SERVER_IP, 443), quic_initial(os.urandom(8), crypto_frame(0, hello))),
        ((SERVER_IP, 51820), wireguard_initiation()),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for address, payload in datagrams:
            udp.sendto(payload, address)
    with socket.socket() as tcp:  # a DoT connection attempt (refused: nothing listens)
        tcp.settimeout(3)
        with contextlib.suppress(OSError):
            tcp.connect((SERVER_IP, 853))


def test_live_capture_on_a_veth_reports_the_client(topology: Topology, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "schoolgate.yaml"
    metrics_port = free_port()
    config.write_text(
        yaml.safe_dump({"classifier": {"models": []}, "sniffer": {"metrics_port": metrics_port}})
    )
    log_path = tmp_path / "sniff.log"
    env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("SCHOOLGATE_CONFIG", None)
    argv = [str(VENV_BIN / "schoolgate"), "sniff", "--config", str(config)]
    argv += ["--interface", topology.gw_client_if]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            netns_exec(topology.gateway, argv), stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 60
        while "schoolgate sniffing on" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sniffer did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        call_in_netns(topology.client, functools.partial(send_from_client, topology.client), 20)
        time.sleep(1.0)  # let the frames reach the socket before stopping
        scrape = functools.partial(read_url, f"http://127.0.0.1:{metrics_port}/metrics")
        exposition = call_in_netns(topology.gateway, scrape, 20)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    log = log_path.read_text(errors="replace")
    assert process.returncode == 0, log
    records = read_records(data_dir / "audit" / "sniffer.jsonl")
    seen = {
        (r["category"], r["app"], r["name"], r["source"])
        for r in records
        if r["event"] == "sniffer_observed"
    }
    assert seen == {
        ("doh", "google", "dns.google", "dns"),
        ("uninspectable_app", "whatsapp", "web.whatsapp.com", "quic"),
        ("vpn", "wireguard", "udp/51820", "port"),
        ("vpn", "wireguard", "wireguard", "signature"),
        ("dot", "dot", "tcp/853", "port"),
    }, log
    assert {r["device"]["ip"] for r in records} == {CLIENT_IP}
    assert 'schoolgate_sniffer_observations_total{app="google",category="doh"} 1.0' in exposition
    packets = next(
        float(line.split()[1])
        for line in exposition.splitlines()
        if line.startswith("schoolgate_sniffer_packets_total ")
    )
    assert 4 <= packets < 20  # the prefilter let the four probes through, not the chatter
    assert "schoolgate_inspections_total" not in exposition  # the proxy's series are not here


def read_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_a_prefilter_that_cannot_be_set_falls_back_to_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without libpcap (or with a filter it rejects) the sniffer still captures, and says so."""
    reason = probe_netns()
    if reason is not None:
        pytest.skip(reason)
    import secrets
    import threading

    from schoolgate.endpoints.loader import load_catalog
    from schoolgate.sniffer.capture import Sniffer, capture
    from schoolgate.sniffer.watchlist import Watchlist
    from tests.support.netns import _ip

    ns = f"sg-{secrets.token_hex(3)}-sniff"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        sniffer = Sniffer(Watchlist.load(load_catalog()), lambda event, **fields: None)
        stop = threading.Event()
        ready = threading.Event()

        def run() -> None:
            capture(sniffer, "lo", stop, bpf="this is not bpf", tick_s=0.1, ready=ready.set)

        with caplog.at_level("WARNING", logger="schoolgate.sniffer"):
            worker = threading.Thread(target=call_in_netns, args=(ns, run, 20), daemon=True)
            worker.start()
            assert ready.wait(15)
            stop.set()
            worker.join(20)
        assert not worker.is_alive()
        assert any("without a prefilter" in r.getMessage() for r in caplog.records)
    finally:
        _ip("netns", "del", ns, check=False)
