"""Alerts from the inspection engine: which decisions alert; a broken outbox never breaks one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.alerts.outbox import PENDING, AlertOutbox
from schoolgate.cli import main
from schoolgate.config import parse_config
from schoolgate.pipeline.audit import read_records
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.conftest import encode
from tests.support.alert_helpers import POLICY_YAML
from tests.support.proxy_harness import bank_photo

STUDENT = InspectionContext(client_ip="10.20.3.4", app="testshare", mac="02:00:5e:00:53:01")
STAFF = InspectionContext(client_ip="10.10.0.9", app="testshare")
QUIET_STAFF = InspectionContext(client_ip="10.11.0.9", app="testshare")


def inspector_for(extra: str = "") -> Inspector:
    return Inspector.from_config(
        parse_config("classifier: {models: []}\n" + POLICY_YAML + extra, "test.yaml")
    )


@pytest.fixture
def inspector(data_dir: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Inspector]:
    bank_photo(data_dir, benign_photos["chelsea"])
    inspector = inspector_for()
    yield inspector
    inspector.close()


@pytest.fixture(scope="module")
def banned(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["chelsea"], "JPEG", quality=90)


def outbox_alerts(data_dir: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    with AlertOutbox(data_dir / "alerts.sqlite") as outbox:
        return [(a.details.action, a.details.group, a.audit_ids) for a in outbox.list()]


def test_a_block_is_in_the_outbox_when_record_returns(
    inspector: Inspector, data_dir: Path, banned: bytes
) -> None:
    verdict = inspector.evaluate(banned, STUDENT)
    assert verdict.blocked
    inspector.record(verdict)
    # Read through a separate connection, as another process would: already committed.
    assert outbox_alerts(data_dir) == [("block", "students", (verdict.id,))]
    assert [r["id"] for r in read_records(inspector.config.audit.path)] == [verdict.id]


def test_monitor_mode_alerts_only_where_the_group_says_so(
    inspector: Inspector, data_dir: Path, banned: bytes, benign_photos: dict[str, Image.Image]
) -> None:
    staff = inspector.evaluate(banned, STAFF)
    quiet = inspector.evaluate(banned, QUIET_STAFF)
    clean = inspector.evaluate(encode(benign_photos["coffee"], "JPEG"), STUDENT)
    assert staff.would_block
    assert not staff.blocked
    assert quiet.would_block
    assert not quiet.blocked
    assert not clean.would_block
    for verdict in (staff, quiet, clean):
        inspector.record(verdict)
    assert outbox_alerts(data_dir) == [("allow", "staff", (staff.id,))]


def test_fail_closed_blocks_alert_only_when_configured(data_dir: Path) -> None:
    inspector = inspector_for()
    try:
        inspector.record(inspector.evaluate_unavailable(STUDENT, "oversize", "too big"))
    finally:
        inspector.close()
    assert outbox_alerts(data_dir) == []
    inspector = inspector_for("alerts: {failure_blocks: true}\n")
    try:
        verdict = inspector.evaluate_unavailable(STUDENT, "oversize", "too big")
        inspector.record(verdict)
    finally:
        inspector.close()
    assert outbox_alerts(data_dir) == [("block", "students", (verdict.id,))]


@pytest.mark.parametrize("break_outbox", ["read-only", "full"])
def test_an_unwritable_outbox_is_loud_counted_and_never_breaks_the_decision(
    inspector: Inspector,
    data_dir: Path,
    banned: bytes,
    benign_photos: dict[str, Image.Image],
    caplog: pytest.LogCaptureFixture,
    break_outbox: str,
) -> None:
    service = inspector.alerts
    assert service is not None
    db = service.outbox._db
    verdict = inspector.evaluate(banned, STUDENT)
    if break_outbox == "read-only":
        db.execute("PRAGMA query_only = ON")
    else:
        # SQLITE_FULL, as on a full disk: the file may not grow, and this alert needs new pages
        # (a long reason spills into overflow pages).
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        verdict = replace(verdict, reasons=(*verdict.reasons, "x" * 20_000))
    with caplog.at_level(logging.CRITICAL, logger="schoolgate.alerts"):
        inspector.record(verdict)  # must not raise
    assert verdict.blocked  # the decision stands
    assert "ALERT NOT WRITTEN" in caplog.text
    assert ("readonly" if break_outbox == "read-only" else "full") in caplog.text
    assert verdict.id in caplog.text
    assert service.write_failures == 1
    assert service.unwritten == 1
    assert [r["id"] for r in read_records(inspector.config.audit.path)] == [verdict.id]
    assert outbox_alerts(data_dir) == []

    # The disk recovers: the held alert is written with the next one (or the sender's next pass).
    db.execute("PRAGMA query_only = OFF")
    db.execute("PRAGMA max_page_count = 1073741823")
    other = inspector.evaluate(encode(benign_photos["chelsea"], "PNG"), STUDENT)
    inspector.record(other)
    assert service.unwritten == 0
    assert sorted(a[2] for a in outbox_alerts(data_dir)) == sorted([(verdict.id,), (other.id,)])


def test_held_alerts_are_written_by_the_senders_next_pass(
    inspector: Inspector, data_dir: Path, banned: bytes
) -> None:
    service = inspector.alerts
    assert service is not None
    service.outbox._db.execute("PRAGMA query_only = ON")
    inspector.record(inspector.evaluate(banned, STUDENT))
    service.outbox._db.execute("PRAGMA query_only = OFF")
    assert service.sender.before_pass is not None
    service.sender.before_pass()
    assert service.unwritten == 0
    assert len(outbox_alerts(data_dir)) == 1


def test_no_receiver_is_a_clear_warning_at_start(
    inspector: Inspector, caplog: pytest.LogCaptureFixture
) -> None:
    service = inspector.alerts
    assert service is not None
    with caplog.at_level(logging.WARNING, logger="schoolgate.alerts"):
        service.start()
    assert "no DSL alert receiver is configured" in caplog.text
    assert service.sender.running
    inspector.close()
    assert not service.sender.running


def test_scan_records_no_alerts(
    data_dir: Path, benign_photos: dict[str, Image.Image], tmp_path: Path
) -> None:
    bank_photo(data_dir, benign_photos["chelsea"])
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(encode(benign_photos["chelsea"], "JPEG", quality=90))
    assert main(["scan", str(photo)]) == 1  # blocked...
    assert not (data_dir / "alerts.sqlite").exists()  # ...but a what-if check alerts nobody


def test_every_alert_kept_pending_with_no_receivers(
    inspector: Inspector, data_dir: Path, banned: bytes
) -> None:
    for _ in range(3):
        inspector.record(inspector.evaluate(banned, STUDENT))
    with AlertOutbox(data_dir / "alerts.sqlite") as outbox:
        (alert,) = outbox.list()
        stats = outbox.stats()
    assert alert.state == PENDING
    assert alert.count == 3  # de-duplicated: the same photo from the same device
    assert stats.pending == 1
