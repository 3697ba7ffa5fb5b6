"""Alert outbox and delivery: what a block pays to make its alert durable, and how fast the
sender drains a backlog to a webhook receiver on loopback.

Enqueue is timed with `synchronous=FULL` (an fsync per alert, as the appliance runs) beside
`synchronous=NORMAL` as the baseline that shows what the fsync costs on this disk.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from schoolgate.alerts.model import AlertDetails, Device, MatchInfo
from schoolgate.alerts.outbox import AlertOutbox
from schoolgate.alerts.receivers import WebhookReceiver
from schoolgate.alerts.sender import AlertSender, RetryPolicy
from schoolgate.alerts.settings import DEFAULT_GUIDANCE, ReceiverConfig

Figure = dict[str, Any]

ENQUEUE_MAX = 2000
ENQUEUE_BUDGET_S = 8.0
DELIVERY_ALERTS = 400
DELIVERY_BUDGET_S = 30.0


def _details(n: int) -> AlertDetails:
    return AlertDetails(
        decided_at="2026-01-01T09:00:00+00:00",
        action="block",
        mode="block",
        would_block=True,
        group="students",
        direction="upload",
        app="bench",
        host="media.bench.localhost",
        device=Device(ip=f"10.20.{n // 250 % 250}.{n % 250}", mac=None, hostname=f"pupil-{n}"),
        media_type="jpeg",
        size=2_000_000,
        sha256=f"{n:064x}",
        matches=(MatchInfo("incident-bench", "pdq", 4),),
        reasons=("bank incident-bench: pdq match at distance 4",),
        site="Bench School",
    )


def _enqueue_latencies(path: Path, synchronous: str) -> tuple[list[float], float]:
    with AlertOutbox(path) as outbox:
        outbox._db.execute(f"PRAGMA synchronous = {synchronous}")
        latencies: list[float] = []
        started = time.perf_counter()
        for n in range(ENQUEUE_MAX):
            t0 = time.perf_counter()
            outbox.enqueue(_details(n), f"verdict-{n}")
            latencies.append((time.perf_counter() - t0) * 1000)
            if time.perf_counter() - started > ENQUEUE_BUDGET_S:
                break
        elapsed = time.perf_counter() - started
    return latencies, len(latencies) / elapsed


def _enqueue_figures(work: Path) -> list[Figure]:
    figures: list[Figure] = []
    for synchronous, label in (("FULL", "fsync per alert"), ("NORMAL", "no fsync, baseline")):
        latencies, rate = _enqueue_latencies(work / f"enqueue-{synchronous}.sqlite", synchronous)
        note = f"{len(latencies)} distinct alerts, synchronous={synchronous} ({label})"
        p95 = float(np.percentile(np.asarray(latencies), 95))
        figures += [
            {"name": f"alerts: outbox enqueue rate [{synchronous}]", "value": rate,
             "unit": "alerts/s", "target": None, "met": None, "note": note},
            {"name": f"alerts: outbox enqueue p50 [{synchronous}]",
             "value": statistics.median(latencies), "unit": "ms", "target": None, "met": None,
             "note": note},
            {"name": f"alerts: outbox enqueue p95 [{synchronous}]", "value": p95, "unit": "ms",
             "target": None, "met": None, "note": note},
        ]  # fmt: skip
    return figures


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Receiver

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True
    count = 0
    lock = threading.Lock()


def _delivery_figures(work: Path) -> list[Figure]:
    receiver = _Receiver(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        config = ReceiverConfig(name="bench", url=url, secret=b"bench-secret", timeout_s=10)
        sink = WebhookReceiver(config, DEFAULT_GUIDANCE, ZoneInfo("Europe/London"))
        with AlertOutbox(work / "delivery.sqlite", ["bench"]) as outbox:
            for n in range(DELIVERY_ALERTS):
                outbox.enqueue(_details(n), f"verdict-{n}")
            sender = AlertSender(outbox, [sink], RetryPolicy())
            started = time.perf_counter()
            delivered = 0
            while delivered < DELIVERY_ALERTS and time.perf_counter() - started < DELIVERY_BUDGET_S:
                results = sender.deliver_due(max_rounds=1)
                delivered += sum(r.attempt.delivered for r in results)
            elapsed = time.perf_counter() - started
    finally:
        receiver.shutdown()
        receiver.server_close()
    note = (
        f"{delivered} alerts, one sender thread, signed generic JSON, a new connection per POST, "
        "claim + outcome each fsynced"
    )
    return [
        {"name": "alerts: delivery rate to a loopback receiver", "value": delivered / elapsed,
         "unit": "alerts/s", "target": None, "met": None, "note": note},
    ]  # fmt: skip


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        work = Path(tmp)
        return _enqueue_figures(work) + _delivery_figures(work)
