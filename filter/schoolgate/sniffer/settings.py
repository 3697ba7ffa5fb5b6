"""The `sniffer:` configuration section: the passive sniffer's interface, lists, records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schoolgate.config_reader import DEFAULT_DATA_DIR, Node, listen_host, path_under


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


def parse_sniffer(node: Node, data_dir: Path) -> SnifferConfig:
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
        audit_path=path_under(data_dir, node.child("audit_path"), "audit/sniffer.jsonl"),
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
        metrics_host=listen_host(node.child("metrics_host"), defaults.metrics_host),
    )
