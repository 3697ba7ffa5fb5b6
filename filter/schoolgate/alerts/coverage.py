"""Whose alerts each receiver gets, said before a pupil's alert goes to the wrong person.

A receiver that names policy groups gets those groups' alerts. A group added later that no such
receiver names (a stricter `year9` inside a school's subnets) takes its devices' alerts away from
that school's DSL, to the receivers without groups alone: the configuration is valid, and the DSL
silently stops hearing about some of the school's pupils (adversarial pass a38 A22). These notes
are printed by `check-config` and logged when the alert service starts.
"""

from __future__ import annotations

from schoolgate.alerts.settings import AlertsConfig
from schoolgate.config_reader import Network
from schoolgate.pipeline.settings import GroupConfig, PolicyConfig


def routing_notes(alerts: AlertsConfig, policy: PolicyConfig) -> list[str]:
    """A note per group whose alerts no group-routed receiver gets, and per receiver with
    groups that loses devices of a group it names to a group listed before it that it does not
    name (the first group that matches a device is its group): whoever that group goes to gets
    those pupils' alerts instead, another school's DSL perhaps (a43 F4)."""
    routed = [(r.name, r.groups) for r in alerts.receivers]
    if alerts.smtp is not None:
        routed.append((alerts.smtp.name, alerts.smtp.groups))
    if not any(groups for _, groups in routed):
        return []  # every receiver gets every alert
    everyone = [name for name, groups in routed if not groups]
    named = {group for _, groups in routed for group in groups}
    notes: list[str] = []
    for position, group in enumerate(policy.groups):
        takers = [name for name, groups in routed if group.name in groups] + everyone
        who = ", ".join(takers) if takers else "nobody"
        losers = [
            f"{name} ({taken.name}: {overlap})"
            for taken in policy.groups[position + 1 :]
            for overlap in [_overlap(group, taken)]
            if overlap
            for name, groups in routed
            if taken.name in groups and group.name not in groups
        ]
        if group.name in named and not losers:
            continue
        if group.name not in named:
            note = (f"the alerts of group {group.name!r} go to {who} only: no receiver with "
                    "groups names it")  # fmt: skip
        else:
            note = f"the alerts of group {group.name!r} go to {who}"
        if losers:
            note += (
                f", and it comes before groups other receivers name, so their devices there are "
                f"{group.name!r}'s: {'; '.join(losers)} no longer get those alerts. Add "
                f"{group.name!r} to their groups if they should"
            )
        notes.append(note)
    return notes


def _overlap(first: GroupConfig, later: GroupConfig) -> str:
    """What of `later` the earlier group `first` takes (subnets, VLANs, devices), in words."""
    nets = [
        str(a if a.prefixlen >= b.prefixlen else b)
        for a in first.subnets
        for b in later.subnets
        if _networks_overlap(a, b)
    ]
    vlans = sorted(first.vlans & later.vlans)
    devices = sorted(first.devices & later.devices)
    said = [*nets, *(f"VLAN {v}" for v in vlans), *devices]
    return ", ".join(said[:4]) + (f" and {len(said) - 4} more" if len(said) > 4 else "")


def _networks_overlap(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)
