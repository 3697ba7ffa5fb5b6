"""The kernel fast path (issue 20), measured through the real gateway in network namespaces.

One run, three ways through the same gateway namespace, side by side:

- direct: the schoolgate table removed: plain kernel forwarding (the ceiling);
- fast path: the production ruleset with gateway.fast_path, names resolved through the gateway;
- redirect-all: the same ruleset with the fast path's heartbeat gone (the fast-path service
  stopped): every TCP 80/443 connection meets the proxy, as before issue 20.

For each, three times, interleaved: bulk TLS downloads (four parallel curl downloads from four
`openssl s_server` processes, so that the C endpoints, not Python, set the ceiling; aggregate
MB/s) and many small TLS connections in a row (connections/s). Target: the fast path's median at
least the slowest direct run (kernel-forwarding speed within the runs' spread).
Then a realistic mix (video and software updates from non-catalogued CDNs, browsing, and uploads
to a catalogued host, inspected) in fast-path and redirect-all modes: the share of
non-catalogued bytes that never entered the proxy (ground truth: the server sees the pupil's own
address on a fast-pathed connection, the gateway's on a proxied one), and the proxy's CPU seconds
per GB. Counts, sizes and time are bounded.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import encode
from tests.support.fastpath_gateway import Gateway, fastpath_gateway, wait_for
from tests.support.netns import (
    CLIENT_IP,
    SERVER_IP,
    call_in_netns,
    netns_exec,
    probe_netns,
    run_in,
    serve_connections,
    tcp_listener,
)
from tests.support.proxy_harness import MEDIA_HOST, TEST_CATALOG

VIDEO, UPDATES, NEWS = "video.cdn.test", "updates.cdn.test", "www.news.test"
VIDEO_IP, UPDATES_IP, NEWS_IP = "198.51.100.20", "198.51.100.21", "198.51.100.22"
# Throughput: one openssl s_server per address, one curl per server, all at once.
BULK = {f"bulk{n}.cdn.test": f"198.51.100.{30 + n}" for n in range(4)}
BULK_BYTES = 256 * 1024 * 1024
SMALL_CONNECTIONS = 200
RUNS = 3  # of each mode, interleaved: the spread of the direct runs is the noise
SMALL_BYTES = 4096


@dataclass
class TlsServer:
    """HTTPS on port 443 of every server address: GET /bytes/N sends N bytes, POST reads the
    body; it records (peer address, bytes sent or received) per connection."""

    cert: Path
    key: Path
    flows: list[tuple[str, str, int]] = field(default_factory=list)  # (local, peer, bytes)
    _socks: list[socket.socket] = field(default_factory=list)

    def start(self, ns: str, addresses: tuple[str, ...]) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self._context = context
        for address in addresses:
            sock = tcp_listener(ns, address, 443, backlog=256)
            self._socks.append(sock)
            serve_connections(sock, self._serve)

    def _serve(self, raw: socket.socket, peer: str) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), raw:
            raw.settimeout(30)
            local = raw.getsockname()[0]
            with self._context.wrap_socket(raw, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                request, _, rest = head.partition(b"\r\n\r\n")
                line = request.split(b"\r\n", 1)[0].decode()
                method, path = line.split(" ")[:2]
                if method == "POST":
                    lengths = [h.split(b":")[1] for h in request.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")]  # fmt: skip
                    length = int(lengths[0]) if lengths else 0
                    got = len(rest)
                    while got < length:
                        data = tls.recv(65536)
                        if not data:
                            break
                        got += len(data)
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    self.flows.append((local, peer, got))
                    return
                size = int(path.rsplit("/", 1)[1]) if path.startswith("/bytes/") else 2
                tls.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close"
                            "\r\n\r\n".encode())  # fmt: skip
                block = b"\x5a" * 65536
                sent = 0
                while sent < size:
                    piece = block[: min(len(block), size - sent)]
                    tls.sendall(piece)
                    sent += len(piece)
                self.flows.append((local, peer, sent))

    def stop(self) -> None:
        socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a bench: the certificates are not what is measured
    return context


def _get(address: str, host: str, size: int) -> int:
    with (
        socket.create_connection((address, 443), timeout=60) as raw,
        _client_context().wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                    .encode())  # fmt: skip
        got = 0
        while chunk := tls.recv(1 << 20):
            got += len(chunk)
        return got


def _post(address: str, host: str, body: bytes) -> bytes:
    with (
        socket.create_connection((address, 443), timeout=60) as raw,
        _client_context().wrap_socket(raw, server_hostname=host) as tls,
    ):
        boundary = "benchboundary"
        payload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        payload += body + f"\r\n--{boundary}--\r\n".encode()
        tls.sendall(f"POST /upload/multipart HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                    f"multipart/form-data; boundary={boundary}\r\nContent-Length: {len(payload)}"
                    "\r\nConnection: close\r\n\r\n".encode() + payload)  # fmt: skip
        return tls.recv(4096)


def _in_client(gw: Gateway, fn: Callable[[], Any], timeout: float = 120) -> Any:
    return call_in_netns(gw.topo.client, fn, timeout=timeout)


def _curl(gw: Gateway, host: str, path: str, count: int = 1) -> list[str]:
    """curl in the client namespace: `count` fetches of one URL, a new connection each."""
    outputs = [arg for _ in range(count) for arg in ("-o", "/dev/null", f"https://{host}/{path}")]
    argv = ["curl", "-sk", "--max-time", "120", "--resolve", f"{host}:443:{BULK[host]}",
            "-H", "Connection: close", "-w", "%{size_download}\n", *outputs]  # fmt: skip
    return netns_exec(gw.topo.client, argv)


def _bulk_mb_s(gw: Gateway) -> float:
    started = time.perf_counter()
    downloads = [subprocess.Popen(_curl(gw, host, "bulk.bin"), stdout=subprocess.PIPE)
                 for host in BULK]  # fmt: skip
    got = 0
    for download in downloads:
        out, _ = download.communicate(timeout=150)
        got += sum(int(line) for line in out.split())
    return got / (time.perf_counter() - started) / 1e6


def _small_per_s(gw: Gateway, trips: list[float] | None = None) -> float:
    """New connections a second; `trips` gets the packets queued to the check per connection."""
    host = next(iter(BULK))
    queued = _queued(gw)
    started = time.perf_counter()
    done = subprocess.run(_curl(gw, host, "small.bin", SMALL_CONNECTIONS), capture_output=True,
                          timeout=150, check=False)  # fmt: skip
    elapsed = time.perf_counter() - started
    count = sum(1 for line in done.stdout.split() if int(line) == SMALL_BYTES)
    if trips is not None and count:
        trips.append((_queued(gw) - queued) / count)
    return count / elapsed if elapsed else 0.0


def _queued(gw: Gateway) -> int:
    """Packets the kernel has queued to the fast path's check so far (its queue's id sequence:
    /proc/net/netfilter/nfnetlink_queue, field 8)."""
    listing = run_in(gw.topo.gateway, ["cat", "/proc/net/netfilter/nfnetlink_queue"])
    return sum(int(fields[7]) for fields in map(str.split, listing.stdout.splitlines()))


@contextlib.contextmanager
def _openssl_servers(gw: Gateway, files: Path) -> Iterator[None]:
    """One `openssl s_server -WWW` per bulk address, serving `files` (C endpoints: the
    forwarding, not Python, is what the throughput figures measure)."""
    assert gw.pki is not None
    (files / "bulk.bin").write_bytes(b"")
    os.truncate(files / "bulk.bin", BULK_BYTES)
    (files / "small.bin").write_bytes(b"\x5a" * SMALL_BYTES)
    servers = [
        subprocess.Popen(
            netns_exec(
                gw.topo.server,
                [
                    "openssl",
                    "s_server",
                    "-quiet",
                    "-WWW",
                    "-accept",
                    f"{address}:443",
                    "-cert",
                    str(gw.pki.cert_pem),
                    "-key",
                    str(gw.pki.key_pem),
                ],
            ),
            cwd=files,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for address in BULK.values()
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


def _proxy_cpu_s(gw: Gateway) -> float:
    fields = Path(f"/proc/{gw.proxy.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mix(gw: Gateway, server: TlsServer, upload: bytes) -> dict[str, float]:
    """Video and updates from two CDNs, browsing, and uploads to the catalogued host, together."""
    before_flows = len(server.flows)
    cpu_before = _proxy_cpu_s(gw)
    jobs: list[Callable[[], Any]] = [
        *[lambda: _get(VIDEO_IP, VIDEO, 16 << 20) for _ in range(3)],
        *[lambda: _get(UPDATES_IP, UPDATES, 16 << 20) for _ in range(2)],
        lambda: [_get(NEWS_IP, NEWS, 64 << 10) for _ in range(40)],
        lambda: [_post(SERVER_IP, MEDIA_HOST, upload) for _ in range(5)],
    ]
    threads = [threading.Thread(target=_in_client, args=(gw, job, 180)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(200)
    cpu = _proxy_cpu_s(gw) - cpu_before
    flows = server.flows[before_flows:]
    uncatalogued = [(peer, size) for local, peer, size in flows if local != SERVER_IP]
    total = sum(size for _, size in uncatalogued)
    fast = sum(size for peer, size in uncatalogued if peer == CLIENT_IP)
    every = sum(size for _, _, size in flows)
    return {"share": fast / total if total else 0.0, "cpu_per_gb": cpu / (every / 1e9),
            "bytes": float(every)}  # fmt: skip


def _mode(gw: Gateway, mode: str) -> None:
    if mode == "direct":
        run_in(gw.topo.gateway, ["nft", "delete", "table", "inet", "schoolgate"], check=False)
        return
    gw.apply_ruleset()
    if mode == "fast":
        if "fastpath" not in gw.processes:
            gw.start("fastpath", ["nft", "fastpath"], "fastpath listening")
        wait_for(gw.heartbeat, 60, lambda: "the fast path did not come back")
        for name in (VIDEO, UPDATES, NEWS, *BULK):
            gw.ask(name)  # a device resolves before it connects
    else:
        if "fastpath" in gw.processes:
            gw.stop("fastpath")
        wait_for(lambda: not gw.heartbeat(), 60, lambda: "the fast path did not end")


def run() -> list[dict[str, Any]]:
    reason = probe_netns()
    if reason is not None:
        return [{"name": "fast path benchmarks skipped", "value": 0.0, "unit": "",
                 "target": None, "met": None, "note": reason}]  # fmt: skip
    catalog = copy.deepcopy(TEST_CATALOG)
    names = {VIDEO: [VIDEO_IP], UPDATES: [UPDATES_IP], NEWS: [NEWS_IP], MEDIA_HOST: [SERVER_IP],
             **{host: [address] for host, address in BULK.items()}}  # fmt: skip
    from PIL import Image

    upload = encode(Image.effect_noise((640, 480), 60).convert("RGB"), "JPEG", quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        addresses = (VIDEO_IP, UPDATES_IP, NEWS_IP, *BULK.values())
        with fastpath_gateway(work, catalog, names, addresses, recorder_ports=(80,)) as gw:
            assert gw.pki is not None  # the harness's: the proxy trusts its CA for MEDIA_HOST
            server = TlsServer(gw.pki.cert_pem, gw.pki.key_pem)
            server.start(gw.topo.server, (VIDEO_IP, UPDATES_IP, NEWS_IP, SERVER_IP))
            files = work / "files"
            files.mkdir()
            try:
                with _openssl_servers(gw, files):
                    return _measure(gw, server, upload)
            finally:
                server.stop()


def _measure(gw: Gateway, server: TlsServer, upload: bytes) -> list[dict[str, Any]]:
    bulk: dict[str, list[float]] = {"direct": [], "fast": [], "redirect": []}
    small: dict[str, list[float]] = {"direct": [], "fast": [], "redirect": []}
    trips: list[float] = []
    for _ in range(RUNS):
        for mode in ("direct", "fast", "redirect"):
            _mode(gw, mode)
            bulk[mode].append(_bulk_mb_s(gw))
            small[mode].append(_small_per_s(gw, trips if mode == "fast" else None))
    mixes = {}
    for mode in ("fast", "redirect"):
        _mode(gw, mode)
        mixes[mode] = _mix(gw, server, upload)
    figures = []
    for label, values, unit in (("bulk TLS download", bulk, "MB/s"),
                                ("small TLS connections", small, "conn/s")):  # fmt: skip
        # "At kernel-forwarding speed within the spread of the runs": the fast path's median
        # is no lower than the slowest direct run.
        direct = values["direct"]
        floor = min(direct)
        for mode in ("direct", "fast", "redirect"):
            mean = statistics.fmean(values[mode])
            fig = {"name": f"fastpath {label}, {mode}", "value": round(mean, 1), "unit": unit,
                   "target": None, "met": None,
                   "note": "runs: " + ", ".join(f"{v:.1f}" for v in values[mode])}  # fmt: skip
            if mode == "fast":
                fig["target"] = f">= {floor:.0f} (slowest direct run)"
                fig["met"] = statistics.median(values["fast"]) >= floor
            figures.append(fig)
    # What a new connection costs on the fast path: its packets' trips through the check (each
    # waits for Python), and the time it adds over direct forwarding.
    added = 1000 / statistics.median(small["fast"]) - 1000 / statistics.median(small["direct"])
    figures.append({"name": "fastpath small TLS connections, queue trips per connection",
                    "value": round(statistics.fmean(trips), 2) if trips else 0.0, "unit": "",
                    "target": None, "met": None,
                    "note": f"{added:.2f} ms a connection over direct (medians)"})  # fmt: skip
    share = mixes["fast"]["share"]
    figures.append({"name": "fastpath mix: non-catalogued bytes never in the proxy",
                    "value": round(100 * share, 1), "unit": "%", "target": ">= 80%",
                    "met": share >= 0.8, "note": "redirect-all: "
                    f"{100 * mixes['redirect']['share']:.1f}%"})  # fmt: skip
    for mode in ("fast", "redirect"):
        figures.append({"name": f"fastpath mix: proxy CPU seconds per GB, {mode}",
                        "value": round(mixes[mode]["cpu_per_gb"], 2), "unit": "s/GB",
                        "target": None, "met": None,
                        "note": f"{mixes[mode]['bytes'] / 1e6:.0f} MB in the mix"})  # fmt: skip
    return figures
