"""Helpers for the alert tests: a real webhook receiver on loopback, a settable clock, verdicts."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from schoolgate.banks.model import SignalType
from schoolgate.config import parse_config
from schoolgate.matching.matcher import BankMatch, FrameMatch
from schoolgate.pipeline.policy import Policy
from schoolgate.pipeline.verdict import Findings, InspectionContext, Verdict

SHA_A = "a" * 64
SHA_B = "b" * 64


class FakeClock:
    """A clock the test moves by hand, so hours of backoff pass instantly."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def alert_id(self) -> str:
        return self.headers["x-schoolgate-alert-id"]


@dataclass
class _State:
    received: list[Delivery] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)  # replies to give next (then 200)
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)  # extra reply headers
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state = self.server.state
        if state.delay_s:
            time.sleep(state.delay_s)
        with state.lock:
            status = state.statuses.popleft() if state.statuses else 200
            if status < 300:
                state.received.append(
                    Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                state.arrived.notify_all()
            extra = dict(state.headers)
        reply = b'{"ok": true}' if status < 300 else b'{"error": "test"}'
        try:
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except OSError:  # the client gave up (a timeout test)
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class WebhookSink:
    """A webhook receiver on 127.0.0.1. Created *down*: its port is bound but not listening, so
    connections are refused until `up()`; it records only requests it answered with 2xx."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self.server.server_bind()
        self.server.state = _State()
        self.port: int = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def state(self) -> _State:
        return self.server.state

    @property
    def received(self) -> list[Delivery]:
        with self.state.lock:
            return list(self.state.received)

    def up(self) -> WebhookSink:
        self.server.server_activate()
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def reply_with(self, *statuses: int) -> None:
        with self.state.lock:
            self.state.statuses.extend(statuses)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Delivery]:
        """Wait (bounded) until at least `count` deliveries arrived; returns what arrived."""
        deadline = time.monotonic() + timeout_s
        with self.state.lock:
            while len(self.state.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.state.arrived.wait(left)
            return list(self.state.received)

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> WebhookSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


POLICY_YAML = """
policy:
  groups:
    - {name: staff, subnets: [10.10.0.0/16], mode: monitor}
    - {name: quiet-staff, subnets: [10.11.0.0/16], mode: monitor, alert_on_monitor: false}
    - {name: students, subnets: [0.0.0.0/0], mode: block}
  default_group: students
"""


def make_verdict(
    *,
    ip: str = "10.20.3.4",
    mac: str | None = "02:00:5e:00:53:01",
    hostname: str | None = "pupil-laptop-7",
    sha256: str = SHA_A,
    matched: bool = True,
    failure: str | None = None,
    direction: str = "upload",
    route: str = "/upload/raw/IMG_0042.jpg",
    distance: int = 4,
    signal: SignalType = SignalType.PDQ,
    locator: str | None = None,
    body_size: int | None = None,
    frame: tuple[int, float] | None = None,
) -> Verdict:
    """A decision from the real policy on findings as the engine would report them."""
    config = parse_config(POLICY_YAML, "test.yaml")
    found = BankMatch("incident-2026", signal, "f" * 64, distance, 100, "ref 1234")
    if frame is not None:
        found = FrameMatch("incident-2026", signal, "f" * 64, distance, 100, "ref 1234",
                           frame=frame[0], timestamp=frame[1])  # fmt: skip
    matches = (found,) if matched else ()
    findings = Findings(
        media_type="jpeg",
        size=123_456,
        hashes={"sha256": sha256, "md5": "c" * 32, "sha1": "d" * 40, "pdq": "e" * 64},
        matches=matches,
        failure=failure,
        failure_detail="test" if failure else None,
    )
    ctx = InspectionContext(
        client_ip=ip,
        app="testshare",
        host="media.schoolgate.localhost",
        route=route,
        direction=direction,
        filename="IMG_0042.jpg",
        mac=mac,
        hostname=hostname,
        locator=locator,
        body_size=body_size,
    )
    return Policy(config.policy).decide(ctx, findings)
