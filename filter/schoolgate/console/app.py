"""`schoolgate console`: the DSL's incident console, a small server-rendered Flask application.

It reads the alert outbox (hashes and metadata) and keeps its own workflow records; it never
reads, shows or links to media. Roles: `dsl` works incidents, `it` sees the appliance's health
(no incident details), `admin` manages accounts. See `console.web` for the rules every page
shares (sessions, roles, CSRF, headers) and docs/dsl.md for the DSL's guide.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from schoolgate.alerts.outbox import AlertOutbox
from schoolgate.banks.exemptions import Exemptions
from schoolgate.banks.store import BankStore
from schoolgate.config import Config
from schoolgate.console import incidents as inc
from schoolgate.console.bank_pages import add_bank_pages
from schoolgate.console.store import (
    ACKNOWLEDGED,
    CLOSED,
    OUTCOMES,
    ROLES,
    STATUSES,
    ConsoleError,
    ConsoleStore,
    Proposal,
)
from schoolgate.console.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    add_security_headers,
    check_csrf,
    current_session,
    new_login_token,
    remote_address,
    requires,
    set_cookie,
    template_globals,
)

DSL, IT, ADMIN = ROLES
NOTE_LIMIT = 4000
PAGE = 100  # incidents per page of the list


class Console:
    """The console's resources, shared by every request (each is safe across threads)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.settings = config.console
        self.clock = clock
        self.store = ConsoleStore(self.settings.database, clock)
        self.outbox = AlertOutbox(config.alerts.outbox, config.alerts.channel_names)
        self.banks = BankStore(config.banks.path)
        self.throttle = LoginThrottle()

    def close(self) -> None:
        self.store.close()
        self.outbox.close()
        self.banks.close()

    def incidents(self) -> list[inc.Incident]:
        alerts = self.outbox.list(limit=inc.MAX_ALERTS, deliveries=False)
        return inc.fold(alerts, self.store.workflows())

    def incident(self, alert_id: str) -> inc.Incident | None:
        """The incident holding this alert (an alert's link may name a follow-up), with its
        actions; only that media's and device's alerts are read."""
        alert = self.outbox.get(alert_id)
        if alert is None:
            return None
        chain = inc.fold(self.outbox.with_key(alert.dedup_key), self.store.workflows())
        found = inc.incident_of(chain, alert_id)
        if found is None:
            return None
        return inc.Incident(
            found.id, found.alerts, found.workflow, tuple(self.store.actions(found.id))
        )

    def apply_retention(self) -> int:
        """Forget incidents (and their alerts) with no activity for `retention_days`, and
        access-log entries as old."""
        cutoff = self.clock() - self.settings.retention_days * 86_400
        stale = set()
        for incident in self.incidents():
            actions = self.store.actions(incident.id)
            last = max([incident.last_seen, *(a.at for a in actions)])
            if last < cutoff:
                stale.add(incident.id)
                self.outbox.forget([a.id for a in incident.alerts])
        return self.store.forget_before(cutoff, stale)


def create_app(config: Config, clock: Callable[[], float] = time.time) -> Flask:
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024 * 1024, SESSION_COOKIE_SECURE=True)
    console = Console(config, clock)
    app.extensions["schoolgate_console"] = console
    settings = console.settings

    @app.before_request
    def load_session() -> None:
        g.session = current_session(console.store, settings.idle_timeout_s, settings.session_max_s)

    app.after_request(add_security_headers)
    app.context_processor(template_globals)
    app.jinja_env.globals.update(when=inc.when, outcomes=OUTCOMES, statuses=STATUSES)

    @app.get("/login")
    def login() -> ResponseReturnValue:
        token = new_login_token()
        response = Response(
            render_template(
                "login.html", login_token=token, next=_safe_next(request.args.get("next"))
            )
        )
        set_cookie(response, LOGIN_COOKIE, token, max_age=3600)
        return response

    @app.post("/login")
    def login_post() -> ResponseReturnValue:
        login_token = request.cookies.get(LOGIN_COOKIE)
        if not login_token:  # a form posted from elsewhere: no token cookie to match
            abort(400, "The sign-in form has expired: reload the page.")
        check_csrf(login_token)
        address = remote_address()
        if not console.throttle.allow(address):
            abort(429, "Too many sign-in attempts from this address: wait a few minutes.")
        username = request.form.get("username", "")[:64]
        account, why = console.store.authenticate(
            username,
            request.form.get("password", "")[:1024],
            max_failed=settings.max_failed_logins,
            lockout_s=settings.lockout_s,
        )
        console.store.log_access(username or "-", f"sign-in {why}", "", address)
        if account is None:
            message = (
                "This account is locked after repeated wrong passwords. Try again later or "
                "ask an administrator to unlock it."
                if why == "locked"
                else "Wrong username or password."
            )
            token = new_login_token()
            response = Response(
                render_template(
                    "login.html",
                    login_token=token,
                    error=message,
                    next=request.form.get("next", ""),
                ),
                status=401,
            )
            set_cookie(response, LOGIN_COOKIE, token, max_age=3600)
            return response
        session = console.store.open_session(account)
        response = app.make_response(
            redirect(_safe_next(request.form.get("next")) or url_for("home"))
        )
        set_cookie(response, SESSION_COOKIE, session.token)
        response.delete_cookie(LOGIN_COOKIE, secure=True, samesite="Strict")
        return response

    @app.post("/logout")
    @requires(DSL, IT, ADMIN)
    def logout() -> ResponseReturnValue:
        console.store.close_session(g.session.token)
        response = redirect(url_for("login"))
        response.delete_cookie(SESSION_COOKIE, secure=True, samesite="Strict")
        return response

    @app.get("/")
    @requires(DSL, IT, ADMIN)
    def home() -> ResponseReturnValue:
        target = {DSL: "incident_list", IT: "health", ADMIN: "accounts"}[g.session.role]
        return redirect(url_for(target))

    # -- incidents (dsl) -----------------------------------------------------------------------

    @app.get("/incidents")
    @requires(DSL)
    def incident_list() -> ResponseReturnValue:
        filters = _filters(request.args)
        matching = [i for i in console.incidents() if filters.admit(i)]
        page = _page(request.args.get("page", "1"))
        pages = max(1, -(-len(matching) // PAGE))
        chosen = {k: v for k, v in request.args.items() if k != "page" and v}
        return render_template(
            "incidents.html",
            incidents=matching[(page - 1) * PAGE : page * PAGE],
            total=len(matching),
            page=min(page, pages),
            pages=pages,
            filters=chosen,
            reasons=inc.REASONS,
        )

    @app.get("/incidents/<incident_id>")
    @requires(DSL)
    def incident(incident_id: str) -> ResponseReturnValue:
        found = _incident_or_404(console, incident_id)
        if found.id != incident_id:  # an alert link naming a follow-up
            return redirect(url_for("incident", incident_id=found.id))
        console.store.log_access(g.session.username, "opened incident", found.id, remote_address())
        return render_template(
            "incident.html",
            exemptable=found.exemptable(_near_bits(console)),
            proposals=_pending(console, found),
            incident=found,
            accounts=[a.username for a in console.store.accounts() if a.role == DSL],
        )

    @app.get("/incidents/<incident_id>/summary")
    @requires(DSL)
    def summary(incident_id: str) -> ResponseReturnValue:
        found = _incident_or_404(console, incident_id)
        console.store.log_access(
            g.session.username, "printed referral summary", found.id, remote_address()
        )
        printed = datetime.fromtimestamp(console.clock(), UTC)
        return render_template("summary.html", incident=found, printed=printed)

    @app.post("/incidents/<incident_id>/act")
    @requires(DSL)
    def act(incident_id: str) -> ResponseReturnValue:
        found = _incident_or_404(console, incident_id)
        me = g.session.username
        what = request.form.get("action", "")
        note = request.form.get("note", "").strip()[:NOTE_LIMIT]
        if what == "acknowledge":
            console.store.act(found.id, me, "acknowledged", note, status=ACKNOWLEDGED)
        elif what == "assign":
            assignee = request.form.get("assignee", "")
            if assignee not in {a.username for a in console.store.accounts() if a.role == DSL}:
                abort(400, "Incidents are assigned to DSL accounts only.")
            console.store.act(found.id, me, "assigned", assignee, assignee=assignee)
        elif what == "note":
            if not note:
                abort(400, "The note is empty.")
            console.store.act(found.id, me, "note", note)
        elif what == "close":
            _close(console, found, me, note)
        elif what == "reopen":
            console.store.act(found.id, me, "reopened", note, status=ACKNOWLEDGED)
            console.store.drop_proposals(found.id)
            _withdraw_exemptions(console, found, me)
        elif what in ("approve_exemption", "refuse_exemption"):
            _decide_exemption(console, found, me, approve=what == "approve_exemption")
        else:
            abort(400, "Unknown action.")
        return redirect(url_for("incident", incident_id=found.id))

    @app.get("/export.<kind>")
    @requires(DSL)
    def export(kind: str) -> ResponseReturnValue:
        if kind not in ("csv", "json"):
            abort(404)
        filters = _filters(request.args)
        chosen = [
            inc.Incident(i.id, i.alerts, i.workflow, tuple(console.store.actions(i.id)))
            for i in console.incidents()
            if filters.admit(i)
        ]
        console.store.log_access(
            g.session.username, f"exported {len(chosen)} incidents", kind, remote_address()
        )
        stamp = datetime.fromtimestamp(console.clock(), UTC).strftime("%Y%m%d-%H%M")
        body = inc.to_csv(chosen) if kind == "csv" else inc.to_json(chosen)
        mime = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
        return Response(
            body,
            mimetype=mime,
            headers={
                "Content-Disposition": f'attachment; filename="schoolgate-incidents-{stamp}.{kind}"'
            },
        )

    # -- appliance health (it, admin) ------------------------------------------------------------

    @app.get("/health")
    @requires(IT, ADMIN)
    def health() -> ResponseReturnValue:
        return render_template(
            "health.html",
            outbox=console.outbox.stats(),
            banks=console.banks.banks(),
            version=console.banks.version(),
        )

    # -- accounts (admin) ------------------------------------------------------------------------

    @app.route("/accounts", methods=["GET", "POST"])
    @requires(ADMIN)
    def accounts() -> ResponseReturnValue:
        error = None
        if request.method == "POST":
            error = _account_action(console, g.session.username)
            if error is None:
                return redirect(url_for("accounts"))
        return render_template(
            "accounts.html",
            accounts=console.store.accounts(),
            roles=ROLES,
            error=error,
            log=console.store.access_log(200),
            now=console.clock(),
        )

    add_bank_pages(app, console)

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(429)
    def error(exc: Any) -> tuple[str, int]:
        return render_template("error.html", error=exc), exc.code

    return app


def _incident_or_404(console: Console, incident_id: str) -> inc.Incident:
    found = console.incident(incident_id[:64])
    if found is None:
        abort(404)
    return found


def _close(console: Console, found: inc.Incident, me: str, note: str) -> None:
    outcome = request.form.get("outcome", "")
    if outcome not in OUTCOMES:
        abort(400, "Choose an outcome to close the incident with.")
    exempt = request.form.getlist("exempt")
    sha256 = found.details.sha256
    if exempt and (outcome != "false_positive" or not sha256):
        abort(400, "Only a false positive with a known file hash can be exempted.")
    if any(label not in found.sources for label in exempt):
        abort(400, "An exemption can only name a bank or model that matched this incident.")
    if any(label not in found.exemptable(_near_bits(console)) for label in exempt):
        abort(400, "This file matched the bank exactly or as a near-identical copy: it is the "
                   "banked picture, so it cannot be exempted. If the bank entry itself is wrong, "
                   "remove it from the bank.")  # fmt: skip
    said = OUTCOMES[outcome] + (f": {note}" if note else "")
    console.store.act(found.id, me, "closed", said, status=CLOSED, outcome=outcome)
    for label in exempt:
        # Four eyes: a DSL who was told a plausible story about a picture nobody may view is
        # one person to persuade; the exemption waits for a second DSL (adversarial pass a13).
        console.store.propose(found.id, label, sha256 or "", me, note or OUTCOMES[outcome])
        kind, source = label.split(":", 1)
        waiting = f"SHA-256 {sha256} for {kind} {source}; awaiting a second DSL"
        console.store.act(found.id, me, "exemption proposed", waiting)


def _decide_exemption(console: Console, found: inc.Incident, me: str, approve: bool) -> None:
    """A second DSL approves (the exemption takes effect) or refuses a proposed exemption."""
    label = request.form.get("label", "")
    pending = {p.label: p for p in _pending(console, found)}
    proposal = pending.get(label)
    if proposal is None:
        abort(400, "No exemption of that kind is waiting on this incident.")
    if proposal.token != request.form.get("proposal"):
        abort(400, "This exemption was withdrawn and proposed again since you loaded the page: "
                   "read the new proposal before deciding.")  # fmt: skip
    if proposal.proposed_by == me:
        abort(400, "A second DSL must approve or refuse an exemption you proposed.")
    if approve and request.form.get("seen") != str(len(found.actions)):
        # A note added since the page was loaded ("the pupil admitted it is the banked
        # picture") must be read before approving (adversarial pass a15).
        abort(400, "The incident has changed since you loaded the page (a note or an action "
                   "was added): read it before approving.")  # fmt: skip
    mine = next((a for a in console.store.accounts() if a.username == me), None)
    if approve and (mine is None or mine.created_at > proposal.at):
        # An account made after the proposal is the easiest sock-puppet (adversarial pass a14).
        abort(400, "This account was created after the exemption was proposed, so it cannot "
                   "approve it; a DSL account that existed before must.")  # fmt: skip
    if console.store.take_proposal(found.id, label, proposal.token) is None:
        abort(400, "No exemption of that kind is waiting on this incident.")
    kind, source = label.split(":", 1)
    what = f"SHA-256 {proposal.sha256} for {kind} {source}, proposed by {proposal.proposed_by}"
    if not approve:
        console.store.act(found.id, me, "exemption refused", what)
        return
    Exemptions(console.banks).add(
        proposal.sha256,
        kind,
        source,
        added_by=f"{proposal.proposed_by}, approved by {me}",
        reason=proposal.reason,
        incident=found.id,
    )
    # The approver's account age on the record: an account an admin made (or re-made) just
    # before is how a second "DSL" could be one person's (adversarial pass a15).
    assert mine is not None
    made = datetime.fromtimestamp(mine.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    console.store.act(found.id, me, "exempted", f"{what}, approved (account made {made})")


def _pending(console: Console, found: inc.Incident) -> list[Proposal]:
    """The exemptions waiting on an incident that is still closed as a false positive. A repeat
    puts the incident back in the queue, undecided: its proposals are withdrawn, as Reopen
    withdraws them (adversarial pass a14: a deputy approved one on a reopened incident)."""
    proposals = console.store.proposals(found.id)
    if not proposals:
        return []
    why = "the incident is no longer closed as a false positive"
    if found.status == CLOSED and found.workflow.outcome == "false_positive":
        closed_at = found.workflow.closed_at or 0.0
        # The same file again from another device, or after the de-duplication window, opens
        # a new incident: news the approver must weigh (adversarial pass a15).
        again = [a for a in console.outbox.since(closed_at)
                 if a.details.sha256 == found.details.sha256 and a.id not in found.ids]  # fmt: skip
        if not again:
            return proposals
        why = f"the file was sent again after the close ({len(again)} new alert(s))"
    for proposal in proposals:
        kind, source = proposal.label.split(":", 1)
        console.store.act(found.id, "schoolgate", "exemption proposal withdrawn",
                          f"SHA-256 {proposal.sha256} for {kind} {source}: {why}")  # fmt: skip
    console.store.drop_proposals(found.id)
    return []


def _withdraw_exemptions(console: Console, found: inc.Incident, me: str) -> None:
    """A reopened incident is no longer a decided false positive: the exemptions granted on it
    are withdrawn (adversarial pass a12: reopening left the file exempted)."""
    exemptions = Exemptions(console.banks)
    for exemption in exemptions.list():
        if exemption.incident == found.id:
            exemptions.remove(exemption.sha256, exemption.kind, exemption.source)
            console.store.act(found.id, me, "exemption withdrawn",
                              f"SHA-256 {exemption.sha256} for {exemption.kind} "
                              f"{exemption.source}")  # fmt: skip


def _near_bits(console: Console) -> int:
    """PDQ matches this close are the banked picture, never a judgement to overrule."""
    return console.config.banks.robust.pdq_confirm_bits


def _account_action(console: Console, me: str) -> str | None:
    form = request.form
    username = form.get("username", "").strip()
    try:
        match form.get("action"):
            case "add":
                console.store.add_account(username, form.get("role", ""), form.get("password", ""))
            case "unlock":
                console.store.unlock(username)
            case "remove":
                if username == me:
                    return "You cannot remove your own account."
                console.store.remove_account(username)
            case _:
                abort(400, "Unknown action.")
    except ConsoleError as exc:
        return str(exc)
    console.store.log_access(me, f"account {form.get('action')}", username, remote_address())
    return None


def _filters(args: Any) -> inc.Filters:
    def day(name: str, offset: int = 0) -> float | None:
        text = args.get(name, "").strip()
        if not text:
            return None
        try:
            start = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
        except ValueError:
            abort(400, f"{name} is not a date such as 2026-12-01.")
        return start + offset

    status = args.get("status") or None
    reason = args.get("reason") or None
    if status not in (None, *STATUSES) or reason not in (None, *inc.REASONS):
        abort(400, "Unknown status or reason.")
    return inc.Filters(
        status=status,
        since=day("since"),
        until=day("until", 86_400),
        device=(args.get("device") or "").strip()[:64] or None,
        app=(args.get("app") or "").strip()[:64] or None,
        reason=reason,
    )


def _page(text: str) -> int:
    try:
        return max(1, int(text))
    except ValueError:
        abort(400, "page is not a number.")


_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/._?=&%-]{0,200}")


def _safe_next(target: str | None) -> str | None:
    """Only a path on this console (never another site: an open redirect helps phishing).
    Browsers drop tabs and newlines from addresses ("/", a tab, "/evil.example" is read as
    "//evil.example"): only plain path characters are kept."""
    if target and _LOCAL_PATH.fullmatch(target) and "//" not in target:
        return target
    return None
