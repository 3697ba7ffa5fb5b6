"""Matcher: exact digests, PDQ radius with per-bank limits, quality rule, dihedral dedupe."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schoolgate.banks.model import BankError, SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.matching import pdq_index
from schoolgate.matching.matcher import BankMatch, Matcher
from schoolgate.media.hashing import ExactHashes, PdqHash, exact_hashes, pdq_dihedral, pdq_hash


def flipped(hex_value: str, bits: int) -> str:
    """`hex_value` with its first `bits` bits inverted (distance exactly `bits`)."""
    value = int(hex_value, 16) ^ (((1 << bits) - 1) << (256 - bits))
    return f"{value:064x}"


BASE = "5a" * 32


@pytest.fixture
def store(tmp_path: Path) -> BankStore:
    store = BankStore(tmp_path / "banks.db")
    store.create_bank("strict")
    store.create_bank("loose")
    return store


def test_exact_matches_every_digest_type(store: BankStore) -> None:
    digests = exact_hashes(b"a benign test payload")
    other = exact_hashes(b"something else")
    store.add_signals(
        "strict",
        [
            SignalInput(SignalType.SHA256, digests.sha256, note="incident 12"),
            SignalInput(SignalType.MD5, other.md5),
        ],
        source="t",
    )
    store.add_signals(
        "loose",
        [
            SignalInput(SignalType.SHA1, digests.sha1),
            SignalInput(SignalType.SHA256, digests.sha256),
        ],
        source="t",
    )
    matcher = Matcher.from_store(store)
    found = matcher.match_exact(digests)
    assert sorted((m.bank, str(m.signal_type)) for m in found) == [
        ("loose", "sha1"),
        ("loose", "sha256"),
        ("strict", "sha256"),
    ]
    assert all(m.distance == 0 for m in found)
    assert next(m for m in found if m.bank == "strict").note == "incident 12"
    upper = ExactHashes(digests.sha256.upper(), digests.md5.upper(), digests.sha1.upper())
    assert len(matcher.match_exact(upper)) == 3
    assert matcher.match_exact(exact_hashes(b"unbanked")) == []


def test_pdq_radius_and_per_bank_distance(store: BankStore) -> None:
    store.add_signals(
        "strict", [SignalInput(SignalType.PDQ, flipped(BASE, 10), quality=90)], source="t"
    )
    store.add_signals(
        "loose",
        [
            SignalInput(SignalType.PDQ, flipped(BASE, 25), note="n"),
            SignalInput(SignalType.PDQ, flipped(BASE, 40)),
        ],
        source="t",
    )
    query = PdqHash.from_hex(BASE, quality=100)
    default = Matcher.from_store(store).match_pdq([query])
    assert [(m.bank, m.distance) for m in default] == [("strict", 10), ("loose", 25)]
    assert default[0] == BankMatch("strict", SignalType.PDQ, flipped(BASE, 10), 10, 90, "")
    assert default[1].note == "n"
    assert default[1].quality is None
    tuned = Matcher.from_store(
        store, pdq_max_distance=31, per_bank_distance={"strict": 8, "loose": 45, "future": 3}
    )
    assert [(m.bank, m.distance) for m in tuned.match_pdq([query])] == [
        ("loose", 25),
        ("loose", 40),
    ]


def test_low_quality_queries_match_nothing(store: BankStore) -> None:
    store.add_signals("strict", [SignalInput(SignalType.PDQ, BASE)], source="t")
    matcher = Matcher.from_store(store)
    assert matcher.match_pdq([PdqHash.from_hex(BASE, quality=49)]) == []
    assert len(matcher.match_pdq([PdqHash.from_hex(BASE, quality=50)])) == 1
    assert len(matcher.match_pdq([PdqHash.from_hex(BASE, quality=20)], min_quality=10)) == 1


def test_variants_dedupe_to_smallest_distance(store: BankStore) -> None:
    store.add_signals("strict", [SignalInput(SignalType.PDQ, BASE)], source="t")
    matcher = Matcher.from_store(store)
    queries = [PdqHash.from_hex(flipped(BASE, d)) for d in (20, 3, 12, 200)]
    found = matcher.match_pdq(queries)
    assert [(m.bank, m.distance) for m in found] == [("strict", 3)]


def test_dihedral_variants_find_a_rotated_photo(
    store: BankStore, benign_photos: dict[str, Image.Image]
) -> None:
    photo = benign_photos["astronaut"]
    banked = pdq_hash(photo)
    store.add_signals(
        "strict", [SignalInput(SignalType.PDQ, banked.hex, quality=banked.quality)], source="t"
    )
    store.add_signals(
        "loose", [SignalInput(SignalType.PDQ, pdq_hash(benign_photos["coffee"]).hex)], source="t"
    )
    matcher = Matcher.from_store(store)
    rotated = photo.transpose(Image.Transpose.ROTATE_90)
    assert matcher.match_pdq([pdq_hash(rotated)]) == []  # PDQ itself is not rotation-invariant
    found = matcher.match_pdq(pdq_dihedral(rotated))
    assert [m.bank for m in found] == ["strict"]
    assert found[0].distance <= 16
    assert found[0].value == banked.hex


def test_sizes_and_version(store: BankStore) -> None:
    store.add_signals(
        "strict",
        [SignalInput(SignalType.PDQ, BASE), SignalInput(SignalType.MD5, "ab" * 16)],
        source="t",
    )
    store.add_signals(
        "loose",
        [SignalInput(SignalType.VPDQ, BASE, quality=90, content_id="v", frame=0, timestamp=0.0)],
        source="t",
    )
    matcher = Matcher.from_store(store)
    assert matcher.sizes() == {"loose": 0, "strict": 2}  # vPDQ frames are the video matcher's
    assert matcher.version == store.version()
    store.remove_signal("strict", SignalType.MD5, "ab" * 16)
    assert matcher.version != store.version()
    assert Matcher.from_store(store).sizes()["strict"] == 1


def test_bad_settings_are_rejected(store: BankStore) -> None:
    with pytest.raises(BankError, match="pdq_max_distance"):
        Matcher.from_store(store, pdq_max_distance=-1)
    with pytest.raises(BankError, match="'strict'"):
        Matcher.from_store(store, per_bank_distance={"strict": 300})


def test_large_bank_uses_the_fast_index_and_threads_agree(
    store: BankStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdq_index, "BRUTE_FORCE_MAX", 100)
    rng = np.random.default_rng(2)
    values = [bytes(row).hex() for row in rng.integers(0, 256, size=(3000, 32), dtype=np.uint8)]
    store.add_signals("loose", [SignalInput(SignalType.PDQ, v) for v in values], source="t")
    matcher = Matcher.from_store(store)
    assert isinstance(matcher._index, pdq_index.MultiIndexHashIndex)
    queries = [PdqHash.from_hex(flipped(v, int(rng.integers(0, 40)))) for v in values[:40]]
    expected = [matcher.match_pdq([q]) for q in queries]
    for query, found in zip(queries, expected, strict=True):
        truth = sorted(
            (PdqHash.from_hex(v).distance(query), v)
            for v in values
            if PdqHash.from_hex(v).distance(query) <= 31
        )
        assert [(m.distance, m.value) for m in found] == truth
    results: list[list[list[BankMatch]]] = []

    def worker() -> None:
        results.append([matcher.match_pdq([q]) for q in queries])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [expected] * 4
