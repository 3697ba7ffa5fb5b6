"""The console's test client and sign-in helpers, shared by the console's in-process tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask.testing import FlaskClient

from schoolgate.alerts.model import AlertDetails
from schoolgate.alerts.outbox import AlertOutbox
from schoolgate.config import Config
from schoolgate.console.app import Console, create_app
from schoolgate.console.store import ConsoleStore
from tests.support.alert_helpers import FakeClock, make_verdict

PASSWORD = "correct horse battery"


@contextmanager
def console_app(config: Config, clock: FakeClock) -> Iterator[Flask]:
    """The console with DSLs dana and dev, IT account ivan and admin ada."""
    with ConsoleStore(config.console.database) as store:
        store.add_account("dana", "dsl", PASSWORD)
        store.add_account("dev", "dsl", PASSWORD)
        store.add_account("ivan", "it", PASSWORD)
        store.add_account("ada", "admin", PASSWORD)
    app = create_app(config, clock)
    try:
        yield app
    finally:
        console(app).close()


def console(app: Flask) -> Console:
    found: Console = app.extensions["schoolgate_console"]
    return found


def client(app: Flask) -> FlaskClient:
    browser = app.test_client()
    browser.environ_base.update({"wsgi.url_scheme": "https", "HTTP_HOST": "console.test"})
    return browser


def sign_in(app: Flask, username: str, password: str = PASSWORD) -> tuple[FlaskClient, int]:
    browser = client(app)
    page = browser.get("/login")
    token = hidden(page.get_data(as_text=True), "csrf")
    answer = browser.post(
        "/login", data={"username": username, "password": password, "csrf": token}
    )
    return browser, answer.status_code


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field"
    return found.group(1)


def enqueue(config: Config, **kwargs: object) -> str:
    with AlertOutbox(config.alerts.outbox) as outbox:
        details = AlertDetails.from_verdict(make_verdict(**kwargs), "Test School")  # type: ignore[arg-type]
        return outbox.enqueue(details).alert_id


def act(browser: FlaskClient, incident: str, **form: str) -> int:
    page = browser.get(f"/incidents/{incident}").get_data(as_text=True)
    return browser.post(f"/incidents/{incident}/act",
                        data={"csrf": hidden(page, "csrf"), **form}).status_code  # fmt: skip


def shown_proposal(app: Flask, incident: str, label: str) -> str:
    """The token of the proposal the approver's page shows (empty when none waits)."""
    return {p.label: p.token for p in console(app).store.proposals(incident)}.get(label, "")


def approve(app: Flask, incident: str, label: str = "bank:incident-2026", by: str = "dev") -> int:
    """A second DSL approves the proposed exemption they were shown."""
    deputy, _ = sign_in(app, by)
    seen = str(len(console(app).store.actions(incident)))
    return act(deputy, incident, action="approve_exemption", label=label,
               proposal=shown_proposal(app, incident, label), seen=seen)  # fmt: skip
