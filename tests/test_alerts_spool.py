"""A full disk and then a restart lose no alert (adversarial pass a35 A9): what the outbox
refuses goes to the spool, a small file beside it or elsewhere, read back at the next start.
ENOSPC is simulated by patching the writes."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from schoolgate.alerts.model import AlertDetails
from schoolgate.alerts.outbox import OutboxError
from schoolgate.alerts.service import AlertService
from schoolgate.alerts.spool import AlertSpool
from schoolgate.config import parse_config
from tests.support.alert_helpers import POLICY_YAML, make_verdict


def service_for() -> AlertService:
    return AlertService.open(parse_config(POLICY_YAML, "test.yaml"))


def disk_full(*_args: object, **_kwargs: object) -> object:
    raise OutboxError("alert not written to alerts.sqlite: database or disk is full")


def decisions(service: AlertService) -> list[tuple[str, ...]]:
    return [alert.audit_ids for alert in service.outbox.list()]


def test_an_alert_the_full_disk_refused_survives_a_restart(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service = service_for()
    verdict = make_verdict()
    monkeypatch.setattr(service.outbox, "enqueue", disk_full)
    with caplog.at_level(logging.CRITICAL, logger="schoolgate.alerts"):
        assert service.record(verdict) is None  # never raises; the decision stands
        service.close()  # the process stops while the disk is still full
    assert "ALERT NOT WRITTEN" in caplog.text
    restarted = service_for()  # space again: the spool is read back at the start
    try:
        assert decisions(restarted) == [(verdict.id,)]
        assert not restarted.spool  # and removed once written
    finally:
        restarted.close()
    again = service_for()  # a second restart does not write it twice
    try:
        assert decisions(again) == [(verdict.id,)]
    finally:
        again.close()
    assert service.spooled == 1
    assert "ALERTS LOST" not in caplog.text


def test_a_spooled_alert_is_written_once_when_the_disk_recovers(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_for()
    verdict = make_verdict()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(service.outbox, "enqueue", disk_full)
            service.record(verdict)
        assert service.unwritten == 1
        assert service.spool
        service.flush()  # the sender's next housekeeping pass
        assert service.unwritten == 0
        assert not service.spool
        assert decisions(service) == [(verdict.id,)]
    finally:
        service.close()
    restarted = service_for()
    try:
        assert decisions(restarted) == [(verdict.id,)]
    finally:
        restarted.close()


def test_a_full_spool_disk_falls_back_to_the_runtime_directory(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    service = service_for()
    # beside the outbox, then the audit log's folder, then the runtime directory (a tmpfs)
    *on_disk, in_runtime = service.spool.paths
    assert in_runtime == runtime / "alerts-spool.jsonl"
    assert on_disk[0].parent == service.outbox.path.parent
    write = AlertSpool._write

    def disk_full_but_runtime(spool: AlertSpool, path: Path, data: bytes) -> None:
        if path != in_runtime:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(spool, path, data)

    verdict = make_verdict()
    with monkeypatch.context() as patch:
        patch.setattr(service.outbox, "enqueue", disk_full)
        patch.setattr(AlertSpool, "_write", disk_full_but_runtime)
        service.record(verdict)
        service.close()
    assert not any(path.exists() for path in on_disk)
    assert in_runtime.exists()
    restarted = service_for()
    try:
        assert decisions(restarted) == [(verdict.id,)]
        assert not in_runtime.exists()
    finally:
        restarted.close()


def test_an_alert_no_spool_takes_is_held_and_said_loudly(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nowhere to write it: held in memory, counted, logged CRITICAL with the decision id (the
    audit log has it); written when the disk recovers, and named as lost if it never does."""
    service = service_for()
    first, second = make_verdict(), make_verdict(sha256="b" * 64)

    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with caplog.at_level(logging.CRITICAL, logger="schoolgate.alerts"):
        with monkeypatch.context() as patch:
            patch.setattr(service.outbox, "enqueue", disk_full)
            patch.setattr(AlertSpool, "_write", no_space)
            service.record(first)
        assert service.memory_only == 1
        assert service.held() == (1, 1)  # what the scrape shows (schoolgate_alert_memory_only)
        assert "ALERT HELD ONLY IN MEMORY" in caplog.text
        assert first.id in caplog.text
        service.flush()  # the disk recovers
        assert decisions(service) == [(first.id,)]
        assert service.held() == (0, 0)
        with monkeypatch.context() as patch:
            patch.setattr(service.outbox, "enqueue", disk_full)
            patch.setattr(AlertSpool, "_write", no_space)
            service.record(second)
            service.close()
    assert f"ALERTS LOST at exit, held only in memory: decisions {second.id}" in caplog.text


def test_a_spool_line_the_disk_cut_short_does_not_take_the_next_one_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write falls short on a full disk; the alert spooled next, once there is
    room, was glued onto the fragment and skipped as a damaged line when read back."""
    spool = AlertSpool([tmp_path / "alerts.sqlite.spool.jsonl"])
    real_write = os.write
    cut = [True]

    def filling(fd: int, data: bytes) -> int:
        if cut[0]:
            cut[0] = False
            real_write(fd, data[:40])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", filling)
    first = AlertDetails.from_verdict(make_verdict(), "School")
    assert spool.add(first, "decision-1") is None  # not spooled: held in memory
    assert spool.add(first, "decision-2") is not None
    assert [audit_id for _, audit_id in spool] == ["decision-2"]
