"""`schoolgate banks keygen | publish | sync | subscriptions`: a trust's banks, from its central
box to every school's gateway (docs/trust.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schoolgate.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    Subcommands,
    UsageError,
    config_from,
    open_store,
)
from schoolgate.trust.bundle import generate_key, load_private_key, private_key_pem, public_key_text
from schoolgate.trust.exchange import sync_any
from schoolgate.trust.publish import KEEP, publish
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import ExchangeSubscription

KEY_FILE = "publisher.key"


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    banks = sub.add_parser("banks", help="share banks across a trust's gateways (signed bundles)")
    bsub = banks.add_subparsers(metavar="ACTION")

    keygen = bsub.add_parser(
        "keygen", help="make the central box's signing key; print the key gateways subscribe with"
    )
    keygen.add_argument("folder", type=Path, help=f"where to write {KEY_FILE} (mode 0600)")
    keygen.set_defaults(handler=_keygen)

    pub = bsub.add_parser(
        "publish", parents=[common], help="write signed bundles of banks for gateways to fetch"
    )
    pub.add_argument(
        "banks", nargs="*", metavar="BANK",
        help="the banks to publish (none: only --drop, to stop sharing the last one)",
    )  # fmt: skip
    pub.add_argument("--key", type=Path, required=True, help=f"the {KEY_FILE} from keygen")
    pub.add_argument("--out", type=Path, required=True, help="the folder a web server serves")
    pub.add_argument(
        "--channel",
        required=True,
        help="the publication's name (e.g. trust-incidents); gateways pin it, so one key can "
        "sign several publications without one standing in for another",
    )
    pub.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="BANK",
        help="take a bank the last publication carried off every gateway (leaving it out of "
        "the list is refused)",
    )
    pub.add_argument("--publisher", default="", help="the trust's (or school's) name")
    pub.add_argument(
        "--note",
        default="",
        help="why these banks are shared (e.g. an incident reference); with the publisher and "
        "the date it travels with a bank published for the first time, and shows in every match",
    )
    pub.add_argument(
        "--with-features",
        action="store_true",
        help="also share local-feature sets (they carry more of a picture than a hash)",
    )
    pub.add_argument("--keep", type=int, default=KEEP, help="snapshots kept for deltas")
    pub.add_argument(
        "--adopt-folder",
        action="store_true",
        help="the folder's last publication was not made from this bank database (a restored "
        "backup, another box) and carried hashes it lacks: publish anyway, taking them off "
        "every gateway",
    )
    pub.add_argument(
        "--reset-version",
        action="store_true",
        help="the folder's last version is more than a day ahead of this (correct) clock, from "
        "a box whose clock ran ahead, and gateways refuse it: set it aside and publish a "
        "version from this clock",
    )
    pub.set_defaults(handler=_publish)

    syn = bsub.add_parser(
        "sync", parents=[common], help="fetch and apply every subscription once, now"
    )
    syn.add_argument("--subscription", metavar="NAME", help="only this one")
    syn.set_defaults(handler=_sync)

    state = bsub.add_parser(
        "subscriptions", parents=[common], help="each subscription's version and last check"
    )
    state.add_argument("--json", action="store_true", help="one JSON object per line")
    state.add_argument(
        "--repin", metavar="NAME",
        help="the trust moved its publication to a new folder on purpose: forget the folder "
        "this gateway follows for NAME, and follow the one its next index comes from",
    )  # fmt: skip
    state.add_argument(
        "--reset", metavar="NAME",
        help="forget the version applied for NAME (its banks stay): the next sync takes the "
        "folder's full snapshot whatever its version, after a publisher's clock ran ahead",
    )  # fmt: skip
    state.set_defaults(handler=_subscriptions)


def _keygen(args: argparse.Namespace) -> int:
    path = args.folder / KEY_FILE
    if path.exists():
        raise UsageError(f"{path} exists: a new key would orphan every gateway subscribed to it")
    args.folder.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private_key_pem(key))
    print(f"wrote {path} (keep it on the central box only)")
    print(f"public_key: {public_key_text(key.public_key())}")
    return EXIT_OK


def _publish(args: argparse.Namespace) -> int:
    if not args.banks and not args.drop:
        raise UsageError("name the banks to publish, or --drop the ones to stop sharing")
    config = config_from(args)
    key = load_private_key(args.key)
    with open_store(config) as store:
        done = publish(
            store,
            args.out,
            key,
            publisher=args.publisher,
            channel=args.channel,
            banks=args.banks,
            drop=args.drop,
            note=args.note,
            with_features=args.with_features,
            keep=max(1, args.keep),
            reset_version=args.reset_version,
            adopt_folder=args.adopt_folder,
        )
    for warning in done.warnings:
        print(f"schoolgate: warning: {warning}", file=sys.stderr)
    counts = ", ".join(f"{name} ({count} hashes)" for name, count in done.banks.items())
    counts = counts or "no bank (" + ", ".join(args.drop) + " dropped)"
    print(f"published version {done.version} to {args.out}: {counts}")
    # Gateways that name it follow this folder only, not a staging copy seen first (a35 F2).
    print(f"folder: {done.folder} (put `folder: \"{done.folder}\"` in each gateway's "
          "banks.subscriptions entry)")  # fmt: skip
    return EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    config = config_from(args)
    chosen = [s for s in config.banks.subscriptions if args.subscription in (None, s.name)]
    if not chosen:
        raise UsageError("no such subscription: see banks.subscriptions in the configuration")
    failed = False
    with open_store(config) as store:
        replica = Replica(store)
        for subscription in chosen:
            names = [s.name for s in config.banks.subscriptions]
            result = sync_any(subscription, replica, names)
            print(f"{result.subscription}: {result.outcome}: {result.message}")
            failed |= result.outcome in ("refused", "unreachable")
        for advice in config.banks.prefix_notes(b.name for b in store.banks()):
            print(f"note: {advice}")
    return EXIT_ERROR if failed else EXIT_OK


def _when(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _subscriptions(args: argparse.Namespace) -> int:
    config = config_from(args)
    with open_store(config) as store:
        if args.repin is not None:
            if not Replica(store).repin(args.repin):
                raise UsageError(f"no subscription {args.repin} has synced on this gateway")
            print(f"subscription {args.repin}: the next index's folder will be followed")
            return EXIT_OK
        if args.reset is not None:
            if not Replica(store).reset(args.reset):
                raise UsageError(f"no subscription {args.reset} has synced on this gateway")
            print(f"subscription {args.reset}: the next sync takes the full snapshot")
            return EXIT_OK
        states = {s.name: s for s in Replica(store).states()}
    for subscription in config.banks.subscriptions:
        state = states.get(subscription.name)
        row: dict[str, Any] = {"name": subscription.name}
        if isinstance(subscription, ExchangeSubscription):
            row["exchange"] = subscription.exchange
        else:
            row |= {"url": subscription.url, "channel": subscription.channel}
        if state is not None:
            row |= {
                "version": state.version,
                "published_at": _when(state.published_at),
                "applied_at": _when(state.applied_at),
                "checked_at": _when(state.checked_at),
                "synced_at": _when(state.synced_at),
                "banks": list(state.banks),
                "withheld": list(state.withheld),
                "folder": state.folder,
                "refusals": state.refusals,
                "fetch_failures": state.fetch_failures,
                "last_error": state.last_error,
            }
        if args.json:
            print(json.dumps(row))
        else:
            print(" ".join(f"{k}={v}" for k, v in row.items() if v not in (None, "", [], {})))
    return EXIT_OK
