"""`schoolgate hashes compute | add | list | stats | remove | import | export`: banks by hand.

Hashing is `schoolgate.media.signals`, the module the inspection engine matches with; this module
only turns an item's signals into bank rows and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from schoolgate.banks.formats import (
    Exportable,
    ImportFormat,
    export_csv,
    export_hex_list,
    export_signal_table,
    export_te_file,
    export_vpdq,
    import_file,
    read_signals,
)
from schoolgate.banks.media import MediaNotBanked, bank_media, describe_banked
from schoolgate.banks.model import SignalType, parse_signal_type
from schoolgate.banks.store import BankStore
from schoolgate.cli.common import (
    EXIT_OK,
    Subcommands,
    UsageError,
    config_from,
    iter_files,
    open_store,
    read,
)
from schoolgate.config import Config
from schoolgate.errors import MediaRefused
from schoolgate.media.signals import (
    ItemSignals,
    bank_video_hashes,
    item_signals,
)
from schoolgate.media.sniff import MediaKind, sniff
from schoolgate.trust.replica import read_states


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    hashes = sub.add_parser("hashes", help="compute hashes and manage hash banks")
    hsub = hashes.add_subparsers(metavar="ACTION")

    compute = hsub.add_parser("compute", parents=[common], help="print the hashes of files")
    compute.add_argument("files", nargs="+", metavar="FILE")
    compute.add_argument("--json", action="store_true")
    compute.add_argument(
        "--format",
        choices=["text", "json", "vpdq"],
        default=None,
        help="vpdq: a video's frame hashes as `frame,quality,pdqhex,timestamp` lines (one file)",
    )
    compute.set_defaults(handler=_hashes_compute)

    add = hsub.add_parser(
        "add", parents=[common], help="hash local files into a bank (the files are not kept)"
    )
    add.add_argument("files", nargs="+", metavar="FILE")
    add.add_argument("--bank", required=True)
    add.add_argument("--note", default="", help="a short note stored with the hashes")
    add.add_argument("--source", default="local file", help="provenance recorded with the bank")
    add.add_argument(
        "--no-features",
        dest="features",
        action="store_false",
        help="do not store local feature sets, even if the bank runs the robust tier",
    )
    add.set_defaults(handler=_hashes_add)

    listing = hsub.add_parser("list", parents=[common], help="list banks, or one bank's hashes")
    listing.add_argument("--bank", help="list this bank's hashes instead of the banks")
    listing.add_argument("--type", dest="signal_type", help="only this signal type")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_hashes_list)

    stats = hsub.add_parser("stats", parents=[common], help="bank sizes and provenance")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=_hashes_stats)

    remove = hsub.add_parser(
        "remove", parents=[common],
        help="remove a hash (a file's SHA-256: all it was banked with), or a whole bank",
    )  # fmt: skip
    remove.add_argument("--bank", required=True)
    remove.add_argument(
        "value", nargs="?",
        help="the hash to remove; a file's SHA-256 removes every hash and feature set banked "
        "for it (omit with --all)",
    )  # fmt: skip
    remove.add_argument("--type", dest="signal_type", help="signal type of VALUE")
    remove.add_argument("--all", action="store_true", help="delete the bank and all its hashes")
    remove.set_defaults(handler=_hashes_remove)

    formats = [f.value for f in ImportFormat]
    imp = hsub.add_parser("import", parents=[common], help="import a shared hash list into a bank")
    imp.add_argument("file", metavar="FILE", help="the list to import ('-' for standard input)")
    imp.add_argument("--bank", required=True)
    imp.add_argument("--format", choices=formats, default="hex", help="default: hex")
    imp.add_argument("--type", dest="signal_type", help="signal type (required for hex lists)")
    imp.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV column mapping, e.g. --column value=hash --column type=kind",
    )
    imp.add_argument("--content-id", help="vPDQ: the video's id (default: the file name)")
    imp.add_argument("--source", help="provenance recorded with the bank (default: the file)")
    imp.set_defaults(handler=_hashes_import)

    exp = hsub.add_parser("export", parents=[common], help="write a bank in a shared format")
    exp.add_argument("--bank", required=True)
    exp.add_argument("--format", choices=formats, default="hex", help="default: hex")
    exp.add_argument("--type", dest="signal_type", help="only this signal type")
    exp.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN")
    exp.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    exp.set_defaults(handler=_hashes_export)


def _item_info(item: ItemSignals) -> dict[str, Any]:
    """What `hashes compute` prints for one file (JSON keys as in docs/configuration.md)."""
    info: dict[str, Any] = {
        "media_type": item.media_type,
        "size": item.size,
        "sha256": item.exact.sha256,
        "md5": item.exact.md5,
        "sha1": item.exact.sha1,
    }
    if item.pdq is not None:
        info["pdq"] = item.pdq.hex
        info["pdq_quality"] = item.pdq.quality
        if item.frames:
            info["frames"] = item.frames
    if item.video is not None:
        info["vpdq"] = [feature.line() for feature in item.video.features]
        info["vpdq_frames"] = len(item.video.features)
        if item.video.duration_s is not None:
            info["duration_s"] = round(item.video.duration_s, 3)
    if item.refused is not None:
        info["refused"] = item.refused
    return info


def _hashes_compute(args: argparse.Namespace) -> int:
    config = config_from(args)
    fmt = args.format or ("json" if args.json else "text")
    paths = list(iter_files(args.files))
    if fmt == "vpdq":
        return _print_vpdq(paths, config)
    for path in paths:
        info = {"file": str(path), **_item_info(item_signals(read(path), config))}
        if fmt == "json":
            print(json.dumps(info))
            continue
        print(f"{path}")
        for key in (
            "media_type", "size", "sha256", "md5", "sha1", "pdq", "pdq_quality",
            "duration_s", "vpdq_frames", "refused",
        ):  # fmt: skip
            if key in info:
                print(f"  {key:<12} {info[key]}")
    return EXIT_OK


def _print_vpdq(paths: list[Path], config: Config) -> int:
    """Exactly the vPDQ lines of one video, as the reference's vpdq-hash-video writes them."""
    if len(paths) != 1:
        raise UsageError("--format vpdq writes one video's frame hashes: give exactly one file")
    data = read(paths[0])
    if sniff(data).kind is MediaKind.UNKNOWN:
        raise UsageError(f"{paths[0]}: not a recognised video (magic bytes)")
    try:
        video = bank_video_hashes(data, config)
    except MediaRefused as refused:
        raise UsageError(f"{paths[0]}: cannot be hashed ({refused.reason}: {refused})") from None
    sys.stdout.write(video.lines())
    return EXIT_OK


def _own_bank(store: BankStore, bank: str) -> None:
    """A bank a subscription owns is replaced by its next sync: what the school adds or removes
    there would be lost without a word (adversarial pass a30 L1). A bank of the school's own
    that a subscription also names stays the school's: the subscription's is withheld, and
    the school is told how to end the clash (a35 F5: it was refused as the subscription's)."""
    states = read_states(store)
    for state in states:
        if bank in state.banks:
            raise UsageError(
                f"bank {bank} is subscription {state.name}'s: its next sync replaces it, and "
                "what is changed here would be lost; use a bank of this school's own"
            )
    for state in states:
        if bank in state.withheld:
            print(
                f"note: subscription {state.name} also publishes a bank named {bank}; this "
                f"gateway keeps its own and withholds {state.name}'s, which does not block "
                "here until one is renamed: ask the publisher to rename theirs, or move this "
                f"school's hashes to a bank of another name and remove {bank} "
                f"(`schoolgate hashes remove --bank {bank} --all`), and the next sync brings "
                "the subscription's",
                file=sys.stderr,
            )


def _hashes_add(args: argparse.Namespace) -> int:
    config = config_from(args)
    with open_store(config) as store:
        _own_bank(store, args.bank)
        store.ensure_bank(args.bank, source=args.source)
        total = 0
        for path in iter_files(args.files):
            try:
                banked = bank_media(store, args.bank, read(path), config, note=args.note,
                                    source=args.source, features=args.features)  # fmt: skip
            except MediaNotBanked as refused:
                raise UsageError(f"{path}: not added, {refused}") from None
            total += banked.added
            kinds = ", ".join(dict.fromkeys(s.signal_type.value for s in banked.signals))
            extra = f" and {banked.features} local feature sets" if banked.features else ""
            print(f"{path}: {banked.added} new hashes ({kinds}){extra} in bank {args.bank}")
            if banked.withdrew_exemption:
                print(
                    f"  its exemption for bank {args.bank} (a reviewed false positive) is withdrawn"
                )
            for line in describe_banked(banked.item):
                print(f"  {line}")
    print(f"{total} new hashes; the files themselves were not stored")
    return EXIT_OK


def _hashes_list(args: argparse.Namespace) -> int:
    config = config_from(args)
    with open_store(config) as store:
        if not args.bank:
            banks = store.banks()
            if args.json:
                print(json.dumps([_bank_dict(b) for b in banks], indent=2))
            elif not banks:
                print("no banks yet: add one with `schoolgate hashes add FILE --bank NAME`")
            for bank in banks if not args.json else []:
                counts = ", ".join(f"{k}={v}" for k, v in sorted(bank.counts.items()))
                print(f"{bank.name:<24} {bank.total:>10} hashes  {counts}  source: {bank.source}")
            return EXIT_OK
        signal_type = parse_signal_type(args.signal_type) if args.signal_type else None
        store.bank(args.bank)  # a clear error for an unknown bank
        for shown, signal in enumerate(store.iter_signals(args.bank, signal_type)):
            if shown >= args.limit:
                print("... (more; raise --limit)", file=sys.stderr)
                break
            if args.json:
                print(
                    json.dumps(
                        {
                            "type": signal.signal_type.value,
                            "value": signal.value,
                            "quality": signal.quality,
                            "note": signal.note,
                            "source": signal.source,
                            "added_at": signal.added_at.isoformat(),
                        }
                    )
                )
            else:
                quality = "" if signal.quality is None else f" q={signal.quality}"
                note = f"  {signal.note}" if signal.note else ""
                print(f"{signal.signal_type.value:<7} {signal.value}{quality}{note}")
    return EXIT_OK


def _bank_dict(bank: Any) -> dict[str, Any]:
    return {
        "name": bank.name,
        "description": bank.description,
        "source": bank.source,
        "created_at": bank.created_at.isoformat(),
        "updated_at": bank.updated_at.isoformat(),
        "counts": {str(k): v for k, v in bank.counts.items()},
    }


def _hashes_stats(args: argparse.Namespace) -> int:
    config = config_from(args)
    with open_store(config) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return EXIT_OK
    print(f"banks database: {config.banks.path}")
    print(json.dumps(stats, indent=2, default=str))
    return EXIT_OK


def _hashes_remove(args: argparse.Namespace) -> int:
    config = config_from(args)
    with open_store(config) as store:
        if not args.all:  # a subscription's bank may be cleared, for its next sync to refill
            _own_bank(store, args.bank)
        if args.all:
            if args.value:
                raise UsageError("give either a VALUE to remove or --all, not both")
            store.delete_bank(args.bank)
            owner = [s.name for s in read_states(store) if args.bank in s.banks]
            refill = f"; subscription {owner[0]} refills it at its next sync" if owner else ""
            held = [s.name for s in read_states(store) if args.bank in s.withheld]
            if held and not owner:  # the clash is over (a35 F5)
                refill = f"; subscription {held[0]}'s bank of that name comes at its next sync"
            print(f"bank {args.bank} deleted{refill}")
            return EXIT_OK
        if not args.value or not args.signal_type:
            raise UsageError("give the hash VALUE and its --type, or --all to delete the bank")
        signal_type = parse_signal_type(args.signal_type)
        removed = store.remove_signal(args.bank, signal_type, args.value)
        item = 0
        if signal_type is SignalType.SHA256:
            # Everything `hashes add` banked for a file is filed under its SHA-256: its other
            # hashes, the PDQ of the picture inside its bands, video frames, feature sets.
            # Removing the SHA-256 alone left a PDQ that went on blocking the picture at every
            # gateway the bank was published to (adversarial pass a41 F6).
            item = store.remove_item(args.bank, args.value.strip().lower())
    if not removed and not item:
        raise UsageError(f"{args.value} is not in bank {args.bank}")
    also = f" and {item} more entr{'y' if item == 1 else 'ies'} of its item" if item else ""
    print(f"removed {args.value}{also} from bank {args.bank}")
    return EXIT_OK


def _hashes_import(args: argparse.Namespace) -> int:
    config = config_from(args)
    signal_type = parse_signal_type(args.signal_type) if args.signal_type else None
    mapping = ",".join(args.column) if args.column else None
    skipped: list[str] = []

    def on_skip(line: int, why: str) -> None:
        skipped.append(f"line {line}: {why}")

    options: dict[str, Any] = {
        "signal_type": signal_type,
        "mapping": mapping,
        "content_id": args.content_id,
        "skip_unsupported": True,
        "on_skip": on_skip,
    }
    with open_store(config) as store:
        source = args.source or ("standard input" if args.file == "-" else args.file)
        _own_bank(store, args.bank)
        store.ensure_bank(args.bank, source=source)
        if args.file == "-":
            signals = read_signals(sys.stdin, args.format, **options)
            added = store.add_signals(args.bank, signals, source=source)
        else:
            added = import_file(store, args.bank, Path(args.file), args.format, **options)
        total = store.bank(args.bank).total
    for line in skipped[:20]:
        print(f"skipped {line}", file=sys.stderr)
    print(f"{added} new hashes in bank {args.bank} ({total} in all; {len(skipped)} rows skipped)")
    return EXIT_OK


def _hashes_export(args: argparse.Namespace) -> int:
    config = config_from(args)
    signal_type = parse_signal_type(args.signal_type) if args.signal_type else None
    fmt = ImportFormat(args.format)
    if fmt is ImportFormat.HEX and signal_type is None:
        raise UsageError("a hex list holds one signal type: give --type (e.g. --type pdq)")
    if fmt is ImportFormat.CSV and not args.column:
        raise UsageError("a CSV export needs a column mapping, e.g. --column value=hash")
    exporters: dict[ImportFormat, Callable[[Iterable[Exportable], IO[str]], int]] = {
        ImportFormat.HEX: export_hex_list,
        ImportFormat.CSV: lambda s, out: export_csv(s, out, ",".join(args.column)),
        ImportFormat.VPDQ: export_vpdq,
        ImportFormat.SIGNAL_TABLE: export_signal_table,
        ImportFormat.TE_FILE: export_te_file,
    }
    with open_store(config) as store:
        store.bank(args.bank)
        signals = store.iter_signals(args.bank, signal_type)
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                count = exporters[fmt](signals, out)
            print(f"{count} hashes written to {args.out}", file=sys.stderr)
        else:
            exporters[fmt](signals, sys.stdout)
    return EXIT_OK
