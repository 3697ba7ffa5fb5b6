"""The `schoolgate` command: the parser, `check-config` and `run`; every other command group lives
in its own module with an `add_commands` (hashes, scan, ca, nft, sniff, and alerts', the
console's and trust's own).

Exit codes: 0 success (for scan: everything allowed), 1 scan blocked something, 2 an error that
the message explains. Every command takes --config and honours SCHOOLGATE_CONFIG and
SCHOOLGATE_DATA_DIR, so it runs unprivileged against a scratch directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from schoolgate.alerts import relocation
from schoolgate.alerts.cli import add_commands as add_alert_commands
from schoolgate.alerts.coverage import routing_notes
from schoolgate.banks.store import BankStore
from schoolgate.cli import ca, hashes, nft, scan, sniff
from schoolgate.cli.common import EXIT_ERROR, EXIT_OK, Subcommands, config_from
from schoolgate.config import ProxyConfig, as_dict, load_config
from schoolgate.console.cli import add_commands as add_console_commands
from schoolgate.errors import SchoolgateError
from schoolgate.gateway.addressbook import fronting_unchecked
from schoolgate.trust.cli import add_commands as add_trust_commands
from schoolgate.trust.settings import unpinned
from schoolgate.version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.handler(args))
    except SchoolgateError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schoolgate", description="Content-filter appliance for school Wi-Fi."
    )
    parser.add_argument("--version", action="version", version=f"schoolgate {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (default: $SCHOOLGATE_CONFIG, else the embedded default)",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    _add_commands(sub, common)
    scan.add_commands(sub, common)
    nft.add_commands(sub, common)
    hashes.add_commands(sub, common)
    add_trust_commands(sub, common)
    ca.add_commands(sub, common)
    add_alert_commands(sub, common)
    sniff.add_commands(sub, common)
    add_console_commands(sub, common)
    return parser


def _add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    check = sub.add_parser("check-config", parents=[common], help="validate a configuration file")
    check.add_argument("file", nargs="?", help="file to check (default: as --config)")
    check.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    check.set_defaults(handler=_check_config)

    run = sub.add_parser("run", parents=[common], help="start the proxy")
    run.set_defaults(handler=_run)

    resolve = sub.add_parser(
        "resolve", parents=[common], help="start the gateway's resolver for pupils' devices"
    )
    resolve.set_defaults(handler=_resolve)


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file or args.config)
    if args.json:
        print(json.dumps(as_dict(config), indent=2))
    else:
        print(f"{config.source}: OK")
        for advice in unpinned(config.banks.subscriptions):  # a35 F2: trust on first use
            print(f"note: {advice}")
        for advice in routing_notes(config.alerts, config.policy):  # a38 A22
            print(f"note: {advice}")
        if config.banks.subscriptions and config.proxy.school_name == ProxyConfig.school_name:
            # a41 F12: a trust lead's alerts from many gateways name the school they came from
            print(f"note: proxy.school_name is not set: alerts say {ProxyConfig.school_name!r}, "
                  "and a trust's lead cannot tell this school's from another's")  # fmt: skip
        if config.alerts.data_dir is not None:
            for advice in relocation.notes(config.alerts.outbox, config.alerts.data_dir):
                print(f"note: {advice}")
        if not config.resolver.enabled and (
            unchecked := fronting_unchecked(
                config.proxy.mode == "transparent", config.proxy.sni_mismatch == "refuse", None
            )
        ):  # a80 F1
            print(f"note: {unchecked}")
        if config.banks.path.is_file():  # a43 F8: settings that miss a prefixed trust bank
            with BankStore(config.banks.path) as store:
                names = [bank.name for bank in store.banks()]
            for advice in config.banks.prefix_notes(names):
                print(f"note: {advice}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    config = config_from(args)
    # The only place the core starts the mitmproxy side (tests/test_layout.py allows just this).
    from schoolgate.addons.runner import run

    return run(config)


def _resolve(args: argparse.Namespace) -> int:
    config = config_from(args)
    if not config.resolver.enabled:
        print(f"schoolgate: resolver.enabled is false in {config.source}: not starting")
        return EXIT_OK
    from schoolgate.addons.runner import resolve

    return resolve(config)


if __name__ == "__main__":
    raise SystemExit(main())
