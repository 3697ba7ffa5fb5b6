"""Signed bank bundles: how a trust's central box hands its banks to every school's gateway.

A bundle is one file: a magic line, an Ed25519 signature, and a gzip'd JSON document. The
signature covers the magic line and the compressed body, so nothing in a bundle is read before
it is known to come from the publisher's key: a tampered, truncated, unsigned or foreign bundle
fails before it is decompressed. Three kinds share the format: a full snapshot of the published
banks, a delta from an earlier version, and the small index that names the latest version and
the files to fetch. Every one carries the publisher's monotonic version, so a gateway can refuse
an old bundle served again (a replay would bring back hashes the trust removed, or hide new ones).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schoolgate.banks.model import BankError, SignalInput, check_signal, validate_bank_name

MAGIC: Final = b"SCHOOLGATE-BANKS 1\n"
SIGNATURE_BYTES: Final = 64
FORMAT: Final = 1
KEY_PREFIX: Final = "ed25519:"
KINDS: Final = ("full", "delta", "index")
# A bundle's JSON once decompressed: a gzip bomb is refused at this size, not read to the end.
MAX_BODY_BYTES: Final = 1 << 30
# How far ahead of a gateway's clock a version may be: versions are Unix times, and one from a
# box with a wrong clock would make every real publication after it look replayed.
FUTURE_S: Final = 86_400.0
# How many publications' ids a full snapshot and an index carry (trust.publish.link): a gateway
# that applied one of them can tell the folder's own history from a fork of it.
HISTORY: Final = 1000


# Why a bundle was refused: the metric's label values, each exported from 0.
REFUSALS: Final = ("malformed", "truncated", "signature", "channel", "replayed", "base", "clash",
                   "mismatch", "shrunk", "future", "folder", "fork")  # fmt: skip


class BundleError(BankError):
    """A bundle was refused. `reason` is a short label for metrics (bounded cardinality)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- keys ----------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise BankError(f"{path}: cannot read the publisher key: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise BankError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BankError(f"{path}: the publisher key must be Ed25519 (schoolgate banks keygen)")
    return key


def public_key_text(key: Ed25519PublicKey) -> str:
    """The form gateways put in `banks.subscriptions[].public_key`: `ed25519:` and base64."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The public key from its text form; ValueError saying what is expected."""
    body = text.strip().removeprefix(KEY_PREFIX) if text.strip().startswith(KEY_PREFIX) else None
    try:
        raw = base64.b64decode(body or "", validate=True)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError(
            f"{text[:60]!r} is not a publisher key: expected 'ed25519:' and 44 base64 characters, "
            "as `schoolgate banks keygen` prints"
        ) from None


# -- what a bundle holds -------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSet:
    """One item's local features (one view), shared only where the trust opts in."""

    content_id: str
    view: str
    kind: str
    data: bytes
    note: str = ""


type SignalKey = tuple[str, str, str, int]  # type, value (hex), content id, frame (-1: none)
type FeatureKey = tuple[str, str, str]  # content id, view, kind


def signal_key(signal: SignalInput) -> SignalKey:
    frame = -1 if signal.frame is None else signal.frame
    return (str(signal.signal_type), signal.value.lower(), signal.content_id or "", frame)


def feature_key(feature: FeatureSet) -> FeatureKey:
    return (feature.content_id, feature.view, feature.kind)


@dataclass(frozen=True)
class BankContent:
    """One published bank: its signals, optional feature sets, and where it came from. In a
    delta, what was added to it and what was removed since the base version."""

    description: str = ""
    source: str = ""
    provenance: str = ""  # where it came from: school (or trust), when, why; shown in matches
    signals: tuple[SignalInput, ...] = ()
    features: tuple[FeatureSet, ...] = ()
    removed_signals: tuple[SignalKey, ...] = ()
    removed_features: tuple[FeatureKey, ...] = ()


@dataclass(frozen=True)
class Bundle:
    kind: str  # full | delta | index
    publisher: str
    version: int
    created_at: float
    # full: every published bank; delta: the banks that changed, with what changed
    banks: Mapping[str, BankContent] = field(default_factory=dict)
    # delta: banks no longer published; full: every bank the publisher ever dropped on purpose
    # (a gateway refuses a full snapshot that leaves out a bank it does not name here)
    removed_banks: tuple[str, ...] = ()
    base: int | None = None  # delta: the version it applies to
    # index: the latest full snapshot's file, and a delta file per earlier version it covers
    full_file: str = ""
    deltas: Mapping[int, str] = field(default_factory=dict)
    # index: the SHA-256 of each file it names, so that a mirror cannot serve another folder's
    # snapshot of the same version in its place (adversarial pass a28 MIX2)
    digests: Mapping[str, str] = field(default_factory=dict)
    # The publication's name, which a subscription pins: one key may sign several (a trust's
    # banks, a partner list), and a mirror must not pass one off as another (adversarial pass
    # a26 X1: another folder's full snapshot dropped every bank it did not hold).
    channel: str = ""
    # index: the folder's own random token (publish writes it once into a new folder): a
    # gateway pins it with the first version it applies, so that another folder of the same
    # channel (a second box, a restored backup, a staging folder) cannot stand in for the
    # trust's (adversarial pass a30 N1, N2)
    folder: str = ""
    # full and index: the folder's lineage, the id of each of its last HISTORY publications by
    # version, each id derived from the one before: a copy of the folder published on from
    # another box forks it, and a gateway that applied a version the fork never had refuses it
    # (adversarial pass a35 F3)
    history: Mapping[int, str] = field(default_factory=dict)


def _signal_json(signal: SignalInput) -> list[Any]:
    return [
        str(signal.signal_type),
        signal.value,
        signal.quality,
        signal.note,
        signal.content_id,
        signal.frame,
        signal.timestamp,
    ]


def _feature_json(feature: FeatureSet) -> list[Any]:
    return [
        feature.content_id,
        feature.view,
        feature.kind,
        base64.b64encode(feature.data).decode(),
        feature.note,
    ]


def to_json(bundle: Bundle) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": bundle.kind,
        "publisher": bundle.publisher,
        "channel": bundle.channel,
        "version": bundle.version,
        "created_at": bundle.created_at,
        "base": bundle.base,
        "banks": {
            name: {
                "description": bank.description,
                "source": bank.source,
                "provenance": bank.provenance,
                "signals": [_signal_json(s) for s in bank.signals],
                "features": [_feature_json(f) for f in bank.features],
                "removed_signals": [list(k) for k in bank.removed_signals],
                "removed_features": [list(k) for k in bank.removed_features],
            }
            for name, bank in sorted(bundle.banks.items())
        },
        "removed_banks": sorted(bundle.removed_banks),
        "full_file": bundle.full_file,
        "deltas": {str(base): name for base, name in sorted(bundle.deltas.items())},
        "digests": dict(sorted(bundle.digests.items())),
        "folder": bundle.folder,
        "history": {str(version): link for version, link in sorted(bundle.history.items())},
    }


# -- sealing and opening -------------------------------------------------------------------------


def seal(bundle: Bundle, key: Ed25519PrivateKey) -> bytes:
    body = gzip.compress(json.dumps(to_json(bundle), separators=(",", ":")).encode(), mtime=0)
    return MAGIC + key.sign(MAGIC + body) + body


def open_bundle(data: bytes, key: Ed25519PublicKey, expect: str | None = None) -> Bundle:
    """Verify and read a bundle; BundleError (with a metric reason) when it is refused."""
    if not data.startswith(MAGIC):
        raise BundleError("malformed", "not a schoolgate bank bundle (no header)")
    if len(data) < len(MAGIC) + SIGNATURE_BYTES + 1:
        raise BundleError("truncated", "the bundle ends before its signature and body")
    signature = data[len(MAGIC) : len(MAGIC) + SIGNATURE_BYTES]
    body = data[len(MAGIC) + SIGNATURE_BYTES :]
    try:
        key.verify(signature, MAGIC + body)
    except InvalidSignature:
        raise BundleError(
            "signature",
            "the bundle's signature does not verify with the subscription's key (tampered, "
            "truncated, or signed by another publisher)",
        ) from None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as stream:
            text = stream.read(MAX_BODY_BYTES + 1)
        if len(text) > MAX_BODY_BYTES:
            raise BundleError("malformed", f"the bundle's body is over {MAX_BODY_BYTES} bytes")
        document = json.loads(text)
    except (OSError, EOFError, ValueError) as exc:
        raise BundleError("malformed", f"the bundle's body cannot be read: {exc}") from None
    bundle = _from_json(document)
    if expect is not None and bundle.kind != expect:
        raise BundleError("malformed", f"expected a {expect} bundle, got a {bundle.kind} one")
    return bundle


def _from_json(document: Any) -> Bundle:
    try:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"unknown bundle format {document.get('format')!r}")
        kind = document["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown bundle kind {kind!r}")
        version = document["version"]
        base = document.get("base")
        if not _whole(version) or (base is not None and not _whole(base)):
            raise ValueError("versions must be whole numbers >= 0")
        if kind == "delta" and (base is None or base >= version):
            raise ValueError("a delta needs a base version below its own")
        banks = {
            validate_bank_name(name): _bank(content)
            for name, content in dict(document.get("banks") or {}).items()
        }
        deltas = {int(b): _file_name(n) for b, n in dict(document.get("deltas") or {}).items()}
        return Bundle(
            kind=kind,
            publisher=str(document.get("publisher", "")),
            channel=str(document.get("channel", "")),
            version=version,
            created_at=float(document.get("created_at", 0.0)),
            banks=banks,
            removed_banks=tuple(validate_bank_name(n) for n in document.get("removed_banks", [])),
            base=base,
            full_file=_file_name(document.get("full_file", "")) if kind == "index" else "",
            deltas=deltas,
            digests={_file_name(n): str(d) for n, d in dict(document.get("digests") or {}).items()},
            folder=str(document.get("folder", ""))[:64],
            history={int(v): str(n)[:64] for v, n in dict(document.get("history") or {}).items()},
        )
    except BundleError:
        raise
    except (BankError, KeyError, TypeError, ValueError) as exc:
        raise BundleError("malformed", f"the bundle's content is invalid: {exc}") from None


def _whole(value: Any) -> bool:
    """A version: a whole number a JSON reader and SQLite both keep exactly (a26: a huge one
    crashed the sync)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _file_name(name: Any) -> str:
    """A file next to the index: a bare name, never a path or another server's URL."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
        raise ValueError(f"the index names {name!r}, not a file beside it")
    return name


def _bank(content: Any) -> BankContent:
    signals = []
    for row in content.get("signals", []):
        kind, value, quality, note, content_id, frame, timestamp = row
        signal = SignalInput(kind, value, quality, note or "", content_id, frame, timestamp)
        check_signal(signal)
        signals.append(signal)
    features = tuple(
        FeatureSet(str(c), str(v), str(k), base64.b64decode(d, validate=True), str(n or ""))
        for c, v, k, d, n in content.get("features", [])
    )
    removed_signals = tuple(
        (str(t), str(v).lower(), str(c or ""), int(f))
        for t, v, c, f in content.get("removed_signals", [])
    )
    removed_features = tuple(
        (str(c), str(v), str(k)) for c, v, k in content.get("removed_features", [])
    )
    return BankContent(
        str(content.get("description", "")),
        str(content.get("source", "")),
        str(content.get("provenance", ""))[:300],
        tuple(signals),
        features,
        removed_signals,
        removed_features,
    )
