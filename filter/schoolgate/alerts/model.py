"""What an alert says: built from a verdict, hashes and metadata only, never the media.

An alert names the device, the app, what matched and what was done. It never carries the media,
a link to it, the upload's path or file name: a download's path is itself a link to the media,
and file names are written by pupils. Strings that come from devices or the network are reduced
to a plain character set, so a crafted DHCP hostname cannot smuggle a link or markup into a
Teams card, a Slack message or an email.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from schoolgate.pipeline.verdict import Verdict

if TYPE_CHECKING:
    from schoolgate.alerts.settings import AlertsConfig
    from schoolgate.pipeline.settings import GroupConfig, PolicyConfig

KIND_DECISION = "decision"
KIND_TEST = "test"

_UNSAFE = re.compile(r"[^A-Za-z0-9._:@ -]")


_UNSAFE_LOCATOR = re.compile(r"[^A-Za-z0-9._:@#/\[\] -]")


def plain_locator(text: str | None) -> str | None:
    """Where an item was found in a body ("body/zip:NAME@693"): its part names come from the
    device, so they are reduced as `plain` reduces names, keeping the path's punctuation."""
    return None if text is None else _UNSAFE_LOCATOR.sub("_", text)[:200].replace("//", "__")


def plain(text: str | None, limit: int = 64) -> str | None:
    """Device- or network-supplied text reduced to letters, digits and . _ : @ - and spaces."""
    if text is None:
        return None
    cleaned = _UNSAFE.sub("_", text)[:limit]
    # "//" is how every link starts; it has no business in a host or device name.
    return cleaned.replace("//", "__")


@dataclass(frozen=True)
class Device:
    """The pupil's device as the gateway knows it (MAC and hostname from DHCP where known)."""

    ip: str | None = None
    mac: str | None = None
    hostname: str | None = None
    vlan: int | None = None

    @property
    def key(self) -> str:
        """Stable identity for de-duplication: the MAC outlives a DHCP address change."""
        return self.mac or self.ip or "unknown"

    def label(self) -> str:
        parts = [p for p in (self.hostname, self.ip, self.mac) if p]
        if not parts:
            return "an unknown device"
        head, *rest = parts
        return f"{head} ({', '.join(rest)})" if rest else head


@dataclass(frozen=True)
class MatchInfo:
    bank: str
    signal_type: str
    distance: int
    note: str | None = None
    where: str | None = None  # "frame 1 at 2.00 s": one frame or page of a longer file
    provenance: str | None = None  # a shared bank's origin: school, when, why


@dataclass(frozen=True)
class FlagInfo:
    model: str
    label: str
    score: float


@dataclass(frozen=True)
class AlertDetails:
    """The decision an alert is about. Stored in the outbox as JSON."""

    decided_at: str  # ISO 8601, UTC
    action: str  # "block" | "allow" (monitor mode)
    mode: str
    would_block: bool
    group: str
    direction: str
    app: str | None
    host: str | None
    device: Device
    media_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    matches: tuple[MatchInfo, ...] = ()
    flags: tuple[FlagInfo, ...] = ()
    failure: str | None = None
    reasons: tuple[str, ...] = ()
    site: str = ""
    locator: str | None = None  # where in the upload the item was found (see InspectionContext)
    body_size: int | None = None  # the whole upload's size, when the item was part of it
    # False: the device matched no group (the default group took it), so every receiver gets it
    placed: bool = True

    @classmethod
    def from_verdict(cls, verdict: Verdict, site: str) -> AlertDetails:
        ctx = verdict.context
        findings = verdict.findings
        sha256 = findings.hashes.get("sha256")
        return cls(
            decided_at=verdict.decided_at.isoformat(),
            action=verdict.action.value,
            mode=verdict.mode,
            would_block=verdict.would_block,
            group=verdict.group,
            direction=ctx.direction,
            app=plain(ctx.app),
            host=plain(ctx.host, 255),
            device=Device(
                ip=plain(ctx.client_ip, 64),
                mac=plain(ctx.mac, 32),
                hostname=plain(ctx.hostname),
                vlan=ctx.vlan,
            ),
            media_type=findings.media_type,
            size=findings.size,
            sha256=sha256 if isinstance(sha256, str) else None,
            matches=tuple(
                MatchInfo(
                    m.bank,
                    str(m.signal_type),
                    m.distance,
                    plain(m.note, 200) or None,
                    m.where or None,
                    plain(m.provenance, 300) or None,
                )
                for m in findings.matches
            ),
            flags=tuple(
                FlagInfo(r.model, label, round(r.scores.get(label, 0.0), 4))
                for r in findings.scores
                for label in r.flagged
            ),
            failure=findings.failure,
            reasons=verdict.reasons,
            site=site,
            locator=plain_locator(ctx.locator),
            body_size=ctx.body_size,
            placed=verdict.placed,
        )

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def found_in(self) -> str | None:
        """Where in the upload the matched item was, when that is more than "the file itself":
        a banked picture appended after a harmless one, or one frame of an animation, is not
        the harmless picture the pupil says they sent (adversarial passes a13, a14, a15)."""
        whole = f"an upload of {self.body_size} bytes" if self.body_size else "the upload"
        said = []
        carved = re.search(r"^(.*)@(\d+)$", self.locator or "")
        if carved:
            said.append(f"Hidden inside other data: found by its signature at byte {carved[2]} "
                        f"of {carved[1]}, in {whole}. The upload held more than this item, for "
                        "example a harmless picture with this one appended after it.")  # fmt: skip
        elif self.locator and self.body_size and self.size and self.body_size > 2 * self.size:
            said.append(f"{self.locator}, one part of {whole}.")
        frames = sorted({m.where for m in self.matches if m.where})
        if frames:
            said.append(f"Matched in {', '.join(frames)} only: one frame or page of a longer "
                        "file, which can show something else the rest of the time.")  # fmt: skip
        return " ".join(said) or None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlertDetails:
        raw: dict[str, Any] = json.loads(text)
        return cls(
            **{
                **raw,
                "device": Device(**raw["device"]),
                "matches": tuple(MatchInfo(**m) for m in raw["matches"]),
                "flags": tuple(FlagInfo(**f) for f in raw["flags"]),
                "reasons": tuple(raw["reasons"]),
            }
        )


@dataclass(frozen=True)
class Alert:
    """One row of the outbox: a decision (or a repeat of it) to tell the DSL about."""

    id: str  # uuid hex; the idempotency key receivers de-duplicate on
    kind: str
    state: str  # "pending" | "delivered" | "dead"
    dedup_key: str
    details: AlertDetails
    count: int = 1
    first_seen: float = 0.0
    last_seen: float = 0.0
    audit_ids: tuple[str, ...] = ()  # the audit log's decision ids (bounded list)
    follow_up_of: str | None = None  # repeats after this alert was sent
    attempts: int = 0
    last_error: str | None = None
    delivered_to: tuple[str, ...] = field(default_factory=tuple)


class AlertRule:
    """Which decisions become alerts: blocks, and monitor-mode matches where the group says so."""

    def __init__(self, config: AlertsConfig, policy: PolicyConfig) -> None:
        self._failure_blocks = config.failure_blocks
        self._groups: dict[str, GroupConfig] = {g.name: g for g in policy.groups}

    def wants(self, verdict: Verdict) -> bool:
        if not verdict.would_block:
            return False
        group = self._groups.get(verdict.group)
        if not self._is_safeguarding(verdict, group) and not self._failure_blocks:
            return False
        if verdict.blocked:
            return True
        return group.alert_on_monitor if group is not None else True

    @staticmethod
    def _is_safeguarding(verdict: Verdict, group: GroupConfig | None) -> bool:
        """A bank match or a classifier flag that this group's policy acts on."""
        triggers = group.triggers(verdict.context.direction) if group is not None else None
        matched = bool(verdict.matches) and (triggers is None or "bank_match" in triggers)
        flagged = any(r.flagged for r in verdict.scores) and (
            triggers is None or "classifier" in triggers
        )
        return matched or flagged


def dedup_key(details: AlertDetails) -> str:
    """Same media (or, without media, the same failure in the same app) from the same device."""
    what = details.sha256 or f"{details.failure or 'unknown'}:{details.app or '-'}"
    return f"{what}|{details.device.key}"
