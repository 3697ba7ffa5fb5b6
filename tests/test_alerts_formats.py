"""Alert payloads: generic JSON, Teams Adaptive Card, Slack. Built from a real inspection of a
benign photo in a test bank; they must carry the guidance and never the media or a link to it."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from schoolgate.alerts.formats import (
    email_message,
    generic_payload,
    slack_payload,
    teams_payload,
)
from schoolgate.alerts.model import Alert, AlertDetails
from schoolgate.alerts.outbox import AlertOutbox
from schoolgate.alerts.receivers import WebhookReceiver
from schoolgate.alerts.service import build_receivers
from schoolgate.config import parse_config
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.conftest import encode
from tests.support.alert_helpers import make_verdict
from tests.support.proxy_harness import bank_photo

GUIDANCE = "Do not open, view, copy or forward the image. Follow the school's procedure."
TZ = ZoneInfo("Europe/London")
# A pupil can name their device anything; DHCP passes it on. This one tries to inject links.
HOSTILE_HOSTNAME = "evil<https://x.example/a|click>[here](http://y.example)"
ROUTE = "/upload/raw/secret-object-id-1234"
FILENAME = "IMG_4321_private.jpg"


@pytest.fixture(scope="module")
def banned(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["chelsea"], "JPEG", quality=90)


@pytest.fixture
def alert(data_dir: Path, banned: bytes, benign_photos: dict[str, Image.Image]) -> Alert:
    bank_photo(data_dir, benign_photos["chelsea"], bank="incident-2026")
    config = parse_config(
        f"classifier: {{models: []}}\nalerts: {{guidance: {json.dumps(GUIDANCE)}}}\n", "t.yaml"
    )
    inspector = Inspector.from_config(config, with_audit=False, with_alerts=False)
    try:
        ctx = InspectionContext(
            client_ip="10.20.3.4",
            app="testshare",
            host="media.schoolgate.localhost",
            route=ROUTE,
            filename=FILENAME,
            mac="02:00:5e:00:53:01",
            hostname=HOSTILE_HOSTNAME,
        )
        verdict = inspector.evaluate(banned, ctx)
    finally:
        inspector.close()
    assert verdict.blocked
    with AlertOutbox(data_dir / "alerts.sqlite") as outbox:
        details = AlertDetails.from_verdict(verdict, "Test School")
        outbox.enqueue(details, verdict.id)
        outbox.enqueue(details, "second-decision")
        (stored,) = outbox.list()
    return stored


def assert_carries_nothing_to_click(payload: Any, media: bytes) -> str:
    text = json.dumps(payload)
    assert "://" not in text  # no URL of any kind, so none to the media
    assert ROUTE not in text
    assert "secret-object-id" not in text
    assert FILENAME not in text
    assert "<https" not in text
    assert "](" not in text
    assert base64.b64encode(media[:48]).decode()[:40] not in text
    assert media[:32].hex() not in text
    assert len(text) < 10_000  # metadata only; the photo is ~20 KB
    return text


def test_generic_payload_schema(alert: Alert, banned: bytes) -> None:
    payload = generic_payload(alert, GUIDANCE, TZ)
    assert_carries_nothing_to_click(payload, banned)
    assert payload["schema"] == "schoolgate.alert"
    assert payload["version"] == 1
    assert payload["alert_id"] == alert.id
    assert payload["kind"] == "decision"
    assert payload["count"] == 2
    assert len(payload["audit_ids"]) == 2
    assert payload["guidance"] == GUIDANCE
    assert payload["decision"]["action"] == "block"
    assert payload["device"]["ip"] == "10.20.3.4"
    assert payload["device"]["mac"] == "02:00:5e:00:53:01"
    assert payload["device"]["hostname"].startswith("evil")
    assert payload["app"] == "testshare"
    assert payload["media"]["type"] == "jpeg"
    assert payload["media"]["size"] == len(banned)
    assert payload["media"]["sha256"] == hashlib.sha256(banned).hexdigest()
    (match,) = payload["matches"]
    assert match["bank"] == "incident-2026"
    assert match["signal_type"] == "pdq"
    assert match["distance"] <= 31
    assert payload["first_seen"].endswith("+00:00")


def test_teams_payload_is_an_adaptive_card_message(alert: Alert, banned: bytes) -> None:
    payload = teams_payload(alert, GUIDANCE, TZ)
    assert_carries_nothing_to_click(payload, banned)
    assert payload["type"] == "message"
    (attachment,) = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    elements = card["body"]
    assert {e["type"] for e in elements} <= {"TextBlock", "FactSet", "Container"}
    texts = [e["text"] for e in elements if e["type"] == "TextBlock"]
    texts += [i["text"] for e in elements if e["type"] == "Container" for i in e["items"]]
    assert GUIDANCE in texts
    assert texts[0].startswith("Blocked:")
    assert "(2 times)" in texts[0]
    (facts,) = [e["facts"] for e in elements if e["type"] == "FactSet"]
    by_title = {f["title"]: f["value"] for f in facts}
    assert all(isinstance(v, str) and v for v in by_title.values())
    assert "incident-2026" in by_title["Matched"]
    assert "02:00:5e:00:53:01" in by_title["Device"]
    assert by_title["Action"] == "blocked"
    assert "not stored, not attached" in by_title["Media"]


def test_slack_payload_uses_block_kit_within_its_limits(alert: Alert, banned: bytes) -> None:
    payload = slack_payload(alert, GUIDANCE, TZ)
    text = assert_carries_nothing_to_click(payload, banned)
    assert payload["unfurl_links"] is False
    assert payload["unfurl_media"] is False
    assert payload["text"].startswith("Blocked:")
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["type"] == "plain_text"
    assert len(blocks[0]["text"]["text"]) <= 150
    assert {b["type"] for b in blocks} <= {"header", "section", "context"}
    for block in blocks:
        assert len(block.get("fields", [])) <= 10
    # Guidance, with Slack's control characters escaped ("'" is not one of them).
    assert any(GUIDANCE in b.get("text", {}).get("text", "") for b in blocks)
    assert "incident-2026" in text


def test_email_is_plain_text_without_attachments(alert: Alert, banned: bytes) -> None:
    message = email_message(alert, GUIDANCE, TZ, "gate@school.example", ("dsl@school.example",))
    assert not message.is_multipart()
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert GUIDANCE in body
    assert "incident-2026" in body
    assert "://" not in body
    assert FILENAME not in body
    assert ROUTE not in body
    assert message["Subject"].startswith("[schoolgate] Blocked:")
    assert message["Message-ID"] == f"<{alert.id}@schoolgate.alert>"


def test_a_shared_banks_origin_is_in_every_format(alert: Alert) -> None:
    """Issue 21: a match of a bank a school shared across its trust says where it came from."""
    origin = "North Academy, 2026-12-04: ref 2026-117"
    (match,) = alert.details.matches
    matches = (replace(match, provenance=origin),)
    shared = replace(alert, details=replace(alert.details, matches=matches))
    email = email_message(shared, GUIDANCE, TZ, "gate@school.example", ("dsl@school.example",))
    assert f"Shared by: {origin}" in email.get_content()
    for payload in (teams_payload, slack_payload, generic_payload):
        assert origin in json.dumps(payload(shared, GUIDANCE, TZ, None)), payload.__name__
    assert (
        origin
        not in email_message(alert, GUIDANCE, TZ, "g@s.example", ("d@s.example",)).get_content()
    )


def test_monitor_mode_says_so(data_dir: Path) -> None:
    monitored = AlertDetails.from_verdict(make_verdict(ip="10.10.0.5"), "S")
    with AlertOutbox(data_dir / "m.sqlite") as outbox:
        alert = outbox.get(outbox.enqueue(monitored, "v1").alert_id)
    assert alert is not None
    payload = generic_payload(alert, GUIDANCE, TZ)
    assert payload["decision"]["action"] == "allow"
    assert payload["decision"]["mode"] == "monitor"
    assert payload["title"].startswith("Recorded, not blocked (monitor mode)")
    assert "monitor mode" in payload["summary"]


def test_with_a_console_every_format_links_to_the_incident_by_its_id_only(alert: Alert) -> None:
    base = "https://gateway.school.example:8443"
    link = f"{base}/incidents/{alert.id}"
    generic = generic_payload(alert, GUIDANCE, TZ, base)
    assert generic["console_url"] == link
    card = teams_payload(alert, GUIDANCE, TZ, base)["attachments"][0]["content"]
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the incident in the console", "url": link}
    ]
    slack = json.dumps(slack_payload(alert, GUIDANCE, TZ, base))
    assert f"<{link}|Open the incident in the console>" in slack
    email = email_message(alert, GUIDANCE, TZ, "gw@school.example", ("dsl@school.example",), base)
    assert f"Open the incident in the console: {link}" in email.get_content()
    for text in (json.dumps(generic), json.dumps(card), slack, email.get_content()):
        assert text.count("https://") == 1  # the console's link and no other
    # Without a console, no link at all.
    assert generic_payload(alert, GUIDANCE, TZ)["console_url"] is None
    assert "actions" not in teams_payload(alert, GUIDANCE, TZ)["attachments"][0]["content"]
    assert "console" not in email_message(alert, GUIDANCE, TZ, "a@b.example", ("c@d.example",)
                                          ).get_content().lower()  # fmt: skip


def test_the_console_base_url_reaches_the_alert_receivers(alert: Alert) -> None:
    config = parse_config(
        "console: {base_url: 'https://gw.example:8443/'}\n"
        "alerts: {receivers: [{name: dsl, url: 'https://dsl.example/hook', secret: s3cret}]}\n",
        "t.yaml",
    )
    assert config.alerts.console_url == "https://gw.example:8443"
    (receiver,) = build_receivers(config.alerts, TZ)
    assert isinstance(receiver, WebhookReceiver)
    sent = json.loads(receiver.request(alert).body)
    assert sent["console_url"] == f"https://gw.example:8443/incidents/{alert.id}"


def test_names_a_pupil_chose_are_written_so_no_client_links_them(data_dir: Path) -> None:
    """Adversarial pass a12: a DHCP name and a Host header such as www.<look-alike sign-in>
    reached the DSL's email and cards as text that mail clients turn into links."""
    lure = "www.schoolgate-console-signin.example"
    verdict = make_verdict(hostname=lure)
    verdict = replace(verdict, context=replace(verdict.context, host=lure))
    alert = Alert("f" * 32, "decision", "pending", "k", AlertDetails.from_verdict(verdict, "S"))
    email = email_message(alert, GUIDANCE, TZ, "gw@school.example", ("dsl@school.example",))
    texts = [
        email.get_content(),
        json.dumps(teams_payload(alert, GUIDANCE, TZ)),
        json.dumps(slack_payload(alert, GUIDANCE, TZ)),
        generic_payload(alert, GUIDANCE, TZ)["summary"],
    ]
    for text in texts:
        assert lure not in text
        assert "www[.]schoolgate-console-signin[.]example" in text
    assert generic_payload(alert, GUIDANCE, TZ)["device"]["hostname"] == lure  # data stays data


def test_a_note_and_a_stamp_another_school_typed_are_not_linked_either() -> None:
    """a41 F12: a bank's note (and its "Shared by" stamp) from another school's publisher
    reached every school's Teams channel with a bare www.<address> clients turn into a link."""
    lure = "www.evil-trust-signin.example"
    verdict = make_verdict()
    found = verdict.findings.matches[0]
    match = replace(found, note=f"see {lure} for the case", provenance=f"North ({lure}), v1.2")
    verdict = replace(verdict, findings=replace(verdict.findings, matches=(match,)))
    alert = Alert("f" * 32, "decision", "pending", "k", AlertDetails.from_verdict(verdict, "S"))
    email = email_message(alert, GUIDANCE, TZ, "gw@school.example", ("dsl@school.example",))
    for text in (email.get_content(), json.dumps(teams_payload(alert, GUIDANCE, TZ)),
                 json.dumps(slack_payload(alert, GUIDANCE, TZ))):  # fmt: skip
        assert lure not in text
        assert "www[.]evil-trust-signin[.]example" in text
        assert "v1.2" in text  # a version number is not a host
