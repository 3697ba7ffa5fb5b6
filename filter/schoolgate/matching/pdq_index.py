"""In-memory Hamming-radius indexes over 256-bit PDQ hashes.

Two implementations behind one small interface:

- `BruteForceIndex` compares the query with every hash (XOR + popcount over uint64 words). It is
  the correctness baseline and the fastest choice for small banks.
- `MultiIndexHashIndex` is multi-index hashing (Norouzi et al.): the 256 bits are cut into 16
  chunks of 16 bits. If two hashes differ in at most r bits, then by pigeonhole at least one chunk
  differs in at most r // 16 bits, so probing every chunk's buckets within that small radius finds
  every true neighbour (radius 31 -> probe each chunk's exact value and its 16 one-bit flips).
  Buckets are numpy arrays (a row permutation per chunk plus bucket offsets), not Python dicts.

  Probing alone yields ~41,000 candidates at 10M hashes, and fetching each candidate's hash is a
  random memory read: that dominated query time. So each bucket entry also stores one byte of the
  partner chunk (chunks pair up 0-1, 2-3, ...), read sequentially with the bucket. Pigeonhole over
  the 8 chunk pairs says some pair differs in at most r // 8 bits, and within it one chunk differs
  in at most r // 16; a candidate reached through chunk j with k differing bits is kept only if
  its partner byte differs in at most r // 8 - k bits. This filter is exact (it never drops a true
  neighbour) and discards most random candidates before any random read.

`build_index` picks by size. Both are immutable after construction, so concurrent queries from
several threads are safe.
"""

from __future__ import annotations

from functools import cache
from itertools import combinations
from typing import Protocol

import numpy as np
import numpy.typing as npt

from schoolgate.errors import SchoolgateError

HASH_BYTES = 32
HASH_BITS = 256
_CHUNKS = 16
_CHUNK_BITS = 16
_BUCKETS = 1 << _CHUNK_BITS
# Below this many hashes a linear scan beats probing buckets: probing has a fixed cost of
# ~0.3 ms (numpy call overhead), a scan ~28 us per 1,000 hashes (2-core dev box, radius 31;
# benchmarks/bench_index reports both at the crossover).
BRUTE_FORCE_MAX = 10_000
# Probing costs grow as C(16, r // 16); past this chunk radius a linear scan is cheaper.
_MAX_PROBE_BITS = 2
_SCAN_BLOCK = 1 << 18  # rows per block in linear scans: bounds temporary memory

Result = list[tuple[int, int]]


class PdqIndexError(SchoolgateError):
    """Bad input to an index: wrong hash shape, length or radius."""


class PdqIndex(Protocol):
    """A set of 256-bit hashes answering "which are within Hamming distance r of this one"."""

    def __len__(self) -> int: ...

    def query(self, hash32: bytes, radius: int) -> Result:
        """(entry id, distance) for every hash within `radius`, sorted by distance then id."""
        ...


def _check_hashes(hashes: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    array = np.asarray(hashes)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != HASH_BYTES:
        raise PdqIndexError(
            f"hashes must be a uint8 array of shape (N, {HASH_BYTES}), "
            f"got {array.dtype} {array.shape}"
        )
    return np.ascontiguousarray(array)


def _check_ids(ids: npt.ArrayLike | None, count: int) -> npt.NDArray[np.int64] | None:
    if ids is None:
        return None
    array = np.asarray(ids)
    if array.ndim != 1 or array.shape[0] != count or not np.issubdtype(array.dtype, np.integer):
        raise PdqIndexError(
            f"ids must be a 1-D integer array with one id per hash ({count}), "
            f"got {array.dtype} {array.shape}"
        )
    return array.astype(np.int64, copy=False)


def _check_query(hash32: bytes, radius: int) -> npt.NDArray[np.uint64]:
    if not isinstance(hash32, bytes | bytearray | memoryview) or len(hash32) != HASH_BYTES:
        raise PdqIndexError(f"a query must be {HASH_BYTES} bytes (a 256-bit PDQ hash)")
    if isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= HASH_BITS:
        raise PdqIndexError(f"radius must be an integer 0..{HASH_BITS}, got {radius!r}")
    return np.frombuffer(bytes(hash32), dtype=np.uint64)


def _distances(
    words: npt.NDArray[np.uint64], query: npt.NDArray[np.uint64]
) -> npt.NDArray[np.intp]:
    """Hamming distance of each row of `words` (K, 4) to `query` (4,)."""
    counts = np.bitwise_count(words ^ query)  # uint8 per word
    # Column adds: numpy's sum over a length-4 axis is several times slower.
    total = counts[:, 0].astype(np.intp)
    total += counts[:, 1]
    total += counts[:, 2]
    total += counts[:, 3]
    return total


def _sorted_result(
    rows: npt.NDArray[np.intp], dists: npt.NDArray[np.intp], ids: npt.NDArray[np.int64] | None
) -> Result:
    labels = rows.astype(np.int64) if ids is None else ids[rows]
    order = np.lexsort((labels, dists))
    return list(zip(labels[order].tolist(), dists[order].tolist(), strict=True))


class BruteForceIndex:
    """Linear scan: exact, O(N) per query, no memory beyond the hashes."""

    def __init__(self, hashes: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> None:
        array = _check_hashes(hashes)
        self._words: npt.NDArray[np.uint64] = array.view(np.uint64)
        self._ids = _check_ids(ids, len(array))

    def __len__(self) -> int:
        return int(self._words.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the index (the hashes)."""
        return int(self._words.nbytes)

    def query(self, hash32: bytes, radius: int) -> Result:
        query = _check_query(hash32, radius)
        found_rows: list[npt.NDArray[np.intp]] = []
        found_dists: list[npt.NDArray[np.intp]] = []
        for start in range(0, len(self), _SCAN_BLOCK):
            dists = _distances(self._words[start : start + _SCAN_BLOCK], query)
            hits = np.flatnonzero(dists <= radius)
            found_rows.append(hits + start)
            found_dists.append(dists[hits])
        if not found_rows:
            return []
        return _sorted_result(np.concatenate(found_rows), np.concatenate(found_dists), self._ids)


def _partner_byte(chunk: int) -> int:
    """Which byte of a hash is the filter byte stored with chunk `chunk`'s bucket entries."""
    return 2 * (chunk ^ 1)


_PARTNER_BYTES = [_partner_byte(c) for c in range(_CHUNKS)]


@cache
def _flip_masks(max_bits: int) -> npt.NDArray[np.uint16]:
    """Every 16-bit mask with at most `max_bits` bits set (the probes around a chunk value)."""
    masks = [0]
    for bits in range(1, max_bits + 1):
        for positions in combinations(range(_CHUNK_BITS), bits):
            masks.append(sum(1 << p for p in positions))
    return np.array(masks, dtype=np.uint16)


class MultiIndexHashIndex:
    """Multi-index hashing over 16 chunks of 16 bits with an exact partner-byte filter.

    Memory: the hashes (32 B each) plus, per chunk, the rows sorted by that chunk (3 B per row
    while N < 2**24, else 4 B), one partner byte per row and a 65,537-entry offset table: about
    97 B per hash in all. The index keeps a reference to `hashes` (no copy): do not modify it.
    """

    # Row numbers fit 3 bytes below this; a class attribute so tests can reach the 4-byte path.
    pack_limit = 1 << 24

    def __init__(self, hashes: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> None:
        array = _check_hashes(hashes)
        count = len(array)
        self._count = count
        self._words: npt.NDArray[np.uint64] = array.view(np.uint64)
        self._ids = _check_ids(ids, count)
        chunks = array.view(np.uint16)  # (N, 16): chunk j of row i
        self._offsets = np.empty((_CHUNKS, _BUCKETS + 1), dtype=np.int64)
        # Row numbers sorted by chunk, packed: low 16 bits + high 8 bits saves 25% over uint32.
        self._packed = count < self.pack_limit
        self._rows_lo = np.empty(_CHUNKS * count, dtype=np.uint16 if self._packed else np.uint32)
        self._rows_hi = np.empty(_CHUNKS * count if self._packed else 0, dtype=np.uint8)
        self._partner = np.empty(_CHUNKS * count, dtype=np.uint8)
        for chunk in range(_CHUNKS):
            column = np.ascontiguousarray(chunks[:, chunk])
            order = np.argsort(column, kind="stable")  # radix sort for 16-bit keys
            self._offsets[chunk, 0] = 0
            np.cumsum(np.bincount(column, minlength=_BUCKETS), out=self._offsets[chunk, 1:])
            part = slice(chunk * count, (chunk + 1) * count)
            if self._packed:
                self._rows_lo[part] = order.astype(np.uint16)  # wraps: keeps the low 16 bits
                self._rows_hi[part] = (order >> 16).astype(np.uint8)
            else:
                self._rows_lo[part] = order.astype(np.uint32)
            self._partner[part] = np.take(array[:, _partner_byte(chunk)], order)
            del order, column
        self._chunk_base = (np.arange(_CHUNKS, dtype=np.int64) * count)[:, None]

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held by the index structures, the hashes included."""
        parts = (self._words, self._offsets, self._rows_lo, self._rows_hi, self._partner)
        return sum(int(part.nbytes) for part in parts)

    def query(self, hash32: bytes, radius: int) -> Result:
        query = _check_query(hash32, radius)
        probe_bits = radius // _CHUNKS
        if probe_bits > _MAX_PROBE_BITS:
            return BruteForceIndex(self._words.view(np.uint8), self._ids).query(hash32, radius)
        masks = _flip_masks(probe_bits)
        chunk_values = query.view(np.uint16)  # the same byte order as the build's view
        keys = (chunk_values[:, None] ^ masks[None, :]).astype(np.intp)  # (16, probes)
        starts = np.take_along_axis(self._offsets, keys, axis=1)
        lengths = (np.take_along_axis(self._offsets, keys + 1, axis=1) - starts).ravel()
        total = int(lengths.sum())
        if total == 0:
            return []
        # Concatenate every probed bucket's positions without a Python loop.
        starts = (starts + self._chunk_base).ravel()
        run_begin = np.cumsum(lengths) - lengths
        positions = np.repeat(starts - run_begin, lengths) + np.arange(total, dtype=np.int64)
        # The exact partner-byte filter (module docstring); its reads are sequential.
        partner_query = np.repeat(query.view(np.uint8)[_PARTNER_BYTES], masks.size)
        budget = np.tile(radius // 8 - np.bitwise_count(masks).astype(np.int16), _CHUNKS)
        partner_dist = np.bitwise_count(
            np.take(self._partner, positions) ^ np.repeat(partner_query, lengths)
        )
        positions = positions[partner_dist <= np.repeat(budget, lengths)]
        if positions.size == 0:
            return []
        # np.take, not fancy indexing: many times faster for large gathers (numpy 2.x).
        rows = np.take(self._rows_lo, positions).astype(np.intp)
        if self._packed:
            rows |= np.take(self._rows_hi, positions).astype(np.intp) << 16
        dists = _distances(np.take(self._words, rows, axis=0), query)
        keep = dists <= radius
        rows, dists = rows[keep], dists[keep]
        if rows.size == 0:
            return []
        # A near neighbour shows up once per chunk it matches in: keep one of each.
        rows, first = np.unique(rows, return_index=True)
        return _sorted_result(rows, dists[first], self._ids)


def build_index(hashes: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> PdqIndex:
    """The best index for this many (N, 32) uint8 hashes; `ids` label the rows (default 0..N-1)."""
    array = _check_hashes(hashes)
    if len(array) <= BRUTE_FORCE_MAX:
        return BruteForceIndex(array, ids)
    return MultiIndexHashIndex(array, ids)
