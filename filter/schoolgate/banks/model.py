"""What a bank holds: signal types (exact digests, PDQ, vPDQ frames), signals with their
provenance, and the checks every value passes before it is stored."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from schoolgate.errors import SchoolgateError

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class SignalType(StrEnum):
    """The kinds of hash a bank can hold."""

    SHA256 = "sha256"
    MD5 = "md5"
    SHA1 = "sha1"
    PDQ = "pdq"
    VPDQ = "vpdq"  # one PDQ hash per video frame, grouped by content_id


# Bytes per value; PDQ and vPDQ frames are 256-bit hashes.
VALUE_BYTES: dict[SignalType, int] = {
    SignalType.SHA256: 32,
    SignalType.MD5: 16,
    SignalType.SHA1: 20,
    SignalType.PDQ: 32,
    SignalType.VPDQ: 32,
}


class BankError(SchoolgateError):
    """A bank operation failed: unknown bank, invalid name or hash, unreadable database."""


@dataclass(frozen=True)
class Bank:
    """A named list of signals and where it came from."""

    name: str
    description: str
    source: str
    created_at: datetime
    updated_at: datetime
    counts: dict[SignalType, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class SignalInput:
    """A signal to add to a bank (what importers yield)."""

    signal_type: SignalType
    value: str
    quality: int | None = None
    note: str = ""
    content_id: str | None = None
    frame: int | None = None
    timestamp: float | None = None


@dataclass(frozen=True)
class Signal:
    """A stored signal with its provenance."""

    bank: str
    signal_type: SignalType
    value: str
    quality: int | None
    note: str
    source: str
    added_at: datetime
    content_id: str | None
    frame: int | None
    timestamp: float | None


def parse_signal_type(text: str) -> SignalType:
    """`SignalType` from its name, with an error that lists the valid names."""
    try:
        return SignalType(text.strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in SignalType)
        raise BankError(f"unknown signal type {text!r} (expected one of: {valid})") from None


def validate_bank_name(name: str) -> str:
    """Return `name` if it is a valid bank name, else raise BankError saying what is allowed."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise BankError(
            f"invalid bank name {name!r}: use 1-64 characters a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def normalise_value(signal_type: SignalType, value: str) -> bytes:
    """Hex hash text -> raw bytes, checking its length for the type. Raises BankError."""
    size = VALUE_BYTES[signal_type]
    text = value.strip() if isinstance(value, str) else ""
    raw: bytes | None = None
    if len(text) == size * 2:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None or len(raw) != size:
        shown = value if isinstance(value, str) and len(value) <= 80 else f"{str(value)[:80]}..."
        raise BankError(
            f"invalid {signal_type.value} value {shown!r}: expected {size * 2} hex digits"
        )
    return raw


def check_signal(signal: SignalInput) -> tuple[bytes, int | None]:
    """Validate one SignalInput; return (value bytes, quality). Raises BankError with the reason."""
    try:
        signal_type = SignalType(signal.signal_type)
    except ValueError:
        raise BankError(f"unknown signal type {signal.signal_type!r}") from None
    raw = normalise_value(signal_type, signal.value)
    quality = signal.quality
    if quality is not None and (
        isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100
    ):
        raise BankError(f"invalid quality {quality!r}: expected an integer 0..100")
    if signal_type is SignalType.VPDQ:
        if not signal.content_id:
            raise BankError("a vpdq frame needs a content_id (which video it belongs to)")
        if signal.frame is None or isinstance(signal.frame, bool) or signal.frame < 0:
            raise BankError(f"a vpdq frame needs a frame number >= 0, got {signal.frame!r}")
        if signal.timestamp is None or not signal.timestamp >= 0:
            raise BankError(f"a vpdq frame needs a timestamp >= 0, got {signal.timestamp!r}")
    elif signal.frame is not None or signal.timestamp is not None:
        raise BankError(f"frame and timestamp apply only to vpdq, not {signal_type.value}")
    return raw, quality
