"""Fixtures shared by every test module: shared test data, benign photos, a scratch data dir."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image

if TYPE_CHECKING:
    from schoolgate.addons.uploads import UploadInspector

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

# Fuzz budgets: "ci" (default) keeps the suite fast; SCHOOLGATE_FUZZ=long digs deeper by hand.
# Tests that set max_examples themselves keep their own budget.
settings.register_profile(
    "ci", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("long" if os.environ.get("SCHOOLGATE_FUZZ") == "long" else "ci")


def zstd_compress(data: bytes, level: int = 3) -> bytes:
    """A zstd frame, as a client sending `Content-Encoding: zstd` would."""
    return zstd.compress(data, level=level)


def zstd_compressor(window_log: int) -> zstd.ZstdCompressor:
    """A streaming zstd compressor with a fixed window (no content size in the frame header)."""
    return zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: window_log})


REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    """`../shared/testdata`, read in place (never copied into the repo)."""
    if not SHARED_TESTDATA.is_dir():
        pytest.fail(
            f"shared test data not found at {SHARED_TESTDATA}: clone the project beside shared/"
        )
    return SHARED_TESTDATA


def benign_photo_names() -> list[str]:
    """scikit-image's bundled sample photos (benign: astronaut, coffee, chelsea the cat, ...)."""
    return ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page"]


@pytest.fixture(scope="session")
def benign_photos() -> dict[str, Image.Image]:
    """Benign RGB photos shipped inside the scikit-image package (no network, no files of ours)."""
    from skimage import data

    photos: dict[str, Image.Image] = {}
    for name in benign_photo_names():
        array = getattr(data, name)()
        image = Image.fromarray(np.asarray(array))
        photos[name] = image.convert("RGB")
    return photos


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    """Encode a Pillow image to bytes in the given format."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture
def catalog_addon(
    data_dir: Path, tmp_path: Path, benign_photos: dict[str, Image.Image]
) -> Iterator[UploadInspector]:
    """The upload addon over the real catalog with chelsea banked, driven in-process by the
    resumable-upload tests (Google, tus, SharePoint, a session's first request)."""
    from tests.test_addons_inprocess import catalog_upload_addon

    with catalog_upload_addon(data_dir, tmp_path, benign_photos["chelsea"]) as inspector:
        yield inspector


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch SCHOOLGATE_DATA_DIR so nothing touches /var/lib or the developer's data."""
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv("SCHOOLGATE_DATA_DIR", str(directory))
    monkeypatch.delenv("SCHOOLGATE_CONFIG", raising=False)
    return directory
