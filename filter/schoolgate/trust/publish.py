"""`schoolgate banks publish`: the trust's central box writes its banks as signed bundles into a
folder that any static web server serves.

Each run writes a full snapshot (`full-V.sgb`), a delta to it from each of the last `keep`
snapshots (`delta-B-V.sgb`), and then, last and atomically, the index (`index.sgb`) that names
them; files older than the kept snapshots are pruned. A gateway that was offline for fewer than
`keep` publications catches up with one delta, and with the full snapshot otherwise. Versions
never go down, even when the folder is lost: a version is at least the publication's Unix time.
A folder whose last version is far ahead of this box's clock (a publisher whose clock ran a year
ahead) is refused rather than carried forward: gateways refuse such versions as `future`, and
`reset_version` recovers (docs/trust.md). Each publication carries the folder's lineage (the ids
of its recent publications, each derived from the one before), so that a gateway can tell the
folder's history from a copy of it published on elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schoolgate.banks.model import BankError, SignalInput
from schoolgate.banks.store import BankStore
from schoolgate.files import LockBusy, exclusive_lock
from schoolgate.trust.bundle import (
    FUTURE_S,
    HISTORY,
    BankContent,
    Bundle,
    BundleError,
    FeatureSet,
    feature_key,
    open_bundle,
    seal,
    signal_key,
)
from schoolgate.trust.replica import dropped_by_source

INDEX: Final = "index.sgb"
FOLDER: Final = "folder.id"
KEEP: Final = 10
LOCK_WAIT_S: Final = 120.0  # a large bank takes seconds to publish, not minutes
SKEW_S: Final = 60.0  # a folder's last version this far ahead of the clock is worth a warning
_FULL = re.compile(r"full-(\d+)\.sgb")
_MADE: Final = "published "  # + a folder's id, in the bank database's meta table: its version


def snapshot(
    store: BankStore, banks: Iterable[str], *, with_features: bool = False
) -> dict[str, BankContent]:
    """The named banks as they stand, hashes only unless `with_features` (feature sets carry
    more of a picture than a hash: see docs/trust.md)."""
    contents: dict[str, BankContent] = {}
    provenance = store.provenance()
    for name in banks:
        bank = store.bank(name)
        signals = tuple(
            SignalInput(
                s.signal_type, s.value, s.quality, s.note, s.content_id, s.frame, s.timestamp
            )
            for s in store.iter_signals(name)
        )
        features: tuple[FeatureSet, ...] = ()
        if with_features:
            features = tuple(
                FeatureSet(content_id, view, kind, data, note)
                for kind in store.feature_kinds(name)
                for _, content_id, view, data, note in store.iter_features(kind, [name])
            )
        contents[name] = BankContent(
            bank.description, bank.source, provenance.get(name, ""), signals, features
        )
    return contents


def delta(old: Mapping[str, BankContent], new: Mapping[str, BankContent]) -> Bundle:
    """What turns `old` into `new` (version fields left for the caller)."""
    changed: dict[str, BankContent] = {}
    for name, bank in new.items():
        before = old.get(name, BankContent())
        had = {signal_key(s) for s in before.signals}
        has = {signal_key(s) for s in bank.signals}
        had_f = {feature_key(f) for f in before.features}
        has_f = {feature_key(f) for f in bank.features}
        content = BankContent(
            bank.description,
            bank.source,
            bank.provenance,
            tuple(s for s in bank.signals if signal_key(s) not in had),
            tuple(f for f in bank.features if feature_key(f) not in had_f),
            tuple(sorted(had - has)),
            tuple(sorted(had_f - has_f)),
        )
        same_meta = (before.description, before.source, before.provenance) == (
            bank.description, bank.source, bank.provenance
        )  # fmt: skip
        empty = not (
            content.signals
            or content.features
            or content.removed_signals
            or content.removed_features
        )
        if name not in old or not (same_meta and empty):
            changed[name] = content
    return Bundle("delta", "", 0, 0.0, changed, tuple(sorted(set(old) - set(new))))


@dataclass(frozen=True)
class Publication:
    version: int
    files: tuple[str, ...]
    banks: dict[str, int]  # signals per published bank
    warnings: tuple[str, ...] = ()  # for the operator: e.g. this box's clock looks behind
    folder: str = ""  # the folder's id, for `folder:` in each gateway's subscription


def publish(
    store: BankStore,
    out: Path,
    key: Ed25519PrivateKey,
    *,
    publisher: str,
    channel: str,
    banks: Iterable[str],
    drop: Iterable[str] = (),
    note: str = "",
    with_features: bool = False,
    keep: int = KEEP,
    reset_version: bool = False,
    adopt_folder: bool = False,
    clock: Callable[[], float] = time.time,
    lock_wait_s: float = LOCK_WAIT_S,
) -> Publication:
    """Publish the named banks into `out`. One publication at a time per folder: two runs at
    once (the timer and an operator) read the same last version and wrote two indexes of one
    version, and a gateway that fetched the first refused the folder as a fork from then on
    (adversarial pass a38 B12)."""
    if not channel.strip():
        raise BankError("name the publication's channel (--channel): gateways pin it")
    out.mkdir(parents=True, exist_ok=True)
    # The folder itself: a lock file could be deleted (a "stale lock", an rsync --delete) while
    # a publication held it (adversarial pass a43 F1).
    with _folder_lock(out, lock_wait_s):
        now = clock()
        banks = list(banks)
        earlier = _earlier_snapshots(out, key)
        bases, warnings = _bases(earlier, now, reset_version)  # before anything is stamped
        folder = _folder_token(out, key, bool(earlier))
        last = earlier[max(earlier)] if earlier else None
        banks, drop, gone = _dropped_at_source(store, banks, set(drop), last)
        warnings = (*warnings, *gone)
        _record_provenance(store, banks, publisher, note, now)
        contents = snapshot(store, banks, with_features=with_features)
        dropped = _dropped(last, contents, drop, channel)
        made = _made_here(store, folder)
        if last is not None and made != max(earlier) and not adopt_folder:
            _refuse_unmade_removals(last, contents, made)
        version = max(int(now), max(bases, default=0) + 1)
        history = lineage(last, version)
        full = Bundle("full", publisher, version, now, contents, dropped, channel=channel,
                      history=history)  # fmt: skip
        written = [_write(out, f"full-{version}.sgb", seal(full, key))]
        deltas: dict[int, str] = {}
        for base in sorted(bases, reverse=True)[: keep - 1]:
            change = delta(bases[base].banks, contents)
            name = f"delta-{base}-{version}.sgb"
            bundle = Bundle("delta", publisher, version, now, change.banks,
                            change.removed_banks, base, channel=channel)  # fmt: skip
            written.append(_write(out, name, seal(bundle, key)))
            deltas[base] = name
        _unchanged_since(out, key, max(earlier, default=None), version)
        digests = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in written}
        index = Bundle("index", publisher, version, now, full_file=written[0], deltas=deltas,
                       channel=channel, digests=digests, folder=folder,
                       history=history)  # fmt: skip
        written.append(_write(out, INDEX, seal(index, key)))
        _prune(out, keep_versions={version, *deltas}, current=version)
        with store.write() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_MADE + folder, version))
        counts = {n: len(c.signals) for n, c in contents.items()}
        if not with_features:
            warnings = (*warnings, *_features_left_out(store, banks))
        return Publication(version, tuple(written), counts, warnings, folder)


@contextmanager
def _folder_lock(out: Path, wait_s: float) -> Iterator[None]:
    try:
        with exclusive_lock(out, wait_s=wait_s):
            yield
    except LockBusy:
        raise BankError(
            f"another `schoolgate banks publish` has been writing into {out} for over "
            f"{wait_s:.0f} s (it holds a lock on the folder); try again when it has finished"
        ) from None


def _features_left_out(store: BankStore, banks: list[str]) -> tuple[str, ...]:
    """Hashes alone match exact and near-identical copies; the robust tier's feature sets are
    what match a cropped, turned or stickered copy, and a hashes-only publication leaves them
    here: the central box blocks such copies and the schools do not (a38 T1)."""
    held = store.feature_counts()
    left = {name: held[name] for name in banks if held.get(name)}
    if not left:
        return ()
    counts = ", ".join(f"{name}: {count}" for name, count in sorted(left.items()))
    return (
        f"feature sets not published ({counts} items): gateways match these banks' exact and "
        "near-identical copies only, not cropped, turned or stickered ones; publish with "
        "--with-features where the trust has decided to share them (docs/trust.md)",
    )


def lineage(last: Bundle | None, version: int) -> dict[int, str]:
    """The folder's recent publications' ids with this one's added. An id is derived from the
    previous publication's and a random part: two boxes publishing on from one copy of the
    folder (a second box, a restored backup with an older database) make two lineages, and a
    gateway that applied a version of one refuses the other as a `fork` (a35 F3). Versions
    ahead of the clock that a reset sets aside leave the lineage with their snapshots."""
    before = dict(last.history) if last is not None else {}
    previous = before[max(before)] if before else ""
    link = hashlib.sha256(f"{previous}:{version}:{secrets.token_hex(16)}".encode()).hexdigest()
    kept = sorted(v for v in before if v < version)[-(HISTORY - 1) :]
    return {**{v: before[v] for v in kept}, version: link[:32]}


def _bases(
    earlier: dict[int, Bundle], now: float, reset: bool
) -> tuple[dict[int, Bundle], tuple[str, ...]]:
    """The snapshots the new version follows (and deltas start from), and warnings. A version
    is carried forward from the folder's last, but not from one so far ahead of this box's
    clock that gateways refuse it as `future`: every version after it would be refused too,
    for as long as the clock was wrong (adversarial pass a35 T1)."""
    last = max(earlier, default=0)
    ahead = last - now
    when = datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds")
    if ahead > FUTURE_S and not reset:
        raise BankError(
            f"this folder's last version, {last} ({when}), is {ahead / 86400:.1f} days ahead of "
            "this box's clock: gateways refuse it as `future`, and would refuse every version "
            "carried on from it. If this box's clock is wrong, correct it (timedatectl); if "
            "it is right, the folder was published from a clock that ran ahead: publish again "
            "with --reset-version to set those versions aside and go on from this clock"
        )
    if reset and ahead <= FUTURE_S:
        raise BankError(
            f"--reset-version: this folder's last version, {last} ({when}), is not more than a "
            "day ahead of this box's clock, so gateways accept it; publish without "
            "--reset-version (a reset would look replayed to gateways that applied it)"
        )
    if reset:
        return {v: b for v, b in earlier.items() if v <= now}, ()
    if ahead > SKEW_S:
        return earlier, (
            f"this box's clock is behind this folder's last version, {last} ({when}), by "
            f"{ahead:.0f} s: the version is carried on from it; check the clock (timedatectl)",
        )
    return earlier, ()


def _dropped(
    last: Bundle | None, contents: Mapping[str, BankContent], drop: set[str], channel: str
) -> tuple[str, ...]:
    """The banks a full snapshot names as dropped on purpose: every bank this folder ever
    dropped and does not publish again. A publication names every bank it carries: one left
    out would leave every gateway (a26 D1: the docs' own example, sharing a second incident,
    dropped the first), so it must be dropped on purpose; and gateways refuse a snapshot that
    leaves out a bank without naming it (a28 X1b: a second folder of the same channel). A
    folder keeps its channel."""
    if drop & set(contents):
        raise BankError(f"{', '.join(sorted(drop & set(contents)))}: published and dropped at "
                        "once; name each bank for one of them")  # fmt: skip
    carried = set(last.banks) if last is not None else set()
    gone = set(last.removed_banks) if last is not None else set()
    if drop - carried - gone:
        raise BankError(f"--drop {', '.join(sorted(drop - carried - gone))}: not in the last "
                        "publication of this folder (a misspelt name drops nothing)")  # fmt: skip
    if last is None:
        return ()
    if last.channel and last.channel != channel:
        raise BankError(f"this folder publishes channel {last.channel!r}, not {channel!r}: "
                        "one folder per channel")  # fmt: skip
    left_out = sorted(carried - set(contents) - drop)
    if left_out:
        raise BankError(
            f"the last publication carried {', '.join(left_out)}: name them again, or --drop "
            "them to take them off every gateway"
        )
    return tuple(sorted((gone | (carried & drop)) - set(contents)))


def _dropped_at_source(
    store: BankStore, banks: list[str], drop: set[str], last: Bundle | None
) -> tuple[list[str], set[str], tuple[str, ...]]:
    """The banks to publish and to drop, less those a subscription's publisher dropped on
    purpose since (a school that shared an incident drops it): dropped here too, said in a
    warning. The timer's unchanged command failed on each run for a bank it no longer had, and
    no trust hash reached any gateway until someone edited it (adversarial pass a41 F9)."""
    have = {bank.name for bank in store.banks()}
    vanished = [name for name in banks if name not in have and dropped_by_source(store, name)]
    if not vanished:
        return banks, drop, ()
    carried = set(last.banks) if last is not None else set()
    said = (
        f"{', '.join(vanished)}: dropped by the publication this box follows it from, so "
        "dropped from this one too (take it out of the publish command)",
    )
    kept = [name for name in banks if name not in vanished]
    return kept, drop | (set(vanished) & carried), said


def _unchanged_since(out: Path, key: Ed25519PrivateKey, seen: int | None, version: int) -> None:
    """Refuse to write the index when the folder's has changed since this run read it: a
    publication that ran beside this one (an unlocked copy, another box on a shared folder)
    wrote its own, and overwriting it with this one, older or not of its lineage, would look
    replayed or forked to the gateways that fetched it (adversarial pass a43 F1)."""
    try:
        index = open_bundle((out / INDEX).read_bytes(), key.public_key(), expect="index")
    except FileNotFoundError:
        return
    except (OSError, BundleError):
        index = None
    now = index.version if index is not None else None
    if now != seen:
        raise BankError(
            f"another publication wrote version {now} into {out} while this one made version "
            f"{version}: nothing was published; publish again"
        )


def _made_here(store: BankStore, folder: str) -> int | None:
    """The version this bank database last published into the folder (None: never)."""
    rows = store.read("SELECT value FROM meta WHERE key = ?", (_MADE + folder,))
    return int(rows[0][0]) if rows else None


def _refuse_unmade_removals(
    last: Bundle, contents: Mapping[str, BankContent], made: int | None
) -> None:
    """The folder's last publication was not made from this bank database: this box was
    restored from an older backup, or another box publishes here. What that publication carried
    and this database lacks was not removed here, and publishing would take it off every
    gateway: refused, unless adopted on purpose."""
    lost: dict[str, int] = {}
    for name, bank in contents.items():
        before = last.banks.get(name)
        if before is None:
            continue
        had = {signal_key(s) for s in before.signals} | {feature_key(f) for f in before.features}
        has = {signal_key(s) for s in bank.signals} | {feature_key(f) for f in bank.features}
        if had - has:
            lost[name] = len(had - has)
    if not lost:
        return
    when = datetime.fromtimestamp(last.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    mine = f"version {made}" if made is not None else "nothing"
    counts = ", ".join(f"{name}: {count}" for name, count in sorted(lost.items()))
    raise BankError(
        f"the folder's last publication (version {last.version}, {when}) was not made from this "
        f"bank database (it published {mine} here), and it carried hashes this database lacks "
        f"({counts}): publishing would take them off every gateway. Was this box restored from "
        "an older backup, or does another box publish here? Restore the newest backup, or add "
        "them again; to take them off every gateway on purpose, publish with --adopt-folder"
    )


def _record_provenance(
    store: BankStore, banks: list[str], publisher: str, note: str, now: float
) -> None:
    """A bank published for the first time is stamped with where it comes from (this
    publisher, today, the note), and keeps that stamp in later publications and wherever it
    is published on from; a bank that came with a stamp keeps its own."""
    known = store.provenance()
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    stamp = f"{publisher or 'the publisher'}, {day}" + (f": {note}" if note else "")
    with store.write() as cur:
        for name in banks:
            store.bank(name)  # a clear error for an unknown bank
            if name not in known:
                store.set_provenance(cur, name, stamp[:300])


def _earlier_snapshots(out: Path, key: Ed25519PrivateKey) -> dict[int, Bundle]:
    found: dict[int, Bundle] = {}
    for path in out.iterdir():
        if _FULL.fullmatch(path.name):
            try:
                found[int(_FULL.fullmatch(path.name)[1])] = open_bundle(  # type: ignore[index]
                    path.read_bytes(), key.public_key(), expect="full"
                )
            except (OSError, BundleError) as exc:
                raise BankError(
                    f"{path}: an earlier snapshot cannot be read ({exc}): move it "
                    "away, and gateways will fetch the next full snapshot"
                ) from None
    return found


def _folder_token(out: Path, key: Ed25519PrivateKey, published: bool) -> str:
    """The folder's own token, made once: gateways pin it (trust.bundle.Bundle.folder). A copy
    of the folder carries it; a second box or a new folder does not. A folder that has
    publications but lost its token gets no new one: every gateway would refuse the folder
    until repinned by hand (a35 F6); the operator restores it, or starts afresh on purpose."""
    path = out / FOLDER
    if not path.exists():
        index = out / INDEX
        if published or index.exists():
            try:
                named = open_bundle(index.read_bytes(), key.public_key(), expect="index").folder
            except (OSError, BundleError):
                named = ""
            restore = (
                f"restore it: echo {named} > {path}"
                if named
                else "restore it from a backup of this folder (or `folder:` in a gateway's "
                "subscription, or `folder=` in its `schoolgate banks subscriptions`)"
            )
            raise BankError(
                f"{path} is missing, but this folder has publications: gateways follow this "
                f"folder by its id, and a new one would have every gateway refuse it; {restore}. "
                "To start a new folder on purpose, publish into an empty one: each gateway "
                "then needs `schoolgate banks subscriptions --repin NAME` (and its `folder:` "
                "changed)"
            )
        _write(out, FOLDER, secrets.token_hex(16).encode())
    return path.read_text().strip()[:64]


def _write(out: Path, name: str, data: bytes) -> str:
    """Written beside and renamed: a web server never serves half a file."""
    partial = out / f".{name}.partial"
    partial.write_bytes(data)
    os.replace(partial, out / name)
    return name


def _prune(out: Path, *, keep_versions: set[int], current: int) -> None:
    for path in out.glob("*.sgb"):
        numbers = [int(n) for n in re.findall(r"\d+", path.name)]
        if path.name == INDEX or not numbers:
            continue
        if path.name.startswith("full-") and numbers[0] in keep_versions:
            continue
        if path.name.startswith("delta-") and numbers[-1] == current:
            continue
        path.unlink()
