"""The `schoolgate` command: check-config, hashes, scan, run, ca, alerts, sniff.

Exit codes: 0 success (for scan: everything allowed), 1 scan blocked something, 2 an error that
the message explains. Every command takes --config and honours SCHOOLGATE_CONFIG and
SCHOOLGATE_DATA_DIR, so it runs unprivileged against a scratch directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from PIL import Image

from schoolgate.alerts.cli import add_commands as add_alert_commands
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
from schoolgate.banks.store import BankStore, SignalInput, SignalType, parse_signal_type
from schoolgate.config import Config, as_dict, load_config
from schoolgate.endpoints.catalog import load_catalog
from schoolgate.errors import MediaRefused, SchoolgateError
from schoolgate.gateway.ca import (
    EXPORT_FORMATS,
    KEY_AND_CERT,
    CertificateAuthority,
    chown_tree,
    ensure_ca,
    export_ca,
    load_ca,
)
from schoolgate.media.decode import MediaKind, sniff
from schoolgate.media.hashing import exact_hashes, pdq_hash
from schoolgate.media.normalise import analysis_views
from schoolgate.media.video import VideoHasher, VideoHashes
from schoolgate.pipeline.engine import decode_for_analysis
from schoolgate.version import __version__

EXIT_OK, EXIT_BLOCKED, EXIT_ERROR = 0, 1, 2


class UsageError(SchoolgateError):
    """A command was asked for something it cannot do (a missing file, a bad option)."""


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

    check = sub.add_parser("check-config", parents=[common], help="validate a configuration file")
    check.add_argument("file", nargs="?", help="file to check (default: as --config)")
    check.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    check.set_defaults(handler=_check_config)

    scan = sub.add_parser(
        "scan", parents=[common], help="decide files as the proxy would (exit 1 if any blocked)"
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    scan.add_argument("--json", action="store_true", help="one JSON verdict per line")
    scan.add_argument("--client", metavar="IP", help="judge as if sent by this client address")
    scan.set_defaults(handler=_scan)

    run = sub.add_parser("run", parents=[common], help="start the proxy")
    run.set_defaults(handler=_run)

    nft = sub.add_parser("nft", help="the gateway's nftables ruleset (table inet schoolgate)")
    nsub = nft.add_subparsers(metavar="ACTION")
    render = nsub.add_parser("render", parents=[common], help="print the ruleset for the config")
    render.set_defaults(handler=_nft_render)
    apply = nsub.add_parser("apply", parents=[common], help="render and load it (atomic replace)")
    apply.add_argument("--check", action="store_true", help="only validate it with nft -c")
    apply.set_defaults(handler=_nft_apply)
    remove_table = nsub.add_parser("remove", help="delete the table (nothing to do if absent)")
    remove_table.set_defaults(handler=_nft_remove)

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

    remove = hsub.add_parser("remove", parents=[common], help="remove a hash, or a whole bank")
    remove.add_argument("--bank", required=True)
    remove.add_argument("value", nargs="?", help="the hash to remove (omit with --all)")
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
    _ca_parser(sub, common)
    add_alert_commands(sub, common)

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
    return parser


def _ca_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    ca = sub.add_parser("ca", help="the name-constrained interception CA (data_dir/ca)")
    csub = ca.add_subparsers(metavar="ACTION")
    init = csub.add_parser(
        "init", parents=[common], help="make the CA if there is none (keeps a usable one)"
    )
    init.add_argument(
        "--force", action="store_true", help="replace any existing CA (devices need the new one)"
    )
    init.add_argument("--days", type=int, help="validity in days (default: ca.validity_days)")
    init.add_argument(
        "--owner", metavar="USER[:GROUP]", help="give the CA files to the service user (as root)"
    )
    init.set_defaults(handler=_ca_init)
    show = csub.add_parser(
        "show", parents=[common], help="subject, fingerprints, validity, name constraints"
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_ca_show)
    export = csub.add_parser(
        "export", parents=[common], help="the CA certificate for MDM or manual installation"
    )
    export.add_argument("--format", choices=EXPORT_FORMATS, default="pem", help="default: pem")
    export.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    export.set_defaults(handler=_ca_export)


def config_from(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def open_store(config: Config) -> BankStore:
    config.banks.path.parent.mkdir(parents=True, exist_ok=True)
    return BankStore(config.banks.path)


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file or args.config)
    if args.json:
        print(json.dumps(as_dict(config), indent=2))
    else:
        print(f"{config.source}: OK")
    return EXIT_OK


def _iter_files(paths: Sequence[str]) -> Iterator[Path]:
    for text in paths:
        path = Path(text)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise UsageError(f"{path}: no such file or folder")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from None


# Banking may take longer than the proxy's per-upload budget: a long clip is hashed whole.
_BANKING_TIME_BUDGET_S = 600.0


def video_hashes(data: bytes, config: Config, key_frames: int = 0) -> VideoHashes:
    """A video's (or animation's) vPDQ frames as they are banked: every frame decoded, one
    sample per second, as the reference tools do; and `key_frames` frames spread over it for
    the robust tier. Raises MediaRefused."""
    hasher = VideoHasher(
        config.limits.video,
        time_budget_s=max(config.limits.video.time_budget_s, _BANKING_TIME_BUDGET_S),
        key_frames=key_frames,
    )
    video = hasher.hash(data)
    if video.refused is not None:
        raise video.refused  # a bank entry must describe the whole video
    return video


def _media_hashes(data: bytes, config: Config, key_frames: int = 0) -> dict[str, Any]:
    """Exact hashes always; PDQ for images that decode, vPDQ frames for videos and animations
    (and, with `key_frames`, that many frames under "key_frames" for local features).
    Refusals are reported, not raised."""
    exact = exact_hashes(data)
    media_type = sniff(data)
    result: dict[str, Any] = {
        "media_type": media_type.value,
        "size": len(data),
        "sha256": exact.sha256,
        "md5": exact.md5,
        "sha1": exact.sha1,
    }
    if media_type.kind is MediaKind.IMAGE:
        try:
            decoded = decode_for_analysis(data, config.limits)
        except MediaRefused as refused:
            result["refused"] = f"{refused.reason}: {refused}"
        else:
            pdq = pdq_hash(decoded.image)
            result["pdq"] = pdq.hex
            result["pdq_quality"] = pdq.quality
            if decoded.frame_count > 1:
                result["frames"] = decoded.frame_count
    if media_type.kind is MediaKind.VIDEO or result.get("frames"):
        try:
            video = video_hashes(data, config, key_frames)
        except MediaRefused as refused:
            result["refused"] = f"{refused.reason}: {refused}"
        else:
            if key_frames:
                result["key_frames"] = video.key_frames
            result["vpdq"] = [feature.line() for feature in video.features]
            result["vpdq_frames"] = len(video.features)
            if video.duration_s is not None:
                result["duration_s"] = round(video.duration_s, 3)
    return result


def _hashes_compute(args: argparse.Namespace) -> int:
    config = config_from(args)
    fmt = args.format or ("json" if args.json else "text")
    paths = list(_iter_files(args.files))
    if fmt == "vpdq":
        return _print_vpdq(paths, config)
    for path in paths:
        info = {"file": str(path), **_media_hashes(_read(path), config)}
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
    data = _read(paths[0])
    if sniff(data).kind is MediaKind.UNKNOWN:
        raise UsageError(f"{paths[0]}: not a recognised video (magic bytes)")
    try:
        video = video_hashes(data, config)
    except MediaRefused as refused:
        raise UsageError(f"{paths[0]}: cannot be hashed ({refused.reason}: {refused})") from None
    sys.stdout.write(video.lines())
    return EXIT_OK


def _hashes_add(args: argparse.Namespace) -> int:
    config = config_from(args)
    with open_store(config) as store:
        store.ensure_bank(args.bank, source=args.source)
        total = 0
        for path in _iter_files(args.files):
            data = _read(path)
            robust = args.features and config.banks.runs(args.bank, "robust")
            info = _media_hashes(
                data, config, config.banks.robust.video_key_frames if robust else 0
            )
            if "refused" in info:
                raise UsageError(f"{path}: not added, the media was refused ({info['refused']})")
            # The item's SHA-256 groups its signals, so they can be listed or removed together.
            content_id = info["sha256"]
            signals = [
                SignalInput(SignalType(kind), info[kind], note=args.note, content_id=content_id)
                for kind in ("sha256", "md5", "sha1")
            ]
            if "pdq" in info:
                signals.append(
                    SignalInput(
                        SignalType.PDQ,
                        info["pdq"],
                        quality=info["pdq_quality"],
                        note=args.note,
                        content_id=content_id,
                    )
                )
            # A video's (or animation's) frames, grouped under the file's SHA-256: its copies
            # (re-encoded, resized, trimmed, ...) match them under the vPDQ rule.
            for line in info.get("vpdq", []):
                frame, quality, value, timestamp = line.split(",")
                signals.append(
                    SignalInput(
                        SignalType.VPDQ,
                        value,
                        quality=int(quality),
                        note=args.note,
                        content_id=content_id,
                        frame=int(frame),
                        timestamp=float(timestamp),
                    )
                )
            features = 0
            if "pdq" in info:
                image = decode_for_analysis(data, config.limits).image
                signals += _content_box_pdq(image, args.note, content_id)
                if robust:
                    features = _add_feature_sets(store, args, config, image, content_id)
            # A video's key frames, so its captioned or re-framed copies meet the robust tier.
            for frame in info.get("key_frames", ()):
                features += _add_feature_sets(
                    store, args, config, frame.image(), content_id, prefix=f"frame{frame.frame}:"
                )
            added = store.add_signals(args.bank, signals, source=args.source)
            total += added
            kinds = ", ".join(dict.fromkeys(s.signal_type.value for s in signals))
            extra = f" and {features} local feature sets" if features else ""
            print(f"{path}: {added} new hashes ({kinds}){extra} in bank {args.bank}")
    print(f"{total} new hashes; the files themselves were not stored")
    return EXIT_OK


def _content_box_pdq(image: Image.Image, note: str, content_id: str) -> list[SignalInput]:
    """PDQ of the picture inside the item's uniform bands, if it has any: an item banked as a
    screenshot then also matches the photo it shows."""
    views = analysis_views(image)
    return [
        SignalInput(SignalType.PDQ, h.hex, quality=h.quality, note=note, content_id=content_id)
        for h in map(pdq_hash, views[1:])
    ]


def _add_feature_sets(
    store: BankStore,
    args: argparse.Namespace,
    config: Config,
    image: Image.Image,
    content_id: str,
    prefix: str = "",
) -> int:
    """Bank the item's local feature sets (derived data; the picture cannot be rebuilt).
    `prefix` names a video's key frame in the view names."""
    from schoolgate.matching.robust_tier import bank_views
    from schoolgate.media.features import FEATURE_KIND

    views = [
        (prefix + name, features.to_bytes())
        for name, features in bank_views(image, mirrored=config.banks.robust.bank_mirrored)
    ]
    return store.add_features(
        args.bank, content_id, FEATURE_KIND, views, note=args.note, source=args.source
    )


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
        if args.all:
            if args.value:
                raise UsageError("give either a VALUE to remove or --all, not both")
            store.delete_bank(args.bank)
            print(f"bank {args.bank} deleted")
            return EXIT_OK
        if not args.value or not args.signal_type:
            raise UsageError("give the hash VALUE and its --type, or --all to delete the bank")
        signal_type = parse_signal_type(args.signal_type)
        removed = store.remove_signal(args.bank, signal_type, args.value)
        if signal_type is SignalType.SHA256:
            # An item's feature sets are grouped under its SHA-256: removing it removes them too.
            removed = store.remove_features(args.bank, args.value.strip().lower()) > 0 or removed
    if not removed:
        raise UsageError(f"{args.value} is not in bank {args.bank}")
    print(f"removed {args.value} from bank {args.bank}")
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


def _scan(args: argparse.Namespace) -> int:
    from schoolgate.pipeline.engine import InspectionContext, Inspector

    config = config_from(args)
    inspector = Inspector.from_config(config, with_audit=False)
    for error in inspector.model_errors:
        print(f"schoolgate: warning: {error}", file=sys.stderr)
    blocked = False
    try:
        for path in _iter_files(args.paths):
            data = _read(path)
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


def _owner(text: str) -> tuple[int, int]:
    import grp
    import pwd

    user, _, group = text.partition(":")
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError:
        raise UsageError(f"--owner {text}: no such user or group") from None
    return entry.pw_uid, gid


def _ca_init(args: argparse.Namespace) -> int:
    config = config_from(args)
    owner = _owner(args.owner) if args.owner else None
    domains = load_catalog(list(config.proxy.endpoints_files)).inspected_domains()
    confdir = config.data_dir / "ca"
    ca, created = ensure_ca(
        confdir,
        domains,
        force=args.force,
        organization=config.proxy.school_name,
        validity_days=args.days or config.ca.validity_days,
    )
    if owner is not None:
        chown_tree(confdir, *owner)
    verb = "created" if created else "kept the existing"
    print(f"{verb} CA {confdir / KEY_AND_CERT}")
    print(f"  SHA-256 {ca.fingerprint()}")
    until = f"{ca.cert.not_valid_after_utc:%Y-%m-%d}"
    print(f"  valid until {until}; permits {len(ca.policy.permitted)} domains and their subdomains")
    for domain in ca.policy.uncovered(domains):
        print(
            f"schoolgate: warning: catalogued domain {domain} is not covered by this CA; "
            "run `schoolgate ca init --force` and roll the new CA out",
            file=sys.stderr,
        )
    if created:
        print("roll it out to devices: schoolgate ca export --format mobileconfig --out FILE")
    return EXIT_OK


def _existing_ca(config: Config) -> CertificateAuthority:
    ca = load_ca(config.data_dir / "ca")
    if ca is None:
        raise UsageError(f"no CA in {config.data_dir / 'ca'} yet: run `schoolgate ca init`")
    return ca


def _ca_show(args: argparse.Namespace) -> int:
    config = config_from(args)
    ca = _existing_ca(config)
    domains = load_catalog(list(config.proxy.endpoints_files)).inspected_domains()
    info = {
        "path": str(config.data_dir / "ca" / KEY_AND_CERT),
        **ca.describe(),
        "uncovered_catalog_domains": ca.policy.uncovered(domains),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        print(f"{key:<26} {value}")
    return EXIT_OK


def _ca_export(args: argparse.Namespace) -> int:
    config = config_from(args)
    data = export_ca(_existing_ca(config), args.format, config.proxy.school_name)
    if args.out:
        Path(args.out).write_bytes(data)
        print(f"{args.format} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK


def _sniff(args: argparse.Namespace) -> int:
    import signal
    import threading

    from schoolgate.config import AuditConfig
    from schoolgate.gateway.leases import LeaseTable
    from schoolgate.pipeline.audit import AuditLog
    from schoolgate.sniffer.capture import (
        DeviceIdentity,
        ReportAggregator,
        Sniffer,
        capture,
        capture_filter,
        replay,
    )
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
    from schoolgate.sniffer.capture import REGISTRY

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


def _nft_render(args: argparse.Namespace) -> int:
    from schoolgate.gateway.nft import GatewayRuleset

    print(GatewayRuleset(config_from(args)).render(), end="")
    return EXIT_OK


def _nft_apply(args: argparse.Namespace) -> int:
    from schoolgate.gateway import nft

    config = config_from(args)
    nft.load(nft.GatewayRuleset(config).render(), check_only=args.check)
    done = "is valid" if args.check else "loaded"
    interfaces = ", ".join(config.gateway.interfaces)
    print(f"table {nft.FAMILY} {nft.TABLE} {done} (student interfaces: {interfaces})")
    return EXIT_OK


def _nft_remove(args: argparse.Namespace) -> int:
    from schoolgate.gateway import nft

    removed = nft.remove()
    print(f"table {nft.FAMILY} {nft.TABLE} {'deleted' if removed else 'was not loaded'}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    config = config_from(args)
    from schoolgate.addons.runner import run

    return run(config)


if __name__ == "__main__":
    raise SystemExit(main())
