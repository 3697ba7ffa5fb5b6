"""An outbox moved in the configuration takes its undelivered alerts along (adversarial passes
a38 A23 and a39 F4: moving `alerts.outbox`, the obvious answer to a full disk, stranded every
pending and dead-lettered alert in the old file, listed and sent by nothing)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from schoolgate.alerts import relocation
from schoolgate.alerts.outbox import DEAD, DELIVERED, PENDING, AlertOutbox
from schoolgate.alerts.receivers import CONNECTION_ERROR
from schoolgate.alerts.sender import AlertSender, RetryPolicy
from schoolgate.alerts.service import open_outbox
from schoolgate.alerts.settings import AlertsConfig, ReceiverConfig
from schoolgate.cli.app import main
from tests.support.alert_helpers import SHA_B, FakeClock
from tests.test_alerts_outbox import ScriptedReceiver, details

RECEIVERS = ("north-dsl", "trust-lead")


def _config(data_dir: Path, outbox: str) -> AlertsConfig:
    receivers = tuple(
        ReceiverConfig(name=name, url=f"http://127.0.0.1:9/{name}", format="generic", secret=b"s")
        for name in RECEIVERS
    )
    return AlertsConfig(outbox=data_dir / outbox, receivers=receivers, data_dir=data_dir)


def _fill(path: Path, clock: FakeClock) -> dict[str, str]:
    """An outbox as a full disk leaves it: one alert delivered everywhere, one delivered to the
    trust lead and pending for the north DSL (down), one dead-lettered."""
    ids: dict[str, str] = {}
    with AlertOutbox(path, RECEIVERS, clock=clock) as outbox:
        ids["delivered"] = outbox.enqueue(details(), "a1").alert_id
        ids["half"] = outbox.enqueue(details(sha256=SHA_B), "a2").alert_id
        ids["dead"] = outbox.enqueue(details(sha256="c" * 64), "a3").alert_id
        for claim in outbox.claim(lease_s=65):
            if claim.alert.id == ids["delivered"] or claim.receiver == "trust-lead":
                outbox.delivered(claim.alert.id, claim.receiver)
            elif claim.alert.id == ids["dead"]:
                outbox.failed(claim.alert.id, claim.receiver, "http_5xx", "503", next_at=None)
            else:
                outbox.failed(claim.alert.id, claim.receiver, CONNECTION_ERROR, "down",
                              next_at=clock() + 60)  # fmt: skip
    return ids


def test_a_moved_outbox_takes_its_undelivered_alerts_along(tmp_path: Path) -> None:
    clock = FakeClock()
    ids = _fill(tmp_path / "alerts.sqlite", clock)
    config = _config(tmp_path, "/moved/alerts-new.sqlite".lstrip("/"))
    assert relocation.notes(config.outbox, tmp_path) == [
        f"alerts.outbox is {config.outbox}, and the outbox used before, "
        f"{tmp_path / 'alerts.sqlite'}, holds 2 undelivered alert(s): they move to the new one "
        "when schoolgate next starts or reloads"
    ]
    with open_outbox(config, follow=True) as moved:
        states = {alert.id: alert.state for alert in moved.list()}
        half = moved.get(ids["half"])
    assert states == {ids["half"]: PENDING, ids["dead"]: DEAD}
    assert half is not None
    assert half.delivered_to == ("trust-lead",)  # not sent to the trust lead again
    with AlertOutbox(tmp_path / "alerts.sqlite", RECEIVERS) as old:
        assert [alert.id for alert in old.list()] == [ids["delivered"]]  # history stays
    assert (tmp_path / relocation.RECORD).read_text().strip() == str(config.outbox.resolve())
    assert relocation.notes(config.outbox, tmp_path) == []


def test_the_moved_alert_reaches_the_receiver_that_was_down(tmp_path: Path) -> None:
    clock = FakeClock()
    ids = _fill(tmp_path / "alerts.sqlite", clock)
    clock.advance(120)
    north = ScriptedReceiver("north-dsl")
    trust = ScriptedReceiver("trust-lead")
    with open_outbox(_config(tmp_path, "alerts-new.sqlite"), follow=True) as moved:
        moved.clock = clock
        AlertSender(moved, [north, trust], RetryPolicy(10, 900, 3600)).deliver_due()
        half = moved.get(ids["half"])
    # the dead letter too: the north DSL answers again (alerts.sender re-drives it)
    assert [alert.id for alert in north.delivered] == [ids["half"], ids["dead"]]
    assert trust.delivered == []
    assert half is not None
    assert half.state == DELIVERED


def test_moving_it_back_brings_them_back(tmp_path: Path) -> None:
    clock = FakeClock()
    ids = _fill(tmp_path / "alerts.sqlite", clock)
    open_outbox(_config(tmp_path, "alerts-new.sqlite"), follow=True).close()
    with open_outbox(_config(tmp_path, "alerts.sqlite"), follow=True) as back:
        assert {alert.id for alert in back.list(state=PENDING)} == {ids["half"]}
        assert {alert.id for alert in back.list()} == set(ids.values())


def test_a_previous_outbox_that_cannot_be_read_is_named_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "alerts.sqlite").write_bytes(b"not a database, " * 512)
    config = _config(tmp_path, "alerts-new.sqlite")
    with (
        caplog.at_level(logging.CRITICAL, "schoolgate.alerts"),
        open_outbox(config, follow=True) as outbox,
    ):
        assert outbox.list() == []
    assert "ALERTS STRANDED" in caplog.text
    assert str(tmp_path / "alerts.sqlite") in caplog.text
    assert not (tmp_path / relocation.RECORD).exists()  # the next start tries again
    assert "cannot be read" in relocation.notes(config.outbox, tmp_path)[0]


def test_an_unmoved_outbox_records_itself_and_moves_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    _fill(tmp_path / "alerts.sqlite", clock)
    config = _config(tmp_path, "alerts.sqlite")
    assert relocation.notes(config.outbox, tmp_path) == []
    with open_outbox(config, follow=True) as outbox:
        assert len(outbox.list()) == 3
    assert (tmp_path / relocation.RECORD).read_text().strip() == str(config.outbox.resolve())


def test_check_config_names_the_stranded_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    _fill(data_dir / "alerts.sqlite", FakeClock())
    config = tmp_path / "schoolgate.yaml"
    config.write_text(f"data_dir: {data_dir}\nalerts:\n  outbox: {tmp_path / 'big' / 'a.sqlite'}\n")
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "holds 2 undelivered alert(s)" in out
    assert not (tmp_path / "big").exists()  # check-config moves nothing


def test_alerts_list_with_the_new_configuration_shows_them(tmp_path: Path) -> None:
    """`alerts list` with the new configuration shows them (it opens the outbox the same way)."""
    clock = FakeClock()
    ids = _fill(tmp_path / "alerts.sqlite", clock)
    with open_outbox(_config(tmp_path, "elsewhere.sqlite"), follow=True) as moved:
        listed = {alert.id for alert in moved.list(state=DEAD)}
    assert listed == {ids["dead"]}


def test_the_spool_beside_a_moved_outbox_moves_too(tmp_path: Path) -> None:
    """What the full disk kept out of the old outbox was spooled beside it."""
    line = b'{"audit_id": "d1", "details": {}}\n'
    (tmp_path / "alerts.sqlite.spool.jsonl").write_bytes(line)
    AlertOutbox(tmp_path / "alerts.sqlite", RECEIVERS).close()
    open_outbox(_config(tmp_path, "new/alerts.sqlite"), follow=True).close()
    assert (tmp_path / "new" / "alerts.sqlite.spool.jsonl").read_bytes() == line
    assert not (tmp_path / "alerts.sqlite.spool.jsonl").exists()


def test_a_damaged_outbox_is_moved_aside_and_the_appliance_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """a41 F11: an outbox overwritten with garbage stopped `schoolgate run` at start: no
    filtering, no audit, no alerts."""
    (tmp_path / "alerts.sqlite").write_bytes(b"GARBAGE" * 300)
    config = _config(tmp_path, "alerts.sqlite")
    with (
        caplog.at_level(logging.CRITICAL, "schoolgate.alerts"),
        open_outbox(config, follow=True) as outbox,
    ):
        assert outbox.list() == []
        outbox.enqueue(details(), "v1")  # and takes alerts
    assert "ALERT OUTBOX DAMAGED" in caplog.text
    (aside,) = tmp_path.glob("alerts.sqlite.damaged-*")
    assert aside.read_bytes() == b"GARBAGE" * 300  # kept for IT


def test_alerts_list_never_moves_them_and_says_where_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """a43 F3: `alerts list` with an edited configuration moved the pending alerts out of the
    outbox the running proxy delivers from; only the appliance moves them (start, reload)."""
    data_dir = tmp_path / "data"
    _fill(data_dir / "alerts.sqlite", FakeClock())
    config = tmp_path / "schoolgate.yaml"
    config.write_text(f"data_dir: {data_dir}\nalerts:\n  outbox: {tmp_path / 'big' / 'a.sqlite'}\n")
    assert main(["alerts", "list", "--config", str(config)]) == 0
    assert "holds 2 undelivered alert(s)" in capsys.readouterr().err
    with AlertOutbox(data_dir / "alerts.sqlite", RECEIVERS) as old:
        assert len(old.list(state=PENDING)) == 1  # still where the proxy delivers from
