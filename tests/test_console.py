"""The DSL's console in-process (Flask's test client over https://): who may see what, the
workflow, exports, hostile strings, sign-in lock-out, sessions and retention.

The end-to-end run through the real proxy and a real browser is tests/e2e/test_console_e2e.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from schoolgate.alerts.model import AlertDetails
from schoolgate.alerts.outbox import AlertOutbox
from schoolgate.banks.exemptions import Exemptions
from schoolgate.banks.model import SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import Config, load_config, parse_config
from schoolgate.console.store import ConsoleError, ConsoleStore
from schoolgate.errors import ConfigError
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.conftest import encode
from tests.support.alert_helpers import SHA_A, SHA_B, FakeClock, make_verdict
from tests.support.console_helpers import (
    PASSWORD,
    act,
    approve,
    client,
    console,
    console_app,
    enqueue,
    hidden,
    shown_proposal,
    sign_in,
)

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
FORMULA = '=HYPERLINK("http://192.0.2.9/x","open")'


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


# -- who may see what ---------------------------------------------------------------------------


def test_no_page_or_export_is_reachable_without_signing_in(app: Flask, config: Config) -> None:
    incident = enqueue(config)
    browser = client(app)
    for path in ("/", "/incidents", f"/incidents/{incident}", f"/incidents/{incident}/summary",
                 "/export.csv", "/export.json", "/health", "/accounts"):  # fmt: skip
        answer = browser.get(path)
        assert answer.status_code == 302, path
        assert answer.headers["Location"].startswith("/login"), path
        assert SHA_A not in answer.get_data(as_text=True)
    answer = browser.post(f"/incidents/{incident}/act", data={"action": "acknowledge"})
    assert answer.status_code == 302
    assert console(app).store.actions(incident) == []


def test_the_it_role_gets_403_on_incidents_and_exports_and_sees_health(
    app: Flask, config: Config
) -> None:
    incident = enqueue(config)
    browser, status = sign_in(app, "ivan")
    assert status == 302
    for path in ("/incidents", f"/incidents/{incident}", f"/incidents/{incident}/summary",
                 "/export.csv", "/export.json", "/accounts"):  # fmt: skip
        answer = browser.get(path)
        assert answer.status_code == 403, path
        assert SHA_A not in answer.get_data(as_text=True)
    health = browser.get("/health")
    assert health.status_code == 200
    assert SHA_A not in health.get_data(as_text=True)
    admin, _ = sign_in(app, "ada")
    assert admin.get("/incidents").status_code == 403
    assert admin.get("/accounts").status_code == 200


def test_a_form_without_its_csrf_token_is_refused(app: Flask, config: Config) -> None:
    incident = enqueue(config)
    browser, _ = sign_in(app, "dana")
    for form in ({"action": "acknowledge"}, {"action": "acknowledge", "csrf": "forged"}):
        assert browser.post(f"/incidents/{incident}/act", data=form).status_code == 400
    assert console(app).store.actions(incident) == []
    # The sign-in form too: a page elsewhere cannot sign a browser in to an attacker's account.
    fresh = client(app)
    answer = fresh.post("/login", data={"username": "dana", "password": PASSWORD})
    assert answer.status_code == 400
    answer = fresh.post("/login", data={"username": "dana", "password": PASSWORD, "csrf": "\0"})
    assert answer.status_code == 400
    admin, _ = sign_in(app, "ada")
    answer = admin.post("/accounts", data={"action": "add", "username": "eve", "role": "admin",
                                           "password": PASSWORD})  # fmt: skip
    assert answer.status_code == 400
    assert "eve" not in {a.username for a in console(app).store.accounts()}


def test_repeated_bad_passwords_lock_the_account_until_it_expires_or_is_unlocked(
    app: Flask, clock: FakeClock
) -> None:
    for _ in range(5):
        _, status = sign_in(app, "dana", "wrong password!")
        assert status == 401
    browser, status = sign_in(app, "dana")
    assert status == 401  # the right password no longer opens it
    page = browser.get("/login")
    assert page.status_code == 200
    clock.advance(901)
    _, status = sign_in(app, "dana")
    assert status == 302
    for _ in range(5):
        sign_in(app, "dev", "wrong password!")
    admin, _ = sign_in(app, "ada")
    html = admin.get("/accounts").get_data(as_text=True)
    assert "locked until" in html
    admin.post("/accounts", data={"action": "unlock", "username": "dev",
                                  "csrf": hidden(html, "csrf")})  # fmt: skip
    assert sign_in(app, "dev")[1] == 302


def test_sign_in_attempts_are_limited_per_address(app: Flask) -> None:
    statuses = [sign_in(app, "nobody", "wrong password!")[1] for _ in range(21)]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


def test_an_idle_session_ends_and_sign_out_ends_it_too(app: Flask, clock: FakeClock) -> None:
    browser, _ = sign_in(app, "dana")
    assert browser.get("/incidents").status_code == 200
    clock.advance(901)
    assert browser.get("/incidents").status_code == 302
    browser, _ = sign_in(app, "dana")
    html = browser.get("/incidents").get_data(as_text=True)
    browser.post("/logout", data={"csrf": hidden(html, "csrf")})
    assert browser.get("/incidents").status_code == 302


@pytest.mark.parametrize(
    "target",
    ["//evil.example/x", "/\t/evil.example", "/\\evil.example", "https://evil.example",
     "/\n/evil.example", "/a//evil.example"],
)  # fmt: skip
def test_sign_in_never_redirects_to_another_site(app: Flask, target: str) -> None:
    browser = client(app)
    token = hidden(browser.get("/login").get_data(as_text=True), "csrf")
    answer = browser.post("/login", data={"username": "dana", "password": PASSWORD,
                                          "csrf": token, "next": target})  # fmt: skip
    assert answer.headers["Location"] == "/"


def test_cookies_and_headers_are_locked_down(app: Flask) -> None:
    browser = client(app)
    page = browser.get("/login")
    token = hidden(page.get_data(as_text=True), "csrf")
    form = {"username": "dana", "password": PASSWORD, "csrf": token}
    answer = browser.post("/login", data={**form, "next": "/incidents?status=new"})
    assert answer.headers["Location"] == "/incidents?status=new"  # back where the link pointed
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if "__Host-schoolgate=" in c)
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    headers = browser.get("/incidents").headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"


# -- the workflow -------------------------------------------------------------------------------


def test_a_dsl_acknowledges_assigns_notes_and_closes_a_false_positive_with_an_exemption(
    app: Flask, config: Config
) -> None:
    incident = enqueue(config, distance=20)  # a near-match: a judgement a DSL may overrule
    browser, _ = sign_in(app, "dana")
    listing = browser.get("/incidents").get_data(as_text=True)
    assert f"/incidents/{incident}" in listing
    assert "incident-2026" in listing
    assert act(browser, incident, action="acknowledge") == 302
    assert act(browser, incident, action="assign", assignee="dev") == 302
    assert act(browser, incident, action="assign", assignee="ivan") == 400  # not a DSL
    assert act(browser, incident, action="note", note="Spoke to the pupil's tutor.") == 302
    assert act(browser, incident, action="close", outcome="false_positive",
               note="A holiday photo, not the banked picture",
               exempt="bank:incident-2026") == 302  # fmt: skip
    page = browser.get(f"/incidents/{incident}").get_data(as_text=True)
    assert 'id="status">closed' in page
    assert "False positive" in page
    assert "Another DSL account must approve it" in page
    with BankStore(config.banks.path) as store:
        assert Exemptions(store).list() == []  # not before a second DSL approves
    assert approve(app, incident) == 302
    history = [a.action for a in console(app).store.actions(incident)]
    assert history == ["acknowledged", "assigned", "note", "closed", "exemption proposed",
                       "exempted"]  # fmt: skip
    # The record shows when the approver's account was made (a15: a re-made account).
    assert "approved (account made " in console(app).store.actions(incident)[-1].detail
    with BankStore(config.banks.path) as store:
        (exemption,) = Exemptions(store).list()
    assert (exemption.sha256, exemption.label, exemption.added_by, exemption.incident) == (
        SHA_A, "bank:incident-2026", "dana, approved by dev", incident)  # fmt: skip
    # Opening the incident and printing its summary are in the access log.
    browser.get(f"/incidents/{incident}/summary")
    log = [(e.actor, e.action, e.target) for e in console(app).store.access_log()]
    assert ("dana", "opened incident", incident) in log
    assert ("dana", "printed referral summary", incident) in log


def test_an_exemption_needs_a_false_positive_and_a_source_that_matched(
    app: Flask, config: Config
) -> None:
    incident = enqueue(config, distance=20)
    browser, _ = sign_in(app, "dana")
    assert act(browser, incident, action="close", outcome="pupil_supported",
               exempt="bank:incident-2026") == 400  # fmt: skip
    assert act(browser, incident, action="close", outcome="false_positive",
               exempt="bank:another-bank") == 400  # fmt: skip
    with BankStore(config.banks.path) as store:
        assert Exemptions(store).list() == []


def test_an_exemption_takes_a_second_dsl_and_can_be_refused(app: Flask, config: Config) -> None:
    """Adversarial pass a13: one persuaded DSL exempted edited copies of the banked picture."""
    incident = enqueue(config, distance=20)
    browser, _ = sign_in(app, "dana")
    act(browser, incident, action="close", outcome="false_positive", exempt="bank:incident-2026")
    shown = shown_proposal(app, incident, "bank:incident-2026")
    # The proposer cannot approve it; nor can an `it` account.
    assert act(browser, incident, action="approve_exemption", label="bank:incident-2026",
               proposal=shown) == 400  # fmt: skip
    it_account, _ = sign_in(app, "ivan")
    assert it_account.post(f"/incidents/{incident}/act").status_code == 403
    deputy, _ = sign_in(app, "dev")
    assert act(deputy, incident, action="refuse_exemption", label="bank:incident-2026",
               proposal=shown) == 302  # fmt: skip
    assert act(deputy, incident, action="approve_exemption", label="bank:incident-2026",
               proposal=shown) == 400  # fmt: skip
    with BankStore(config.banks.path) as store:
        assert Exemptions(store).list() == []
    assert console(app).store.actions(incident)[-1].action == "exemption refused"


@pytest.mark.parametrize(
    ("signal", "distance"),
    [(SignalType.SHA256, 0), (SignalType.MD5, 0), (SignalType.PDQ, 0), (SignalType.PDQ, 8),
     (SignalType.VPDQ, 0)],
)  # fmt: skip
def test_the_banked_file_or_a_near_identical_copy_cannot_be_exempted(
    app: Flask, config: Config, signal: SignalType, distance: int
) -> None:
    """Adversarial pass a12: a DSL persuaded that the banked picture was "my cat" exempted the
    banked file itself, and a banked copy hidden after a cat photo through the cat's story."""
    incident = enqueue(config, signal=signal, distance=distance)
    browser, _ = sign_in(app, "dana")
    page = browser.get(f"/incidents/{incident}").get_data(as_text=True)
    assert 'name="exempt"' not in page
    assert "cannot be exempted" in page
    assert act(browser, incident, action="close", outcome="false_positive",
               exempt="bank:incident-2026") == 400  # fmt: skip
    with BankStore(config.banks.path) as store:
        assert Exemptions(store).list() == []


def test_repeats_fold_into_one_incident_and_a_follow_up_link_finds_it(
    app: Flask, config: Config, clock: FakeClock
) -> None:
    with AlertOutbox(config.alerts.outbox, dedup_window_s=600) as outbox:
        details = AlertDetails.from_verdict(make_verdict(), "Test School")
        first = outbox.enqueue(details).alert_id
        outbox.enqueue(details)  # merged: count 2
        outbox._db.execute("UPDATE alerts SET sent_once = 1, state = 'delivered'")
        follow_up = outbox.enqueue(details).alert_id  # sent already: a follow-up
    assert follow_up != first
    browser, _ = sign_in(app, "dana")
    answer = browser.get(f"/incidents/{follow_up}")
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"/incidents/{first}"
    page = browser.get(f"/incidents/{first}").get_data(as_text=True)
    assert "(3 times)" in page
    assert page.count("repeat, ") == 1
    assert browser.get("/incidents").get_data(as_text=True).count("/incidents/") == 1


def test_filters_by_status_device_app_reason_and_date(app: Flask, config: Config) -> None:
    matched = enqueue(config, hostname="pupil-laptop-7")
    failed = enqueue(config, matched=False, failure="timeout", hostname="tablet-3",
                     sha256=SHA_B, ip="10.20.3.9", mac="02:00:5e:00:53:09")  # fmt: skip
    browser, _ = sign_in(app, "dana")
    act(browser, matched, action="acknowledge")

    def shown(query: str) -> set[str]:
        html = browser.get(f"/incidents?{query}").get_data(as_text=True)
        return set(re.findall(r'href="/incidents/([0-9a-f]{32})"', html))

    assert shown("") == {matched, failed}
    assert shown("status=acknowledged") == {matched}
    assert shown("status=new") == {failed}
    assert shown("device=tablet") == {failed}
    assert shown("device=10.20.3.4") == {matched}
    assert shown("reason=bank") == {matched}
    assert shown("app=testshare") == {matched, failed}
    assert shown("since=2999-01-01") == set()
    assert browser.get("/incidents?since=yesterday").status_code == 400


# -- exports and hostile data -------------------------------------------------------------------


def test_exports_are_inert_and_carry_the_history(app: Flask, config: Config) -> None:
    incident = enqueue(config, hostname=HOSTILE, route=f"/upload/{HOSTILE}")
    browser, _ = sign_in(app, "dana")
    act(browser, incident, action="note", note=FORMULA)
    act(browser, incident, action="note", note=HOSTILE)
    page = browser.get(f"/incidents/{incident}").get_data(as_text=True)
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page  # the note, shown as text
    for path in ("/incidents", f"/incidents/{incident}/summary"):
        assert "<img" not in browser.get(path).get_data(as_text=True)

    exported = browser.get("/export.csv")
    assert exported.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    (row,) = rows
    assert row["incident_id"] == incident
    assert row["sha256"] == SHA_A
    assert "<" not in row["device_hostname"]  # reduced to a plain character set at alert time
    for cell in row.values():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert FORMULA in row["history"]  # kept, inside a cell that starts with its date

    data = json.loads(browser.get("/export.json").get_data(as_text=True))
    assert data[0]["incident_id"] == incident
    assert [h["detail"] for h in data[0]["history"]] == [FORMULA, HOSTILE]
    assert "media" not in json.dumps(data).lower().replace("media_type", "")


def test_a_formula_in_the_first_cell_of_a_field_is_neutralised() -> None:
    from schoolgate.console.incidents import inert_cell

    assert inert_cell(FORMULA) == "'" + FORMULA
    assert inert_cell("-2+3") == "'-2+3"
    assert inert_cell("pupil-laptop") == "pupil-laptop"


# -- retention and configuration ----------------------------------------------------------------


def test_retention_forgets_old_incidents_and_access_log_entries(
    app: Flask, config: Config, clock: FakeClock
) -> None:
    incident = enqueue(config)
    with AlertOutbox(config.alerts.outbox) as outbox:
        outbox._db.execute("UPDATE alerts SET state = 'delivered', first_seen = ?, last_seen = ?",
                           (clock.now - 800 * 86_400, clock.now - 800 * 86_400))  # fmt: skip
    browser, _ = sign_in(app, "dana")
    act(browser, incident, action="note", note="old")
    store = console(app).store
    clock.advance(731 * 86_400)
    assert console(app).apply_retention() >= 2
    assert store.actions(incident) == []
    assert store.access_log() == []
    assert console(app).incident(incident) is None


def test_console_settings_are_checked(data_dir: Path) -> None:
    config = parse_config("console:\n  listen_port: 9443\n  base_url: https://gw.example:9443/\n",
                          "t.yaml")  # fmt: skip
    assert config.console.listen_port == 9443
    assert config.console.base_url == "https://gw.example:9443"
    assert config.console.database == data_dir / "console.sqlite"
    with pytest.raises(ConfigError, match=r"console\.base_url.*https://"):
        parse_config("console:\n  base_url: http://gw.example\n", "t.yaml")
    with pytest.raises(ConfigError, match=r"console\.tls\.key_file.*needed"):
        parse_config("console:\n  tls:\n    cert_file: /etc/ssl/x.pem\n", "t.yaml")


def test_accounts_refuse_weak_passwords_unknown_roles_and_odd_names(data_dir: Path) -> None:
    with ConsoleStore(data_dir / "c.sqlite") as store:
        with pytest.raises(ConsoleError, match="12 characters"):
            store.add_account("dana", "dsl", "short")
        with pytest.raises(ConsoleError, match="unknown role"):
            store.add_account("dana", "root", PASSWORD)
        with pytest.raises(ConsoleError, match="not a username"):
            store.add_account("<b>", "dsl", PASSWORD)
        store.add_account("dana", "dsl", PASSWORD)
        with pytest.raises(ConsoleError, match="exists already"):
            store.add_account("dana", "it", PASSWORD)
        stored = store._rows("SELECT password FROM accounts")[0][0]
        assert str(stored).startswith("$argon2id$")


# -- banking an incident without viewing it -----------------------------------------------------


def _banks_form(browser: FlaskClient) -> str:
    return hidden(browser.get("/banks").get_data(as_text=True), "csrf")


def test_a_file_is_hashed_in_memory_banked_and_never_shown(
    app: Flask, config: Config, benign_photos: dict[str, Image.Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # Big enough that Werkzeug would spool it to a temporary file: the console must not.
    photo = encode(benign_photos["coffee"].resize((1600, 1200)), "PNG")
    assert len(photo) > 600_000

    def no_disk(*args: object, **kwargs: object) -> None:
        raise AssertionError("an uploaded file went to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, no_disk)
    browser, _ = sign_in(app, "dana")
    answer = browser.post("/banks", data={
        "csrf": _banks_form(browser), "action": "file", "bank": "incident-14",
        "provenance": "seized phone, incident 14", "note": "ref 14",
        "file": (io.BytesIO(photo), "IMG_0001.png"),
    }, content_type="multipart/form-data")  # fmt: skip
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    sha = hashlib.sha256(photo).hexdigest()
    assert sha in page
    assert "<img" not in page
    assert "IMG_0001" not in page  # the file's name is not evidence either
    log = console(app).store.access_log()
    assert log[0].action == "banked a file (hashed, not kept)"
    assert sha in log[0].target
    # The bank works: the file and an edited copy are blocked by the inspection engine.
    inspector = Inspector.from_config(config, with_audit=False, with_alerts=False)
    try:
        context = InspectionContext(client_ip="192.0.2.20", app="t")
        verdict = inspector.evaluate(photo, context)
        assert verdict.blocked
        # Every match says who banked the file, unseen (adversarial pass a15: one DSL banked a
        # harmless photo a pupil handed in; the next incident must show whose word it was).
        assert "ref 14 (a file banked unseen by dana on " in verdict.matches[0].note
        edited = encode(benign_photos["coffee"].resize((800, 600)), "JPEG", quality=80)
        assert inspector.evaluate(edited, context).blocked
    finally:
        inspector.close()


def test_a_hash_list_from_a_partner_is_imported_with_its_provenance(
    app: Flask, config: Config
) -> None:
    browser, _ = sign_in(app, "dana")
    listing = f"sha256 {SHA_A}\nmd5 {'c' * 32}\n"
    answer = browser.post("/banks", data={
        "csrf": _banks_form(browser), "action": "list", "bank": "ceop-2026",
        "provenance": "CEOP reference 1234", "format": "te-file", "hashes": listing,
    })  # fmt: skip
    assert "2 hashes read, 2 new" in answer.get_data(as_text=True)
    with BankStore(config.banks.path) as store:
        assert store.bank("ceop-2026").source == "CEOP reference 1234"
        assert store.bank("ceop-2026").total == 2
    bad = browser.post("/banks", data={
        "csrf": _banks_form(browser), "action": "list", "bank": "ceop-2026",
        "provenance": "", "format": "te-file", "hashes": listing,
    })  # fmt: skip
    assert "say where this came from" in bad.get_data(as_text=True)
    broken = browser.post("/banks", data={
        "csrf": _banks_form(browser), "action": "file", "bank": "incident-15",
        "provenance": "x", "file": (io.BytesIO(b"\xff\xd8\xff\xe0 truncated"), "a.jpg"),
    }, content_type="multipart/form-data")  # fmt: skip
    assert broken.status_code == 200
    assert "error" in broken.get_data(as_text=True)


def test_only_the_dsl_banks(app: Flask) -> None:
    for user in ("ivan", "ada"):
        browser, _ = sign_in(app, user)
        assert browser.get("/banks").status_code == 403
    assert client(app).get("/banks").status_code == 302


def test_the_list_pages_through_many_incidents_keeping_the_filters(
    app: Flask, config: Config
) -> None:
    with AlertOutbox(config.alerts.outbox, dedup_window_s=0) as outbox:
        for number in range(105):
            verdict = make_verdict(sha256=f"{number:064x}")
            outbox.enqueue(AlertDetails.from_verdict(verdict, "Test School"))
    browser, _ = sign_in(app, "dana")
    first = browser.get("/incidents?reason=bank").get_data(as_text=True)
    assert "105 incidents, page 1 of 2" in first
    assert len(re.findall(r'href="/incidents/[0-9a-f]{32}"', first)) == 100
    older = re.search(r'href="([^"]+)" id="older"', first)
    assert older
    assert "reason=bank" in older.group(1)
    second = browser.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert len(re.findall(r'href="/incidents/[0-9a-f]{32}"', second)) == 5
    assert browser.get("/incidents?page=x").status_code == 400


def test_an_exemption_is_listed_and_can_be_withdrawn(app: Flask, config: Config) -> None:
    incident = enqueue(config, distance=20)
    browser, _ = sign_in(app, "dana")
    act(browser, incident, action="close", outcome="false_positive", exempt="bank:incident-2026")
    approve(app, incident)
    page = browser.get("/banks").get_data(as_text=True)
    assert SHA_A in page
    form = {"csrf": hidden(page, "csrf"), "action": "revoke", "sha256": SHA_A,
            "label": "bank:incident-2026"}  # fmt: skip
    answer = browser.post("/banks", data=form)
    assert "The exemption is withdrawn" in answer.get_data(as_text=True)
    with BankStore(config.banks.path) as store:
        assert Exemptions(store).list() == []
    assert console(app).store.actions(incident)[-1].action == "exemption withdrawn"
    again = browser.post("/banks", data=form)
    assert "no such exemption" in again.get_data(as_text=True)


def test_reopening_an_incident_or_banking_the_file_withdraws_its_exemption(
    app: Flask, config: Config, benign_photos: dict[str, Image.Image]
) -> None:
    """Adversarial pass a12: once a DSL learns the "false positive" was a lie, reopening the
    incident or banking the file again left the exemption in force."""
    incident = enqueue(config, distance=20)
    browser, _ = sign_in(app, "dana")
    act(browser, incident, action="close", outcome="false_positive", exempt="bank:incident-2026")
    approve(app, incident)
    assert act(browser, incident, action="reopen") == 302
    with BankStore(config.banks.path) as store:
        assert Exemptions(store).list() == []
    assert console(app).store.actions(incident)[-1].action == "exemption withdrawn"

    photo = encode(benign_photos["rocket"], "PNG")
    sha = hashlib.sha256(photo).hexdigest()
    with BankStore(config.banks.path) as store:
        store.ensure_bank("incident-2026")
        Exemptions(store).add(sha, "bank", "incident-2026", added_by="dana", reason="cat")
    answer = browser.post("/banks", data={
        "csrf": _banks_form(browser), "action": "file", "bank": "incident-2026",
        "provenance": "the pupil's story did not hold", "file": (io.BytesIO(photo), "x.png"),
    }, content_type="multipart/form-data")  # fmt: skip
    assert "that exemption is withdrawn" in answer.get_data(as_text=True)
    with BankStore(config.banks.path) as store:
        assert Exemptions(store).list() == []


def test_repeats_after_the_close_put_the_incident_back_in_the_queue_in_time_order(
    app: Flask, config: Config, clock: FakeClock
) -> None:
    """Adversarial pass a12: repeats within the de-duplication window after the DSL closed the
    incident were folded into it, out of the queue, and listed above the close."""
    times = iter([1_900_000_000.0, 1_900_000_100.0, 1_900_000_200.0])
    with AlertOutbox(config.alerts.outbox, dedup_window_s=600, clock=lambda: next(times)) as box:
        details = AlertDetails.from_verdict(make_verdict(), "Test School")
        incident = box.enqueue(details).alert_id
        box._db.execute("UPDATE alerts SET sent_once = 1, state = 'delivered'")
        clock.now = 1_900_000_150.0
        browser, _ = sign_in(app, "dana")
        act(browser, incident, action="close", outcome="pupil_supported")
        assert browser.get("/incidents?status=new").get_data(as_text=True).count(incident) == 0
        box.enqueue(details)  # t=100: before the close, folded in quietly
        assert 'id="repeated"' not in browser.get(f"/incidents/{incident}").get_data(as_text=True)
        box.enqueue(details)  # t=200: after the close
    assert incident in browser.get("/incidents?status=new").get_data(as_text=True)
    page = browser.get(f"/incidents/{incident}").get_data(as_text=True)
    assert 'id="repeated"' in page
    assert 'id="status">new' in page
    timeline = [what for _, what in re.findall(r'<li>([^<]*): <span class="note">([^<]*)<', page)]
    assert [what.split(",")[0] for what in timeline[:2]] == ["alert", "repeat"]
    assert timeline[2].startswith("dana closed")
    assert len(timeline) == 3
    (row,) = list(csv.DictReader(io.StringIO(browser.get("/export.csv").get_data(as_text=True))))
    assert (row["status"], row["outcome"]) == ("new", "")  # the old outcome is history now
    assert "Pupil supported" in row["history"]
