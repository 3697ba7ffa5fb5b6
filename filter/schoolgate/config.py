"""schoolgate's configuration: YAML validated into typed, immutable objects.

The embedded default is `config/schoolgate.yaml` (shipped as `schoolgate.defaults`). A site file
(`/etc/schoolgate/schoolgate.yaml`, `--config`, or `$SCHOOLGATE_CONFIG`) is read *instead of* it,
so what a school runs is always one readable file. `$SCHOOLGATE_DATA_DIR` overrides `data_dir`,
which lets every command run unprivileged against a scratch directory.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import time
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from schoolgate.alerts.settings import AlertsConfig, parse_alerts
from schoolgate.classify.classifier import ModelSpec
from schoolgate.classify.video import FrameVote
from schoolgate.config_reader import Node
from schoolgate.errors import ConfigError
from schoolgate.matching.video import VideoMatchSettings
from schoolgate.media.decode import MediaLimits, VideoLimits

DEFAULT_CONFIG_PATH = Path("/etc/schoolgate/schoolgate.yaml")
DEFAULT_DATA_DIR = Path("/var/lib/schoolgate")
EMBEDDED_SOURCE = "<embedded default config/schoolgate.yaml>"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("block", "monitor")
FAIL_ACTIONS = ("block", "allow")
# What can go wrong before a verdict exists; each has a fail-open/fail-closed setting per group.
FAILURES = (
    "refused",  # media refused by the decoder: bomb, truncated, corrupt, over a cap
    "timeout",  # inspection took longer than the proxy's budget
    "overload",  # the worker pool's queue was full
    "oversize",  # body larger than the proxy holds for inspection
    "not_analysed",  # media that cannot be analysed perceptually here (a video codec not decoded)
    "conflicting_chunks",  # a chunked upload whose overlapping chunks disagree
    "not_inspectable",  # an app the catalog marks un-inspectable (E2E media, pinned, non-HTTP)
    "classifier_error",  # a model failed, was not loaded, or ran past its time budget on an item
    "error",  # an unexpected internal error while inspecting
)
# Default fail policy: closed. Only catalogued upload routes are ever held, so failing closed blocks
# an upload to a media-sharing service, never general browsing; failing open would let a pupil
# bypass the filter by making inspection fail (padding past the cap, malformed media, flooding).
DEFAULT_FAIL = dict.fromkeys(FAILURES, "block") | {
    "not_analysed": "allow",
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


# Matching tiers a bank can run. Exact digests always run; "pdq" is the perceptual hash index;
# "robust" is local features with geometric verification (schoolgate.robust), for banks whose
# items were added from local files (`schoolgate hashes add`), which store feature sets.
TIERS = ("pdq", "robust")
DEFAULT_TIERS: dict[str, tuple[str, ...]] = {"*": TIERS}


@dataclass(frozen=True)
class RobustRule:
    """When the robust tier calls two images the same: enough inliers, spread wide enough."""

    min_inliers: int = 20
    min_spread: float = 0.3  # share of the banked image's 4x4 grid cells holding inliers


@dataclass(frozen=True)
class RobustConfig:
    """The robust tier's thresholds and its bounds on memory and time."""

    rule: RobustRule = RobustRule()
    per_bank: dict[str, RobustRule] = field(default_factory=dict)
    max_items: int = 2000  # banked items whose feature sets are loaded (newest first)
    max_candidates: int = 8  # banked views verified per query, at most
    bank_mirrored: bool = True  # also bank the mirrored view, so mirrored edits match
    # Videos: `hashes add` banks the feature sets of this many key frames spread over the clip,
    # and an upload's frames (this many, spread) are looked up when no hash matched. A frame
    # verified against a banked key frame blocks, as a robust image match does.
    video_key_frames: int = 8
    video_query_frames: int = 8

    def rule_for(self, bank: str) -> RobustRule:
        return self.per_bank.get(bank, self.rule)


@dataclass(frozen=True)
class BanksConfig:
    path: Path
    pdq_max_distance: int = 31
    pdq_min_quality: int = 50
    match_dihedral: bool = True  # also match mirrored and rotated copies (8 PDQ variants)
    per_bank_distance: dict[str, int] = field(default_factory=dict)
    reload_interval_s: float = 5.0
    video: VideoMatchSettings = field(default_factory=VideoMatchSettings)  # the vPDQ rule
    # Bank-name glob -> tiers, first matching pattern wins; banks no pattern names run "pdq".
    tiers: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    robust: RobustConfig = RobustConfig()

    def tiers_for(self, bank: str) -> tuple[str, ...]:
        for pattern, tiers in self.tiers.items():
            if fnmatch.fnmatchcase(bank, pattern):
                return tiers
        return ("pdq",)

    def runs(self, bank: str, tier: str) -> bool:
        return tier in self.tiers_for(bank)


@dataclass(frozen=True)
class ClassifierConfig:
    models: tuple[ModelSpec, ...]
    intra_op_threads: int = 1
    # Skip the classifier when a bank already matched: the verdict cannot change, and it saves
    # the most expensive step.
    skip_when_matched: bool = True
    # How many sampled frames of a video are scored, and how many must flag.
    video: FrameVote = field(default_factory=FrameVote)


@dataclass(frozen=True)
class AuditConfig:
    path: Path
    rotate: str = "daily"  # "daily" | "size"
    max_bytes: int = 50 * 1024 * 1024
    retention_days: int = 90
    backup_count: int = 20


@dataclass(frozen=True)
class ProxyConfig:
    mode: str = "regular"  # "regular" (explicit proxy) | "transparent"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    max_held_body_bytes: int = 64 * 1024 * 1024
    workers: int = 2
    max_queue: int = 64
    inspect_timeout_s: float = 15.0
    endpoints_files: tuple[Path, ...] = ()
    dhcp_leases: tuple[Path, ...] = ()
    school_name: str = "This school"
    block_contact: str = "Please speak to a member of staff if you think this is a mistake."
    # Extra CA bundle (PEM) to trust for upstream servers, e.g. behind a TLS-inspecting firewall.
    upstream_ca_file: Path | None = None
    # A device that refuses our certificate this often for one SNI is treated as a pinned app.
    pinned_after_failures: int = 3
    pinned_action: str = "pass"  # "pass" (through uninspected, logged) | "block" (refused by SNI)


@dataclass(frozen=True)
class CaConfig:
    """The interception CA (`data_dir/ca`): see schoolgate.ca."""

    validity_days: int = 1825
    # An existing CA without name constraints is refused at start unless this is set (migration).
    allow_unconstrained: bool = False


@dataclass(frozen=True)
class SnifferConfig:
    """The passive sniffer (`schoolgate sniff`): see schoolgate.sniffer."""

    interface: str | None = None
    lists: tuple[Path, ...] = ()  # site circumvention lists beside config/circumvention.yaml
    # Its own audit file: a second process must not rotate the proxy's decisions log.
    audit_path: Path = DEFAULT_DATA_DIR / "audit" / "sniffer.jsonl"
    window_s: float = 300.0
    max_records_per_device: int = 50
    max_devices: int = 4096
    report_inspections: tuple[str, ...] = ("none", "pinned_native")
    prefilter: bool = True
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint: loopback by default; basic auth and TLS when both files are set."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    listen_port: int = 9861
    username: str = "prometheus"
    password_file: Path | None = None  # basic auth on when set
    cert_file: Path | None = None  # TLS on when set (with key_file)
    key_file: Path | None = None


@dataclass(frozen=True)
class GatewayConfig:
    """Which clients the gateway's nftables ruleset sends through the transparent proxy."""

    student_interfaces: tuple[str, ...] = ()
    vlan_parent: str | None = None  # student_vlans are its sub-interfaces: eth0 + 20 -> eth0.20
    student_vlans: tuple[int, ...] = ()
    exempt_subnets: tuple[Network, ...] = ()  # go direct: never redirected, never rejected
    reject_quic: bool = True  # UDP 443: apps fall back to inspectable TCP
    reject_dot: bool = True  # TCP/UDP 853 (DNS over TLS / QUIC): devices use the gateway's DNS

    @property
    def interfaces(self) -> tuple[str, ...]:
        """Every student interface name, VLAN sub-interfaces included."""
        vlans = tuple(f"{self.vlan_parent}.{vid}" for vid in self.student_vlans)
        return tuple(dict.fromkeys((*self.student_interfaces, *vlans)))


@dataclass(frozen=True)
class Config:
    source: str
    data_dir: Path
    limits: MediaLimits
    banks: BanksConfig
    classifier: ClassifierConfig
    policy: PolicyConfig
    audit: AuditConfig
    proxy: ProxyConfig
    alerts: AlertsConfig
    ca: CaConfig = field(default_factory=CaConfig)
    sniffer: SnifferConfig = field(default_factory=SnifferConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a configuration file; None means $SCHOOLGATE_CONFIG or the default.

    The embedded default is used only when no path is given and $SCHOOLGATE_CONFIG is unset.
    Raises ConfigError naming the file, the key path and the problem.
    """
    if path is None and os.environ.get("SCHOOLGATE_CONFIG"):
        path = os.environ["SCHOOLGATE_CONFIG"]
    if path is None:
        text = files("schoolgate.defaults").joinpath("schoolgate.yaml").read_text("utf-8")
        return parse_config(text, EMBEDDED_SOURCE)
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot be read: {exc}") from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str) -> Config:
    """Validate YAML text into a Config. `source` names the text in error messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, where, f"invalid YAML: {problem}") from None
    root = Node(source, "", raw if raw is not None else {})
    root.mapping(
        allowed={
            "data_dir",
            "limits",
            "banks",
            "classifier",
            "policy",
            "audit",
            "proxy",
            "alerts",
            "ca",
            "sniffer",
            "metrics",
            "gateway",
        }
    )
    data_dir = _data_dir(root.child("data_dir"))
    return Config(
        source=source,
        data_dir=data_dir,
        limits=_limits(root.child("limits")),
        banks=_banks(root.child("banks"), data_dir),
        classifier=_classifier(root.child("classifier")),
        policy=_policy(root.child("policy")),
        audit=_audit(root.child("audit"), data_dir),
        proxy=_proxy(root.child("proxy")),
        alerts=parse_alerts(root.child("alerts"), data_dir),
        ca=_ca(root.child("ca")),
        sniffer=_sniffer(root.child("sniffer"), data_dir),
        metrics=_metrics(root.child("metrics")),
        gateway=_gateway(root.child("gateway")),
    )


def _data_dir(node: Node) -> Path:
    env = os.environ.get("SCHOOLGATE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return node.path_value(DEFAULT_DATA_DIR) or DEFAULT_DATA_DIR


def _under(data_dir: Path, node: Node, default_name: str) -> Path:
    """A path from config; relative paths and the default live under the data dir."""
    value = node.path_value()
    if value is None:
        return data_dir / default_name
    return value if value.is_absolute() else data_dir / value


def _limits(node: Node) -> MediaLimits:
    node.mapping(allowed={"max_bytes", "max_pixels", "max_frames", "video"})
    defaults = MediaLimits()
    return MediaLimits(
        max_bytes=node.child("max_bytes").integer(defaults.max_bytes, minimum=1),
        max_pixels=node.child("max_pixels").integer(defaults.max_pixels, minimum=1),
        max_frames=node.child("max_frames").integer(defaults.max_frames, minimum=1),
        video=_video_limits(node.child("video")),
    )


def _video_limits(node: Node) -> VideoLimits:
    node.mapping(
        allowed={
            "max_duration_s",
            "max_pixels",
            "max_side",
            "max_decoded_frames",
            "max_sampled_frames",
            "time_budget_s",
            "seconds_per_hash",
            "decode_threads",
        }
    )
    d = VideoLimits()
    return VideoLimits(
        max_duration_s=node.child("max_duration_s").number(d.max_duration_s, minimum=1),
        max_pixels=node.child("max_pixels").integer(d.max_pixels, minimum=1),
        max_side=node.child("max_side").integer(d.max_side, minimum=16),
        max_decoded_frames=node.child("max_decoded_frames").integer(
            d.max_decoded_frames, minimum=1
        ),
        max_sampled_frames=node.child("max_sampled_frames").integer(
            d.max_sampled_frames, minimum=1
        ),
        time_budget_s=node.child("time_budget_s").number(d.time_budget_s, minimum=0.1),
        seconds_per_hash=node.child("seconds_per_hash").number(
            d.seconds_per_hash, minimum=0.04, maximum=60
        ),
        decode_threads=node.child("decode_threads").integer(
            d.decode_threads, minimum=1, maximum=16
        ),
    )


def _video_matching(node: Node, pdq_max_distance: int, pdq_min_quality: int) -> VideoMatchSettings:
    node.mapping(
        allowed={
            "max_distance",
            "min_quality",
            "query_match_percent",
            "bank_match_percent",
            "query_samples_per_hash",
        }
    )
    d = VideoMatchSettings()
    return VideoMatchSettings(
        max_distance=node.child("max_distance").integer(pdq_max_distance, minimum=0, maximum=128),
        min_quality=node.child("min_quality").integer(pdq_min_quality, minimum=0, maximum=100),
        query_match_percent=node.child("query_match_percent").number(
            d.query_match_percent, minimum=0, maximum=100
        ),
        bank_match_percent=node.child("bank_match_percent").number(
            d.bank_match_percent, minimum=0, maximum=100
        ),
        query_samples_per_hash=node.child("query_samples_per_hash").integer(
            d.query_samples_per_hash, minimum=1, maximum=30
        ),
    )


def _frame_vote(node: Node) -> FrameVote:
    node.mapping(allowed={"frames", "min_flagged_frames"})
    d = FrameVote()
    frames = node.child("frames").integer(d.frames, minimum=1, maximum=256)
    needed = node.child("min_flagged_frames")
    flagged = needed.integer(min(d.min_flagged_frames, frames), minimum=1)
    if flagged > frames:
        needed.fail(f"must be at most classifier.video.frames ({frames}), got {flagged}")
    return FrameVote(frames=frames, min_flagged_frames=flagged)


def _banks(node: Node, data_dir: Path) -> BanksConfig:
    node.mapping(
        allowed={
            "path",
            "pdq_max_distance",
            "pdq_min_quality",
            "match_dihedral",
            "per_bank_distance",
            "reload_interval_s",
            "video",
            "tiers",
            "robust",
        }
    )
    per_bank = {
        name: child.integer(0, minimum=0, maximum=128)
        for name, child in node.child("per_bank_distance").items()
    }
    pdq_max_distance = node.child("pdq_max_distance").integer(31, minimum=0, maximum=128)
    pdq_min_quality = node.child("pdq_min_quality").integer(50, minimum=0, maximum=100)
    return BanksConfig(
        path=_under(data_dir, node.child("path"), "banks.sqlite"),
        pdq_max_distance=pdq_max_distance,
        pdq_min_quality=pdq_min_quality,
        match_dihedral=node.child("match_dihedral").flag(True),
        per_bank_distance=per_bank,
        reload_interval_s=node.child("reload_interval_s").number(5.0, minimum=0.1),
        video=_video_matching(node.child("video"), pdq_max_distance, pdq_min_quality),
        tiers=_tiers(node.child("tiers")),
        robust=_robust(node.child("robust")),
    )


def _tiers(node: Node) -> dict[str, tuple[str, ...]]:
    if node.missing:
        return dict(DEFAULT_TIERS)
    tiers: dict[str, tuple[str, ...]] = {}
    for pattern, child in node.items():
        names = tuple(item.choice(TIERS) for item in child.elements())
        tiers[pattern] = tuple(dict.fromkeys(names))
    return tiers


def _robust_rule(node: Node, default: RobustRule) -> RobustRule:
    node.mapping(allowed={"min_inliers", "min_spread"})
    return RobustRule(
        # Fewer than 8 inliers is within reach of chance agreement between unrelated photos.
        min_inliers=node.child("min_inliers").integer(default.min_inliers, minimum=8),
        min_spread=node.child("min_spread").number(default.min_spread, minimum=0.0, maximum=1.0),
    )


def _robust(node: Node) -> RobustConfig:
    node.mapping(
        allowed={
            "min_inliers",
            "min_spread",
            "per_bank",
            "max_items",
            "max_candidates",
            "bank_mirrored",
            "video_key_frames",
            "video_query_frames",
        }
    )
    defaults = RobustConfig()
    rule = RobustRule(
        min_inliers=node.child("min_inliers").integer(defaults.rule.min_inliers, minimum=8),
        min_spread=node.child("min_spread").number(
            defaults.rule.min_spread, minimum=0.0, maximum=1.0
        ),
    )
    per_bank = {name: _robust_rule(child, rule) for name, child in node.child("per_bank").items()}
    return RobustConfig(
        rule=rule,
        per_bank=per_bank,
        max_items=node.child("max_items").integer(defaults.max_items, minimum=1, maximum=100_000),
        max_candidates=node.child("max_candidates").integer(
            defaults.max_candidates, minimum=1, maximum=64
        ),
        bank_mirrored=node.child("bank_mirrored").flag(defaults.bank_mirrored),
        video_key_frames=node.child("video_key_frames").integer(
            defaults.video_key_frames, minimum=0, maximum=64
        ),
        video_query_frames=node.child("video_query_frames").integer(
            defaults.video_query_frames, minimum=0, maximum=64
        ),
    )


_MODEL_KEYS = {
    "name",
    "adapter",
    "thresholds",
    "enabled",
    "path",
    "time_budget_ms",
    "input_size",
    "channel_order",
    "layout",
    "scale",
    "mean",
    "std",
    "labels",
    "output_activation",
}


def _classifier(node: Node) -> ClassifierConfig:
    node.mapping(allowed={"models", "intra_op_threads", "skip_when_matched", "video"})
    models: list[ModelSpec] = []
    names: set[str] = set()
    for child in node.child("models").elements():
        spec = _model(child)
        if spec.name in names:
            child.child("name").fail(f"duplicate model name {spec.name!r}")
        names.add(spec.name)
        models.append(spec)
    return ClassifierConfig(
        models=tuple(models),
        intra_op_threads=node.child("intra_op_threads").integer(1, minimum=1, maximum=64),
        skip_when_matched=node.child("skip_when_matched").flag(True),
        video=_frame_vote(node.child("video")),
    )


def _triple(node: Node, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if node.missing:
        return default
    items = node.elements()
    if len(items) != 3:
        node.fail("expected three numbers, one per colour channel")
    a, b, c = (item.number(0.0) for item in items)
    return (a, b, c)


def _model(node: Node) -> ModelSpec:
    node.mapping(allowed=_MODEL_KEYS)
    thresholds = {
        label: child.number(0.0, minimum=0.0, maximum=1.0)
        for label, child in node.child("thresholds").items()
    }
    if not thresholds:
        node.child("thresholds").fail("give at least one label: threshold (0..1) to flag on")
    defaults = ModelSpec(name="_", adapter="onnx", thresholds={})
    path = node.child("path").optional_text()
    return ModelSpec(
        name=node.child("name").text(),
        adapter=node.child("adapter").choice(("open_nsfw", "nudenet", "onnx")),
        thresholds=thresholds,
        enabled=node.child("enabled").flag(True),
        path=str(Path(path).expanduser()) if path else None,
        time_budget_ms=node.child("time_budget_ms").number(defaults.time_budget_ms, minimum=1),
        input_size=node.child("input_size").integer(defaults.input_size, minimum=1, maximum=4096),
        channel_order=node.child("channel_order").choice(("RGB", "BGR"), defaults.channel_order),
        layout=node.child("layout").choice(("NCHW", "NHWC"), defaults.layout),
        scale=node.child("scale").number(defaults.scale),
        mean=_triple(node.child("mean"), defaults.mean),
        std=_triple(node.child("std"), defaults.std),
        labels=tuple(item.text() for item in node.child("labels").elements()),
        output_activation=node.child("output_activation").choice(
            ("none", "softmax", "sigmoid"), defaults.output_activation
        ),
    )


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
    return GroupConfig(
        name=node.child("name").text(),
        subnets=tuple(child.network() for child in node.child("subnets").elements()),
        vlans=frozenset(
            child.integer(0, minimum=1, maximum=4094) for child in node.child("vlans").elements()
        ),
        devices=frozenset(devices),
        mode=node.child("mode").choice(MODES, "block"),
        block_on=frozenset(triggers) if not block_on.missing else frozenset(BLOCK_TRIGGERS),
        schedule=tuple(_window(child) for child in node.child("schedule").elements()),
        outside_mode=node.child("outside_mode").choice(MODES, "monitor"),
        fail=fail,
        alert_on_monitor=node.child("alert_on_monitor").flag(True),
        download_block_on=frozenset(t.choice(BLOCK_TRIGGERS) for t in download_triggers.elements())
        if not download_triggers.missing
        else frozenset({"bank_match"}),
        download_fail=downloads.child("fail").choice(FAIL_ACTIONS, "allow"),
    )


def _policy(node: Node) -> PolicyConfig:
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


def _audit(node: Node, data_dir: Path) -> AuditConfig:
    node.mapping(allowed={"path", "rotate", "max_bytes", "retention_days", "backup_count"})
    return AuditConfig(
        path=_under(data_dir, node.child("path"), "audit/decisions.jsonl"),
        rotate=node.child("rotate").choice(("daily", "size"), "daily"),
        max_bytes=node.child("max_bytes").integer(50 * 1024 * 1024, minimum=1024),
        retention_days=node.child("retention_days").integer(90, minimum=1, maximum=3650),
        backup_count=node.child("backup_count").integer(20, minimum=1, maximum=10000),
    )


def _proxy(node: Node) -> ProxyConfig:
    node.mapping(
        allowed={
            "mode",
            "listen_host",
            "listen_port",
            "max_held_body_bytes",
            "workers",
            "max_queue",
            "inspect_timeout_s",
            "endpoints_files",
            "dhcp_leases",
            "school_name",
            "block_contact",
            "upstream_ca_file",
            "pinned_after_failures",
            "pinned_action",
        }
    )
    defaults = ProxyConfig()
    host_node = node.child("listen_host")
    host = host_node.text(defaults.listen_host)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host_node.fail(f"{host!r} is not an IP address to listen on, such as 127.0.0.1 or 0.0.0.0")
    return ProxyConfig(
        mode=node.child("mode").choice(("regular", "transparent"), defaults.mode),
        listen_host=host,
        listen_port=node.child("listen_port").integer(
            defaults.listen_port, minimum=1, maximum=65535
        ),
        max_held_body_bytes=node.child("max_held_body_bytes").integer(
            defaults.max_held_body_bytes, minimum=1024
        ),
        workers=node.child("workers").integer(defaults.workers, minimum=1, maximum=64),
        max_queue=node.child("max_queue").integer(defaults.max_queue, minimum=1),
        inspect_timeout_s=node.child("inspect_timeout_s").number(
            defaults.inspect_timeout_s, minimum=0.1
        ),
        endpoints_files=tuple(
            Path(child.text()).expanduser() for child in node.child("endpoints_files").elements()
        ),
        dhcp_leases=tuple(
            Path(child.text()).expanduser() for child in node.child("dhcp_leases").elements()
        ),
        school_name=node.child("school_name").text(defaults.school_name),
        block_contact=node.child("block_contact").text(defaults.block_contact),
        upstream_ca_file=node.child("upstream_ca_file").path_value(),
        pinned_after_failures=node.child("pinned_after_failures").integer(
            defaults.pinned_after_failures, minimum=0
        ),
        pinned_action=node.child("pinned_action").choice(("pass", "block"), defaults.pinned_action),
    )


def _ca(node: Node) -> CaConfig:
    node.mapping(allowed={"validity_days", "allow_unconstrained"})
    defaults = CaConfig()
    return CaConfig(
        validity_days=node.child("validity_days").integer(
            defaults.validity_days, minimum=1, maximum=3650
        ),
        allow_unconstrained=node.child("allow_unconstrained").flag(defaults.allow_unconstrained),
    )


def _sniffer(node: Node, data_dir: Path) -> SnifferConfig:
    node.mapping(
        allowed={
            "interface",
            "lists",
            "audit_path",
            "window_s",
            "max_records_per_device",
            "max_devices",
            "report_inspections",
            "prefilter",
            "metrics_port",
            "metrics_host",
        }
    )
    defaults = SnifferConfig()
    inspections = tuple(
        child.choice(("full", "pinned_native", "none"))
        for child in node.child("report_inspections").elements()
    )
    port_node = node.child("metrics_port")
    return SnifferConfig(
        interface=node.child("interface").optional_text(),
        lists=tuple(Path(child.text()).expanduser() for child in node.child("lists").elements()),
        audit_path=_under(data_dir, node.child("audit_path"), "audit/sniffer.jsonl"),
        window_s=node.child("window_s").number(defaults.window_s, minimum=1, maximum=86400),
        max_records_per_device=node.child("max_records_per_device").integer(
            defaults.max_records_per_device, minimum=1
        ),
        max_devices=node.child("max_devices").integer(defaults.max_devices, minimum=1),
        report_inspections=inspections
        if not node.child("report_inspections").missing
        else defaults.report_inspections,
        prefilter=node.child("prefilter").flag(defaults.prefilter),
        metrics_port=None if port_node.missing else port_node.integer(0, minimum=1, maximum=65535),
        metrics_host=_listen_host(node.child("metrics_host"), defaults.metrics_host),
    )


def _listen_host(node: Node, default: str) -> str:
    host = node.text(default)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        node.fail(f"{host!r} is not an IP address to listen on, such as 127.0.0.1 or 0.0.0.0")
    return host


def _metrics(node: Node) -> MetricsConfig:
    node.mapping(allowed={"enabled", "listen_host", "listen_port", "basic_auth", "tls"})
    defaults = MetricsConfig()
    auth = node.child("basic_auth")
    auth.mapping(allowed={"username", "password_file"})
    password_file = auth.child("password_file").path_value()
    if not auth.missing and password_file is None:
        auth.child("password_file").fail("is required to turn basic auth on")
    tls = node.child("tls")
    tls.mapping(allowed={"cert_file", "key_file"})
    cert_file = tls.child("cert_file").path_value()
    key_file = tls.child("key_file").path_value()
    if not tls.missing:
        for key, value in (("cert_file", cert_file), ("key_file", key_file)):
            if value is None:
                tls.child(key).fail("is required to turn TLS on")
    return MetricsConfig(
        enabled=node.child("enabled").flag(defaults.enabled),
        listen_host=_listen_host(node.child("listen_host"), defaults.listen_host),
        listen_port=node.child("listen_port").integer(
            defaults.listen_port, minimum=1, maximum=65535
        ),
        username=auth.child("username").text(defaults.username),
        password_file=password_file,
        cert_file=cert_file,
        key_file=key_file,
    )


# Linux interface names: at most 15 characters, no slash or space; nft gets them quoted.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$")


def _ifname(node: Node, name: str) -> str:
    if not _IFNAME.match(name):
        node.fail(
            f"{name!r} is not a network interface name such as wlan0 or eth0.20 "
            "(letters, digits, '.', '-', '_', ':', at most 15 characters)"
        )
    return name


def _gateway(node: Node) -> GatewayConfig:
    node.mapping(
        allowed={
            "student_interfaces",
            "vlan_parent",
            "student_vlans",
            "exempt_subnets",
            "reject_quic",
            "reject_dot",
        }
    )
    interfaces = tuple(
        _ifname(child, child.text()) for child in node.child("student_interfaces").elements()
    )
    vlans_node = node.child("student_vlans")
    vlans = tuple(child.integer(0, minimum=1, maximum=4094) for child in vlans_node.elements())
    parent_node = node.child("vlan_parent")
    parent = parent_node.optional_text()
    if parent is not None:
        _ifname(parent_node, parent)
    if vlans and parent is None:
        parent_node.fail("is required when student_vlans are listed (e.g. eth0 for eth0.20)")
    for vid, child in zip(vlans, vlans_node.elements(), strict=True):
        _ifname(child, f"{parent}.{vid}")
    return GatewayConfig(
        student_interfaces=interfaces,
        vlan_parent=parent,
        student_vlans=vlans,
        exempt_subnets=tuple(child.network() for child in node.child("exempt_subnets").elements()),
        reject_quic=node.child("reject_quic").flag(True),
        reject_dot=node.child("reject_dot").flag(True),
    )


def as_dict(config: Config) -> dict[str, Any]:
    """A JSON-able summary for `schoolgate check-config --json`."""
    return {
        "source": config.source,
        "data_dir": str(config.data_dir),
        "banks": str(config.banks.path),
        "bank_tiers": {pattern: list(tiers) for pattern, tiers in config.banks.tiers.items()},
        "audit": str(config.audit.path),
        "models": [
            {"name": m.name, "adapter": m.adapter, "enabled": m.enabled}
            for m in config.classifier.models
        ],
        "groups": [
            {"name": g.name, "mode": g.mode, "subnets": [str(s) for s in g.subnets]}
            for g in config.policy.groups
        ],
        "default_group": config.policy.default_group,
        "proxy": {
            "mode": config.proxy.mode,
            "listen": f"{config.proxy.listen_host}:{config.proxy.listen_port}",
        },
        "alerts": {
            "outbox": str(config.alerts.outbox),
            "receivers": [
                {"name": r.name, "format": r.format, "signed": r.secret is not None}
                for r in config.alerts.receivers
            ],
            "smtp": config.alerts.smtp.name if config.alerts.smtp is not None else None,
        },
        "gateway": {
            "student_interfaces": list(config.gateway.interfaces),
            "exempt_subnets": [str(s) for s in config.gateway.exempt_subnets],
        },
    }
