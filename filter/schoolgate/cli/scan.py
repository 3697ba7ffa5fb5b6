"""`schoolgate scan`: decide files exactly as the proxy would (exit 1 if any would be blocked)."""

from __future__ import annotations

import argparse
import json
import sys

from schoolgate.cli.common import (
    EXIT_BLOCKED,
    EXIT_OK,
    Subcommands,
    config_from,
    iter_files,
    read,
)


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    scan = sub.add_parser(
        "scan", parents=[common], help="decide files as the proxy would (exit 1 if any blocked)"
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    scan.add_argument("--json", action="store_true", help="one JSON verdict per line")
    scan.add_argument("--client", metavar="IP", help="judge as if sent by this client address")
    scan.set_defaults(handler=_scan)


def _scan(args: argparse.Namespace) -> int:
    from schoolgate.pipeline.engine import InspectionContext, Inspector

    config = config_from(args)
    inspector = Inspector.from_config(config, with_audit=False)
    for error in inspector.model_errors:
        print(f"schoolgate: warning: {error}", file=sys.stderr)
    blocked = False
    try:
        for path in iter_files(args.paths):
            data = read(path)
            ctx = InspectionContext(client_ip=args.client, filename=path.name, direction="scan")
            verdict = inspector.evaluate(data, ctx)
            blocked = blocked or verdict.blocked
            if args.json:
                print(json.dumps({"file": str(path), **verdict.to_dict()}))
            else:
                reason = "; ".join(verdict.reasons) or "no match"
                media = verdict.media_type or "-"
                print(f"{verdict.action.value.upper():<6} {media:<8} {path}  ({reason})")
    finally:
        inspector.close()
    return EXIT_BLOCKED if blocked else EXIT_OK
