"""Proxy figures: added latency of an inspected 2 MB JPEG upload, and pass-through throughput.

Both measured against direct connections to the same upstream in the same run (loopback, so the
figures are the proxy's own cost). Counts and time are bounded.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.conftest import encode
from tests.support.proxy_harness import (
    MEDIA_HOST,
    OTHER_HOST,
    can_isolate_hosts,
    client_ssl_context,
    free_port,
    make_upstream_pki,
    multipart_body,
    start_proxy,
    start_upstream,
    write_config,
)

UPLOADS = 30
DOWNLOADS = 8
JSON_REQUESTS = 200
DOWNLOAD_BYTES = 32 * 1024 * 1024
TIME_BUDGET_S = 120.0


def _jpeg_about(size: int) -> bytes:
    """A benign noisy gradient JPEG of roughly `size` bytes (noise defeats compression)."""
    rng = np.random.default_rng(7)
    side = 1200
    while True:
        base = np.linspace(0, 255, side, dtype=np.float32)
        img = (base[None, :, None] + rng.normal(0, 40, (side, side, 3))).clip(0, 255)
        data = encode(Image.fromarray(img.astype(np.uint8)), "JPEG", quality=92)
        if len(data) >= size or side > 4000:
            return data
        side = int(side * 1.25)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed(fn: Any, count: int, deadline: float) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def run() -> list[dict[str, Any]]:
    if not can_isolate_hosts():
        return [
            {
                "name": "proxy benchmarks skipped",
                "value": 0.0,
                "unit": "",
                "target": None,
                "met": None,
                "note": "needs root and unshare(1) for the proxy's private /etc/hosts",
            }
        ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        data_dir.mkdir()
        pki = make_upstream_pki(work / "pki")
        port = free_port()
        config = write_config(work, port, pki)
        upstream = start_upstream(pki)
        upstream.upstream.files["big"] = np.random.default_rng(1).bytes(DOWNLOAD_BYTES)
        try:
            proxy = start_proxy(config, data_dir, port, work)
            try:
                return _measure(upstream.upstream.port, proxy.url, proxy.ca_pem, pki.ca_pem)
            finally:
                proxy.stop()
        finally:
            upstream.stop()


def _measure(up_port: int, proxy_url: str, proxy_ca: Path, up_ca: Path) -> list[dict[str, Any]]:
    jpeg = _jpeg_about(2 * 1024 * 1024)
    body, content_type = multipart_body("file", "big.jpg", jpeg, "image/jpeg")
    headers = {"Content-Type": content_type}
    deadline = time.monotonic() + TIME_BUDGET_S
    direct = httpx.Client(verify=client_ssl_context(up_ca), timeout=60)
    proxied = httpx.Client(proxy=proxy_url, verify=client_ssl_context(proxy_ca, up_ca), timeout=60)
    expected = hashlib.sha256(body).hexdigest()

    def upload_direct() -> None:
        r = direct.post(
            f"https://127.0.0.1:{up_port}/upload/multipart", content=body, headers=headers
        )
        assert r.json()["sha256"] == expected

    def upload_proxied() -> None:
        url = f"https://{MEDIA_HOST}:{up_port}/upload/multipart"
        r = proxied.post(url, content=body, headers=headers)
        if r.status_code != 200 or r.json()["sha256"] != expected:
            raise RuntimeError(f"inspected upload failed: {r.status_code} {r.text[:200]}")

    # A chat message's worth of JSON to an intercepted host on a route no catalog lists: held,
    # scanned for media (none) and forwarded. What issue 16's "hold every body" costs.
    message = json.dumps(
        {"content": "see you at lunch " * 117, "nonce": "1234567890", "tts": False}
    ).encode()  # about 2 KB
    json_headers = {"Content-Type": "application/json"}

    def json_direct() -> None:
        r = direct.post(
            f"https://127.0.0.1:{up_port}/api/v9/channels/1/messages",
            content=message,
            headers=json_headers,
        )
        assert r.status_code == 200

    def json_proxied() -> None:
        url = f"https://{MEDIA_HOST}:{up_port}/api/v9/channels/1/messages"
        r = proxied.post(url, content=message, headers=json_headers)
        if r.status_code != 200:
            raise RuntimeError(f"JSON message failed: {r.status_code} {r.text[:200]}")

    def download_direct() -> None:
        assert len(direct.get(f"https://127.0.0.1:{up_port}/files/big").content) == DOWNLOAD_BYTES

    def download_proxied() -> None:
        r = proxied.get(f"https://{OTHER_HOST}:{up_port}/files/big")
        assert len(r.content) == DOWNLOAD_BYTES

    with direct, proxied:
        upload_direct()  # warm: connections, models, bank index
        upload_proxied()
        d_up = _timed(upload_direct, UPLOADS, deadline)
        p_up = _timed(upload_proxied, UPLOADS, deadline)
        json_direct()
        json_proxied()
        d_js = _timed(json_direct, JSON_REQUESTS, deadline)
        p_js = _timed(json_proxied, JSON_REQUESTS, deadline)
        download_direct()
        download_proxied()
        d_dl = _timed(download_direct, DOWNLOADS, deadline)
        p_dl = _timed(download_proxied, DOWNLOADS, deadline)

    mb = DOWNLOAD_BYTES / 1e6
    direct_tp = mb / statistics.median(d_dl)
    proxy_tp = mb / statistics.median(p_dl)
    note = f"{len(jpeg) / 1e6:.2f} MB JPEG in multipart, n={len(p_up)}; loopback, 2 shared cores"
    figures: list[dict[str, Any]] = []
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        added = (_pct(p_up, q) - _pct(d_up, q)) * 1000
        figures += [
            _fig(f"proxy upload 2MB JPEG direct {label}", _pct(d_up, q) * 1000, "ms", note=note),
            _fig(f"proxy upload 2MB JPEG inspected {label}", _pct(p_up, q) * 1000, "ms", note=note),
            _fig(f"proxy upload 2MB JPEG added latency {label}", added, "ms", note=note),
        ]
    js_note = f"{len(message)} B JSON, unlisted route, intercepted host, n={len(p_js)}"
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        figures.append(_fig(f"proxy 2KB JSON direct {label}", _pct(d_js, q) * 1000, "ms", js_note))
        figures.append(_fig(f"proxy 2KB JSON held {label}", _pct(p_js, q) * 1000, "ms", js_note))
    added_js = (_pct(p_js, 0.95) - _pct(d_js, 0.95)) * 1000
    figures.append(
        {
            **_fig("proxy 2KB JSON added latency p95", added_js, "ms", js_note),
            "target": "< 5 ms",
            "met": added_js < 5.0,
        }
    )
    figures += [
        _fig("proxy pass-through download direct", direct_tp, "MB/s", note=f"{mb:.0f} MB body"),
        _fig("proxy pass-through download via proxy", proxy_tp, "MB/s", note=f"n={len(p_dl)}"),
        {
            # The proxy issue's target; issue 20 (a kernel fast path) is how it is to be met.
            **_fig(
                "proxy pass-through throughput ratio",
                proxy_tp / direct_tp,
                "x direct",
                note="non-catalogued host: TLS passed through undecrypted, every byte in Python",
            ),
            "target": ">= 0.9x",
            "met": proxy_tp / direct_tp >= 0.9,
        },
    ]
    return figures


def _fig(name: str, value: float, unit: str, note: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "value": float(value),
        "unit": unit,
        "target": None,
        "met": None,
        "note": note,
    }
