"""The two-DSL exemption cannot be steered: the approval names the proposal the approver read, a
repeat that puts the incident back in the queue withdraws what waits on it, and the second DSL
is a second person (adversarial pass a14)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from schoolgate.alerts.model import AlertDetails
from schoolgate.alerts.outbox import AlertOutbox
from schoolgate.banks.exemptions import Exemptions
from schoolgate.banks.store import BankStore
from schoolgate.config import Config, load_config
from schoolgate.console.store import ConsoleError, ConsoleStore
from schoolgate.console.usernames import reads_like, skeleton
from tests.support.alert_helpers import FakeClock, make_verdict
from tests.support.console_helpers import (
    PASSWORD,
    act,
    approve,
    console,
    console_app,
    enqueue,
    shown_proposal,
    sign_in,
)

LABEL = "bank:incident-2026"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_900_000_000.0)


@pytest.fixture
def config(data_dir: Path) -> Config:
    return load_config()


@pytest.fixture
def app(config: Config, clock: FakeClock) -> Iterator[Flask]:
    with console_app(config, clock) as app:
        yield app


def exempted(config: Config) -> list[str]:
    with BankStore(config.banks.path) as store:
        return [e.sha256 for e in Exemptions(store).list()]


def propose(app: Flask, incident: str, reason: str) -> None:
    browser, _ = sign_in(app, "dana")
    assert act(browser, incident, action="close", outcome="false_positive", exempt=LABEL,
               note=reason) == 302  # fmt: skip


def test_an_approval_loaded_before_the_proposal_was_made_again_is_refused(
    app: Flask, config: Config, clock: FakeClock
) -> None:
    """a14 T6: the proposer reopened and proposed again with another reason under the
    deputy's open page, and the deputy's approval went through for a reason never shown."""
    incident = enqueue(config, distance=20)
    propose(app, incident, "pupil: my own drawing")
    seen = shown_proposal(app, incident, LABEL)
    dana, _ = sign_in(app, "dana")
    act(dana, incident, action="reopen")
    clock.advance(30)
    propose(app, incident, "CHANGED REASON")
    deputy, _ = sign_in(app, "dev")
    page = deputy.get(f"/incidents/{incident}").get_data(as_text=True)
    answer = deputy.post(f"/incidents/{incident}/act", data={
        "csrf": page.split('name="csrf" value="')[1].split('"')[0],
        "action": "approve_exemption", "label": LABEL, "proposal": seen,
    })  # fmt: skip
    assert answer.status_code == 400
    assert "proposed again since you loaded the page" in answer.get_data(as_text=True)
    assert exempted(config) == []
    assert shown_proposal(app, incident, LABEL)  # still waiting, for a decision on what it says
    assert approve(app, incident) == 302  # the proposal as it stands now
    assert len(exempted(config)) == 1


def test_a_repeat_that_reopens_the_incident_withdraws_the_waiting_proposal(
    app: Flask, config: Config, clock: FakeClock
) -> None:
    """a14 T7: the pupil sent the file again, the incident went back to the queue, and the
    deputy still approved the exemption proposed when it was closed."""
    times = iter([1_900_000_000.0, 1_900_000_200.0])
    with AlertOutbox(config.alerts.outbox, dedup_window_s=600, clock=lambda: next(times)) as box:
        details = AlertDetails.from_verdict(make_verdict(distance=20), "Test School")
        incident = box.enqueue(details).alert_id
        box._db.execute("UPDATE alerts SET sent_once = 1, state = 'delivered'")
        clock.now = 1_900_000_100.0
        propose(app, incident, "pupil: my own drawing")
        seen = shown_proposal(app, incident, LABEL)
        box.enqueue(details)  # t=200: the same file again, after the close
    deputy, _ = sign_in(app, "dev")
    page = deputy.get(f"/incidents/{incident}").get_data(as_text=True)
    assert 'id="status">new' in page
    assert "Exemptions waiting for a second DSL" not in page
    assert act(deputy, incident, action="approve_exemption", label=LABEL, proposal=seen) == 400
    assert exempted(config) == []
    withdrawn = [a for a in console(app).store.actions(incident) if "withdrawn" in a.action]
    assert [a.actor for a in withdrawn] == ["schoolgate"]
    assert "no longer closed as a false positive" in withdrawn[0].detail


def test_an_account_made_after_the_proposal_cannot_approve_it(
    app: Flask, config: Config, clock: FakeClock
) -> None:
    """a14 T8: an admin made a second DSL account to approve a proposal already waiting."""
    incident = enqueue(config, distance=20)
    propose(app, incident, "pupil: my own drawing")
    clock.advance(60)
    console(app).store.add_account("dsl.newcomer", "dsl", PASSWORD)
    assert approve(app, incident, by="dsl.newcomer") == 400
    assert exempted(config) == []
    assert approve(app, incident, by="dev") == 302  # an account that existed before may


@pytest.mark.parametrize(
    "look_alike",
    ["dsl.jon\u0435s", "DSL.Jones", "dsl_jones", "dsl-jones", "dsljones", "dsI.jones",
     "dsl.j0nes", "ds1.jones", "dsl.jones\u200b", "\uff44sl.jones",
     # adversarial pass a15: still accepted after a14's fix
     "dsl.jone5", "d5l.jones", "dsl.jcnes", "dsl.jonesx", "dsl.jnes"],
)  # fmt: skip
def test_a_username_that_reads_as_an_existing_one_is_refused(
    config: Config, look_alike: str
) -> None:
    """a14 T8: "dsl.jones, approved by dsl.jon\\u0435s" (a Cyrillic e) reads as one person twice."""
    with ConsoleStore(config.console.database) as store:
        store.add_account("dsl.jones", "dsl", PASSWORD)
        with pytest.raises(ConsoleError, match=r"mistaken for|is not a username"):
            store.add_account(look_alike, "dsl", PASSWORD)
        store.add_account("dsl.smith", "dsl", PASSWORD)
        assert [a.username for a in store.accounts()] == ["dsl.jones", "dsl.smith"]


def test_the_skeleton_folds_only_what_a_reader_confuses() -> None:
    assert skeleton("Dsl.Jones") == skeleton("dsl_jones") == skeleton("dsi.jones")
    assert skeleton("modern") == skeleton("modem")  # "rn" reads as "m"
    assert skeleton("dsl.deputv") == skeleton("dsl.deputy")
    assert skeleton("dsl.jones") != skeleton("dsl.jonas")
    assert reads_like("dsl.jones", "dsl.jonas")  # one letter apart: refused as well
    assert not reads_like("dsl.jones", "dsl.smith")
    assert not reads_like("ann", "amy")  # short names are compared whole


def test_the_approver_reads_that_the_item_was_hidden_after_other_data(
    app: Flask, config: Config
) -> None:
    """a14 T10: the page showed only the hidden item's size and hash, so nothing contradicted
    "it's my cat"; it now says where in the upload the item lay and how big the upload was."""
    hidden = enqueue(config, distance=20, locator="body/multipart:file[0]@41803",
                     body_size=76_002)  # fmt: skip
    plain_file = enqueue(config, distance=20, sha256="9" * 64, locator="body/multipart:file[0]",
                         body_size=123_900)  # fmt: skip
    deputy, _ = sign_in(app, "dev")
    page = deputy.get(f"/incidents/{hidden}").get_data(as_text=True)
    assert 'id="found-in"' in page
    assert "found by its signature at byte 41803" in page
    assert "an upload of 76002 bytes" in page
    assert "found by its signature" in deputy.get(f"/incidents/{hidden}/summary").get_data(
        as_text=True
    )
    assert 'id="found-in"' not in deputy.get(f"/incidents/{plain_file}").get_data(as_text=True)
    rows = {r["incident_id"]: r for r in csv.DictReader(
        io.StringIO(deputy.get("/export.csv").get_data(as_text=True)))}  # fmt: skip
    assert "byte 41803" in rows[hidden]["found_in"]
    assert rows[plain_file]["found_in"] == ""
    assert rows[hidden]["file_size"] == "123456"


def test_the_approver_reads_that_the_match_was_one_frame_of_an_animation(
    app: Flask, config: Config
) -> None:
    """a15 T10c: a banked frame shown for 40 ms inside a GIF of a cat was approved as "a GIF of
    my cat": the page said nothing about the frame. The alert says it as well."""
    from zoneinfo import ZoneInfo

    from schoolgate.alerts.formats import build_view  # what every alert format renders

    incident = enqueue(config, distance=20, frame=(1, 2.0), sha256="7" * 64)
    deputy, _ = sign_in(app, "dev")
    page = deputy.get(f"/incidents/{incident}").get_data(as_text=True)
    assert "in frame 1 at 2.00 s" in page
    assert "one frame or page of a longer file" in page
    with AlertOutbox(config.alerts.outbox) as outbox:
        alert = outbox.get(incident)
    assert alert is not None
    facts = dict(build_view(alert, "guidance", ZoneInfo("UTC")).facts)
    assert "frame 1 at 2.00 s" in facts["Found"]
    assert "frame 1 at 2.00 s" in facts["Matched"]


def test_the_same_file_from_another_device_after_the_close_withdraws_the_proposal(
    app: Flask, config: Config, clock: FakeClock
) -> None:
    """a15 (T7 residual): outside the de-duplication window, or from another device, the file
    opens a new incident, and the proposal on the closed one was still approved."""
    incident = enqueue(config, distance=20)
    propose(app, incident, "pupil: my own drawing")
    seen = shown_proposal(app, incident, LABEL)
    with AlertOutbox(config.alerts.outbox, clock=lambda: clock.now + 60) as outbox:
        other = make_verdict(distance=20, ip="10.20.3.99", mac="02:00:5e:00:53:99")
        outbox.enqueue(AlertDetails.from_verdict(other, "Test School"))
    deputy, _ = sign_in(app, "dev")
    page = deputy.get(f"/incidents/{incident}").get_data(as_text=True)
    assert "Exemptions waiting for a second DSL" not in page
    assert act(deputy, incident, action="approve_exemption", label=LABEL, proposal=seen) == 400
    assert exempted(config) == []
    (withdrawn,) = [a for a in console(app).store.actions(incident) if "withdrawn" in a.action]
    assert "sent again after the close" in withdrawn.detail


def test_an_approval_is_refused_when_a_note_came_after_the_page_was_loaded(
    app: Flask, config: Config
) -> None:
    """a15 (T6 residual): "pupil admitted it is the banked picture", added after the deputy
    loaded the page, did not stop the approval."""
    incident = enqueue(config, distance=20)
    propose(app, incident, "pupil: my own drawing")
    deputy, _ = sign_in(app, "dev")
    page = deputy.get(f"/incidents/{incident}").get_data(as_text=True)
    seen = page.split('name="seen" value="')[1].split('"')[0]
    dana, _ = sign_in(app, "dana")
    act(dana, incident, action="note", note="pupil admitted it is the banked picture")
    answer = deputy.post(f"/incidents/{incident}/act", data={
        "csrf": page.split('name="csrf" value="')[1].split('"')[0], "action": "approve_exemption",
        "label": LABEL, "proposal": shown_proposal(app, incident, LABEL), "seen": seen,
    })  # fmt: skip
    assert answer.status_code == 400
    assert "changed since you loaded the page" in answer.get_data(as_text=True)
    assert exempted(config) == []
