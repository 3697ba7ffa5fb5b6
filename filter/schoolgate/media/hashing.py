"""Exact hashes (SHA-256, MD5, SHA-1) and PDQ perceptual hashes of images.

PDQ comes from the `pdqhash` package (Cython bindings over Meta's C++ reference). Hex strings use
the reference / ThreatExchange bit order, so hashes interchange with shared hash lists.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Buffer
from dataclasses import dataclass, field

import numpy as np
import pdqhash
from PIL import Image, ImageOps

_HEX64 = re.compile(r"[0-9a-f]{64}")
_EXIF_ORIENTATION = 0x0112
_CHUNK = 1 << 20

# The reference hasher (ThreatExchange pdq/cpp/io/pdqio.cpp) resizes anything over 512 px to an
# intermediate size before its Jarosz blur, because that blur costs time linear in the pixel
# count. We do the same with Pillow's antialiased bilinear resize, keeping the aspect ratio.
# Measured on ../shared/testdata/pdq-reference (18 images): full resolution lands at max 12 /
# mean 4.4 bits from the published hashes, this downscale at max 10 / mean 0.6; on a 12 MP photo
# it hashes in ~30 ms instead of ~600 ms (benchmarks/bench_hashing.py). reducing_gap=1.0 lets
# Pillow first shrink by a whole factor with its fast box reduce: faster than a plain bilinear
# resize (~25 vs ~75 ms at 12 MP) and no worse in conformance. Nearest-neighbour (what the C++
# reference's CImg resize does) is faster still but conforms worse (mean 2.0) and aliases, which
# invites image-scaling attacks that show the hasher a different picture from the viewer.
PDQ_DOWNSAMPLE_SIDE = 512
_PDQ_REDUCING_GAP = 1.0

# A washed-out copy (contrast turned down to a fifth or less) keeps a picture's PDQ bits but not
# its quality: PDQ's quality is the image's absolute gradient energy, and matching ignores hashes
# of quality under 50 (they are what flat and blurred pictures give), so the copy could never
# match (adversarial pass a4: a banked video at contrast x0.2 passed). Under that quality a query
# is also hashed with its luma range stretched to full scale (stretched_pdq). PDQ's bits are
# thresholds at the median, so an affine stretch keeps them up to rounding. A picture whose luma
# spans under _MIN_STRETCH_RANGE levels is left alone: its stretched hash would be its noise.
STRETCH_BELOW_QUALITY = 50
_MIN_STRETCH_RANGE = 8
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Pillow transposes matching pdqhash.compute_dihedral's output order (checked against the
# reference's bridge-1..8 images): original, rotate 90 (counter-clockwise), 180, 270, flip
# top-bottom ("flipx"), flip left-right ("flipy"), transpose ("flip+1"), transverse ("flip-1").
DIHEDRAL_TRANSFORMS: tuple[Image.Transpose | None, ...] = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


@dataclass(frozen=True)
class ExactHashes:
    """Cryptographic digests in lowercase hex: the formats hash lists are shared in."""

    sha256: str
    md5: str
    sha1: str


def exact_hashes(data: Buffer) -> ExactHashes:
    """SHA-256, MD5 and SHA-1 of `data` (bytes or any buffer) in one pass over it."""
    sha256 = hashlib.sha256()
    # MD5 and SHA-1 identify content here; they are not used for security (and FIPS builds
    # refuse them unless told so).
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    view = memoryview(data)
    # Chunks keep each slice in cache for all three digests instead of streaming it three times.
    for start in range(0, len(view), _CHUNK):
        chunk = view[start : start + _CHUNK]
        sha256.update(chunk)
        md5.update(chunk)
        sha1.update(chunk)
    return ExactHashes(sha256=sha256.hexdigest(), md5=md5.hexdigest(), sha1=sha1.hexdigest())


@dataclass(frozen=True)
class PdqHash:
    """A 256-bit PDQ hash (64 lowercase hex chars, reference bit order) and its quality 0..100."""

    hex: str
    quality: int
    _value: int = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.hex, str) or not _HEX64.fullmatch(self.hex):
            raise ValueError(
                f"a PDQ hash is 64 lowercase hex characters (256 bits), got {self.hex!r}"
            )
        if isinstance(self.quality, bool) or not isinstance(self.quality, int):
            raise ValueError(f"PDQ quality must be an integer 0..100, got {self.quality!r}")
        if not 0 <= self.quality <= 100:
            raise ValueError(f"PDQ quality must be 0..100, got {self.quality}")
        object.__setattr__(self, "_value", int(self.hex, 16))

    def distance(self, other: PdqHash) -> int:
        """Hamming distance in bits (0..256)."""
        return (self._value ^ other._value).bit_count()

    def to_bytes(self) -> bytes:
        """The 32 raw bytes, first byte = first two hex characters."""
        return self._value.to_bytes(32, "big")

    def inverted(self) -> PdqHash:
        """The hash of the colour-inverted image: PDQ thresholds DCT coefficients at their
        median, and inverting the pixels negates every coefficient, so every bit flips."""
        return PdqHash(f"{self._value ^ ((1 << 256) - 1):064x}", self.quality)

    @classmethod
    def from_hex(cls, hex: str, quality: int = 100) -> PdqHash:
        """Parse a hex hash as found in shared lists (surrounding space and upper case allowed)."""
        if not isinstance(hex, str):
            raise ValueError(f"a PDQ hash must be given as a hex string, got {type(hex).__name__}")
        return cls(hex=hex.strip().lower(), quality=quality)

    @classmethod
    def from_bytes(cls, raw: bytes, quality: int = 100) -> PdqHash:
        """Inverse of to_bytes."""
        if len(raw) != 32:
            raise ValueError(f"a PDQ hash is 32 bytes, got {len(raw)}")
        return cls(hex=raw.hex(), quality=quality)


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length byte strings."""
    if len(a) != len(b):
        raise ValueError(
            f"cannot compare hashes of different lengths ({len(a)} and {len(b)} bytes)"
        )
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def _pdq_input(image: Image.Image) -> np.ndarray:
    """Upright RGB pixels, downsized like the reference, as a contiguous HxWx3 uint8 array."""
    if image.getexif().get(_EXIF_ORIENTATION) in (2, 3, 4, 5, 6, 7, 8):
        # Idempotent: decode_image already did this and removed the tag.
        image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    longer = max(image.size)
    if longer > PDQ_DOWNSAMPLE_SIDE:
        scale = PDQ_DOWNSAMPLE_SIDE / longer
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=_PDQ_REDUCING_GAP)
    # uint8 matters: pdqhash's signature says `char`, and a signed view would corrupt the luma.
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def stretched_pdq(image: Image.Image, *, dihedral: bool) -> list[PdqHash]:
    """Query side only: the PDQ hash(es) of a washed-out picture with its luma range stretched
    (see STRETCH_BELOW_QUALITY), or [] when stretching gives no better quality. Banks keep the
    reference hash, which hash lists are exchanged in."""
    pixels = _pdq_input(image)
    stretched = _stretched(pixels)
    if stretched is None:
        return []
    if dihedral:
        variants, quality = pdqhash.compute_dihedral(stretched)
    else:
        bits, quality = pdqhash.compute(stretched)
        variants = [bits]
    if quality < STRETCH_BELOW_QUALITY:
        return []
    return [PdqHash(hex=_hex_from_bits(bits), quality=int(quality)) for bits in variants]


def _stretched(pixels: np.ndarray) -> np.ndarray | None:
    sample = pixels[:: max(1, pixels.shape[0] // 128), :: max(1, pixels.shape[1] // 128)]
    low, high = np.percentile(sample.reshape(-1, 3) @ _LUMA, [0.5, 99.5])
    if high - low < _MIN_STRETCH_RANGE:
        return None
    scaled = (pixels.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.ascontiguousarray(np.clip(scaled, 0, 255).astype(np.uint8))


def _hex_from_bits(bits: np.ndarray) -> str:
    # pdqhash returns bit 255 first, which is exactly the reference hex's most significant bit.
    return bytes(np.packbits(bits.astype(np.uint8))).hex()


def pdq_hash(image: Image.Image) -> PdqHash:
    """PDQ hash of an image (EXIF orientation applied; images under 5 px give quality 0)."""
    bits, quality = pdqhash.compute(_pdq_input(image))
    return PdqHash(hex=_hex_from_bits(bits), quality=int(quality))


def pdq_dihedral(image: Image.Image) -> list[PdqHash]:
    """The 8 PDQ hashes of the image's rotations and mirrors, ordered as DIHEDRAL_TRANSFORMS.

    Computed like the reference's `--dihedral` option, from one DCT, so the variants other than
    the original can differ by a few bits from hashing the transformed image itself.
    """
    variants, quality = pdqhash.compute_dihedral(_pdq_input(image))
    return [PdqHash(hex=_hex_from_bits(bits), quality=int(quality)) for bits in variants]
