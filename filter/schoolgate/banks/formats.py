"""Read and write hash lists in the formats they are shared in.

Formats (`ImportFormat`):

- `hex`: one hash per line, optional `,quality`; `#` starts a comment. The signal type must be
  given: SHA-256 and PDQ are both 64 hex digits.
- `csv`: any CSV with a header, read through a column mapping such as
  `value=hash,type=kind,quality=q,note=comment` (`type` may instead be fixed by the caller).
- `vpdq`: a video's frame hashes, lines `frame_number,quality,pdq_hex,timestamp_seconds` (the
  ThreatExchange vPDQ tool's output); one file is one video, given one content id.
- `signal-table`: CSV or TSV with `signal_type` and `signal` columns, as exported by
  python-threatexchange (`threatexchange dataset -P --csv`: collab, signal_type, signal_str,
  category, tags) and by HMA bank content exports. Rows whose category says the hash is *not*
  harmful (NEGATIVE_CLASS, FALSE_POSITIVE) are skipped, as are types schoolgate cannot match
  when `skip_unsupported` is set; `on_skip` hears about each.
- `te-file`: python-threatexchange's local file exchange: `signal_type signal` per line.

Every parser yields validated, lowercased `SignalInput`s and raises `BankImportError` naming the
line and the problem. Every exporter writes what its parser reads back unchanged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import IO, Protocol

from schoolgate.banks.model import BankError, SignalInput, SignalType, check_signal
from schoolgate.banks.store import BankStore

SkipHook = Callable[[int, str], None]


class BankImportError(BankError):
    """A hash list could not be read; names the source, the line and the problem."""

    def __init__(self, line: int, problem: str, source: str = "") -> None:
        self.line = line
        self.problem = problem
        where = f"{source}: line {line}" if source else f"line {line}"
        super().__init__(f"{where}: {problem}")


class ImportFormat(StrEnum):
    HEX = "hex"
    CSV = "csv"
    VPDQ = "vpdq"
    SIGNAL_TABLE = "signal-table"
    TE_FILE = "te-file"


class Exportable(Protocol):
    """SignalInput and banks.Signal both fit."""

    @property
    def signal_type(self) -> SignalType: ...
    @property
    def value(self) -> str: ...
    @property
    def quality(self) -> int | None: ...
    @property
    def note(self) -> str: ...
    @property
    def content_id(self) -> str | None: ...
    @property
    def frame(self) -> int | None: ...
    @property
    def timestamp(self) -> float | None: ...


# ThreatExchange / HMA signal type names -> ours. "video_md5" is the MD5 of the file's bytes.
EXCHANGE_TYPES: dict[str, SignalType] = {
    "pdq": SignalType.PDQ,
    "video_md5": SignalType.MD5,
    "md5": SignalType.MD5,
    "sha256": SignalType.SHA256,
    "sha1": SignalType.SHA1,
}
_EXPORT_TYPE_NAMES = {SignalType.MD5: "video_md5"}
NOT_HARMFUL_CATEGORIES = frozenset({"NEGATIVE_CLASS", "FALSE_POSITIVE"})
_VALUE_COLUMNS = ("signal", "signal_str", "signal_value", "hash")


def _checked(line: int, signal: SignalInput) -> SignalInput:
    """Validate (values are lowercased by the parsers), re-raising with the line number."""
    try:
        check_signal(signal)
    except BankError as exc:
        raise BankImportError(line, str(exc)) from None
    return signal


def _int(line: int, text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise BankImportError(line, f"{what} must be an integer, got {text.strip()!r}") from None


def _float(line: int, text: str, what: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise BankImportError(line, f"{what} must be a number, got {text.strip()!r}") from None


def _optional_int(line: int, text: str | None, what: str) -> int | None:
    return None if text is None or not text.strip() else _int(line, text, what)


def _type(line: int, text: str) -> SignalType:
    name = text.strip().lower()
    if name in EXCHANGE_TYPES:
        return EXCHANGE_TYPES[name]
    try:
        return SignalType(name)
    except ValueError:
        known = ", ".join(sorted({*EXCHANGE_TYPES, *(t.value for t in SignalType)}))
        raise BankImportError(line, f"unknown signal type {text!r} (known: {known})") from None


# -- plain hex lists ---------------------------------------------------------------------------


def parse_hex_list(
    lines: Iterable[str], signal_type: SignalType, note: str = ""
) -> Iterator[SignalInput]:
    """One hash per line with an optional `,quality`; blank lines and `#` comments skipped."""
    signal_type = SignalType(signal_type)
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        value, _, quality_text = text.partition(",")
        quality = _int(number, quality_text, "quality") if quality_text.strip() else None
        yield _checked(number, SignalInput(signal_type, value.strip().lower(), quality, note))


def export_hex_list(signals: Iterable[Exportable], out: IO[str]) -> int:
    """Write `value[,quality]` lines; returns the number written."""
    count = 0
    for signal in signals:
        suffix = "" if signal.quality is None else f",{signal.quality}"
        out.write(f"{signal.value}{suffix}\n")
        count += 1
    return count


# -- CSV with a column mapping -----------------------------------------------------------------

_MAPPING_KEYS = ("value", "type", "quality", "note")


def parse_mapping(text: str) -> dict[str, str]:
    """`value=hash,type=kind,quality=q` -> {"value": "hash", ...}, checked."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        key, sep, column = (piece.strip() for piece in part.partition("="))
        if not sep or not key or not column:
            raise BankError(f"column mapping {text!r}: expected key=column pairs, got {part!r}")
        if key not in _MAPPING_KEYS:
            raise BankError(f"column mapping {text!r}: unknown key {key!r} (use {_MAPPING_KEYS})")
        mapping[key] = column
    if "value" not in mapping:
        raise BankError(f"column mapping {text!r}: the value column is required (value=COLUMN)")
    return mapping


def parse_csv(
    lines: Iterable[str],
    mapping: Mapping[str, str] | str,
    signal_type: SignalType | None = None,
    delimiter: str = ",",
) -> Iterator[SignalInput]:
    """Rows of a CSV with a header, columns picked by `mapping` (see `parse_mapping`)."""
    columns = parse_mapping(mapping) if isinstance(mapping, str) else dict(mapping)
    if "type" not in columns and signal_type is None:
        raise BankError("CSV import: map a type column (type=COLUMN) or give the signal type")
    reader = csv.DictReader(_numbered(lines), delimiter=delimiter)
    header = reader.fieldnames or []
    missing = [c for c in columns.values() if c not in header]
    if missing:
        raise BankImportError(1, f"missing column(s) {missing}; the header has {header}")
    for row in reader:
        number = reader.line_num
        stype = _type(number, row[columns["type"]]) if "type" in columns else signal_type
        assert stype is not None  # checked above; narrows for the type checker
        quality = _optional_int(number, row.get(columns.get("quality", "")), "quality")
        note = row.get(columns["note"], "") if "note" in columns else ""
        value = row[columns["value"]].strip().lower()
        yield _checked(number, SignalInput(stype, value, quality, note or ""))


def export_csv(
    signals: Iterable[Exportable], out: IO[str], mapping: Mapping[str, str] | str
) -> int:
    """Write a CSV that `parse_csv` with the same mapping reads back."""
    columns = parse_mapping(mapping) if isinstance(mapping, str) else dict(mapping)
    keys = [k for k in _MAPPING_KEYS if k in columns]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([columns[k] for k in keys])
    count = 0
    for signal in signals:
        fields = {
            "value": signal.value,
            "type": signal.signal_type.value,
            "quality": "" if signal.quality is None else str(signal.quality),
            "note": signal.note,
        }
        writer.writerow([fields[k] for k in keys])
        count += 1
    return count


# -- vPDQ frame files --------------------------------------------------------------------------


def parse_vpdq(lines: Iterable[str], content_id: str, note: str = "") -> Iterator[SignalInput]:
    """`frame_number,quality,pdq_hex,timestamp_seconds` lines of one video."""
    if not content_id:
        raise BankError("a vPDQ file is one video: give it a content id")
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split(",")
        if len(parts) != 4:
            raise BankImportError(
                number, f"expected frame_number,quality,pdq_hex,timestamp, got {len(parts)} fields"
            )
        frame = _int(number, parts[0], "frame number")
        quality = _int(number, parts[1], "quality")
        timestamp = _float(number, parts[3], "timestamp")
        value = parts[2].strip().lower()
        signal = SignalInput(SignalType.VPDQ, value, quality, note, content_id, frame, timestamp)
        yield _checked(number, signal)


def export_vpdq(signals: Iterable[Exportable], out: IO[str]) -> int:
    """Write one video's frames (sorted by frame number) in the vPDQ line format."""
    frames = sorted(signals, key=lambda s: s.frame if s.frame is not None else -1)
    videos = {s.content_id for s in frames}
    if len(videos) > 1:
        raise BankError(f"a vPDQ file holds one video; got content ids {sorted(map(str, videos))}")
    for signal in frames:
        if signal.signal_type is not SignalType.VPDQ or signal.frame is None:
            raise BankError(f"only vpdq frames can be written as vPDQ, got {signal.signal_type}")
        # Three decimals, as the reference tools write them (vpdqio.cpp; python-threatexchange).
        out.write(f"{signal.frame},{signal.quality},{signal.value},{signal.timestamp:.3f}\n")
    return len(frames)


# -- ThreatExchange / HMA signal tables --------------------------------------------------------


def parse_signal_table(
    lines: Iterable[str],
    delimiter: str | None = None,
    skip_unsupported: bool = False,
    on_skip: SkipHook | None = None,
) -> Iterator[SignalInput]:
    """CSV/TSV with `signal_type` and `signal` (or `signal_str`) columns; see the module doc.

    The delimiter is guessed from the header (tab or comma) unless given. `note` comes from a
    `note` column, else from `tags`.
    """
    numbered = _numbered(lines)
    first = next(numbered, "")
    if delimiter is None:
        delimiter = "\t" if "\t" in first else ","
    reader = csv.DictReader(_chain(first, numbered), delimiter=delimiter)
    header = reader.fieldnames or []
    value_column = next((c for c in _VALUE_COLUMNS if c in header), None)
    if "signal_type" not in header or value_column is None:
        raise BankImportError(
            1, f"expected signal_type and signal (or signal_str) columns; the header has {header}"
        )
    note_column = "note" if "note" in header else "tags" if "tags" in header else None
    for row in reader:
        number = reader.line_num
        category = (row.get("category") or "").strip().upper()
        if category in NOT_HARMFUL_CATEGORIES:
            if on_skip:
                on_skip(number, f"category {category}: the source says this is not harmful")
            continue
        type_name = (row.get("signal_type") or "").strip().lower()
        if skip_unsupported and type_name not in EXCHANGE_TYPES:
            if on_skip:
                on_skip(number, f"signal type {type_name!r} cannot be matched by schoolgate")
            continue
        stype = _type(number, type_name)
        if stype is SignalType.VPDQ:
            raise BankImportError(number, "vpdq rows need the vPDQ frame format, not a table")
        quality = _optional_int(number, row.get("quality"), "quality")
        note = (row.get(note_column) or "") if note_column else ""
        value = (row[value_column] or "").strip().lower()
        yield _checked(number, SignalInput(stype, value, quality, note))


def export_signal_table(
    signals: Iterable[Exportable], out: IO[str], delimiter: str = ",", collab: str = ""
) -> int:
    """Write the python-threatexchange dataset CSV layout (or TSV), plus a quality column."""
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["collab", "signal_type", "signal_str", "category", "tags", "quality"])
    count = 0
    for signal in signals:
        if signal.signal_type is SignalType.VPDQ:
            raise BankError("vpdq frames cannot go in a signal table: export them as vPDQ files")
        name = _EXPORT_TYPE_NAMES.get(signal.signal_type, signal.signal_type.value)
        quality = "" if signal.quality is None else str(signal.quality)
        writer.writerow([collab, name, signal.value, "POSITIVE_CLASS", signal.note, quality])
        count += 1
    return count


def parse_te_file(
    lines: Iterable[str], signal_type: SignalType | None = None
) -> Iterator[SignalInput]:
    """python-threatexchange local file lines: `signal_type signal`, or `signal` if typed."""
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        if signal_type is None:
            type_name, _, value = text.partition(" ")
            stype = _type(number, type_name)
        else:
            stype, value = SignalType(signal_type), text
        yield _checked(number, SignalInput(stype, value.strip().lower()))


def export_te_file(signals: Iterable[Exportable], out: IO[str]) -> int:
    count = 0
    for signal in signals:
        name = _EXPORT_TYPE_NAMES.get(signal.signal_type, signal.signal_type.value)
        out.write(f"{name} {signal.value}\n")
        count += 1
    return count


# -- files -------------------------------------------------------------------------------------


def read_signals(
    lines: Iterable[str],
    fmt: ImportFormat | str,
    *,
    signal_type: SignalType | None = None,
    mapping: Mapping[str, str] | str | None = None,
    content_id: str | None = None,
    skip_unsupported: bool = False,
    on_skip: SkipHook | None = None,
) -> Iterator[SignalInput]:
    """Dispatch to the parser for `fmt`, checking that its required options are there."""
    try:
        fmt = ImportFormat(fmt)
    except ValueError:
        known = ", ".join(f.value for f in ImportFormat)
        raise BankError(f"unknown import format {fmt!r} (known: {known})") from None
    if fmt is ImportFormat.HEX:
        if signal_type is None:
            raise BankError("a plain hex list needs its signal type (sha256 and pdq look alike)")
        return parse_hex_list(lines, signal_type)
    if fmt is ImportFormat.CSV:
        if mapping is None:
            raise BankError("a CSV import needs a column mapping such as value=hash,type=kind")
        return parse_csv(lines, mapping, signal_type)
    if fmt is ImportFormat.VPDQ:
        return parse_vpdq(lines, content_id or "")
    if fmt is ImportFormat.SIGNAL_TABLE:
        return parse_signal_table(lines, skip_unsupported=skip_unsupported, on_skip=on_skip)
    return parse_te_file(lines, signal_type)


def import_file(
    store: BankStore,
    bank: str,
    path: Path,
    fmt: ImportFormat | str,
    *,
    signal_type: SignalType | None = None,
    mapping: Mapping[str, str] | str | None = None,
    content_id: str | None = None,
    skip_unsupported: bool = False,
    on_skip: SkipHook | None = None,
) -> int:
    """Import a file into `bank` in one transaction; returns how many signals were new.

    A bad line aborts the import with nothing added; the error names the file and line.
    The options are `read_signals`'s. A vPDQ file's content id defaults to the file name.
    """
    path = Path(path)
    if not content_id and fmt == ImportFormat.VPDQ:
        content_id = path.name
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            signals = read_signals(
                handle,
                fmt,
                signal_type=signal_type,
                mapping=mapping,
                content_id=content_id,
                skip_unsupported=skip_unsupported,
                on_skip=on_skip,
            )
            return store.add_signals(bank, signals, source=f"{fmt}:{path}")
    except BankImportError as exc:
        raise BankImportError(exc.line, exc.problem, str(path)) from None
    except UnicodeDecodeError as exc:
        raise BankError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise BankError(f"cannot read {path}: {exc.strerror or exc}") from None


def _numbered(lines: Iterable[str]) -> Iterator[str]:
    """Lines for csv readers, which need them with or without newlines, one at a time."""
    for line in lines:
        yield line if line.endswith("\n") else f"{line}\n"


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def dumps(
    export: Callable[[Iterable[Exportable], IO[str]], int], signals: Iterable[Exportable]
) -> str:
    """Run an exporter into a string (handy for tests and the CLI's stdout)."""
    buffer = io.StringIO()
    export(signals, buffer)
    return buffer.getvalue()
