"""The fast path through the real gateway (issue 20): the production ruleset (`schoolgate nft
apply` with gateway.fast_path), `schoolgate nft fastpath` writing the sets, `schoolgate resolve`
without any capability, and `schoolgate run`, in network namespaces with TEST-NET addresses.

Ground truth is what the server sees: a fast-pathed connection arrives from the pupil's own
address (routed by the kernel); one that met the proxy arrives from the gateway's.

client 192.0.2.2 ──▶ gateway (192.0.2.1 | 198.51.100.1) ──▶ server ns: a stub name server on
198.51.100.2:53 and a recording HTTP server on port 80 of every address below.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_proxy_transparent import NsProxy, start_proxy_in
from tests.support.dns_stub import StubDns, query
from tests.support.netns import (
    CLIENT_IP,
    GATEWAY_CLIENT_IP,
    GATEWAY_SERVER_IP,
    SERVER_IP,
    Topology,
    _ip,
    build_topology,
    call_in_netns,
    netns_exec,
    nft_counter_packets,
    probe_netns,
    run_in,
)
from tests.support.proxy_harness import TEST_CATALOG, VENV_BIN, make_upstream_pki, write_config

pytestmark = [pytest.mark.slow, pytest.mark.netns]

PROXY_PORT = 8080
RESOLVER_PORT = 8053
MEDIA = "media.fast.test"  # catalogued; the pupil asks for it
UPLOAD = "upload.fast.test"  # catalogued; only the gateway's own pass resolves it
NEWS = "news.fast.test"  # not catalogued: the fast path
SHARED = "shared.fast.test"  # not catalogued, but the same address as MEDIA
EDGE = "edge.fast.test"  # not catalogued, inside a provider's published range
PUPIL = "pupils-own.fast.test"  # not catalogued, answers with UPLOAD's address
NEWS_IP, UPLOAD_IP, EDGE_IP, HARD_CODED_IP = (
    "198.51.100.20", "198.51.100.25", "198.51.100.140", "198.51.100.50",
)  # fmt: skip
PROVIDER_RANGE = "198.51.100.128/25"
FASTPATH_WAIT_S = 60


@dataclass
class Recorder:
    """HTTP on port 80 of every server address: who connected, to which address."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    _sock: socket.socket | None = None

    def start(self, ns: str) -> None:
        def bind() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", 80))
            sock.listen(32)
            sock.settimeout(0.2)
            return sock

        self._sock = call_in_netns(ns, bind)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while (sock := self._sock) is not None:
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    self.seen.append((conn.getsockname()[0], peer[0]))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
                                 b"\r\nok")  # fmt: skip

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


@dataclass
class Gateway:
    topo: Topology
    recorder: Recorder
    data_dir: Path
    work: Path
    config: Path
    processes: dict[str, subprocess.Popen[bytes]]
    proxy: NsProxy

    def ask(self, name: str) -> list[str]:
        """The pupil's device resolves `name` (port 53: the gateway redirects it)."""
        reply = call_in_netns(self.topo.client, lambda: query((GATEWAY_CLIENT_IP, 53), name, 1))
        return [str(a.ipv4_address) for a in reply.answers]

    def fetch(self, address: str, host: str) -> str:
        """GET http://host/ from the pupil's device to `address`; the source the server saw."""
        before = len(self.recorder.seen)

        def get() -> bytes:
            with socket.create_connection((address, 80), timeout=10) as sock:
                sock.sendall(
                    f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                return sock.recv(4096)

        assert b"200 OK" in call_in_netns(self.topo.client, get, timeout=30)
        deadline = time.monotonic() + 10
        while len(self.recorder.seen) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived = [peer for local, peer in self.recorder.seen[before:] if local == address]
        assert arrived, f"the server saw no connection to {address}"
        return arrived[-1]

    def fast_counter(self) -> int:
        return nft_counter_packets(self.topo.gateway, "schoolgate", "prerouting",
                                   'comment "fast path"')  # fmt: skip

    def heartbeat(self) -> bool:
        listing = run_in(self.topo.gateway, ["nft", "list", "set", "inet", "schoolgate",
                                             "fast_ready"], check=False)  # fmt: skip
        return "elements" in listing.stdout

    def start(
        self, name: str, argv: list[str], ready: str, prefix: list[str] | None = None
    ) -> None:
        env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("SCHOOLGATE_CONFIG", None)
        log_path = self.work / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                netns_exec(self.topo.gateway, [*(prefix or []), str(VENV_BIN / "schoolgate"),
                                               *argv, "--config", str(self.config)]),
                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.work,
            )  # fmt: skip
        self.processes[name] = process

        def started() -> bool:
            return ready in log_path.read_text(errors="replace")

        wait_for(started, 60, lambda: f"{name} did not start:\n{log_path.read_text()}")

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for(check: Callable[[], bool], seconds: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(why())
        time.sleep(0.2)


# The resolver as its unit runs it: no capability at all (the service holds CAP_NET_ADMIN).
NO_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    reason = probe_netns()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    work = tmp_path_factory.mktemp("fastpath")
    data_dir = work / "data"
    data_dir.mkdir()
    pki = make_upstream_pki(work / "pki")
    catalog = copy.deepcopy(TEST_CATALOG)
    catalog["apps"]["testshare"]["hosts"] = [MEDIA, UPLOAD]
    catalog["providers"] = {"testedge": {"source": "the test's own", "ranges": [PROVIDER_RANGE]}}
    with contextlib.ExitStack() as cleanup:
        topo = build_topology()
        cleanup.callback(topo.destroy)
        for address in (NEWS_IP, UPLOAD_IP, EDGE_IP, HARD_CODED_IP):
            _ip("-n", topo.server, "addr", "add", f"{address}/24", "dev", f"sg{topo.tag}sv")
        config = write_config(
            work, PROXY_PORT, pki, catalog_data=catalog,
            proxy={"mode": "transparent", "listen_host": "0.0.0.0"},
            extra={"resolver": {"enabled": True, "listen_port": RESOLVER_PORT,
                                "upstream": [SERVER_IP]}},
        )  # fmt: skip
        site = yaml.safe_load(config.read_text())
        site["gateway"] = {"student_interfaces": [topo.gw_client_if], "fast_path": True}
        config.write_text(yaml.safe_dump(site))
        names = {MEDIA: [SERVER_IP], SHARED: [SERVER_IP], NEWS: [NEWS_IP], UPLOAD: [UPLOAD_IP],
                 PUPIL: [UPLOAD_IP], EDGE: [EDGE_IP]}  # fmt: skip
        stub = StubDns(SERVER_IP, names)
        stub.start(topo.server)
        cleanup.callback(stub.stop)
        recorder = Recorder()
        recorder.start(topo.server)
        cleanup.callback(recorder.stop)
        env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(data_dir)}
        applied = subprocess.run(
            netns_exec(topo.gateway, [str(VENV_BIN / "schoolgate"), "nft", "apply", "--config",
                                      str(config)]),
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        gw = Gateway(topo, recorder, data_dir, work, config, {}, None)  # type: ignore[arg-type]
        cleanup.callback(gw.stop_all)
        gw.start("fastpath", ["nft", "fastpath"], "fastpath listening")
        gw.start("resolver", ["resolve"], "resolver listening", prefix=NO_CAPABILITIES)
        gw.proxy = start_proxy_in(topo.gateway, config, data_dir, work)
        cleanup.callback(gw.proxy.stop)
        wait_for(gw.heartbeat, FASTPATH_WAIT_S,
                 lambda: "no heartbeat:\n" + (work / "fastpath.log").read_text())  # fmt: skip
        yield gw


def test_a_name_nobody_catalogued_is_forwarded_by_the_kernel(gateway: Gateway) -> None:
    before = gateway.fast_counter()
    assert gateway.ask(NEWS) == [NEWS_IP]
    assert gateway.fetch(NEWS_IP, NEWS) == CLIENT_IP  # routed: the proxy never saw it
    assert gateway.fast_counter() == before + 1
    assert not [r for r in gateway.proxy.audit_records() if r["client"].get("host") == NEWS]


@pytest.mark.parametrize(
    ("name", "address", "why"),
    [
        (MEDIA, SERVER_IP, "a catalogued name"),
        (SHARED, SERVER_IP, "an address a catalogued name also resolved to"),
        (EDGE, EDGE_IP, "inside a catalogued provider's published range"),
        (PUPIL, UPLOAD_IP, "a pupil's own name for a catalogued server the gateway resolved"),
    ],
)
def test_everything_else_still_meets_the_proxy(
    gateway: Gateway, name: str, address: str, why: str
) -> None:
    gateway.ask(MEDIA)  # the pupil's device asked for the catalogued name first, as apps do
    assert gateway.ask(name) == [address]
    assert gateway.fetch(address, name) == GATEWAY_SERVER_IP, why


def test_an_address_never_resolved_through_the_gateway_meets_the_proxy(gateway: Gateway) -> None:
    assert gateway.fetch(HARD_CODED_IP, "hard-coded.example") == GATEWAY_SERVER_IP


def test_resolver_down_means_every_connection_meets_the_proxy(gateway: Gateway) -> None:
    """Last in the module: it takes the resolver away (killed: no goodbye to the service)."""
    gateway.ask(NEWS)
    assert gateway.fetch(NEWS_IP, NEWS) == CLIENT_IP
    gateway.stop("resolver", signal.SIGKILL)
    wait_for(lambda: not gateway.heartbeat(), 45, lambda: "the heartbeat outlived the resolver")
    assert gateway.fetch(NEWS_IP, NEWS) == GATEWAY_SERVER_IP


def test_the_fast_path_service_stopping_ends_the_fast_path_at_once(gateway: Gateway) -> None:
    gateway.stop("fastpath")
    assert not gateway.heartbeat()
    assert gateway.fetch(NEWS_IP, NEWS) == GATEWAY_SERVER_IP
