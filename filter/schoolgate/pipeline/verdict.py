"""What one inspection found, and the decision taken on it. Never holds the media itself."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

# The failure vocabulary: what can go wrong before a verdict exists. Each failure has a
# fail-open/fail-closed setting per group (schoolgate.pipeline.settings).
FAILURES = (
    "refused",  # media refused by the decoder: bomb, truncated, corrupt, over a cap
    "timeout",  # inspection took longer than the proxy's budget
    "overload",  # the worker pool's queue was full
    "oversize",  # body larger than the proxy holds for inspection
    "not_analysed",  # sent as media but not analysable here (unknown format, undecoded video codec)
    "conflicting_chunks",  # a chunked upload whose overlapping chunks disagree
    "not_inspectable",  # an app the catalog marks un-inspectable (E2E media, pinned, non-HTTP)
    "classifier_error",  # a model failed, was not loaded, or ran past its time budget on an item
    "error",  # an unexpected internal error while inspecting
)

if TYPE_CHECKING:
    from schoolgate.classify.spec import ClassifierResult
    from schoolgate.matching.matcher import BankMatch


class Action(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


@dataclass(frozen=True)
class InspectionContext:
    """Where an item came from: who sent it, to which app, and how it was described."""

    client_ip: str | None = None
    app: str | None = None
    host: str | None = None
    route: str | None = None
    direction: str = "upload"  # "upload" | "download"
    filename: str | None = None
    declared_type: str | None = None  # as the client said; recorded, never trusted
    mac: str | None = None
    hostname: str | None = None
    vlan: int | None = None
    size: int | None = None
    # Whether the DHCP server leased client_ip to the MAC the gateway sees behind it; None where
    # it cannot be told (no lease source, or a client that is not the gateway's neighbour).
    address_leased: bool | None = None
    # Where in the request or message the item was found ("body/multipart:file[0]@693": found
    # by its signature at byte 693 of that part, i.e. inside or after other bytes), and how
    # big the whole body was: a banked picture hidden after a harmless one must not read as
    # the harmless file it travelled in (adversarial pass a14).
    locator: str | None = None
    body_size: int | None = None
    # True where the item was found by its signature inside other bytes (carved): compressed
    # data (lz4, 7z, a format not read here) holds a picture's first bytes as they were, and
    # what follows them does not decode. Such bytes are judged for a match on what they show,
    # and allowed when they match nothing, not refused as a broken picture (a73 I1, I2).
    carved: bool | None = None


@dataclass(frozen=True)
class Findings:
    """The evidence about one item, before policy: hashes, bank matches, classifier scores."""

    media_type: str | None = None
    size: int | None = None
    hashes: dict[str, str | int] = field(default_factory=dict)
    matches: tuple[BankMatch, ...] = ()
    scores: tuple[ClassifierResult, ...] = ()
    failure: str | None = None  # one of config.FAILURES when the item could not be judged
    failure_detail: str | None = None
    # Set when something other than the group's fail policy decides (the endpoint catalog's
    # block_by_sni / allow_and_log for apps that cannot be inspected).
    failure_action: str | None = None
    elapsed_ms: float = 0.0
    # Sources ("bank:NAME", "model:NAME") that matched or flagged this exact file but no longer
    # count for it: a DSL reviewed it as a false positive (schoolgate.banks.exemptions).
    exempted: tuple[str, ...] = ()
    # PDQ matches that the banked item's own feature sets refuted (dropped, not counted): kept
    # for the audit record, so a near-match that was overruled can be found again.
    refuted: tuple[BankMatch, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """A decision on one item (or on a request that could not be inspected)."""

    action: Action
    would_block: bool  # true in monitor mode too: what block mode would have done
    mode: str
    group: str
    reasons: tuple[str, ...]
    context: InspectionContext
    findings: Findings
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # False when the device matched no group and the default group took it (a hand-set
    # address outside every group's subnets): which school's it is cannot be told.
    placed: bool = True

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def media_type(self) -> str | None:
        return self.findings.media_type

    @property
    def matches(self) -> tuple[BankMatch, ...]:
        return self.findings.matches

    @property
    def scores(self) -> tuple[ClassifierResult, ...]:
        return self.findings.scores

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record for the audit log and alerts: metadata and hashes only."""
        findings = self.findings
        return {
            "id": self.id,
            "time": self.decided_at.isoformat(),
            "decision": self.action.value,
            "would_block": self.would_block,
            "mode": self.mode,
            "group": self.group,
            "group_matched": self.placed,
            "reasons": list(self.reasons),
            "client": {k: v for k, v in asdict(self.context).items() if v is not None},
            "media_type": findings.media_type,
            "size": findings.size,
            "hashes": dict(findings.hashes),
            "matches": [
                {
                    "bank": m.bank,
                    "signal_type": str(m.signal_type),
                    "value": m.value,
                    "distance": m.distance,
                    "tier": m.tier,
                    **({"evidence": dict(m.evidence)} if m.evidence else {}),
                    **({"provenance": m.provenance} if m.provenance else {}),
                    # Video matches add the vPDQ shares (see video_matcher.VideoMatch), image
                    # matches in a video's frames the frame and its time (matcher.FrameMatch).
                    **getattr(m, "audit_extra", {}),
                }
                for m in findings.matches
            ],
            "scores": [
                {
                    "model": r.model,
                    "scores": {k: round(v, 4) for k, v in r.scores.items()},
                    "flagged": list(r.flagged),
                    "elapsed_ms": round(r.elapsed_ms, 1),
                    "over_budget": r.over_budget,
                    **({"error": r.error} if r.error else {}),
                }
                for r in findings.scores
            ],
            "failure": findings.failure,
            "failure_detail": findings.failure_detail,
            "elapsed_ms": round(findings.elapsed_ms, 1),
            **({"exempted": list(findings.exempted)} if findings.exempted else {}),
            **(
                {
                    "refuted": [
                        {
                            "bank": m.bank,
                            "signal_type": str(m.signal_type),
                            "value": m.value,
                            "distance": m.distance,
                        }
                        for m in findings.refuted
                    ]
                }
                if findings.refuted
                else {}
            ),
        }
