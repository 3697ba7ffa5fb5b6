"""Incidents as the DSL sees them: one per alert, its repeats folded in, with its workflow.

An incident is read from the alert outbox (hashes and metadata only; see alerts.model) and the
console's own workflow records. Its id is the first alert's id. The outbox links a repeat that
arrived after an alert was sent to that alert (`follow_up_of`); such chains are folded into one
incident whose timeline lists each alert with its de-duplicated count.

Exports carry the same fields, one row per incident, with the action history. Every string that
came from a pupil's device or the network, and every note, is exported inert: a spreadsheet
would run a cell that starts with = + - @ (or a tab or carriage return) as a formula.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schoolgate.alerts.model import KIND_DECISION, Alert, AlertDetails
from schoolgate.console.store import CLOSED, NEW, OUTCOMES, Action, Workflow

REASONS = ("bank", "classifier", "failure")
# How many alerts the console reads from the outbox at most (newest first): years of a school.
MAX_ALERTS = 20_000


@dataclass(frozen=True)
class Incident:
    id: str
    alerts: tuple[Alert, ...]  # the first alert, then its follow-ups, oldest first
    workflow: Workflow = field(default_factory=Workflow)
    actions: tuple[Action, ...] = ()

    @property
    def ids(self) -> frozenset[str]:
        """The ids of this incident's alerts (the first and its follow-ups)."""
        return frozenset(alert.id for alert in self.alerts)

    @property
    def details(self) -> AlertDetails:
        return self.alerts[0].details

    @property
    def count(self) -> int:
        return sum(alert.count for alert in self.alerts)

    @property
    def first_seen(self) -> float:
        return self.alerts[0].first_seen

    @property
    def last_seen(self) -> float:
        return max(alert.last_seen for alert in self.alerts)

    @property
    def repeated_after_close(self) -> bool:
        """Uploads of the same media from the same device after the DSL closed it: the
        incident is back in the queue (adversarial pass a12 found such repeats folded into
        the closed incident, out of sight)."""
        closed_at = self.workflow.closed_at
        return self.workflow.status == CLOSED and closed_at is not None and (
            self.last_seen > closed_at)  # fmt: skip

    @property
    def status(self) -> str:
        return NEW if self.repeated_after_close else self.workflow.status

    @property
    def timeline(self) -> list[tuple[float, str]]:
        """Alerts, repeats and actions in time order."""
        events = [
            (alert.first_seen, f"{'alert' if n == 0 else 'repeat'}, {alert.count} upload"
                               f"{'s' if alert.count != 1 else ''} until {when(alert.last_seen)}")
            for n, alert in enumerate(self.alerts)
        ]  # fmt: skip
        events += [
            (a.at, f"{a.actor} {a.action}" + (f": {a.detail}" if a.detail else ""))
            for a in self.actions
        ]
        return sorted(events, key=lambda event: event[0])

    @property
    def reason(self) -> str:
        details = self.details
        if details.matches:
            return "bank"
        if details.flags:
            return "classifier"
        return "failure"

    @property
    def matched(self) -> list[str]:
        """What matched, in words: bank and note, or model, label and score."""
        details = self.details
        found = [f"bank {m.bank}: {_evidence(m.signal_type, m.distance)}"
                 + (f" in {m.where}" if m.where else "")
                 + (f" (note: {m.note})" if m.note else "") for m in details.matches]  # fmt: skip
        found += [f"classifier {f.model}: {f.label} {f.score:.2f}" for f in details.flags]
        if not found and details.failure:
            found.append(f"could not be inspected: {details.failure}")
        return found

    @property
    def found_in(self) -> str | None:
        """Where in the upload the item was (see AlertDetails.found_in)."""
        return self.details.found_in

    @property
    def sources(self) -> list[str]:
        """The banks and models that matched or flagged this file ("bank:NAME", ...)."""
        details = self.details
        labels = [f"bank:{m.bank}" for m in details.matches]
        labels += [f"model:{f.model}" for f in details.flags]
        return list(dict.fromkeys(labels))

    def exemptable(self, near_bits: int) -> list[str]:
        """The sources an exemption of this file may name: a classifier's flag, or a bank whose
        every match was a judgement (a robust-tier match, or a PDQ match beyond `near_bits`).
        A file equal to a banked hash, or a PDQ match within `near_bits`, *is* the banked
        picture or a copy of it: no story about the file makes that a false positive, and a
        pupil can show the DSL another picture than the one the file holds (adversarial pass
        a12). A wrong bank entry is removed from the bank instead."""
        allowed = [f"model:{f.model}" for f in self.details.flags]
        banks = dict.fromkeys(m.bank for m in self.details.matches)
        for bank in banks:
            matches = [m for m in self.details.matches if m.bank == bank]
            if all(_judged(m.signal_type, m.distance, near_bits) for m in matches):
                allowed.append(f"bank:{bank}")
        return list(dict.fromkeys(allowed))


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    since: float | None = None  # first seen at or after (epoch seconds)
    until: float | None = None  # first seen before
    device: str | None = None  # part of the IP, MAC or hostname
    app: str | None = None
    reason: str | None = None  # bank | classifier | failure

    def admit(self, incident: Incident) -> bool:
        details = incident.details
        device = details.device
        if self.status and incident.status != self.status:
            return False
        if self.since is not None and incident.first_seen < self.since:
            return False
        if self.until is not None and incident.first_seen >= self.until:
            return False
        if self.device:
            names = " ".join(x for x in (device.ip, device.mac, device.hostname) if x).lower()
            if self.device.lower() not in names:
                return False
        if self.app and (details.app or "").lower() != self.app.lower():
            return False
        return not (self.reason and incident.reason != self.reason)


def fold(alerts: Iterable[Alert], workflows: dict[str, Workflow] | None = None) -> list[Incident]:
    """Group decision alerts into incidents (newest first)."""
    by_id = {a.id: a for a in alerts if a.kind == KIND_DECISION}
    chains: dict[str, list[Alert]] = {}
    for alert in by_id.values():
        root = alert
        seen = {root.id}
        while root.follow_up_of in by_id and root.follow_up_of not in seen:
            root = by_id[root.follow_up_of]
            seen.add(root.id)
        chains.setdefault(root.id, []).append(alert)
    workflows = workflows or {}
    incidents = [
        Incident(
            root, tuple(sorted(chain, key=lambda a: a.first_seen)), workflows.get(root, Workflow())
        )
        for root, chain in chains.items()
    ]
    return sorted(incidents, key=lambda i: i.first_seen, reverse=True)


def _evidence(signal_type: str, distance: int) -> str:
    """What a match means, in words a DSL can weigh."""
    if signal_type == "orb":
        return "an edited copy of the banked picture, found by its local features (robust tier)"
    if signal_type == "pdq":
        return f"a perceptual hash that differs in {distance} of 256 bits from the banked picture's"
    if signal_type == "vpdq":
        return "the banked video's frames (video hashes)"
    return f"the exact banked file ({signal_type})"


def _judged(signal_type: str, distance: int, near_bits: int) -> bool:
    return signal_type == "orb" or (signal_type == "pdq" and distance > near_bits)


def incident_of(incidents: Sequence[Incident], alert_id: str) -> Incident | None:
    """The incident that holds an alert (an alert link may name a follow-up)."""
    for incident in incidents:
        if any(alert.id == alert_id for alert in incident.alerts):
            return incident
    return None


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# Documented in docs/dsl.md ("Export columns"); change both together.
COLUMNS = (
    "incident_id",
    "status",
    "outcome",
    "assignee",
    "first_seen_utc",
    "last_seen_utc",
    "count",
    "device_ip",
    "device_mac",
    "device_hostname",
    "policy_group",
    "app",
    "direction",
    "mode",
    "action",
    "reason",
    "matched",
    "media_type",
    "file_size",
    "found_in",
    "sha256",
    "site",
    "history",
)


def export_row(incident: Incident) -> dict[str, object]:
    details = incident.details
    workflow = incident.workflow
    return {
        "incident_id": incident.id,
        "status": incident.status,
        # A closed incident that repeats is open again: its old outcome is history, not status.
        "outcome": OUTCOMES.get(workflow.outcome or "", "") if incident.status == CLOSED else "",
        "assignee": workflow.assignee or "",
        "first_seen_utc": when(incident.first_seen),
        "last_seen_utc": when(incident.last_seen),
        "count": incident.count,
        "device_ip": details.device.ip or "",
        "device_mac": details.device.mac or "",
        "device_hostname": details.device.hostname or "",
        "policy_group": details.group,
        "app": details.app or "",
        "direction": details.direction,
        "mode": details.mode,
        "action": details.action,
        "reason": incident.reason,
        "matched": incident.matched,
        "media_type": details.media_type or "",
        "file_size": details.size or "",
        "found_in": incident.found_in or "",
        "sha256": details.sha256 or "",
        "site": details.site,
        "history": [
            {"at_utc": when(a.at), "by": a.actor, "action": a.action, "detail": a.detail}
            for a in incident.actions
        ],
    }


def to_json(incidents: Iterable[Incident]) -> str:
    return json.dumps([export_row(i) for i in incidents], indent=2, ensure_ascii=True)


def to_csv(incidents: Iterable[Incident]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, quoting=csv.QUOTE_ALL)
    writer.writeheader()
    for incident in incidents:
        row = export_row(incident)
        row["matched"] = "; ".join(incident.matched)
        row["history"] = "; ".join(
            f"{h['at_utc']} {h['by']} {h['action']}" + (f": {h['detail']}" if h["detail"] else "")
            for h in row["history"]  # type: ignore[attr-defined]
        )
        writer.writerow({key: inert_cell(value) for key, value in row.items()})
    return out.getvalue()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(value: object) -> str:
    """A CSV cell no spreadsheet evaluates (OWASP's advice: a leading apostrophe)."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
