"""Audit log: one JSON line per decision, rotation, and no crash when the disk is gone."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest

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


def test_a_line_cut_by_a_full_disk_is_taken_back_and_the_next_one_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a39 F2: on a full disk part of a line reached the file, and the next decision, written
    once the disk had room again, was glued onto it: two records unreadable."""
    path = tmp_path / "decisions.jsonl"
    log = AuditLog(AuditConfig(path=path))
    first, cut, after = _verdict(1), _verdict(2), _verdict(3)
    log.record(first)
    real_write = os.write
    calls = []

    def full_disk(fd: int, data: bytes) -> int:  # what the kernel does as the disk fills
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    log.record(cut)
    monkeypatch.setattr(os, "write", real_write)
    assert log.lost_records == 1
    log.record(after)
    log.close()
    assert [r["id"] for r in read_records(path)] == [first.id, after.id]


def test_a_fragment_left_at_the_end_of_the_log_stays_one_damaged_line(tmp_path: Path) -> None:
    """A crash (or a writer that could not take its fragment back) leaves part of a line: the
    next record starts a line of its own."""
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(b'{"event": "decision", "id": "cut sho')
    log = AuditLog(AuditConfig(path=path))
    verdict = _verdict()
    log.record(verdict)
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"event": "decision", "id": "cut sho'
    assert json.loads(lines[1])["id"] == verdict.id


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_log_moved_or_deleted_by_hand_is_opened_again(tmp_path: Path, how: str) -> None:
    """a41 F3: after `mv` or `rm` of the live file, decisions went to the unlinked file."""
    path = tmp_path / "decisions.jsonl"
    log = AuditLog(AuditConfig(path=path))
    first, later = _verdict(1), _verdict(2)
    log.record(first)
    if how == "moved":
        path.rename(tmp_path / "decisions.jsonl.old")
    else:
        path.unlink()
    log.record(later)
    log.close()
    assert [r["id"] for r in read_records(path)] == [later.id]
    assert log.lost_records == 0


def test_a_record_that_cannot_be_written_is_said_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """a41 F10: a write error (a read-only file, EIO) dropped decisions without a word."""
    log = AuditLog(AuditConfig(path=tmp_path / "decisions.jsonl"))
    verdict = _verdict()

    def broken(fd: int, data: bytes) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", broken)
    with caplog.at_level(logging.CRITICAL, "schoolgate.audit"):
        log.record(verdict)
        log.record(_verdict(2))  # within the minute: counted, not said again
    monkeypatch.undo()
    log.close()
    assert log.lost_records == 2
    (said,) = [
        r.getMessage() for r in caplog.records if "AUDIT RECORD NOT WRITTEN" in r.getMessage()
    ]
    assert verdict.id in said
    assert "Input/output error" in said


def test_a_rotation_that_fails_writes_on_to_the_current_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a41 F10: a directory that took no new file lost every record past the size limit."""
    path = tmp_path / "decisions.jsonl"
    log = AuditLog(AuditConfig(path=path, rotate="size", max_bytes=2048, backup_count=2))

    def refused() -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(log._handler, "doRollover", refused)
    verdicts = [_verdict(n) for n in range(10)]
    for verdict in verdicts:
        log.record(verdict)
    log.close()
    assert [r["id"] for r in read_records(path)] == [v.id for v in verdicts]
    assert log.lost_records == 0


def test_a_log_folder_moved_away_while_running_is_made_again(tmp_path: Path) -> None:
    """a43 F5: with the audit folder moved away, no later decision was written anywhere."""
    path = tmp_path / "audit" / "decisions.jsonl"
    log = AuditLog(AuditConfig(path=path))
    log.record(_verdict(1))
    (tmp_path / "audit").rename(tmp_path / "audit.old")
    later = _verdict(2)
    log.record(later)
    log.close()
    assert [r["id"] for r in read_records(path)] == [later.id]
