"""Policy: which group a client is in, what mode applies now, and whether the findings block.

Every verdict carries its reasons, so a block page, an audit line and an alert can all say why.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from schoolgate.pipeline.settings import GroupConfig, PolicyConfig, TimeWindow
from schoolgate.pipeline.verdict import Action, Findings, InspectionContext, Verdict

__all__ = ["Action", "Policy", "Verdict"]


class Policy:
    """Decides allow/block for findings about one item from one client."""

    def __init__(self, config: PolicyConfig) -> None:
        self._config = config
        self._groups = config.groups
        self._default = next(g for g in config.groups if g.name == config.default_group)

    def group_for(self, ctx: InspectionContext) -> GroupConfig:
        """The first group (in config order) whose devices, VLANs or subnets match the client,
        else the default group.

        A subnet or a device entry counts only for an address the DHCP server leased to the
        device using it: a pupil who types a staff-range address in by hand, or copies a listed
        MAC onto a hand-set address, stays in the default group."""
        return self.matched_group(ctx) or self._default

    def matched_group(self, ctx: InspectionContext) -> GroupConfig | None:
        """The group the client matches; None when only the default group takes it."""
        address = _parse_ip(ctx.client_ip)
        mac = ctx.mac.lower() if ctx.mac else None
        for group in self._groups:
            if ctx.vlan is not None and ctx.vlan in group.vlans:
                return group
            if ctx.address_leased is False:
                continue
            if mac is not None and mac in group.devices:
                return group
            if address is not None and any(
                address.version == net.version and address in net for net in group.subnets
            ):
                return group
        return None

    def mode_for(self, group: GroupConfig, now: datetime | None = None) -> str:
        """The group's mode, or its outside_mode when a schedule is set and `now` is outside it."""
        if not group.schedule:
            return group.mode
        local = (now or datetime.now(UTC)).astimezone(self._config.timezone)
        inside = any(_in_window(window, local) for window in group.schedule)
        return group.mode if inside else group.outside_mode

    def wants_classifier(self, ctx: InspectionContext) -> bool:
        """Whether a classifier verdict can matter for this client and direction."""
        return "classifier" in self.group_for(ctx).triggers(ctx.direction)

    def decide(
        self, ctx: InspectionContext, findings: Findings, now: datetime | None = None
    ) -> Verdict:
        matched = self.matched_group(ctx)
        group = matched or self._default
        mode = self.mode_for(group, now)
        reasons: list[str] = []
        would_block = False

        triggers = group.triggers(ctx.direction)
        if "bank_match" in triggers:
            for match in findings.matches:
                where = f" in {match.where}" if match.where else ""
                if match.tier == "robust" and match.evidence:
                    evidence = dict(match.evidence)
                    reasons.append(
                        f"bank {match.bank}: {match.tier} match ({match.signal_type} features, "
                        f"{evidence.get('inliers', 0):.0f} inliers, spread "
                        f"{evidence.get('spread', 0):.2f}){where}"
                    )
                else:
                    inverted = " (colours inverted)" if dict(match.evidence).get("inverted") else ""
                    reasons.append(
                        f"bank {match.bank}: {match.signal_type} match at distance "
                        f"{match.distance}{inverted}{where}"
                    )
                would_block = True
        if "classifier" in triggers:
            for result in findings.scores:
                for label in result.flagged:
                    score = result.scores.get(label, 0.0)
                    reasons.append(f"classifier {result.model}: {label} scored {score:.2f}")
                    would_block = True
        if findings.failure is not None:
            action = findings.failure_action or group.fail_action(ctx.direction, findings.failure)
            detail = f" ({findings.failure_detail})" if findings.failure_detail else ""
            if ctx.carved and findings.failure == "refused" and not findings.matches:
                # Found inside other bytes and no picture as it stands (InspectionContext.carved).
                action, detail = "allow", f"{detail}, inside other bytes"
            reasons.append(f"could not inspect: {findings.failure}{detail}; fail-{action}")
            would_block = would_block or action == "block"

        blocked = would_block and mode == "block"
        if would_block and mode == "monitor":
            reasons.append("monitor mode: recorded, not blocked")
        return Verdict(
            action=Action.BLOCK if blocked else Action.ALLOW,
            would_block=would_block,
            mode=mode,
            group=group.name,
            reasons=tuple(reasons),
            context=ctx,
            findings=findings,
            placed=matched is not None,
        )


def _parse_ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    # An IPv4 client seen through a dual-stack socket arrives as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_window(window: TimeWindow, local: datetime) -> bool:
    clock = local.time().replace(tzinfo=None)
    if window.start <= window.end:
        return local.weekday() in window.days and window.start <= clock < window.end
    # Wraps midnight: the part after midnight belongs to the previous day's window.
    if clock >= window.start:
        return local.weekday() in window.days
    return clock < window.end and (local.weekday() - 1) % 7 in window.days
