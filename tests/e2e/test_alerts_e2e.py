"""End to end: a real `schoolgate run` blocks a banked (benign) photo while the DSL's receiver is
down, is killed with SIGKILL before it could deliver, and delivers the alert after a restart."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from schoolgate.alerts import Alert, verify_signature
from schoolgate.alerts.outbox import DELIVERED, PENDING, AlertOutbox
from tests.conftest import encode
from tests.support.alert_helpers import WebhookSink
from tests.support.proxy_harness import (
    MEDIA_HOST,
    client_ssl_context,
    multipart_body,
    start_proxy,
    start_upstream,
    wait_until,
)
from tests.support.stack import needs_private_hosts, start_proxy_stack

pytestmark = [pytest.mark.slow, needs_private_hosts]

SECRET = "e2e-alert-secret"
CLIENT_MAC = "02:00:5e:00:53:07"
CLIENT_HOST = "pupil-tablet-3"


def outbox_alerts(data_dir: Path) -> list[Alert]:
    with AlertOutbox(data_dir / "alerts.sqlite") as outbox:
        return list(outbox.list())


def test_alert_survives_sigkill_between_enqueue_and_delivery(
    tmp_path: Path, benign_photos: dict[str, Image.Image]
) -> None:
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"{int(time.time()) + 3600} {CLIENT_MAC} 127.0.0.1 {CLIENT_HOST} *\n")
    receiver = WebhookSink()  # down: its port refuses connections until up()
    stack = start_proxy_stack(
        tmp_path,
        upstream=start_upstream,
        banked=benign_photos["chelsea"],
        proxy={"dhcp_leases": [str(leases)]},
        extra={
            "alerts": {
                "receivers": [
                    {"name": "dsl", "url": receiver.url, "secret": SECRET, "timeout_s": 2}
                ],
                "retry_base_s": 0.2,
                "retry_max_s": 1,
            }
        },
    )
    upstream, proxy, data_dir, pki = stack.upstream, stack.proxy, stack.data_dir, stack.pki
    try:
        try:
            body, content_type = multipart_body(
                "file",
                "cat.jpg",
                encode(benign_photos["chelsea"], "JPEG", quality=90),
                "image/jpeg",
            )
            context = client_ssl_context(proxy.ca_pem, pki.ca_pem)
            with httpx.Client(proxy=proxy.url, verify=context, timeout=60) as client:
                response = client.post(
                    f"https://{MEDIA_HOST}:{upstream.upstream.port}/upload/multipart",
                    content=body,
                    headers={"Content-Type": content_type},
                )
            assert response.status_code == 403
            assert upstream.upstream.requests("/upload") == []
            (decision,) = [r for r in proxy.audit_records() if r["decision"] == "block"]
            # Committed before the 403 went out: another connection sees it at once.
            (alert,) = outbox_alerts(data_dir)
            assert alert.state == PENDING
            assert alert.audit_ids == (decision["id"],)
            # The sender tries (and fails: the receiver is down) before the appliance dies.
            wait_until(
                lambda: outbox_alerts(data_dir)[0].attempts >= 1,
                30,
                "a failed delivery attempt",
            )
            proxy.process.kill()
            assert proxy.process.wait(timeout=10) == -signal.SIGKILL
        finally:
            proxy.stop()
        assert receiver.received == []

        receiver.up()
        restarted = start_proxy(stack.config_path, data_dir, proxy.port, tmp_path)
        try:
            (delivery,) = receiver.wait_for(1, timeout_s=60)
            wait_until(
                lambda: outbox_alerts(data_dir)[0].state == DELIVERED,
                30,
                "the outbox to record the delivery",
            )
            time.sleep(1.0)  # a duplicate would have to show up now; none is expected
        finally:
            restarted.stop()
    finally:
        upstream.stop()
        receiver.stop()

    # At least once, with one idempotency key: every delivery carries the alert's id.
    assert {d.alert_id for d in receiver.received} == {alert.id}
    headers = delivery.headers
    assert verify_signature(
        SECRET, headers["x-schoolgate-timestamp"], delivery.body, headers["x-schoolgate-signature"]
    )
    payload = delivery.json()
    assert payload["audit_ids"] == [decision["id"]]
    assert payload["decision"]["action"] == "block"
    assert payload["device"]["mac"] == CLIENT_MAC
    assert payload["device"]["hostname"] == CLIENT_HOST
    assert payload["app"] == "testshare"
    assert payload["matches"][0]["bank"] == "incident-test"
    assert "Do not open, view, copy" in payload["guidance"]
    assert "://" not in delivery.body.decode()
