"""How an alert reads: one view (title, summary, facts, guidance) rendered as generic JSON, a
Microsoft Teams Adaptive Card (Workflows webhook), a Slack message, or a plain-text email.

No format carries the media, a link to it, or any URL at all: a DSL should never be one click
away from the imagery.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from zoneinfo import ZoneInfo

from schoolgate.alerts.model import KIND_TEST, Alert

SCHEMA = "schoolgate.alert"
SCHEMA_VERSION = 1
TEAMS_CARD_VERSION = "1.4"  # what Teams Workflows ("Post card in a chat or channel") renders


@dataclass(frozen=True)
class AlertView:
    """The words of an alert, shared by every format so they all say the same thing."""

    title: str
    summary: str
    facts: tuple[tuple[str, str], ...]
    guidance: str
    footer: str
    # The incident on the DSL's console (console.base_url set): it names the alert id only.
    link: str | None = None


def _when(timestamp: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(timestamp, tz).strftime("%a %d %b %Y %H:%M:%S %Z")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _size(size: int | None) -> str:
    if size is None:
        return "unknown size"
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _defanged(name: str | None) -> str | None:
    """A name a pupil chose (a DHCP host name, a Host header) written so that no mail or chat
    client turns it into a link: "www.example.org" reads "www[.]example[.]org" (adversarial
    pass a12 put a look-alike sign-in address into the DSL's alert that way)."""
    return name.replace(".", "[.]") if name else name


_HOSTLIKE = re.compile(
    r"(?<![A-Za-z0-9-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)


def _inert(text: str) -> str:
    """Free text another school typed (a bank's note, its "Shared by" stamp) with every
    host-like word defanged: a bare `www.example.org` in a note reached every school's Teams
    channel as a link (adversarial pass a41 F12)."""
    return _HOSTLIKE.sub(lambda found: found[0].replace(".", "[.]"), text)


def _headline(alert: Alert) -> str:
    details = alert.details
    if alert.kind == KIND_TEST:
        return "Test alert from schoolgate"
    what = "a download" if details.direction == "download" else "an upload"
    if details.matches:
        cause = f"{what} matched a hash bank of known harmful media"
    elif details.flags:
        cause = f"{what} was flagged by the image classifier"
    else:
        cause = f"{what} could not be inspected ({details.failure or 'unknown'})"
    prefix = "Blocked" if details.blocked else "Recorded, not blocked (monitor mode)"
    repeat = "Repeated: " if alert.follow_up_of else ""
    times = f" ({alert.count} times)" if alert.count > 1 else ""
    return f"{repeat}{prefix}: {cause}{times}"


def build_view(
    alert: Alert, guidance: str, tz: ZoneInfo, console_url: str | None = None
) -> AlertView:
    details = alert.details
    device = details.device
    if alert.kind == KIND_TEST:
        return AlertView(
            title=_headline(alert),
            summary=(
                f"This is a test of the alert channel from {details.site or 'schoolgate'}. "
                "No pupil or media is involved; no action is needed."
            ),
            facts=(("Sent", _when(alert.first_seen, tz)),),
            guidance=guidance,
            footer=f"Alert {alert.id} (test)",
        )
    device = replace(device, hostname=_defanged(device.hostname))
    host = _defanged(details.host)
    verb = "download" if details.direction == "download" else "upload"
    outcome = (
        "It was stopped before it crossed the network."
        if details.blocked
        else f"It was allowed (group {details.group} is in monitor mode) and recorded."
    )
    app = details.app or "an unknown app"
    summary = f"{device.label()} tried to {verb} media via {app}. {outcome}"
    facts: list[tuple[str, str]] = [("When", _when(alert.first_seen, tz))]
    if alert.count > 1:
        facts.append(("Repeats", f"{alert.count} times, last at {_when(alert.last_seen, tz)}"))
    facts.append(("Device", device.label()))
    if device.vlan is not None:
        facts.append(("VLAN", str(device.vlan)))
    unplaced = (
        ""
        if details.placed
        else "; the device matched no group's addresses, so every DSL gets this"
    )
    facts.append(("Group", f"{details.group} ({details.mode} mode{unplaced})"))
    facts.append(("App", f"{app} ({host})" if host else app))
    facts.append(("Action", "blocked" if details.blocked else "allowed and recorded"))
    for match in details.matches:
        note = f", note: {_inert(match.note)}" if match.note else ""
        facts.append(
            (
                "Matched",
                f"bank {match.bank} ({match.signal_type}, distance {match.distance}{note})"
                + (f" in {match.where}" if match.where else ""),
            )
        )
        if match.provenance:
            facts.append(("Shared by", _inert(match.provenance)))
    for flag in details.flags:
        facts.append(("Classifier", f"{flag.model}: {flag.label} scored {flag.score:.2f}"))
    if details.failure and not details.matches and not details.flags:
        facts.append(("Not inspected", details.failure))
    media = details.media_type or "unknown type"
    facts.append(("Media", f"{media}, {_size(details.size)} (not stored, not attached)"))
    if details.found_in:
        facts.append(("Found", details.found_in))
    if details.sha256:
        facts.append(("SHA-256", details.sha256))
    if details.site:
        facts.append(("Site", details.site))
    audit = ", ".join(alert.audit_ids[:3]) + (" ..." if len(alert.audit_ids) > 3 else "")
    footer = f"Alert {alert.id}"
    if alert.follow_up_of:
        footer += f", repeats after alert {alert.follow_up_of}"
    if audit:
        footer += f"; audit log decision {audit}"
    link = f"{console_url}/incidents/{alert.id}" if console_url else None
    return AlertView(_headline(alert), summary, tuple(facts), guidance, footer, link)


# -- generic JSON ------------------------------------------------------------------------------


def generic_payload(
    alert: Alert, guidance: str, tz: ZoneInfo, console_url: str | None = None
) -> dict[str, Any]:
    """The documented schema (`schema` + `version`); new fields may be added within a version."""
    view = build_view(alert, guidance, tz, console_url)
    details = alert.details
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "alert_id": alert.id,
        "kind": alert.kind,
        "follow_up_of": alert.follow_up_of,
        "first_seen": _iso(alert.first_seen),
        "last_seen": _iso(alert.last_seen),
        "count": alert.count,
        "site": details.site,
        "title": view.title,
        "summary": view.summary,
        "decision": {
            "action": details.action,
            "mode": details.mode,
            "would_block": details.would_block,
            "group": details.group,
            "group_matched": details.placed,
            "direction": details.direction,
            "decided_at": details.decided_at,
            "reasons": list(details.reasons),
            "failure": details.failure,
        },
        "device": asdict(details.device),
        "app": details.app,
        "host": details.host,
        "media": {
            "type": details.media_type,
            "size": details.size,
            "sha256": details.sha256,
            # Where in the upload it was ("...@693": hidden after other data) and the upload's
            # size: a picture appended after a harmless one is not the harmless file.
            "found_at": details.locator,
            "upload_size": details.body_size,
        },
        "matches": [asdict(m) for m in details.matches],
        "classifier": [asdict(f) for f in details.flags],
        "audit_ids": list(alert.audit_ids),
        "guidance": guidance,
        "console_url": view.link,
    }


# -- Microsoft Teams ---------------------------------------------------------------------------


def teams_payload(
    alert: Alert, guidance: str, tz: ZoneInfo, console_url: str | None = None
) -> dict[str, Any]:
    """A message with one Adaptive Card, as Teams Workflows webhooks take it."""
    view = build_view(alert, guidance, tz, console_url)
    card = {
        "type": "AdaptiveCard",
        "version": TEAMS_CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": view.title,
                "weight": "Bolder",
                "size": "Medium",
                "color": "Attention" if alert.kind != KIND_TEST else "Default",
                "wrap": True,
            },
            {"type": "TextBlock", "text": view.summary, "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": title, "value": value} for title, value in view.facts],
            },
            {
                "type": "Container",
                "style": "warning",
                "items": [
                    {
                        "type": "TextBlock",
                        "text": "What to do",
                        "weight": "Bolder",
                        "wrap": True,
                    },
                    {"type": "TextBlock", "text": view.guidance, "wrap": True},
                ],
            },
            {
                "type": "TextBlock",
                "text": view.footer,
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }
    if view.link:
        card["actions"] = [
            {
                "type": "Action.OpenUrl",
                "title": "Open the incident in the console",
                "url": view.link,
            }
        ]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


# -- Slack -------------------------------------------------------------------------------------


def _slack(text: str) -> str:
    """Slack's three control characters; anything else in mrkdwn is at most emphasis."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(
    alert: Alert, guidance: str, tz: ZoneInfo, console_url: str | None = None
) -> dict[str, Any]:
    """An incoming-webhook message: Block Kit blocks plus `text` for notifications."""
    view = build_view(alert, guidance, tz, console_url)
    fields = [
        {"type": "mrkdwn", "text": f"*{_slack(title)}*\n{_slack(value)}"}
        for title, value in view.facts
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": view.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack(view.summary)}},
    ]
    # Slack allows at most 10 fields per section.
    for start in range(0, len(fields), 10):
        blocks.append({"type": "section", "fields": fields[start : start + 10]})
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*What to do*\n{_slack(view.guidance)}"},
        }
    )
    if view.link:  # ours: an https base URL from config and a hex id, nothing to escape
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"<{view.link}|Open the incident in the console>"}}
        )  # fmt: skip
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack(view.footer)}]}
    )
    return {
        "text": _slack(f"{view.title}: {view.summary}"),
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


PAYLOADS = {"generic": generic_payload, "teams": teams_payload, "slack": slack_payload}


# -- email -------------------------------------------------------------------------------------


def email_message(
    alert: Alert,
    guidance: str,
    tz: ZoneInfo,
    sender: str,
    to: tuple[str, ...],
    console_url: str | None = None,
) -> EmailMessage:
    """Plain text only: no HTML (nothing to click), no attachments."""
    view = build_view(alert, guidance, tz, console_url)
    message = EmailMessage()
    message["Subject"] = f"[schoolgate] {view.title}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(alert.first_seen, localtime=False)
    # The alert id as Message-ID lets a mail system drop an at-least-once duplicate.
    message["Message-ID"] = f"<{alert.id}@schoolgate.alert>"
    message["X-Schoolgate-Alert-Id"] = alert.id
    width = max(len(title) for title, _ in view.facts) if view.facts else 0
    lines = [view.summary, ""]
    lines += [f"{title + ':':<{width + 1}} {value}" for title, value in view.facts]
    lines += ["", "WHAT TO DO", guidance, ""]
    if view.link:
        lines += [f"Open the incident in the console: {view.link}", ""]
    lines.append(view.footer)
    message.set_content("\n".join(lines) + "\n")
    return message
