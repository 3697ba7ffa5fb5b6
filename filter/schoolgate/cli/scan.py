"""`schoolgate scan`: decide files exactly as the proxy would (exit 1 if any would be blocked)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from schoolgate.cli.common import (
    EXIT_BLOCKED,
    EXIT_OK,
    Subcommands,
    config_from,
    iter_files,
    read,
)
from schoolgate.endpoints.bodyscan import body_limits, extract_items
from schoolgate.endpoints.extract import ExtractionError
from schoolgate.pipeline.verdict import InspectionContext, Verdict

if TYPE_CHECKING:
    from schoolgate.pipeline.engine import Inspector


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    scan = sub.add_parser(
        "scan", parents=[common], help="decide files as the proxy would (exit 1 if any blocked)"
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    scan.add_argument("--json", action="store_true", help="one JSON verdict per line")
    scan.add_argument("--client", metavar="IP", help="judge as if sent by this client address")
    scan.set_defaults(handler=_scan)


def _scan(args: argparse.Namespace) -> int:
    from schoolgate.pipeline.engine import Inspector

    config = config_from(args)
    inspector = Inspector.from_config(config, with_audit=False)
    for error in inspector.model_errors:
        print(f"schoolgate: warning: {error}", file=sys.stderr)
    blocked = False
    try:
        for path in iter_files(args.paths):
            for where, verdict in judge_file(inspector, read(path), path.name, args.client):
                blocked = blocked or verdict.blocked
                shown = f"{path}" if where is None else f"{path} [{where}]"
                if args.json:
                    print(json.dumps({"file": str(path), "item": where, **verdict.to_dict()}))
                else:
                    reason = "; ".join(verdict.reasons) or "no match"
                    media = verdict.media_type or "-"
                    print(f"{verdict.action.value.upper():<6} {media:<8} {shown}  ({reason})")
    finally:
        inspector.close()
    return EXIT_BLOCKED if blocked else EXIT_OK


def judge_file(
    inspector: Inspector, data: bytes, name: str, client: str | None
) -> list[tuple[str | None, Verdict]]:
    """A file judged as the proxy judges it as an upload's body: each picture or video in it
    (a ZIP's members, parts carved from a carrier) on its own; (where, verdict) per item, where
    None for the file itself. It once judged the file alone, and called a ZIP of banked pictures
    `allow` that the proxy blocks (adversarial pass a40), and refused what it found inside
    other bytes that the proxy allows (a75)."""
    ctx = InspectionContext(client_ip=client, filename=name, direction="scan", size=len(data))
    try:
        items = extract_items(data, None, body_limits(inspector.config.proxy.max_held_body_bytes))
    except ExtractionError as exc:
        failure = "oversize" if exc.reason == "oversize" else "refused"
        return [(None, inspector.evaluate_unavailable(ctx, failure, f"{exc.reason}: {exc}"))]
    whole = [item for item in items if item.data == data]
    if not items or (len(items) == 1 and whole):
        return [(None, inspector.evaluate(data, ctx))]
    verdicts: list[tuple[str | None, Verdict]] = []
    for item in items:
        item_ctx = replace(ctx, filename=item.filename or name, size=len(item.data),
                           declared_type=item.declared_type, locator=item.locator,
                           body_size=len(data), carved=item.carved or None)  # fmt: skip
        verdicts.append((item.locator, inspector.evaluate(item.data, item_ctx)))
    return verdicts
