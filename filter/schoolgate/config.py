"""schoolgate's configuration: YAML validated into typed, immutable objects.

Each subsystem owns its section (`<subsystem>/settings.py`: its options, their defaults and its
parser); this module reads the file and composes them, and owns only what spans subsystems: the
data dir and the `proxy:` section.

The embedded default is `config/schoolgate.yaml` (shipped as `schoolgate.defaults`). A site file
(`/etc/schoolgate/schoolgate.yaml`, `--config`, or `$SCHOOLGATE_CONFIG`) is read *instead of* it,
so what a school runs is always one readable file. `$SCHOOLGATE_DATA_DIR` overrides `data_dir`,
which lets every command run unprivileged against a scratch directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from schoolgate.alerts.settings import AlertsConfig, parse_alerts
from schoolgate.classify.settings import ClassifierConfig, parse_classifier
from schoolgate.config_reader import DEFAULT_DATA_DIR, Node, listen_host
from schoolgate.console.settings import ConsoleConfig, parse_console
from schoolgate.endpoints.tenants import TenantsConfig, parse_tenants
from schoolgate.errors import ConfigError
from schoolgate.gateway.settings import (
    CaConfig,
    GatewayConfig,
    ResolverConfig,
    parse_ca,
    parse_gateway,
    parse_resolver,
)
from schoolgate.matching.settings import BanksConfig, parse_banks
from schoolgate.media.decode import MediaLimits
from schoolgate.media.settings import parse_limits
from schoolgate.monitoring.settings import MetricsConfig, parse_metrics
from schoolgate.pipeline.settings import AuditConfig, PolicyConfig, parse_audit, parse_policy
from schoolgate.sniffer.settings import SnifferConfig, parse_sniffer

log = logging.getLogger("schoolgate.config")

DEFAULT_CONFIG_PATH = Path("/etc/schoolgate/schoolgate.yaml")
EMBEDDED_SOURCE = "<embedded default config/schoolgate.yaml>"


@dataclass(frozen=True)
class ProxyConfig:
    mode: str = "regular"  # "regular" (explicit proxy) | "transparent"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    max_held_body_bytes: int = 64 * 1024 * 1024
    # All held bodies at once, and one device's share of that (0: derived from the body cap).
    max_held_total_bytes: int = 0
    max_held_device_bytes: int = 0
    workers: int = 2
    max_queue: int = 64
    # One item's inspection, from when a worker takes it up (a video's: Config.video_inspect_s).
    inspect_timeout_s: float = 15.0
    max_wait_s: float = 60.0  # an item's wait for a worker (its device's turn among others)
    endpoints_files: tuple[Path, ...] = ()
    dhcp_leases: tuple[Path, ...] = ()
    school_name: str = "This school"
    # In transparent mode, http://<gateway>/ shows pupils how to install the school's CA (only
    # the certificate is served, never its key); false leaves that address closed.
    onboarding: bool = True
    onboarding_port: int = 8081  # the ruleset redirects port 80 of the gateway's addresses here
    block_contact: str = "Please speak to a member of staff if you think this is a mistake."
    # Extra CA bundle (PEM) to trust for upstream servers, e.g. behind a TLS-inspecting firewall.
    upstream_ca_file: Path | None = None
    # One TLS client (JA4) of a device that refuses our certificate this often for a
    # pinned_native app's host gets the app's when_not_inspectable action, for pinned_ttl_s.
    pinned_after_failures: int = 3
    pinned_ttl_s: float = 86400.0
    # TLS without a server name cannot be attributed to an app: a pupil connecting to a
    # catalogued service by its address would otherwise pass uninspected. "refuse" | "pass".
    tls_without_sni: str = "refuse"
    # A server name that the gateway's resolver never gave out for the address the connection
    # goes to, while that address serves a catalogued host (fronting). "refuse" | "pass".
    sni_mismatch: str = "refuse"


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
    resolver: ResolverConfig = field(default_factory=ResolverConfig)
    tenants: TenantsConfig = field(default_factory=TenantsConfig)
    console: ConsoleConfig = field(default_factory=lambda: ConsoleConfig(database=Path()))

    @property
    def video_inspect_s(self) -> float:
        """A video's inspection budget: the proxy's, plus as much as the video time budget can
        grow for the longest video allowed (limits.video.time_budget_per_minute_s)."""
        video = self.limits.video
        return self.proxy.inspect_timeout_s + video.longest_budget_s - video.time_budget_s

    @property
    def longest_judgement_s(self) -> float:
        """The longest an item can be in the worker pool: its wait, then its inspection."""
        return self.proxy.max_wait_s + self.video_inspect_s


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
            "resolver",
            "tenants",
            "console",
        }
    )
    data_dir = _data_dir(root.child("data_dir"))
    policy = parse_policy(root.child("policy"))
    gateway = parse_gateway(root.child("gateway"))
    _check_exemptions(root.child("gateway").child("exempt_subnets"), gateway, policy)
    proxy = _proxy(root.child("proxy"))
    console = parse_console(root.child("console"), data_dir)
    alerts = parse_alerts(root.child("alerts"), data_dir)
    _check_alert_groups(root.child("alerts"), alerts, policy)
    if gateway.leased_pairs_only and not proxy.dhcp_leases:
        root.child("gateway").child("leased_pairs_only").fail(
            "needs the DHCP server's lease files in proxy.dhcp_leases: without them no device "
            "would be let through"
        )
    return Config(
        source=source,
        data_dir=data_dir,
        limits=parse_limits(root.child("limits")),
        banks=parse_banks(root.child("banks"), data_dir),
        classifier=parse_classifier(root.child("classifier")),
        policy=policy,
        audit=parse_audit(root.child("audit"), data_dir),
        proxy=proxy,
        alerts=replace(alerts, console_url=console.base_url),
        ca=parse_ca(root.child("ca")),
        sniffer=parse_sniffer(root.child("sniffer"), data_dir),
        metrics=parse_metrics(root.child("metrics")),
        gateway=gateway,
        resolver=parse_resolver(root.child("resolver")),
        tenants=parse_tenants(root.child("tenants")),
        console=console,
    )


def _check_alert_groups(node: Node, alerts: AlertsConfig, policy: PolicyConfig) -> None:
    """A receiver routed by group names groups the policy has: a misspelt one would quietly
    leave a school's DSL without alerts."""
    known = {group.name for group in policy.groups} | {policy.default_group}
    channels = [("receivers", n, r.groups) for n, r in enumerate(alerts.receivers)]
    if alerts.smtp is not None:
        channels.append(("smtp", -1, alerts.smtp.groups))
    for key, index, groups in channels:
        for at, group in enumerate(groups):
            if group not in known:
                where = node.child(key)
                if index >= 0:
                    where = where.elements()[index]
                where.child("groups").elements()[at].fail(
                    f"{group!r} is not a policy group (policy.groups: {', '.join(sorted(known))})"
                )
    # Every group's alerts reach someone (adversarial pass a26: a group no routed receiver
    # named had its alerts settled unsent).
    if channels and all(groups for _, _, groups in channels):
        covered = {group for _, _, groups in channels for group in groups}
        missing = sorted(known - covered)
        if missing:
            node.child("receivers").fail(
                f"no receiver gets the alerts of {', '.join(missing)}: name them in a "
                "receiver's groups, or keep one receiver without groups (every alert)"
            )


def _check_exemptions(node: Node, gateway: GatewayConfig, policy: PolicyConfig) -> None:
    """An exempt range never crosses the proxy, so a pupil who types one of its addresses into
    their phone would leave the filter: it may not overlap a range whose group blocks."""
    default = next(g for g in policy.groups if g.name == policy.default_group)
    if gateway.exempt_subnets and (default.mode == "block" or default.schedule):
        # The default group holds every address no other group claims: any exempt range on a
        # student interface is an address a pupil can type in (adversarial pass a3).
        node.fail(
            f"exempts addresses on the student interfaces, where every address is a pupil's "
            f"(default group {default.name!r} blocks): any pupil could take one and skip the "
            "proxy. Put exempt devices on an interface or VLAN that is not a student one; "
            "devices there (a printer or staff LAN) are never filtered and need no entry here"
        )
    for exempt in gateway.exempt_subnets:
        for group in policy.groups:
            if group.mode != "block" and not group.schedule:
                continue
            for net in group.subnets:
                if net.version == exempt.version and net.overlaps(exempt):
                    node.fail(
                        f"{exempt} overlaps {net} of group {group.name!r}, which blocks: any "
                        "pupil could take an address in it and skip the proxy. Exempt devices "
                        "on an interface or VLAN that is not a student one instead"
                    )


def _data_dir(node: Node) -> Path:
    env = os.environ.get("SCHOOLGATE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return node.path_value(DEFAULT_DATA_DIR) or DEFAULT_DATA_DIR


def _proxy(node: Node) -> ProxyConfig:
    node.mapping(
        allowed={
            "mode",
            "listen_host",
            "listen_port",
            "max_held_body_bytes",
            "max_held_total_bytes",
            "max_held_device_bytes",
            "workers",
            "max_queue",
            "inspect_timeout_s",
            "max_wait_s",
            "endpoints_files",
            "dhcp_leases",
            "school_name",
            "onboarding",
            "onboarding_port",
            "block_contact",
            "upstream_ca_file",
            "pinned_after_failures",
            "pinned_ttl_s",
            "tls_without_sni",
            "sni_mismatch",
            "pinned_action",  # replaced by the catalog's when_not_inspectable; read and ignored
        }
    )
    defaults = ProxyConfig()
    if node.child("pinned_action").value is not None:
        # Still read, so a configuration from before it went keeps loading (installs copy it).
        log.warning(
            "proxy.pinned_action is ignored: a pinned app's own when_not_inspectable (endpoint "
            "catalog) decides, and inspection: full apps are never passed on refused "
            "handshakes; remove it from the configuration"
        )
    body_cap = node.child("max_held_body_bytes").integer(defaults.max_held_body_bytes, minimum=1024)
    # Room for two bodies at the cap per device and four devices at their share by default: well
    # inside the service's 2 GiB MemoryMax with the decoded copies inspection makes.
    device_cap = node.child("max_held_device_bytes").integer(
        max(128 * 1024 * 1024, 2 * body_cap), minimum=body_cap
    )
    total_cap = node.child("max_held_total_bytes").integer(
        max(512 * 1024 * 1024, 4 * device_cap), minimum=device_cap
    )
    return ProxyConfig(
        mode=node.child("mode").choice(("regular", "transparent"), defaults.mode),
        listen_host=listen_host(node.child("listen_host"), defaults.listen_host),
        listen_port=node.child("listen_port").integer(
            defaults.listen_port, minimum=1, maximum=65535
        ),
        max_held_body_bytes=body_cap,
        max_held_total_bytes=total_cap,
        max_held_device_bytes=device_cap,
        workers=node.child("workers").integer(defaults.workers, minimum=1, maximum=64),
        max_queue=node.child("max_queue").integer(defaults.max_queue, minimum=1),
        inspect_timeout_s=node.child("inspect_timeout_s").number(
            defaults.inspect_timeout_s, minimum=0.1
        ),
        max_wait_s=node.child("max_wait_s").number(defaults.max_wait_s, minimum=0.1),
        endpoints_files=tuple(
            Path(child.text()).expanduser() for child in node.child("endpoints_files").elements()
        ),
        dhcp_leases=tuple(
            Path(child.text()).expanduser() for child in node.child("dhcp_leases").elements()
        ),
        onboarding=node.child("onboarding").flag(defaults.onboarding),
        onboarding_port=node.child("onboarding_port").integer(
            defaults.onboarding_port, minimum=1, maximum=65535
        ),
        school_name=node.child("school_name").text(defaults.school_name),
        block_contact=node.child("block_contact").text(defaults.block_contact),
        upstream_ca_file=node.child("upstream_ca_file").path_value(),
        pinned_after_failures=node.child("pinned_after_failures").integer(
            defaults.pinned_after_failures, minimum=0
        ),
        pinned_ttl_s=node.child("pinned_ttl_s").number(defaults.pinned_ttl_s, minimum=60),
        tls_without_sni=node.child("tls_without_sni").choice(
            ("refuse", "pass"), defaults.tls_without_sni
        ),
        sni_mismatch=node.child("sni_mismatch").choice(("refuse", "pass"), defaults.sni_mismatch),
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
        "console": {
            "listen": f"{config.console.listen_host}:{config.console.listen_port}",
            "base_url": config.console.base_url,
            "certificate": str(config.console.cert_file or "made by the appliance"),
        },
        "resolver": {
            "enabled": config.resolver.enabled,
            "listen": f"{config.resolver.listen_host}:{config.resolver.listen_port}",
        },
    }
