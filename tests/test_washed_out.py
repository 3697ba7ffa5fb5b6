"""Washed-out copies (contrast turned down) of banked pictures and videos are matched
(adversarial pass a4: a banked video at contrast x0.2 passed, a picture at x0.05 too): PDQ keeps
their bits but gives them a quality under 50, which matching ignores. Queries are also hashed with
their luma stretched; banks keep the reference hash. Innocent washed-out media stays allowed.

Benign media only: scikit-image photos and the synthetic scene clips of tests.video_fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from schoolgate.media.hashing import pdq_hash, stretched_pdq
from tests.conftest import encode
from tests.support import video_fixtures as vf
from tests.test_cli_scan import schoolgate


def washed(pixels: npt.NDArray[np.uint8], contrast: float) -> npt.NDArray[np.uint8]:
    return (128 + (pixels.astype(np.float32) - 128) * contrast).astype(np.uint8)


@pytest.fixture
def config(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "hash-only.yaml"
    path.write_text("classifier:\n  models: []\n")
    return path


def verdicts(config: Path, *files: Path) -> dict[str, dict[str, object]]:
    scanned = schoolgate("scan", "--json", *map(str, files), config=config)
    return {Path(v["file"]).name: v for v in map(json.loads, scanned.stdout.splitlines())}


def test_washed_out_copies_of_a_banked_video_are_blocked_and_others_are_not(
    tmp_path: Path, config: Path
) -> None:
    clip = vf.scene_frames(seed=31, seconds=6)
    other = vf.scene_frames(seed=33, seconds=6)
    (tmp_path / "incident.mp4").write_bytes(vf.encode(clip.frames, clip.fps, crf=18))
    added = schoolgate("hashes", "add", str(tmp_path / "incident.mp4"), "--bank", "inc",
                       config=config)  # fmt: skip
    assert added.returncode == 0, added.stderr
    files = []
    cases = [("copy", clip, 0.2), ("copy", clip, 0.1), ("other", other, 0.2), ("other", other, 0.1)]
    for kind, source, contrast in cases:
        name = f"{kind}-{contrast}"
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(vf.encode([washed(f, contrast) for f in source.frames], source.fps))
        files.append(path)
    found = verdicts(config, *files)
    assert found["copy-0.2.mp4"]["decision"] == "block", found["copy-0.2.mp4"]
    assert found["copy-0.1.mp4"]["decision"] == "block", found["copy-0.1.mp4"]
    assert found["other-0.2.mp4"]["decision"] == "allow", found["other-0.2.mp4"]
    assert found["other-0.1.mp4"]["decision"] == "allow", found["other-0.1.mp4"]


def test_washed_out_copies_of_a_banked_photo_are_blocked_and_others_are_not(
    tmp_path: Path, config: Path, benign_photos: dict[str, Image.Image]
) -> None:
    photo = np.asarray(benign_photos["astronaut"])
    (tmp_path / "incident.jpg").write_bytes(encode(Image.fromarray(photo), "JPEG", quality=90))
    added = schoolgate("hashes", "add", str(tmp_path / "incident.jpg"), "--bank", "inc",
                       config=config)  # fmt: skip
    assert added.returncode == 0, added.stderr
    files = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        pixels = washed(np.asarray(benign_photos[name]), 0.04)
        path = tmp_path / f"{name}-0.04.jpg"
        path.write_bytes(encode(Image.fromarray(pixels), "JPEG", quality=90))
        files.append(path)
    found = verdicts(config, *files)
    assert found["astronaut-0.04.jpg"]["decision"] == "block", found["astronaut-0.04.jpg"]
    for name in ("coffee", "chelsea", "rocket"):
        assert found[f"{name}-0.04.jpg"]["decision"] == "allow", found[f"{name}-0.04.jpg"]


def test_the_bank_keeps_the_reference_hash_and_flat_pictures_are_not_stretched(
    benign_photos: dict[str, Image.Image],
) -> None:
    faded = Image.fromarray(washed(np.asarray(benign_photos["astronaut"]), 0.04))
    assert pdq_hash(faded).quality < 50  # the reference hash, unchanged: hash lists interchange
    (stretched,) = stretched_pdq(faded, dihedral=False)
    assert stretched.quality >= 50
    assert stretched.distance(pdq_hash(benign_photos["astronaut"])) <= 31
    noise = np.random.default_rng(5).integers(126, 131, (200, 200, 3), dtype=np.uint8)
    assert stretched_pdq(Image.fromarray(noise), dihedral=True) == []
