"""Exact hashes, the PdqHash value type and PDQ behaviour on benign photos."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from schoolgate.media.decode import decode_image
from schoolgate.media.hashing import (
    DIHEDRAL_TRANSFORMS,
    ExactHashes,
    PdqHash,
    exact_hashes,
    hamming,
    pdq_dihedral,
    pdq_hash,
)
from tests.conftest import encode

# Two hashes of the same picture should sit well inside the bank threshold (31); unrelated
# pictures sit near 128.
SAME = 16
DIFFERENT = 80


# --- exact hashes -----------------------------------------------------------------------------


def test_exact_hashes_known_vectors() -> None:
    assert exact_hashes(b"abc") == ExactHashes(
        sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        md5="900150983cd24fb0d6963f7d28e17f72",
        sha1="a9993e364706816aba3e25717850c26c9cd0d89d",
    )


def test_exact_hashes_of_empty_input() -> None:
    assert exact_hashes(b"").sha256 == hashlib.sha256(b"").hexdigest()


def test_exact_hashes_span_chunks() -> None:
    # Several 1 MiB chunks plus a ragged tail: the chunked loop must not drop or repeat bytes.
    data = np.random.default_rng(7).integers(0, 256, 3 * (1 << 20) + 12345, np.uint8).tobytes()
    hashes = exact_hashes(data)
    assert hashes.sha256 == hashlib.sha256(data).hexdigest()
    assert hashes.md5 == hashlib.md5(data).hexdigest()
    assert hashes.sha1 == hashlib.sha1(data).hexdigest()


def test_exact_hashes_accept_bytearray_and_memoryview() -> None:
    expected = exact_hashes(b"school")
    assert exact_hashes(bytearray(b"school")) == expected
    assert exact_hashes(memoryview(b"school")) == expected


# --- PdqHash value type -----------------------------------------------------------------------

HEX_A = "d8f8f0cce0f4a84f0e370a22028f67f0b36e2ed596623e1d33e6b39c4e9c9b22"


def test_from_hex_normalises_case_and_space() -> None:
    parsed = PdqHash.from_hex(f"  {HEX_A.upper()}\n", quality=90)
    assert parsed.hex == HEX_A
    assert parsed.quality == 90


@pytest.mark.parametrize(
    "bad",
    ["", HEX_A[:-1], HEX_A + "0", "g" + HEX_A[1:], HEX_A[:32] + " " + HEX_A[33:]],
    ids=["empty", "short", "long", "non-hex", "inner-space"],
)
def test_from_hex_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        PdqHash.from_hex(bad)


@pytest.mark.parametrize("quality", [-1, 101, True, 50.0])
def test_quality_must_be_an_int_in_range(quality: object) -> None:
    with pytest.raises(ValueError, match="quality"):
        PdqHash(hex=HEX_A, quality=quality)  # type: ignore[arg-type]


def test_constructor_rejects_uppercase() -> None:
    # The canonical form is lowercase; from_hex is the lenient parser.
    with pytest.raises(ValueError, match="lowercase"):
        PdqHash(hex=HEX_A.upper(), quality=100)


def test_distance_and_bytes_round_trip() -> None:
    a = PdqHash.from_hex(HEX_A)
    flipped = bytearray(a.to_bytes())
    flipped[0] ^= 0b1000_0001
    flipped[31] ^= 0b0000_0001
    b = PdqHash.from_bytes(bytes(flipped))
    assert len(a.to_bytes()) == 32
    assert a.to_bytes()[0] == int(HEX_A[:2], 16)
    assert a.distance(b) == b.distance(a) == 3
    assert a.distance(a) == 0
    assert PdqHash.from_bytes(a.to_bytes()) == a
    assert hamming(a.to_bytes(), b.to_bytes()) == 3


def test_from_bytes_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PdqHash.from_bytes(b"\x00" * 31)


def test_hamming() -> None:
    assert hamming(b"\x00\xff", b"\xff\xff") == 8
    assert hamming(b"", b"") == 0
    with pytest.raises(ValueError, match="different lengths"):
        hamming(b"\x00", b"\x00\x00")


def test_equal_hashes_compare_equal_and_hash_alike() -> None:
    assert {PdqHash.from_hex(HEX_A), PdqHash.from_hex(HEX_A.upper())} == {PdqHash.from_hex(HEX_A)}


# --- PDQ on images ----------------------------------------------------------------------------


def test_pdq_hex_shape_and_quality(benign_photos: dict[str, Image.Image]) -> None:
    result = pdq_hash(benign_photos["astronaut"])
    assert len(result.hex) == 64
    assert result.hex == result.hex.lower()
    assert result.quality >= 50


def test_pdq_is_deterministic(benign_photos: dict[str, Image.Image]) -> None:
    photo = benign_photos["coffee"]
    assert pdq_hash(photo) == pdq_hash(photo.copy())


def test_unrelated_photos_are_far_apart(benign_photos: dict[str, Image.Image]) -> None:
    hashes = {name: pdq_hash(img) for name, img in benign_photos.items()}
    names = sorted(hashes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert hashes[a].distance(hashes[b]) > DIFFERENT - 30, (a, b)


def test_recompressed_and_resized_copies_stay_close(benign_photos: dict[str, Image.Image]) -> None:
    photo = benign_photos["chelsea"]
    original = pdq_hash(photo)
    recompressed = decode_image(encode(photo, "JPEG", quality=40)).image
    resized = photo.resize((photo.width // 3, photo.height // 3), Image.Resampling.LANCZOS)
    upscaled = photo.resize((photo.width * 4, photo.height * 4), Image.Resampling.BICUBIC)
    for variant in (recompressed, resized, upscaled):
        assert original.distance(pdq_hash(variant)) <= SAME


def test_non_rgb_modes_hash_like_rgb(benign_photos: dict[str, Image.Image]) -> None:
    photo = benign_photos["rocket"]
    rgb = pdq_hash(photo)
    assert pdq_hash(photo.convert("RGBA")) == rgb
    assert rgb.distance(pdq_hash(photo.convert("P"))) <= SAME


def test_flat_image_has_low_quality() -> None:
    assert pdq_hash(Image.new("RGB", (300, 200), (120, 130, 140))).quality == 0


def test_tiny_image_gives_quality_zero() -> None:
    # The reference refuses to hash below 5 px a side: an all-zero hash flagged as unusable.
    tiny = pdq_hash(Image.new("RGB", (4, 40), (10, 200, 30)))
    assert tiny.quality == 0
    assert tiny.hex == "0" * 64


def test_exif_orientation_is_applied_before_hashing(benign_photos: dict[str, Image.Image]) -> None:
    upright = benign_photos["astronaut"]
    # Orientation 6 = "rotate 90 clockwise to display": store the pixels turned the other way.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    expected = pdq_hash(upright)

    decoded = decode_image(data)
    assert (decoded.width, decoded.height) == upright.size
    assert pdq_hash(decoded.image).distance(expected) <= SAME
    # A raw Pillow image straight from the file gets the same treatment inside pdq_hash.
    assert pdq_hash(Image.open(io.BytesIO(data))).distance(expected) <= SAME
    # Control: the stored pixels themselves hash far away, so this test can fail.
    assert pdq_hash(stored).distance(expected) > DIFFERENT


def test_dihedral_variants_match_transformed_images(benign_photos: dict[str, Image.Image]) -> None:
    photo = benign_photos["astronaut"]
    variants = pdq_dihedral(photo)
    assert len(variants) == 8
    assert variants[0] == pdq_hash(photo)
    for variant, transform in zip(variants, DIHEDRAL_TRANSFORMS, strict=True):
        transformed = photo if transform is None else photo.transpose(transform)
        assert variant.distance(pdq_hash(transformed)) <= 31, transform
        assert variant.quality == variants[0].quality


def test_large_image_downscale_agrees_with_small(benign_photos: dict[str, Image.Image]) -> None:
    # The 512 px pre-downscale must not move the hash of a big photo away from a small copy.
    photo = benign_photos["coffee"]
    big = photo.resize((photo.width * 8, photo.height * 8), Image.Resampling.BICUBIC)
    assert pdq_hash(big).distance(pdq_hash(photo)) <= 8


def test_pdq_hash_is_thread_safe(benign_photos: dict[str, Image.Image]) -> None:
    photos = list(benign_photos.values())
    serial = [pdq_hash(p) for p in photos]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(pdq_hash, photos * 3))
    assert parallel == serial * 3
