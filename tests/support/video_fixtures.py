"""Synthetic, benign test videos made with PyAV: moving shapes and text over soft colour fields
with a little noise. Nothing is downloaded and no video file is committed; tests make them.

`scene_frames(seed, ...)` draws a clip's frames; `encode(frames, ...)` writes them with any codec
PyAV ships; `transform`s make the edited copies (re-encoded, resized, letterboxed, trimmed, sped
up) that the video matcher must still recognise.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Clip:
    """Frames of a synthetic clip and its frame rate."""

    frames: tuple[Frame, ...]
    fps: int

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


def _field(rng: np.random.Generator, width: int, height: int) -> Frame:
    """A soft colour field: a few large blurred blobs (low frequencies are what PDQ sees)."""
    small = rng.integers(0, 256, (4, 6, 3)).astype(np.uint8)
    image = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def scene_frames(
    seed: int,
    seconds: float = 8.0,
    fps: int = 15,
    size: tuple[int, int] = (320, 180),
    scene_seconds: float = 2.0,
) -> Clip:
    """A clip of `seconds` whose background changes every `scene_seconds` (so every second of
    it looks different from the others), with shapes moving across it and a caption."""
    rng = np.random.default_rng(seed)
    width, height = size
    scenes = max(1, int(np.ceil(seconds / scene_seconds)))
    fields = [_field(rng, width, height) for _ in range(scenes)]
    shapes = [
        (
            tuple(int(c) for c in rng.integers(0, 256, 3)),
            rng.uniform(0.1, 0.9, 2),
            rng.uniform(-0.08, 0.08, 2),
            float(rng.uniform(0.08, 0.2)),
            bool(rng.integers(0, 2)),
        )
        for _ in range(4)
    ]
    noise_rng = np.random.default_rng(seed + 1)
    frames: list[Frame] = []
    for index in range(int(seconds * fps)):
        t = index / fps
        canvas = Image.fromarray(fields[min(int(t / scene_seconds), scenes - 1)], "RGB")
        draw = ImageDraw.Draw(canvas)
        for colour, start, velocity, radius, square in shapes:
            x, y = (start + velocity * t) % 1.0
            r = radius * height
            box = (x * width - r, y * height - r, x * width + r, y * height + r)
            (draw.rectangle if square else draw.ellipse)(box, fill=colour)
        draw.text((8, height - 20), f"clip {seed} t={t:05.2f}", fill=(255, 255, 255))
        pixels = np.asarray(canvas, dtype=np.int16)
        pixels = pixels + noise_rng.integers(-6, 7, pixels.shape, dtype=np.int16)
        frames.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return Clip(tuple(frames), fps)


# Container per codec, and encoder options that keep the tests quick.
_CONTAINERS = {
    "libx264": "mp4",
    "libx265": "mp4",
    "libvpx": "webm",
    "libvpx-vp9": "webm",
    "libsvtav1": "mp4",
    "mpeg4": "mp4",
}
_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libsvtav1": {"preset": "12"},
}


def encode(
    frames: Iterable[Frame],
    fps: int,
    codec: str = "libx264",
    *,
    bitrate: int | None = None,
    crf: int | None = None,
    fmt: str | None = None,
    gop: int | None = None,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
) -> bytes:
    """Encode RGB frames into a container in memory (mp4 for H.264/HEVC/AV1, webm for VPx)."""
    buffer = io.BytesIO()
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    container_format = fmt or _CONTAINERS.get(codec, "mp4")
    with av.open(buffer, "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        if bitrate:
            stream.bit_rate = bitrate
        if gop:
            stream.codec_context.gop_size = gop
        opts = dict(_OPTIONS.get(codec, {}))
        if crf is not None:
            opts["crf"] = str(crf)
        stream.options = {**opts, **(options or {})}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for pixels in (first, *frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(pixels[: stream.height, : stream.width]), format="rgb24"
            )
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def decode(data: bytes) -> Clip:
    """Every frame of a video as RGB (test helper for making edited copies)."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate or 15))
        frames = tuple(
            np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8)
            for f in container.decode(stream)
        )
    return Clip(frames, fps)


# ---------------------------------------------------------------------------------------------
# Edits a pupil (or an app) makes to a clip before sharing it again

Transform = Callable[[Clip], Clip]


def resized(width: int, height: int) -> Transform:
    def apply(clip: Clip) -> Clip:
        return Clip(
            tuple(
                np.asarray(
                    Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR),
                    dtype=np.uint8,
                )
                for f in clip.frames
            ),
            clip.fps,
        )

    return apply


def letterboxed(width: int, height: int, colour: Sequence[int] = (0, 0, 0)) -> Transform:
    """The clip scaled to fit inside a `width` x `height` frame, with bars around it."""

    def apply(clip: Clip) -> Clip:
        src_h, src_w = clip.frames[0].shape[:2]
        scale = min(width / src_w, height / src_h)
        inner = (round(src_w * scale), round(src_h * scale))
        left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
        frames = []
        for f in clip.frames:
            canvas = np.empty((height, width, 3), dtype=np.uint8)
            canvas[:] = colour
            content = Image.fromarray(f).resize(inner, Image.Resampling.BILINEAR)
            canvas[top : top + inner[1], left : left + inner[0]] = np.asarray(content)
            frames.append(canvas)
        return Clip(tuple(frames), clip.fps)

    return apply


def trimmed(start_s: float, end_s: float) -> Transform:
    """The first `start_s` and the last `end_s` seconds cut off."""

    def apply(clip: Clip) -> Clip:
        first = round(start_s * clip.fps)
        last = len(clip.frames) - round(end_s * clip.fps)
        return Clip(clip.frames[first:last], clip.fps)

    return apply


def sped_up(factor: float) -> Transform:
    """Played `factor` times faster at the same frame rate (frames dropped)."""

    def apply(clip: Clip) -> Clip:
        count = int(len(clip.frames) / factor)
        return Clip(tuple(clip.frames[int(i * factor)] for i in range(count)), clip.fps)

    return apply


def rotated_storage(clip: Clip, rotation: int) -> Clip:
    """Frames stored turned against `rotation`, as phones store portrait video."""
    turns = (-round(rotation / 90)) % 4
    return Clip(tuple(np.ascontiguousarray(np.rot90(f, turns)) for f in clip.frames), clip.fps)


def gif(clip: Clip, every: int = 3, fmt: str = "GIF") -> bytes:
    """An animated GIF (or WEBP, PNG) of every `every`-th frame, timed to the clip."""
    images = [Image.fromarray(f) for f in clip.frames[::every]]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format=fmt,
        save_all=True,
        append_images=images[1:],
        duration=round(1000 * every / clip.fps),
        loop=0,
    )
    return buffer.getvalue()


def two_video_streams(first: Clip, second: Clip) -> bytes:
    """One MP4 holding two video streams; players may show either (or the second as default)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        streams = []
        for clip in (first, second):
            stream = out.add_stream("libx264", rate=clip.fps)
            assert isinstance(stream, av.VideoStream)
            height, width = clip.frames[0].shape[:2]
            stream.width, stream.height = width - width % 2, height - height % 2
            stream.pix_fmt = "yuv420p"
            streams.append((stream, clip))
        for index in range(min(len(first.frames), len(second.frames))):
            for stream, clip in streams:
                pixels = np.ascontiguousarray(clip.frames[index][: stream.height, : stream.width])
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    out.mux(packet)
        for stream, _ in streams:
            for packet in stream.encode():
                out.mux(packet)
    return buffer.getvalue()
