"""How much of a banked picture a resumable upload leaves with the service before a chunk is
refused (adversarial passes a68 F2, a69 F4). Looked at from half its declared size, then at each
quarter's growth, an upload in 256 KiB chunks stored up to 68% of a banked JPEG first. A
progressive JPEG shows the whole picture from about a tenth of its bytes, a baseline one enough
of its rows from a fifth to a half: a still picture's first part is looked at from an eighth,
then at every sixteenth.

The real catalog's tus route (Vimeo), driven in-process, against a bank made by
`schoolgate hashes add` (exact hashes, PDQ and the robust tier's features); benign photos only."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from schoolgate import cli
from schoolgate.addons.uploads import UploadInspector
from tests.conftest import encode
from tests.test_addons_inprocess import catalog_upload_addon
from tests.test_tus_uploads import _create, _patches

PARTS = 16  # the upload's chunks: each a sixteenth of it


def _phone_sized(photo: Image.Image) -> Image.Image:
    scale = 1600 / max(photo.size)
    return photo.resize(
        (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS
    )


def _jpeg(photo: Image.Image, progressive: bool) -> bytes:
    return encode(_phone_sized(photo), "JPEG", quality=88, progressive=progressive)


@pytest.fixture
def addon(
    data_dir: Path, tmp_path: Path, benign_photos: dict[str, Image.Image]
) -> Iterator[UploadInspector]:
    files = []
    for progressive in (False, True):
        path = tmp_path / f"banked-{progressive}.jpg"
        path.write_bytes(_jpeg(benign_photos["astronaut"], progressive))
        files.append(str(path))
    config = tmp_path / "bank.yaml"
    config.write_text("classifier:\n  models: []\n")
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["hashes", "add", *files, "--bank", "incident-cadence",
                         "--config", str(config)])  # fmt: skip
    assert code == 0
    with catalog_upload_addon(data_dir, tmp_path, None) as inspector:
        yield inspector


def _held_before_refusal(
    addon: UploadInspector, upload: str, data: bytes, declared: int | None = None, step: int = 0
) -> float | None:
    """The share of `data` the service holds when the first chunk is refused (None: none is),
    sent in sixteenths of it (or `step` bytes) as an upload of `declared` bytes (its size)."""
    assert _create(addon, upload, Upload_Length=str(declared or len(data))) == 201
    step = step or -(-len(data) // PARTS)
    cuts = list(range(step, len(data), step))
    codes = _patches(addon, upload, data, cuts)
    if 403 not in codes:
        return None
    assert set(codes[codes.index(403) :]) == {403}  # every later chunk too (a49 F9)
    return min(codes.index(403) * step / len(data), 1.0)


@pytest.mark.parametrize(("progressive", "most"), [(True, 1 / 8), (False, 3 / 8)])
def test_a_banked_jpeg_sent_in_parts_is_refused_early(
    addon: UploadInspector, benign_photos: dict[str, Image.Image], progressive: bool, most: float
) -> None:
    """Looked at from half, the service held 7/16 of either before the refusal."""
    banned = _jpeg(benign_photos["astronaut"], progressive)
    held = _held_before_refusal(addon, f"/files/banked-{progressive}", banned)
    assert held is not None
    assert held <= most


@pytest.mark.parametrize("progressive", [True, False])
@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket", "camera"])
def test_an_innocent_jpeg_sent_in_parts_goes_through(
    addon: UploadInspector, benign_photos: dict[str, Image.Image], name: str, progressive: bool
) -> None:
    """Every first part of an innocent photo is looked at (sixteen looks) and none refused."""
    photo = _jpeg(benign_photos[name], progressive)
    assert _held_before_refusal(addon, f"/files/{name}-{progressive}", photo) is None


@pytest.mark.parametrize("declared", [9, 100])
def test_a_banked_jpeg_in_an_upload_declared_far_larger_is_refused_early(
    addon: UploadInspector, benign_photos: dict[str, Image.Image], declared: int
) -> None:
    """a70 F1: looked at from an eighth of the declared size, an upload that declared 8.5 or
    100 times its file's size sent every chunk of a banked picture (the phone then sent one
    byte with the true size)."""
    banned = _jpeg(benign_photos["astronaut"], False)
    held = _held_before_refusal(addon, f"/files/x{declared}", banned, len(banned) * declared)
    assert held is not None
    assert held <= 1 / 2


def test_a_banked_jpeg_followed_by_other_bytes_is_refused_before_its_end(
    addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    """a70 F6: a banked JPEG followed by fifteen times its size in random bytes (viewers ignore
    them) was all sent before the first look, at an eighth of the file."""
    picture = _jpeg(benign_photos["astronaut"], False)
    padded = picture + random.Random(70).randbytes(15 * len(picture))
    held = _held_before_refusal(addon, "/files/trailing", padded, step=64 * 1024)
    assert held is not None
    assert held * len(padded) < len(picture) / 2


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_a_banked_bmp_or_tiff_sent_in_parts_is_refused_before_its_end(
    addon: UploadInspector, benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    """a70 F3: the first part of a BMP or an uncompressed TIFF showed nothing, and only the last
    chunk was refused: the service held all but its last 54 bytes. Padded grey to the length
    its header gives, its rows are where they would be."""
    banned = encode(_phone_sized(benign_photos["astronaut"]), fmt)
    held = _held_before_refusal(addon, f"/files/{fmt}", banned)
    assert held is not None
    assert held <= 3 / 4


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_an_innocent_bmp_or_tiff_sent_in_parts_goes_through(
    addon: UploadInspector, benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    photo = encode(_phone_sized(benign_photos["coffee"]), fmt)
    assert _held_before_refusal(addon, f"/files/innocent-{fmt}", photo) is None


@pytest.mark.parametrize("first", ["JPEG", "PNG"])
def test_a_banked_jpeg_after_an_innocent_picture_is_refused(
    addon: UploadInspector, benign_photos: dict[str, Image.Image], first: str
) -> None:
    """a72 A: the banked JPEG appended to an innocent JPEG or PNG went through every chunked
    form, whole (24 of 24): only the first picture of a first part, or of the whole upload,
    was judged. Sent in one request, the same bytes were refused."""
    innocent = encode(_phone_sized(benign_photos["coffee"]), first)
    banned = _jpeg(benign_photos["astronaut"], False)
    joined = innocent + banned
    held = _held_before_refusal(addon, f"/files/after-{first}", joined)
    assert held is not None
    assert held * len(joined) < len(innocent) + len(banned) / 2  # refused inside the banked one


def test_an_innocent_picture_after_another_goes_through(
    addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    joined = _jpeg(benign_photos["coffee"], False) + _jpeg(benign_photos["chelsea"], True)
    assert _held_before_refusal(addon, "/files/innocent-after", joined) is None
