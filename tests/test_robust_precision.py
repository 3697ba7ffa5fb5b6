"""Precision of the robust tier (issue 18): it must match the *picture*, not what surrounds it.

Banked the way a DSL banks (`schoolgate hashes add`) and judged the way the proxy judges
(`Inspector.evaluate`, no classifier):

- screenshots: chat-app screenshots (two synthetic apps, light and dark) are banked; other
  screenshots of the same apps, showing other photos, must not be blocked;
- overlays: one picture of a pair sharing a surround (thin lines, a watermark, a frame, a meme
  template, a fixed background, a drawn figure before a fixed background) is banked; the other,
  a different picture, must not be blocked;
- recall kept: a banked screenshot's photo is blocked on its own and inside the other app's
  screenshot; a banked plain photo is blocked when it arrives as a chat screenshot.

A reduced but representative subset of `benchmarks/bench_precision.py` (which runs the full sizes
and prints the figures). Every picture is benign: tiles of package-shipped photos, procedural
scenes and Pillow drawings (tests/support/screens.py).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.cli import app as cli
from schoolgate.config import load_config
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.imagery import encode, real_photos
from tests.support.screens import (
    APPS,
    STYLES,
    THEMES,
    chat_screenshot,
    distinct_pictures,
    overlay_pairs,
    overlay_pictures,
    spread_bankable,
)

CTX = InspectionContext(client_ip="192.0.2.61", app="precision-test")
BANKED_SHOTS = 12  # 3 per app and theme
OTHER_SHOTS = 80  # 20 per app and theme
OVERLAYS_PER_KIND = 6
# Issue 18's recall target for a banked screenshot's photo: >= 90% (here, at most 1 of 12 missed).
RECALL_MISSES = BANKED_SHOTS // 10
BANKED_PHOTOS = ("astronaut", "coffee", "rocket", "motorcycle_left")


@dataclass
class Bank:
    inspector: Inspector
    folder: Path

    def blocked(self, image: Image.Image, fmt: str = "PNG") -> bool:
        data = encode(image, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return self.inspector.evaluate(data, CTX).blocked


@contextlib.contextmanager
def _bank(tmp: Path, items: dict[str, bytes], config_path: Path | None = None) -> Iterator[Bank]:
    """Bank `items` (file name -> bytes) with `schoolgate hashes add` in a scratch data dir
    (configured by `config_path`, where given)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCHOOLGATE_DATA_DIR", str(tmp))
        patch.delenv("SCHOOLGATE_CONFIG", raising=False)
        if config_path is None:
            config_path = tmp / "precision.yaml"
            config_path.write_text("classifier:\n  models: []\n")
        files = []
        for name, data in items.items():
            (tmp / name).write_bytes(data)
            files.append(str(tmp / name))
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["hashes", "add", *files, "--bank", "incident-precision",
                             "--config", str(config_path)])  # fmt: skip
        assert code == 0
        inspector = Inspector.from_config(load_config(config_path), with_audit=False)
        try:
            yield Bank(inspector, tmp)
        finally:
            inspector.close()


# ---------------------------------------------------------------------------------------------
# Pictures: banked and other screenshot photos are disjoint tiles and scenes


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return distinct_pictures(BANKED_SHOTS + OTHER_SHOTS)


@pytest.fixture(scope="module")
def banked_indices(pictures: list[Image.Image]) -> list[int]:
    """Photo tiles with texture enough to bank, spread over the photos."""
    return spread_bankable(pictures, BANKED_SHOTS)


@pytest.fixture(scope="module")
def shots_bank(tmp_path_factory: pytest.TempPathFactory, pictures: list[Image.Image],
               banked_indices: list[int]) -> Iterator[Bank]:  # fmt: skip
    items = {}
    for number, index in enumerate(banked_indices):
        app, theme = STYLES[number % len(STYLES)]
        shot = chat_screenshot(pictures[index], app, theme, seed=number)
        items[f"shot-{number}-{app}-{theme}.png"] = encode(shot, "PNG")
    with _bank(tmp_path_factory.mktemp("shots"), items) as bank:
        yield bank


def test_other_screenshots_of_the_same_apps_are_not_blocked(
    shots_bank: Bank, pictures: list[Image.Image], banked_indices: list[int]
) -> None:
    banked = set(banked_indices)
    others = [i for i in range(len(pictures)) if i not in banked]
    blocked = []
    for number, index in enumerate(others):
        app, theme = STYLES[number % len(STYLES)]
        shot = chat_screenshot(pictures[index], app, theme, seed=100 + number)
        if shots_bank.blocked(shot):
            blocked.append(f"picture {index} in {app}/{theme}")
    assert not blocked, f"{len(blocked)} of {len(others)} false blocks: {blocked}"


def test_banked_screenshot_photo_is_blocked_plain(
    shots_bank: Bank, pictures: list[Image.Image], banked_indices: list[int]
) -> None:
    missed = [i for i in banked_indices if not shots_bank.blocked(pictures[i], "JPEG")]
    assert len(missed) <= RECALL_MISSES, f"{len(missed)} of {BANKED_SHOTS} missed: {missed}"


def test_banked_screenshot_photo_is_blocked_inside_the_other_app(
    shots_bank: Bank, pictures: list[Image.Image], banked_indices: list[int]
) -> None:
    missed = []
    for number, index in enumerate(banked_indices):
        app = STYLES[number % len(STYLES)][0]
        other_app = next(a for a in APPS if a != app)
        other_theme = THEMES[(number // len(STYLES)) % len(THEMES)]
        shot = chat_screenshot(pictures[index], other_app, other_theme, seed=500 + number)
        if not shots_bank.blocked(shot):
            missed.append(f"picture {index} banked in {app}, shown in {other_app}/{other_theme}")
    assert len(missed) <= RECALL_MISSES, f"{len(missed)} of {BANKED_SHOTS} missed: {missed}"


# ---------------------------------------------------------------------------------------------
# Different pictures sharing a surround


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, Image.Image, Image.Image]]:
    # A bank of their own; every kind gets photo tiles (the pairs are interleaved).
    pictures = distinct_pictures(overlay_pictures(OVERLAYS_PER_KIND) + 40)[40:]
    return overlay_pairs(OVERLAYS_PER_KIND, pictures)


@pytest.fixture(scope="module")
def overlay_bank(tmp_path_factory: pytest.TempPathFactory,
                 pairs: list[tuple[str, Image.Image, Image.Image]]) -> Iterator[Bank]:  # fmt: skip
    items = {f"{kind}-{n}.jpg": encode(a, "JPEG", quality=92) for n, (kind, a, _) in
             enumerate(pairs)}  # fmt: skip
    with _bank(tmp_path_factory.mktemp("overlays"), items) as bank:
        yield bank


def test_banked_overlay_pictures_are_blocked(
    overlay_bank: Bank, pairs: list[tuple[str, Image.Image, Image.Image]]
) -> None:
    """The bank works: each banked picture itself, re-encoded, is blocked."""
    missed = [f"{kind}-{n}" for n, (kind, a, _) in enumerate(pairs)
              if not overlay_bank.blocked(a, "JPEG")]  # fmt: skip
    assert not missed


# Lines, watermarks, frames and meme templates are told apart (schoolgate.media.content_grid and
# robust._same_picture). A subject before the same background is not always: a photographed
# subject is, where it shows unrelated photographic content, but a drawn flat-colour figure, a
# plain or repetitive subject (a colour-wheel quadrant, a brick tile) reads to the content check
# as a different sticker over the same picture, which a copy may carry. Strict: red when fixed.
_SUBJECT = ("issue 18 open: a plain, repetitive or drawn subject before the same background "
            "reads as a sticker over the banked picture")  # fmt: skip


@pytest.mark.parametrize(
    "kind",
    [
        "lines",
        "watermark",
        "frame",
        "meme",
        pytest.param("background", marks=pytest.mark.xfail(strict=True, reason=_SUBJECT)),
        pytest.param("figure", marks=pytest.mark.xfail(strict=True, reason=_SUBJECT)),
    ],
)
def test_a_different_picture_with_the_same_overlay_is_not_blocked(
    overlay_bank: Bank, pairs: list[tuple[str, Image.Image, Image.Image]], kind: str
) -> None:
    of_kind = [(n, b) for n, (k, _, b) in enumerate(pairs) if k == kind]
    blocked = [n for n, b in of_kind if overlay_bank.blocked(b, "JPEG")]
    assert not blocked, f"{len(blocked)} of {len(of_kind)} {kind} pairs blocked: {blocked}"


# ---------------------------------------------------------------------------------------------
# A banked plain photo arriving as a chat screenshot


@pytest.fixture(scope="module")
def photos_bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    photos = real_photos()
    items = {f"{name}.jpg": encode(photos[name], "JPEG", quality=92) for name in BANKED_PHOTOS}
    with _bank(tmp_path_factory.mktemp("photos"), items) as bank:
        yield bank


@pytest.mark.parametrize(("app", "theme"), STYLES)
def test_banked_photo_is_blocked_as_a_chat_screenshot(
    photos_bank: Bank, app: str, theme: str
) -> None:
    photos = real_photos()
    shots = {name: chat_screenshot(photos[name], app, theme, seed)
             for seed, name in enumerate(BANKED_PHOTOS)}  # fmt: skip
    missed = [name for name, shot in shots.items() if not photos_bank.blocked(shot)]
    assert not missed, f"missed in {app}/{theme}: {missed}"
