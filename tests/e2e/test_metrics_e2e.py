"""End to end: a real Prometheus scrapes a real `schoolgate run` that has allowed, blocked and
passed through traffic; every dashboard panel's PromQL must be valid and return data, and the
alert rules must evaluate cleanly against the live series. Everything listens on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO_ROOT, encode
from tests.support.alert_helpers import WebhookSink
from tests.support.dashboards import queries, substitute
from tests.support.onnx_models import PATTERN_LABEL, make_pattern_model, pattern_image
from tests.support.proxy_harness import (
    BLOCKED_HOST,
    CDN_HOST,
    MEDIA_HOST,
    OTHER_HOST,
    ProxyProcess,
    RunningUpstream,
    client_ssl_context,
    free_port,
    multipart_body,
    start_upstream,
    tunnel_peer_certificate,
)
from tests.support.stack import ProxyStack, needs_private_hosts, start_proxy_stack

pytestmark = [pytest.mark.slow, needs_private_hosts]

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules" / "schoolgate.rules.yml"
SCRAPE_INTERVAL = "1s"


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_prometheus(work: Path, target: str) -> Prometheus:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: `make test` installs it (Debian package prometheus)")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "schoolgate", "static_configs": [{"targets": [target]}]},
        ],
    }
    config_path = work / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = work / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200:
                return prometheus
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    prometheus.stop()
    raise RuntimeError(f"prometheus not ready in 60 s:\n{log_path.read_text(errors='replace')}")


def wait_for(prometheus: Prometheus, expr: str, minimum: float, timeout_s: float = 60) -> float:
    """Poll until `expr` reaches `minimum` (scrapes happen every second); bounded in time."""
    deadline = time.monotonic() + timeout_s
    seen = 0.0
    while time.monotonic() < deadline:
        seen = prometheus.value(expr)
        if seen >= minimum:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{expr} stayed at {seen} (< {minimum}) for {timeout_s} s")


@dataclass
class Scraped:
    prometheus: Prometheus
    proxy: ProxyProcess
    instance: str
    webhook: WebhookSink


def pattern_model(path: Path) -> dict[str, Any]:
    make_pattern_model(path)
    return {
        "name": "pattern",
        "adapter": "onnx",
        "path": str(path),
        "thresholds": {PATTERN_LABEL: 0.5},
        "input_size": 32,
        "scale": 1 / 255,
        "labels": [PATTERN_LABEL],
        "output_activation": "none",
        "time_budget_ms": 10000,
    }


def curl_upload_from(
    source: str, proxy: ProxyProcess, ca: Path, url: str, data: bytes, work: Path
) -> int:
    """A multipart upload with curl from a given local address (the monitor-mode group)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed: make test installs it")
    photo, cafile = work / "monitored.jpg", work / "curl-ca.pem"
    photo.write_bytes(data)
    cafile.write_bytes(proxy.ca_pem.read_bytes() + ca.read_bytes())
    result = subprocess.run(
        [
            curl, "--silent", "--show-error", "--max-time", "60", "--interface", source,
            "--proxy", proxy.url, "--cacert", str(cafile), "-F", f"file=@{photo};type=image/jpeg",
            "-o", "/dev/null", "-w", "%{http_code}", url,
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def send_traffic(
    upstream: RunningUpstream, proxy: ProxyProcess, ca: Path, photos: Any, work: Path
) -> None:
    """Allowed, blocked (bank and classifier), monitored, downloads, pass-through, refused."""
    port = upstream.upstream.port
    banned = encode(photos["chelsea"], "JPEG", quality=90)
    upstream.upstream.files["banned.jpg"] = banned
    upstream.upstream.files["rocket.jpg"] = encode(photos["rocket"], "JPEG", quality=90)
    trust = client_ssl_context(proxy.ca_pem, ca)

    def post(client: httpx.Client, data: bytes) -> int:
        body, content_type = multipart_body("file", "photo.jpg", data, "image/jpeg")
        response = client.post(
            f"https://{MEDIA_HOST}:{port}/upload/multipart",
            content=body,
            headers={"Content-Type": content_type},
        )
        return response.status_code

    with httpx.Client(proxy=proxy.url, verify=trust, timeout=60) as client:
        assert post(client, encode(photos["astronaut"], "JPEG", quality=85)) == 200
        assert post(client, encode(photos["coffee"], "PNG")) == 200
        assert post(client, banned) == 403
        red = encode(pattern_image(), "PNG")
        raw = client.put(f"https://{MEDIA_HOST}:{port}/upload/raw/red.png", content=red)
        assert raw.status_code == 403
        assert client.get(f"https://{CDN_HOST}:{port}/files/rocket.jpg").status_code == 200
        assert client.get(f"https://{CDN_HOST}:{port}/files/banned.jpg").status_code == 403
        # Not catalogued: tunnelled without decryption.
        assert client.get(f"https://{OTHER_HOST}:{port}/files/rocket.jpg").status_code == 200
    # 127.0.0.2 is in write_config's monitor-mode group: recorded, not blocked.
    url = f"https://{MEDIA_HOST}:{port}/upload/multipart"
    assert curl_upload_from("127.0.0.2", proxy, ca, url, banned, work) == 200
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # refused by SNI
        tunnel_peer_certificate(proxy.port, BLOCKED_HOST, port, ca)


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[Scraped]:
    work = tmp_path_factory.mktemp("metrics-e2e")
    metrics_port = free_port()
    instance = f"127.0.0.1:{metrics_port}"
    # A DSL receiver, so the alert-delivery panels and rules read real deliveries.
    webhook = WebhookSink().up()
    receiver = {"name": "dsl", "url": webhook.url, "secret": "metrics-e2e-secret", "timeout_s": 5}
    prometheus: Prometheus | None = None
    stack: ProxyStack[RunningUpstream] | None = None
    try:
        stack = start_proxy_stack(
            work,
            upstream=start_upstream,
            banked=benign_photos["chelsea"],
            models=[pattern_model(work / "pattern.onnx")],
            extra={
                "metrics": {"listen_host": "127.0.0.1", "listen_port": metrics_port},
                "alerts": {"receivers": [receiver]},
            },
        )
        upstream, proxy = stack.upstream, stack.proxy
        prometheus = start_prometheus(work, instance)
        # Scraped at zero before any traffic, so increase() sees every event.
        wait_for(prometheus, 'up{job="schoolgate"}', 1)
        wait_for(prometheus, "count_over_time(schoolgate_build_info[1m])", 2)
        send_traffic(upstream, proxy, stack.upstream_ca, benign_photos, work)
        wait_for(prometheus, "sum(schoolgate_inspections_total)", 8)
        wait_for(prometheus, "sum(schoolgate_blocks_total)", 3)
        wait_for(prometheus, "sum(schoolgate_passthrough_connections_total)", 1)
        delivered = 'sum(schoolgate_webhook_attempts_total{receiver="dsl",outcome="delivered"})'
        wait_for(prometheus, delivered, 2)
        time.sleep(3)  # a few more scrapes after the last event, for rate() windows
        yield Scraped(prometheus, proxy, instance, webhook)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if stack is not None:
            stack.stop()
        webhook.stop()


def test_every_dashboard_query_is_valid_and_returns_data(scraped: Scraped) -> None:
    variables = {
        # As Grafana writes a multi-value variable: regex-escaped inside a PromQL string.
        "instance": scraped.instance.replace(".", "\\\\."),
        "school": ".*",
        "__rate_interval": "15s",
        "__range": "10m",
        "__interval": "5s",
    }
    # the trust dashboard's data (subscriptions, several schools): tests/e2e/test_trust_e2e.py
    found = queries({"schoolgate-overview", "schoolgate-safeguarding"})
    assert len(found) >= 30
    empty: list[str] = []
    for query in found:
        if not scraped.prometheus.query(substitute(query.expr, variables)):  # raises if invalid
            empty.append(str(query))
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def test_the_traffic_shows_up_in_the_right_series(scraped: Scraped) -> None:
    p = scraped.prometheus

    def testshare(metric: str, labels: str) -> float:
        return p.value(f'sum({metric}{{app="testshare",{labels}}})')

    assert testshare("schoolgate_blocks_total", 'direction="upload",reason="bank_match"') == 1
    assert testshare("schoolgate_blocks_total", 'direction="upload",reason="classifier"') == 1
    assert testshare("schoolgate_blocks_total", 'direction="download"') == 1
    assert testshare("schoolgate_inspections_total", 'direction="upload",decision="allow"') == 2
    assert testshare("schoolgate_inspections_total", 'decision="monitor"') == 1
    assert p.value('sum(schoolgate_bank_matches_total{bank="incident-test"})') >= 3
    assert p.value('schoolgate_passthrough_connections_total{reason="not_catalogued"}') >= 1
    assert p.value('schoolgate_refused_connections_total{reason="block_by_sni"}') >= 1
    assert p.value("schoolgate_intercepted_connections_total") >= 1
    assert p.value('schoolgate_model_loaded{model="pattern"}') == 1
    assert p.value('sum(schoolgate_bank_hashes{bank="incident-test"})') >= 1
    assert p.value('sum(schoolgate_inspection_duration_seconds_count{media_type="jpeg"})') >= 4
    assert p.value("sum(schoolgate_inspected_bytes_total)") > 100_000
    # Alerts: every delivery the receiver got was counted, and the outbox is read. (A repeat of
    # the banked photo from the same device waits, by design, for the end of the dedup window.)
    delivered = p.value('sum(schoolgate_webhook_attempts_total{outcome="delivered"})')
    assert delivered == len(scraped.webhook.received) >= 2
    assert p.value("schoolgate_alert_outbox_up") == 1
    # The proxy's own counters agree with what Prometheus scraped.
    blocked = [r for r in scraped.proxy.audit_records() if r["decision"] == "block"]
    assert p.value("sum(schoolgate_blocks_total)") == len(blocked)


def test_alert_rules_evaluate_cleanly_on_live_series(scraped: Scraped) -> None:
    names = set(re.findall(r"\bschoolgate_[a-z_]+", RULES.read_text()))
    # A trust's subscription series exist only where a gateway follows one: checked in
    # tests/e2e/test_trust_e2e.py
    names = {name for name in names if not name.startswith("schoolgate_bank_subscription_")}
    missing = [
        name
        for name in sorted(names)
        if not scraped.prometheus.query(f'count({{__name__="{name}"}})')
    ]
    assert missing == [], f"alert rules use metrics the appliance does not expose: {missing}"
    deadline = time.monotonic() + 30
    rules: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        groups = httpx.get(f"{scraped.prometheus.url}/api/v1/rules", timeout=10).json()
        rules = [rule for group in groups["data"]["groups"] for rule in group["rules"]]
        if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules):
            break
        time.sleep(0.5)
    assert len(rules) >= 13
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    # A healthy appliance with a loaded model and a bank: those alerts are not even pending.
    active = {r["name"] for r in rules if r.get("alerts")}
    assert not active & {"SchoolgateDown", "SchoolgateModelNotLoaded", "SchoolgateNoBankHashes"}
