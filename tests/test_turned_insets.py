"""A banked picture turned a few degrees and pasted onto another photo (a phone editor's sticker
tool turns it by hand) is found on the seam maps turned back by the frame's clearest turn
(media.turns, media.inset_pictures) and looked up upright (adversarial pass a87 F1: turned 4-8
degrees at 20-40% of the side onto busy photos, 97 of 120 reached the server).

Benign pictures only: scikit-image photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from schoolgate.media.inset_pictures import inset_pictures, inset_turns
from schoolgate.media.turns import clearest_turns
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.banked_inspector import photo_inspector
from tests.support.imagery import brick_wall, encode, gravel_floor, skimage_photo

CTX = InspectionContext(client_ip="192.0.2.67", app="turned-inset-test")

inspector = photo_inspector("rocket", "astronaut")


def turned_paste(background: str, picture: str, side: int, turn: float,
                 at: tuple[int, int] = (400, 300), canvas: tuple[int, int] = (1080, 1080),
                 ) -> bytes:  # fmt: skip
    """`picture` at `side` px wide, turned `turn` degrees (counter-clockwise, as an editor's
    sticker tool), pasted with its bounding box's top left at `at` onto a photo: the JPEG."""
    inset = skimage_photo(picture).convert("RGB")
    inset = inset.resize((side, round(side * inset.height / inset.width)))
    mask = Image.new("L", inset.size, 255)
    inset, mask = (part.rotate(turn, expand=True, resample=Image.Resampling.BICUBIC)
                   for part in (inset, mask))  # fmt: skip
    photo = ImageOps.fit(skimage_photo(background).convert("RGB"), canvas)
    photo.paste(inset, at, mask)
    return encode(photo, "JPEG", quality=88)


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.mark.parametrize(
    ("background", "picture", "turn"),
    [("coins", "astronaut", 4.0), ("camera", "astronaut", -8.0), ("chelsea", "coffee", 3.0),
     ("hubble_deep_field", "coffee", -5.5), ("immunohistochemistry", "astronaut", 12.0),
     ("coins", "astronaut", -17.0), ("coins", "astronaut", 30.0), ("camera", "coffee", -35.0),
     ("hubble_deep_field", "coffee", 40.0)],
)  # fmt: skip
def test_the_clearest_turn_is_the_pasted_pictures(background: str, picture: str,
                                                  turn: float) -> None:  # fmt: skip
    turns = inset_turns(decoded(turned_paste(background, picture, 300, turn)))
    assert turns, "no turned inset found"
    assert abs(turns[0][0] - turn) <= 0.5, turns


def test_a_frame_with_no_straight_edges_has_no_turn() -> None:
    rng = np.random.default_rng(7)
    noise = rng.random((540, 540)) < 0.01  # scattered seam pixels, no line among them
    assert clearest_turns(noise, noise.copy(), 32) == []
    empty = np.zeros((540, 720), bool)
    assert clearest_turns(empty, empty.copy(), 32) == []


@pytest.mark.parametrize(
    ("background", "picture", "turn"), [("chelsea", "astronaut", 6.0), ("camera", "coffee", -4.0)]
)
def test_the_turned_crop_is_the_picture_upright(background: str, picture: str, turn: float) -> None:
    """The crop is cut from the frame turned back, so it shows the picture as it was banked."""
    crops = list(inset_pictures(decoded(turned_paste(background, picture, 320, turn))))
    original = skimage_photo(picture).convert("L")

    def likeness(crop: Image.Image) -> float:
        a = np.asarray(crop.convert("L").resize((32, 32)), np.float64).ravel()
        b = np.asarray(original.resize((32, 32)), np.float64).ravel()
        return float(np.corrcoef(a, b)[0, 1])

    assert crops
    assert max(likeness(crop) for crop in crops) > 0.85


@pytest.mark.parametrize(
    ("background", "picture", "side", "turn", "canvas"),
    [
        ("coins", "astronaut", 270, 4.0, (1080, 1080)),
        ("camera", "rocket", 360, -8.0, (1080, 1080)),
        ("chelsea", "astronaut", 300, 6.0, (1200, 900)),
        ("coins", "astronaut", 400, -3.0, (1920, 1080)),
        ("immunohistochemistry", "astronaut", 320, 10.0, (1080, 1350)),
        # A story's tall frame over a photo.
        ("coins", "rocket", 400, -5.0, (1080, 1920)),
        # Turned further (a88 F1: past 20 degrees, 282 of 342 on busy photos through).
        ("coins", "astronaut", 300, 30.0, (1080, 1080)),
        ("immunohistochemistry", "astronaut", 300, -25.0, (1080, 1080)),
    ],
)
def test_a_banked_picture_turned_and_pasted_onto_a_photo_is_blocked(
    inspector: Inspector, background: str, picture: str, side: int, turn: float,
    canvas: tuple[int, int],
) -> None:  # fmt: skip
    verdict = inspector.evaluate(turned_paste(background, picture, side, turn, canvas=canvas), CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.xfail(
    strict=True,
    reason="issue 18 open: the search tries the frame's clearest turn only, and the "
    "motorcycle's own slanted lines are clearer than the picture's edges (of a87's 120 turned "
    "files, 12 so; trying two turns found one more at twice the cost)",
)
def test_a_turned_picture_on_a_photo_of_clearer_slanted_lines_is_blocked(
    inspector: Inspector,
) -> None:
    data = turned_paste("motorcycle_left", "astronaut", 320, -12.0)
    assert inspector.evaluate(data, CTX).blocked


@pytest.mark.parametrize(
    ("background", "picture", "turn"),
    [("coins", "coffee", 4.0), ("camera", "motorcycle_left", -8.0), ("coins", "chelsea", 6.0)],
)
def test_an_innocent_picture_turned_and_pasted_onto_a_photo_is_not_blocked(
    inspector: Inspector, background: str, picture: str, turn: float
) -> None:
    verdict = inspector.evaluate(turned_paste(background, picture, 320, turn), CTX)
    assert not verdict.blocked, verdict.reasons


@pytest.mark.parametrize(
    "size", [(1920, 1080), (1080, 1920), (2000, 64), (64, 2000), (40, 40), (1, 1)]
)
def test_frames_of_any_shape_are_searched_without_error(size: tuple[int, int]) -> None:
    """A wide frame's rows are longer than its columns: the projection's room is the longer
    side's (a video's 16:9 key frames were refused as unreadable while it was the shorter's)."""
    photo = ImageOps.fit(skimage_photo("camera").convert("RGB"), size)
    inset = skimage_photo("astronaut").convert("RGB").resize((max(1, size[0] // 4),) * 2)
    photo.paste(inset.rotate(7, expand=True), (size[0] // 3, size[1] // 3))
    crops = list(inset_pictures(decoded(encode(photo, "JPEG", quality=88))))
    assert all(min(crop.size) >= 1 for crop in crops)


@pytest.mark.parametrize(("picture", "turn"), [("rocket", 30.0), ("astronaut", -20.0)])
def test_a_turned_picture_on_a_brick_wall_is_blocked(
    inspector: Inspector, picture: str, turn: float
) -> None:
    """a89 F4: a wall's own upright courses, spread over a turn of a few degrees, outscored the
    picture's edges at its true turn (the estimate was 1.5-4 degrees for 16 of 16 such pastes at
    a sixth to a fifth of the side); the frame's upright lines are scored, and a turn near
    upright that they score as well as is theirs."""
    wall = brick_wall((1080, 1080))
    inset = skimage_photo(picture).convert("RGB").resize((200, 150))
    mask = Image.new("L", inset.size, 255).rotate(turn, expand=True)
    wall.paste(inset.rotate(turn, expand=True, resample=Image.Resampling.BICUBIC), (400, 350), mask)
    verdict = inspector.evaluate(encode(wall, "PNG"), CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize(("picture", "width"), [("astronaut", 290), ("rocket", 200)])
def test_a_turned_picture_in_a_story_video_is_blocked(
    inspector: Inspector, picture: str, width: int
) -> None:
    """a90 F3: a video's key frames are sampled at 512 px on the longer side, a story's at
    288 x 512, half a still's detection scale: 7 of 12 story clips with a picture turned 30
    degrees went through whose frames, sent as stills, were blocked. The search runs on the
    finer key frame. Another picture shown so is allowed."""
    from tests.support import video_fixtures as vf

    def story(shown: str) -> bytes:
        floor = gravel_floor(1280).crop((0, 0, 760, 1280))
        inset = skimage_photo(shown).convert("RGB")
        inset = inset.resize((width, round(width * inset.height / inset.width)))
        mask = Image.new("L", inset.size, 255).rotate(30, expand=True)
        inset = inset.rotate(30, expand=True, resample=Image.Resampling.BICUBIC)
        frames = []
        for shift in range(0, 40, 2):  # two seconds at 10 frames a second, panning
            frame = floor.crop((shift, 0, shift + 720, 1280))
            frame.paste(inset, (200, 500), mask)
            frames.append(np.asarray(frame))
        return vf.encode(frames, 10)

    verdict = inspector.evaluate(story(picture), CTX)
    assert verdict.blocked, verdict.reasons
    assert not inspector.evaluate(story("chelsea"), CTX).blocked
