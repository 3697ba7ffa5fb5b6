"""The `policy:` and `audit:` configuration sections: groups of clients with their mode, what
blocks, schedules and fail policy; where decisions are written down and for how long."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schoolgate.config_reader import Network, Node, path_under
from schoolgate.gateway.settings import PortRange, parse_port_ranges
from schoolgate.pipeline.verdict import FAILURES

MODES = ("block", "monitor")


FAIL_ACTIONS = ("block", "allow")


# Default fail policy: closed. Only catalogued upload routes are ever held, so failing closed blocks
# an upload to a media-sharing service, never general browsing; failing open would let a pupil
# bypass the filter by making inspection fail (padding past the cap, malformed media, flooding).
# Media we cannot analyse (a video codec not decoded here, bytes sent as a picture in a format we
# do not read) fails closed too: otherwise the unusual format is the bypass.
DEFAULT_FAIL = dict.fromkeys(FAILURES, "block") | {
    "not_inspectable": "allow",
    # Hash matching has already run; a broken model must not block every image (it is alerted).
    "classifier_error": "allow",
}


BLOCK_TRIGGERS = ("bank_match", "classifier")


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class TimeWindow:
    """Days and a time range (local time in `policy.timezone`); end before start wraps midnight."""

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time


@dataclass(frozen=True)
class GroupConfig:
    """A set of clients and how their media is treated."""

    name: str
    subnets: tuple[Network, ...] = ()
    vlans: frozenset[int] = frozenset()
    devices: frozenset[str] = frozenset()  # MAC addresses, lower case, colon separated
    mode: str = "block"
    block_on: frozenset[str] = frozenset(BLOCK_TRIGGERS)
    # When set, `mode` applies inside these windows and `outside_mode` outside them.
    schedule: tuple[TimeWindow, ...] = ()
    outside_mode: str = "monitor"
    fail: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FAIL))
    alert_on_monitor: bool = True
    # Downloads from sharing CDNs: only bank matches are replaced by default, and a download that
    # cannot be judged is delivered, so a busy appliance never breaks pupils' feeds.
    download_block_on: frozenset[str] = frozenset({"bank_match"})
    download_fail: str = "allow"
    forward_allow: tuple[PortRange, ...] = ()  # extra ports through the gateway (VLAN groups)

    def triggers(self, direction: str) -> frozenset[str]:
        """What blocks for this direction of traffic ("upload", "download", ...)."""
        return self.download_block_on if direction == "download" else self.block_on

    def fail_action(self, direction: str, failure: str) -> str:
        if direction == "download":
            return self.download_fail
        return self.fail.get(failure, "block")


@dataclass(frozen=True)
class PolicyConfig:
    groups: tuple[GroupConfig, ...]
    default_group: str
    timezone: ZoneInfo


@dataclass(frozen=True)
class AuditConfig:
    path: Path
    rotate: str = "daily"  # "daily" | "size"
    max_bytes: int = 50 * 1024 * 1024
    retention_days: int = 90
    backup_count: int = 20


_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _clock(node: Node) -> time:
    text = node.text()
    found = _CLOCK.match(text)
    if not found:
        node.fail(f"{text!r} is not a time of day such as 08:30")
    return time(int(found.group(1)), int(found.group(2)))


def _window(node: Node) -> TimeWindow:
    node.mapping(allowed={"days", "start", "end"})
    days: set[int] = set()
    for day in node.child("days").elements():
        name = day.text().lower()[:3]
        if name not in DAYS:
            day.fail(f"{day.value!r} is not a day (mon, tue, wed, thu, fri, sat, sun)")
        days.add(DAYS.index(name))
    return TimeWindow(
        days=frozenset(days) if days else frozenset(range(5)),
        start=_clock(node.child("start")),
        end=_clock(node.child("end")),
    )


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _group(node: Node) -> GroupConfig:
    node.mapping(
        allowed={
            "name",
            "subnets",
            "vlans",
            "devices",
            "mode",
            "block_on",
            "schedule",
            "outside_mode",
            "fail",
            "alert_on_monitor",
            "downloads",
            "forward_allow",
        }
    )
    devices: set[str] = set()
    for child in node.child("devices").elements():
        mac = child.text().lower().replace("-", ":")
        if not _MAC.match(mac):
            child.fail(f"{child.value!r} is not a MAC address such as 3c:22:fb:01:02:03")
        devices.add(mac)
    triggers: set[str] = set()
    for child in node.child("block_on").elements():
        triggers.add(child.choice(BLOCK_TRIGGERS))
    fail = dict(DEFAULT_FAIL)
    fail_node = node.child("fail")
    fail_node.mapping(allowed=set(FAILURES))
    for failure, child in fail_node.items():
        fail[failure] = child.choice(FAIL_ACTIONS)
    block_on = node.child("block_on")
    downloads = node.child("downloads")
    downloads.mapping(allowed={"block_on", "fail"})
    download_triggers = downloads.child("block_on")
    defaults = GroupConfig(name="")
    return GroupConfig(
        name=node.child("name").text(),
        subnets=tuple(child.network() for child in node.child("subnets").elements()),
        vlans=frozenset(
            child.integer(0, minimum=1, maximum=4094) for child in node.child("vlans").elements()
        ),
        devices=frozenset(devices),
        mode=node.child("mode").choice(MODES, defaults.mode),
        block_on=frozenset(triggers) if not block_on.missing else defaults.block_on,
        schedule=tuple(_window(child) for child in node.child("schedule").elements()),
        outside_mode=node.child("outside_mode").choice(MODES, defaults.outside_mode),
        fail=fail,
        alert_on_monitor=node.child("alert_on_monitor").flag(defaults.alert_on_monitor),
        download_block_on=frozenset(t.choice(BLOCK_TRIGGERS) for t in download_triggers.elements())
        if not download_triggers.missing
        else defaults.download_block_on,
        download_fail=downloads.child("fail").choice(FAIL_ACTIONS, defaults.download_fail),
        forward_allow=_group_ports(node),
    )


def _group_ports(node: Node) -> tuple[PortRange, ...]:
    """A group's own extra ports through the gateway (gateway.forward_allow is for everyone).
    The firewall knows a device's VLAN but not its group otherwise (an address can be typed
    in), so only a group defined by VLANs alone can have them."""
    ports_node = node.child("forward_allow")
    if ports_node.missing:
        return ()
    if node.child("subnets").elements() or node.child("devices").elements():
        ports_node.fail("needs a group defined by vlans only: the firewall cannot tell which "
                        "group an address or a MAC is in, and a pupil can choose both")  # fmt: skip
    if not node.child("vlans").elements():
        ports_node.fail("needs the group's vlans")
    return parse_port_ranges(ports_node)


def parse_policy(node: Node) -> PolicyConfig:
    node.mapping(allowed={"groups", "default_group", "timezone"})
    groups: list[GroupConfig] = []
    for child in node.child("groups").elements():
        group = _group(child)
        if any(g.name == group.name for g in groups):
            child.child("name").fail(f"duplicate group name {group.name!r}")
        groups.append(group)
    if not groups:
        groups.append(GroupConfig(name="everyone"))
    default_node = node.child("default_group")
    default = default_node.text(groups[-1].name)
    if all(g.name != default for g in groups):
        default_node.fail(
            f"no group named {default!r} (groups: {', '.join(g.name for g in groups)})"
        )
    tz_node = node.child("timezone")
    tz_name = tz_node.text("Europe/London")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz_node.fail(f"{tz_name!r} is not a known time zone such as Europe/London")
    return PolicyConfig(groups=tuple(groups), default_group=default, timezone=tz)


def parse_audit(node: Node, data_dir: Path) -> AuditConfig:
    node.mapping(allowed={"path", "rotate", "max_bytes", "retention_days", "backup_count"})
    defaults = AuditConfig(path=Path())
    return AuditConfig(
        path=path_under(data_dir, node.child("path"), "audit/decisions.jsonl"),
        rotate=node.child("rotate").choice(("daily", "size"), defaults.rotate),
        max_bytes=node.child("max_bytes").integer(defaults.max_bytes, minimum=1024),
        retention_days=node.child("retention_days").integer(
            defaults.retention_days, minimum=1, maximum=3650
        ),
        backup_count=node.child("backup_count").integer(
            defaults.backup_count, minimum=1, maximum=10000
        ),
    )
