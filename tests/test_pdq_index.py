"""PDQ indexes: the multi-index hash index returns exactly the brute-force result set."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schoolgate.matching import pdq_index
from schoolgate.matching.pdq_index import (
    BruteForceIndex,
    MultiIndexHashIndex,
    PdqIndexError,
    build_index,
)


def reference(hashes: npt.NDArray[np.uint8], query: bytes, radius: int) -> list[tuple[int, int]]:
    """An independent oracle: unpack every bit and count, no popcount tricks."""
    if len(hashes) == 0:
        return []
    q = np.frombuffer(query, dtype=np.uint8)
    dists = np.unpackbits(hashes ^ q, axis=1).sum(axis=1)
    hits = np.flatnonzero(dists <= radius)
    return sorted(((int(i), int(dists[i])) for i in hits), key=lambda r: (r[1], r[0]))


def flip(hash32: npt.NDArray[np.uint8], bits: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    out = hash32.copy()
    for bit in bits:
        out[bit // 8] ^= np.uint8(1 << (bit % 8))
    return out


def planted(
    rng: np.random.Generator, count: int, distances: list[int]
) -> tuple[npt.NDArray[np.uint8], bytes]:
    """Random hashes plus one neighbour of a random query at each given distance."""
    base = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
    query = rng.integers(0, 256, size=32, dtype=np.uint8)
    near = [flip(query, rng.choice(256, size=d, replace=False)) for d in distances]
    hashes = np.concatenate([base, np.array(near, dtype=np.uint8).reshape(-1, 32)])
    order = rng.permutation(len(hashes))  # neighbours at random rows, not at the end
    return np.ascontiguousarray(hashes[order]), query.tobytes()


RADII = [0, 1, 8, 15, 16, 17, 24, 31, 32, 40, 47, 48, 64]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(0, 3000),
    distances=st.lists(st.integers(0, 40), max_size=30),
    radius=st.sampled_from(RADII),
)
def test_multi_index_equals_brute_force(
    seed: int, count: int, distances: list[int], radius: int
) -> None:
    rng = np.random.default_rng(seed)
    hashes, query = planted(rng, count, distances)
    expected = reference(hashes, query, radius)
    assert MultiIndexHashIndex(hashes).query(query, radius) == expected
    assert BruteForceIndex(hashes).query(query, radius) == expected
    # Every planted neighbour within the radius is found.
    assert sum(1 for d in distances if d <= radius) <= len(expected)


def test_planted_distances_found_exactly() -> None:
    rng = np.random.default_rng(7)
    distances = list(range(41))
    hashes, query = planted(rng, 20_000, distances)
    index = MultiIndexHashIndex(hashes)
    found = index.query(query, 31)
    assert [d for _, d in found] == list(range(32))  # random hashes are ~128 bits away
    assert found == reference(hashes, query, 31)
    for radius in (0, 5, 16, 31, 40):
        assert index.query(query, radius) == reference(hashes, query, radius)


def test_clustered_near_duplicates() -> None:
    """Real banks hold families of near-duplicates: heavy buckets must stay exact."""
    rng = np.random.default_rng(11)
    centres = rng.integers(0, 256, size=(20, 32), dtype=np.uint8)
    family = [
        flip(centres[i % 20], rng.choice(256, size=int(rng.integers(0, 48)), replace=False))
        for i in range(6000)
    ]
    noise = rng.integers(0, 256, size=(4000, 32), dtype=np.uint8)
    hashes = np.ascontiguousarray(np.concatenate([np.array(family), noise]))
    index = MultiIndexHashIndex(hashes)
    for centre in centres[:8]:
        query = flip(centre, rng.choice(256, size=int(rng.integers(0, 20)), replace=False))
        for radius in (10, 31, 40):
            expected = reference(hashes, query.tobytes(), radius)
            assert index.query(query.tobytes(), radius) == expected
        assert len(index.query(query.tobytes(), 31)) > 50


def test_ids_label_results() -> None:
    rng = np.random.default_rng(3)
    hashes, query = planted(rng, 500, [0, 3, 9, 31, 32])
    ids = rng.permutation(10_000)[: len(hashes)] + 10**12
    by_row = dict(reference(hashes, query, 31))
    expected = sorted(((int(ids[r]), d) for r, d in by_row.items()), key=lambda x: (x[1], x[0]))
    assert MultiIndexHashIndex(hashes, ids).query(query, 31) == expected
    assert BruteForceIndex(hashes, ids).query(query, 31) == expected


def test_unpacked_row_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 4-byte row path (used above 16.7M hashes) gives the same answers."""
    monkeypatch.setattr(MultiIndexHashIndex, "pack_limit", 0)
    rng = np.random.default_rng(5)
    hashes, query = planted(rng, 3000, [0, 1, 20, 31, 33])
    assert MultiIndexHashIndex(hashes).query(query, 31) == reference(hashes, query, 31)


def test_empty_index() -> None:
    empty = np.zeros((0, 32), dtype=np.uint8)
    for index in (MultiIndexHashIndex(empty), BruteForceIndex(empty), build_index(empty)):
        assert len(index) == 0
        assert index.query(bytes(32), 31) == []


def test_build_index_picks_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    hashes = rng.integers(0, 256, size=(100, 32), dtype=np.uint8)
    assert isinstance(build_index(hashes), BruteForceIndex)
    monkeypatch.setattr(pdq_index, "BRUTE_FORCE_MAX", 10)
    index = build_index(hashes)
    assert isinstance(index, MultiIndexHashIndex)
    assert len(index) == 100
    assert index.query(hashes[42].tobytes(), 0) == [(42, 0)]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 31), dtype=np.uint8),
        np.zeros((4, 32), dtype=np.int64),
        np.zeros(32, dtype=np.uint8),
    ],
)
def test_bad_hash_arrays_rejected(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(PdqIndexError, match="shape"):
        build_index(bad)


def test_bad_queries_rejected() -> None:
    index = MultiIndexHashIndex(np.zeros((3, 32), dtype=np.uint8))
    with pytest.raises(PdqIndexError, match="32 bytes"):
        index.query(bytes(31), 31)
    with pytest.raises(PdqIndexError, match="radius"):
        index.query(bytes(32), -1)
    with pytest.raises(PdqIndexError, match="radius"):
        index.query(bytes(32), 257)
    with pytest.raises(PdqIndexError, match="ids"):
        MultiIndexHashIndex(np.zeros((3, 32), dtype=np.uint8), np.arange(2))
