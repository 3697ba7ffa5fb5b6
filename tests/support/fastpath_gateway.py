"""A gateway with the fast path in network namespaces, for the fast-path tests and bench.

client ns ──▶ gateway ns (the production ruleset from `schoolgate nft apply`, `schoolgate nft
fastpath`, `schoolgate resolve` without capabilities, `schoolgate run`) ──▶ server ns (a stub name
server on 198.51.100.2:53, a recording server on ports 80 (HTTP) and 443 (HTTPS) of every
address, and whatever servers the caller starts there). TEST-NET addresses only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.test_proxy_transparent import NsProxy, start_proxy_in
from tests.support.certs import takes_names
from tests.support.dns_stub import StubDns, query
from tests.support.netns import (
    CLIENT_IP,
    GATEWAY_CLIENT_IP,
    SERVER_IP,
    Topology,
    _ip,
    build_topology,
    call_in_netns,
    netns_exec,
    nft_counter_packets,
    run_in,
    serve_connections,
    tcp_listener,
)
from tests.support.proxy_harness import VENV_BIN, UpstreamPki, make_upstream_pki, write_config
from tests.support.rawtcp import any_certificate

PROXY_PORT = 8080
RESOLVER_PORT = 8053
FASTPATH_WAIT_S = 60


@dataclass
class Recorder:
    """HTTP on port 80 and HTTPS on 443 of every server address: who connected to which
    address and port (`seen`, once a request was read), and every TCP connection with the
    bytes it carried before it ended or was answered (`arrived`)."""

    pki: UpstreamPki | None = None
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    arrived: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    _socks: list[socket.socket] = field(default_factory=list)
    # one context for every connection, so that TLS 1.2 sessions resume (adversarial pass a27)
    _context: ssl.SSLContext | None = None
    # local address -> a context of its own (a server that serves no catalogued name)
    plain: dict[str, ssl.SSLContext] = field(default_factory=dict)

    def start(self, ns: str, ports: tuple[int, ...] = (80, 443)) -> None:
        for port in ports:
            # multipath TCP where a client asks for it (adversarial pass a24)
            sock = tcp_listener(ns, "0.0.0.0", port, multipath=True)
            # Fast Open takes effect where the server's namespace enables it (sysctl)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
            self._socks.append(sock)
            serve_connections(sock, functools.partial(self._serve, port=port))

    def _serve(self, conn: socket.socket, peer: str, port: int) -> None:
        local = conn.getsockname()[0]
        conn.settimeout(10)
        try:
            first = conn.recv(65536, socket.MSG_PEEK)
        except OSError:
            first = b""
        self.arrived.append((local, peer, port, first))
        with contextlib.suppress(OSError, ssl.SSLError), conn:
            stream: socket.socket = conn
            if port == 443:
                assert self.pki is not None
                if self._context is None:
                    self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    self._context.load_cert_chain(self.pki.cert_pem, self.pki.key_pem)
                    takes_names(self._context)
                context = self.plain.get(local, self._context)
                stream = context.wrap_socket(conn, server_side=True)
            if stream.recv(4096):
                self.seen.append((local, peer, port))
                stream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close"
                               b"\r\n\r\nok")  # fmt: skip

    def stop(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks.clear()


@dataclass
class Gateway:
    topo: Topology
    recorder: Recorder
    data_dir: Path
    work: Path
    config: Path
    processes: dict[str, subprocess.Popen[bytes]]
    proxy: NsProxy
    pki: UpstreamPki | None = None  # the servers' certificates, which the proxy trusts

    def ask(self, name: str) -> list[str]:
        """The pupil's device resolves `name` (port 53: the gateway redirects it)."""
        reply = call_in_netns(self.topo.client, lambda: query((GATEWAY_CLIENT_IP, 53), name, 1))
        return [str(a.ipv4_address) for a in reply.answers if a.type == 1]

    def get(self, address: str, host: str, port: int = 443, *, mss: int | None = None) -> bytes:
        """GET https://host/ (or http:// on port 80) from the pupil's device to `address`,
        with `host` as server name and Host; what came back (b"" when the connection was
        reset). `mss` makes the client's stack send small segments (a hello cut in many)."""

        def get() -> bytes:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(10)
            if mss is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            try:
                sock.connect((address, port))
                stream = sock
                if port == 443:
                    # the proxy's certificate, or the server's
                    stream = any_certificate().wrap_socket(sock, server_hostname=host or None)
                stream.sendall(
                    f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                return stream.recv(4096)
            except (ConnectionResetError, ssl.SSLError, TimeoutError):
                return b""
            finally:
                sock.close()

        return call_in_netns(self.topo.client, get, timeout=30)

    def fetch(self, address: str, host: str, port: int = 443, *, mss: int | None = None) -> str:
        """GET from the pupil's device to `address` (must succeed); the source the server saw:
        the pupil's own address when the kernel forwarded it, the gateway's when the proxy
        carried it."""
        before = len(self.recorder.seen)
        reply = self.get(address, host, port, mss=mss)
        assert b"200 OK" in reply, f"no answer from {host} at {address}:{port}"
        deadline = time.monotonic() + 10
        while len(self.recorder.seen) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived = [peer for local, peer, at in self.recorder.seen[before:]
                   if local == address and at == port]  # fmt: skip
        assert arrived, f"the server saw no connection to {address}:{port}"
        return arrived[-1]

    def send_raw(self, address: str, payload: bytes, port: int = 443) -> bytes:
        """Open a connection from the pupil's device and send `payload` as is; what came
        back before the connection ended (b"" when it was reset)."""

        def send() -> bytes:
            try:
                with socket.create_connection((address, port), timeout=5) as sock:
                    sock.sendall(payload)
                    return sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                return b""

        return call_in_netns(self.topo.client, send, timeout=30)

    def bytes_arrived(self, address: str, since: int) -> list[bytes]:
        """What each connection to `address` since `since` (an index into `arrived`) carried
        from a pupil's own address, i.e. past the proxy."""
        return [first for local, peer, _, first in self.recorder.arrived[since:]
                if local == address and peer == CLIENT_IP]  # fmt: skip

    def fast_counter(self) -> int:
        return nft_counter_packets(self.topo.gateway, "schoolgate", "prerouting",
                                   'comment "fast path"')  # fmt: skip

    def apply_ruleset(self) -> None:
        env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(self.data_dir)}
        applied = subprocess.run(
            netns_exec(self.topo.gateway, [str(VENV_BIN / "schoolgate"), "nft", "apply",
                                           "--config", str(self.config)]),
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr

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


@contextlib.contextmanager
def fastpath_gateway(
    work: Path,
    catalog: dict[str, Any],
    names: dict[str, list[str]],
    server_addresses: tuple[str, ...] = (),
    *,
    proxy: dict[str, Any] | None = None,
    recorder_ports: tuple[int, ...] = (80, 443),
    aliases: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """The whole gateway with the fast path on, its heartbeat alive; torn down on exit.
    `names` is the stub name server's table (`aliases`: its CNAMEs); `server_addresses` are
    added to the server ns;
    the recorder listens on `recorder_ports` of every address (a caller with servers of its
    own on 443 leaves that port out)."""
    data_dir = work / "data"
    data_dir.mkdir()
    pki = make_upstream_pki(work / "pki", extra_hosts=list(names))
    with contextlib.ExitStack() as cleanup:
        topo = build_topology()
        cleanup.callback(topo.destroy)
        for address in server_addresses:
            _ip("-n", topo.server, "addr", "add", f"{address}/24", "dev", f"sg{topo.tag}sv")
        config = write_config(
            work, PROXY_PORT, pki, catalog_data=catalog,
            proxy={"mode": "transparent", "listen_host": "0.0.0.0", **(proxy or {})},
            extra={"resolver": {"enabled": True, "listen_port": RESOLVER_PORT,
                                "upstream": [SERVER_IP]}},
        )  # fmt: skip
        site = yaml.safe_load(config.read_text())
        site["gateway"] = {"student_interfaces": [topo.gw_client_if], "fast_path": True}
        config.write_text(yaml.safe_dump(site))
        stub = StubDns(SERVER_IP, names, aliases=aliases or {})
        stub.start(topo.server)
        cleanup.callback(stub.stop)
        recorder = Recorder(pki)
        recorder.start(topo.server, recorder_ports)
        cleanup.callback(recorder.stop)
        gw = Gateway(topo, recorder, data_dir, work, config, {}, None, pki)  # type: ignore[arg-type]
        gw.apply_ruleset()
        cleanup.callback(gw.stop_all)
        gw.start("fastpath", ["nft", "fastpath"], "fastpath listening")
        gw.start("resolver", ["resolve"], "resolver listening", prefix=NO_CAPABILITIES)
        gw.proxy = start_proxy_in(topo.gateway, config, data_dir, work)
        cleanup.callback(gw.proxy.stop)
        wait_for(gw.heartbeat, FASTPATH_WAIT_S,
                 lambda: "no heartbeat:\n" + (work / "fastpath.log").read_text())  # fmt: skip
        yield gw
