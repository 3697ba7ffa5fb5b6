"""`schoolgate sniff`: the passive sniffer on an interface, or a capture file replayed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from schoolgate.cli.common import EXIT_OK, Subcommands, UsageError, config_from
from schoolgate.config import Config
from schoolgate.endpoints.loader import load_catalog


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    sniff = sub.add_parser(
        "sniff",
        parents=[common],
        help="passive sniffer: record un-inspectable apps and circumvention per device",
    )
    source = sniff.add_mutually_exclusive_group()
    source.add_argument(
        "--interface", metavar="IFACE", help="capture here (default: sniffer.interface)"
    )
    source.add_argument("--pcap", metavar="FILE", help="replay a capture file instead, then exit")
    sniff.set_defaults(handler=_sniff)


def _sniff(args: argparse.Namespace) -> int:
    import signal
    import threading

    from schoolgate.gateway.leases import LeaseTable
    from schoolgate.pipeline.audit import AuditLog
    from schoolgate.pipeline.settings import AuditConfig
    from schoolgate.sniffer.capture import DeviceIdentity, Sniffer, capture, capture_filter, replay
    from schoolgate.sniffer.reports import ReportAggregator
    from schoolgate.sniffer.watchlist import Watchlist

    config = config_from(args)
    settings = config.sniffer
    interface: str = args.interface or settings.interface or ""
    if not args.pcap and not interface:
        raise UsageError("give --interface IFACE (or sniffer.interface), or --pcap FILE")
    if args.pcap and not Path(args.pcap).is_file():
        raise UsageError(f"{args.pcap}: no such capture file")
    catalog = load_catalog(list(config.proxy.endpoints_files))
    watchlist = Watchlist.load(catalog, settings.lists, settings.report_inspections)
    audit = AuditLog(
        AuditConfig(
            path=settings.audit_path,
            rotate=config.audit.rotate,
            max_bytes=config.audit.max_bytes,
            retention_days=config.audit.retention_days,
            backup_count=config.audit.backup_count,
        )
    )
    sniffer = Sniffer(
        watchlist,
        audit.event,
        identity=DeviceIdentity([LeaseTable(path) for path in config.proxy.dhcp_leases]),
        aggregator=ReportAggregator(
            settings.window_s, settings.max_records_per_device, settings.max_devices
        ),
    )
    exporter = None
    try:
        if args.pcap:
            stats = replay(sniffer, Path(args.pcap))
            print(json.dumps(stats.as_dict()))
            return EXIT_OK
        if settings.metrics_port:
            exporter = _sniffer_metrics(config)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        bpf = capture_filter(watchlist) if settings.prefilter else None
        capture(
            sniffer,
            interface,
            stop,
            bpf=bpf,
            ready=lambda: print(
                f"schoolgate sniffing on {interface}; records in {settings.audit_path}", flush=True
            ),
        )
        print(json.dumps(sniffer.stats.as_dict()), flush=True)
    except OSError as error:
        raise UsageError(f"cannot capture on {interface}: {error.strerror or error}") from None
    finally:
        if exporter is not None:
            exporter.stop()
        audit.close()
    return EXIT_OK


def _sniffer_metrics(config: Config) -> Any:
    """The sniffer's own /metrics, with the `metrics:` section's basic auth and TLS settings.

    A failure is reported, not fatal: the records matter more than the graphs.
    """
    import dataclasses

    from schoolgate.monitoring.server import MetricsServer, MetricsServerError
    from schoolgate.sniffer.metrics import REGISTRY

    settings = dataclasses.replace(
        config.metrics,
        enabled=True,
        listen_host=config.sniffer.metrics_host,
        listen_port=config.sniffer.metrics_port or 0,
    )
    server = MetricsServer(settings, registry=REGISTRY)
    try:
        server.start()
    except MetricsServerError as error:
        print(f"schoolgate: warning: sniffer metrics not served: {error}", file=sys.stderr)
        return None
    return server
