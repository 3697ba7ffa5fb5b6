"""A picture carries other pictures (adversarial pass a5): an EXIF thumbnail, an MPO's second
image, a motion photo's video after the JPEG, a file appended after the end. Each is judged
beside the picture itself. Benign pictures and synthetic clips only."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractLimits
from schoolgate.media.hashing import pdq_hash
from schoolgate.media.sniff import MediaKind, sniff
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.conftest import encode
from tests.support import video_fixtures as vf

LIMITS = ExtractLimits()
PUPIL = InspectionContext(client_ip="192.0.2.20", app="testapp")


@pytest.fixture(scope="module")
def innocent(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["coffee"].resize((300, 200)), "JPEG", quality=85)


@pytest.fixture(scope="module")
def banked(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["astronaut"].resize((256, 256)), "JPEG", quality=85)


def with_exif_thumbnail(photo: bytes, thumbnail: bytes) -> bytes:
    exif = b"Exif\x00\x00" + b"II*\x00" + bytes(8) + thumbnail
    return photo[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + photo[2:]


def carriers(innocent: bytes, banked: bytes) -> dict[str, bytes]:
    mpo = io.BytesIO()
    first = Image.open(io.BytesIO(innocent))
    first.save(mpo, "MPO", save_all=True, append_images=[Image.open(io.BytesIO(banked))])
    return {
        "appended": innocent + banked,
        "appended after junk": innocent + b"\x00" * 100 + banked,
        "exif thumbnail": with_exif_thumbnail(innocent, banked),
        "mpo second image": mpo.getvalue(),
    }


@pytest.mark.parametrize(
    "kind", ["appended", "appended after junk", "exif thumbnail", "mpo second image"]
)
def test_a_picture_inside_a_picture_is_found(innocent: bytes, banked: bytes, kind: str) -> None:
    data = carriers(innocent, banked)[kind]
    items = [item.data for item in extract_items(data, "image/jpeg", LIMITS)]
    assert items[0] == data
    assert any(Image.open(io.BytesIO(item)).size == (256, 256) for item in items[1:])


def test_a_motion_photos_video_is_found(innocent: bytes) -> None:
    clip = vf.scene_frames(seed=5, seconds=2)
    video = vf.encode(clip.frames, clip.fps)
    items = extract_items(innocent + video, "image/jpeg", LIMITS)
    assert [sniff(item.data).kind for item in items] == [MediaKind.IMAGE, MediaKind.VIDEO]
    assert items[1].data == video


def test_a_banked_picture_hidden_in_an_innocent_one_is_blocked_and_plain_photos_are_not(
    data_dir: Path, innocent: bytes, banked: bytes, benign_photos: dict[str, Image.Image]
) -> None:
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident")
        pdq = pdq_hash(Image.open(io.BytesIO(banked)))
        store.add_signals("incident", [SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)],
                          "t")  # fmt: skip
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    try:
        for kind, data in carriers(innocent, banked).items():
            items = extract_items(data, "image/jpeg", LIMITS)
            assert any(inspector.evaluate(item.data, PUPIL).blocked for item in items), kind
        # An ordinary phone photo with its own EXIF thumbnail: both judged, both allowed.
        own = with_exif_thumbnail(innocent, encode(benign_photos["coffee"].resize((160, 107))))
        items = extract_items(own, "image/jpeg", LIMITS)
        assert len(items) == 2
        assert not any(inspector.evaluate(item.data, PUPIL).blocked for item in items)
    finally:
        inspector.close()


def test_a_webm_after_a_picture_is_found(innocent: bytes) -> None:
    clip = vf.scene_frames(seed=6, seconds=1)
    video = vf.encode(clip.frames, clip.fps, "libvpx")
    items = extract_items(innocent + video, "image/jpeg", LIMITS)
    assert [sniff(item.data).kind for item in items] == [MediaKind.IMAGE, MediaKind.VIDEO]
    assert items[1].data == video


def with_comment(photo: bytes, text: bytes) -> bytes:
    return photo[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + photo[2:]


def with_private_chunk(png: bytes, payload: bytes) -> bytes:
    """A PNG with an ancillary chunk of its own after IHDR (decoders skip it)."""
    crc = zlib.crc32(b"prVt" + payload).to_bytes(4, "big")
    chunk = len(payload).to_bytes(4, "big") + b"prVt" + payload + crc
    return png[:33] + chunk + png[33:]


@pytest.mark.parametrize(
    "signature",
    [b"\x1a\x45\xdf\xa3", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", b"\x00\x00\x00\x18ftypmp42"],
)
def test_a_video_signature_inside_a_picture_is_not_a_video(
    innocent: bytes, benign_photos: dict[str, Image.Image], signature: bytes
) -> None:
    """Four bytes of a video's signature in a picture's comment, or by chance in its data, are
    not a video (adversarial pass a67 F1: a wallpaper PNG whose compressed data held the EBML
    magic, and a photo with it in a 20-byte comment, were refused as corrupt Matroska): what
    follows is judged as a video only where a container's header parses (an `ftyp` followed by
    another box, an EBML header naming its DocType followed by the Segment)."""
    rng = np.random.default_rng(7)
    png = encode(benign_photos["coffee"].resize((300, 200)), "PNG")
    noise = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    carriers = [
        with_comment(innocent, b"note " + signature + b" end"),
        with_private_chunk(png, noise[:1000] + signature + noise[1000:]),
    ]
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    try:
        for data in carriers:
            items = extract_items(data, "image/jpeg", LIMITS)
            assert [sniff(item.data).kind for item in items] == [MediaKind.IMAGE]
            assert not inspector.evaluate(data, PUPIL).blocked
    finally:
        inspector.close()
