"""Screen-recording edits of synthetic clips (tests.video_fixtures): how a banked video looks
after a pupil records it playing in an app, or an app adds a caption, mirrors or trims it.

The layout follows tests.imagery.phone_screenshot (a 19.5:9 portrait canvas, status bar above,
home indicator below) at a third of its size, plus an app's top bar and bottom action bar.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tests.support.video_fixtures import Clip, Frame, Transform

CANVAS = (360, 780)  # 19.5:9


def _caption_frame(frame: Frame, text: str) -> Frame:
    """A solid caption bar across the middle with white text (tests.imagery._caption)."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    band = max(12, round(image.height * 0.12))
    top = (image.height - band) // 2
    draw.rectangle((0, top, image.width, top + band), fill=(0, 0, 0))
    draw.text((image.width // 10, top + band // 6), text, fill=(255, 255, 255))
    return np.asarray(image, dtype=np.uint8)


def captioned(text: str = "omg look at this") -> Transform:
    def apply(clip: Clip) -> Clip:
        return Clip(tuple(_caption_frame(f, text) for f in clip.frames), clip.fps)

    return apply


def mirrored(clip: Clip) -> Clip:
    return Clip(tuple(np.ascontiguousarray(f[:, ::-1]) for f in clip.frames), clip.fps)


def _phone_frame(frame: Frame, index: int, offset: int, theme: tuple[int, int, int]) -> Frame:
    width, height = CANVAS
    canvas = Image.new("RGB", CANVAS, theme)
    draw = ImageDraw.Draw(canvas)
    white = (255, 255, 255)
    # Status bar: clock, signal bars, battery.
    draw.text((24, 12), f"9:{41 + index // 900:02d}", fill=white)
    for i in range(4):
        draw.rectangle((272 + i * 6, 27 - i * 3, 275 + i * 6, 30), fill=white)
    draw.rounded_rectangle((300, 17, 330, 30), radius=3, outline=white, width=1)
    draw.rectangle((302, 19, 322, 28), fill=white)
    # The app's top bar: a back arrow and the poster's name on a lighter band.
    draw.rectangle((0, 44, width, 84), fill=(38, 38, 38))
    draw.text((14, 58), "<  someone_posted", fill=white)
    # The video, fitted to the width.
    video = Image.fromarray(frame)
    scale = width / video.width
    fitted = video.resize((width, round(video.height * scale)), Image.Resampling.BILINEAR)
    top = (height - fitted.height) // 2 + offset
    canvas.paste(fitted, (0, top))
    # Bottom action bar (like, comment, share) and the home indicator.
    draw.rectangle((0, height - 96, width, height - 40), fill=(38, 38, 38))
    for i, x in enumerate((40, 110, 180)):
        shape = draw.ellipse if i % 2 == 0 else draw.rectangle
        shape((x, height - 80, x + 22, height - 58), outline=white, width=2)
    draw.text((230, height - 76), "1,204 likes", fill=white)
    draw.rounded_rectangle((130, height - 14, 230, height - 10), radius=2, fill=white)
    return np.asarray(canvas, dtype=np.uint8)


def screen_recording(offset: int = 0, theme: tuple[int, int, int] = (0, 0, 0)) -> Transform:
    """The clip playing in an app on a 19.5:9 phone, recorded with the phone's status bar."""

    def apply(clip: Clip) -> Clip:
        frames = tuple(_phone_frame(f, i, offset, theme) for i, f in enumerate(clip.frames))
        return Clip(frames, clip.fps)

    return apply


def panning_frames(
    seed: int, seconds: float = 8.0, fps: int = 15, size: tuple[int, int] = (320, 180)
) -> Clip:
    """A camera slowly panning over benign textured scenes (tests.imagery.procedural_scene),
    cutting to another scene every 2 s: the texture real footage has and the soft synthetic
    clips of tests.video_fixtures lack (local features need corners)."""
    from tests.support.imagery import procedural_scene

    width, height = size
    # Scene kinds 3 and 4 (shapes on noisy gradients): kinds 0-2 are clouds, stripes and text
    # pages, which have their own tests in tests/test_robust.py and few stable video corners.
    scenes = [
        procedural_scene(seed * 20 + 3 + 5 * (n // 2) + n % 2, (width * 2, height * 2))
        for n in range(int(np.ceil(seconds / 2)))
    ]
    noise = np.random.default_rng(seed)
    frames: list[Frame] = []
    for index in range(int(seconds * fps)):
        t = index / fps
        scene = scenes[min(int(t / 2), len(scenes) - 1)]
        x = round((t % 2) * 0.25 * width)  # an eighth of the scene per second
        y = round((t % 2) * 0.1 * height)
        view = scene.convert("RGB").crop((x, y, x + round(width * 1.5), y + round(height * 1.5)))
        pixels = np.asarray(view.resize(size, Image.Resampling.BILINEAR), dtype=np.int16)
        pixels = pixels + noise.integers(-4, 5, pixels.shape, dtype=np.int16)
        frames.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return Clip(tuple(frames), fps)
