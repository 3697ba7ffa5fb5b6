"""Audit log: one JSON line per decision, rotation, and no crash when the disk is gone."""

from __future__ import annotations

import json
from pathlib import Path

from schoolgate.pipeline.audit import AuditLog, read_records
from schoolgate.pipeline.settings import AuditConfig
from schoolgate.pipeline.verdict import Action, Findings, InspectionContext, Verdict


def _verdict(n: int = 0) -> Verdict:
    return Verdict(
        action=Action.BLOCK,
        would_block=True,
        mode="block",
        group="students",
        reasons=(f"reason {n}",),
        context=InspectionContext(client_ip="192.0.2.10", app="testapp", mac="aa:bb:cc:dd:ee:ff"),
        findings=Findings(media_type="jpeg", size=10, hashes={"sha256": "ab" * 32}),
    )


def test_one_json_line_per_decision(tmp_path: Path) -> None:
    log = AuditLog(AuditConfig(path=tmp_path / "audit" / "decisions.jsonl"))
    verdicts = [_verdict(n) for n in range(3)]
    for verdict in verdicts:
        log.record(verdict)
    log.close()
    lines = (tmp_path / "audit" / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [v.id for v in verdicts]
    first = records[0]
    assert first["event"] == "decision"
    assert first["decision"] == "block"
    assert first["client"]["mac"] == "aa:bb:cc:dd:ee:ff"
    assert first["hashes"]["sha256"] == "ab" * 32
    assert "logged_at" in first


def test_size_rotation_keeps_backup_count(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = AuditLog(AuditConfig(path=path, rotate="size", max_bytes=2048, backup_count=2))
    for n in range(60):
        log.record(_verdict(n))
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    # The newest decision is in the live file.
    assert read_records(path)[-1]["reasons"] == ["reason 59"]


def test_unwritable_log_counts_lost_lines_instead_of_raising(tmp_path: Path) -> None:
    # /dev/full fails every write with ENOSPC, like a full disk.
    log = AuditLog(AuditConfig(path=Path("/dev/full"), rotate="size", max_bytes=10**9))
    for n in range(5):
        log.record(_verdict(n))
    assert log.lost_records == 5
    log.close()
