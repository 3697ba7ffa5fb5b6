"""Where a video's frames come from: PyAV for MP4/MOV/3GP and WebM/MKV (only the demuxer the magic
bytes named, only the codecs phones and apps produce, bounded in time and size) and Pillow for
animated GIF, WebP and PNG, each frame sampled by its display time."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial

import av
import av.error
import numpy as np
import numpy.typing as npt
from PIL import Image

from schoolgate.errors import MediaRefused
from schoolgate.media.containers import DEMUXERS as _DEMUXERS
from schoolgate.media.containers import Truncation
from schoolgate.media.decode import MediaLimits, VideoLimits, _GifFrameCounter, decode_image
from schoolgate.media.sniff import MediaType
from schoolgate.media.video_frames import FINER_FRAME_SIDE, PDQ_SIDE, scaled_size, upright

# What phones, cameras and sharing apps produce. Everything else in libavcodec stays unreachable
# from an upload: fewer parsers facing hostile input, and nothing an app would play anyway.
DECODABLE_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "h263", "mjpeg", "prores", "mpeg2video"}
    # Older and archival codecs still in use (Flash and Windows Media video, DivX 3, FFV1,
    # QuickTime Animation): refused, innocent videos in them were blocked (adversarial pass).
    | {"flv1", "wmv1", "wmv2", "wmv3", "vc1", "msmpeg4v3", "mpeg1video", "ffv1", "qtrle"}
)


# Codecs whose non-reference frames can be skipped without touching any other frame.
_SKIPPABLE = frozenset({"h264", "hevc", "mpeg4", "mpeg2video"})


_TRUNCATION_CUES = ("moov atom not found", "end of file", "truncat", "eof")


_GIF_DEFAULT_DELAY_S = 0.1  # browsers show 0-delay GIF frames for 100 ms
_SHORTEST_DELAY_S = 0.0105  # and frames of 10 ms or less (Chromium, Firefox; any animation)


@dataclass
class Budget:
    """The wall-clock budget of one hashing job. With `limits`, it grows to what they allow a
    video of the duration it declares (`allow_for`)."""

    seconds: float
    limits: VideoLimits | None = None
    started: float = field(default_factory=time.monotonic)

    def allow_for(self, duration_s: float | None) -> None:
        """Allow the time that `limits` give a video declaring `duration_s`, where that is more.
        A video that declares less than it holds stops at the declared length's budget."""
        if self.limits is not None:
            self.seconds = max(self.seconds, self.limits.budget_for(duration_s))

    def check(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed > self.seconds:
            raise MediaRefused(
                "time_budget",
                f"video analysis stopped after {elapsed:.1f} s (budget {self.seconds:g} s)",
            )


@dataclass(frozen=True)
class Frame:
    frame: int
    timestamp: float
    rgb: npt.NDArray[np.uint8]  # upright, scaled
    stored: npt.NDArray[np.uint8] | None  # as stored, when a rotation flag made them differ
    cut: bool = False  # off the time grid: a scene cut between samples (image-bank query only)
    # The frame upright at up to FINER_FRAME_SIDE, made when asked (None: `rgb` is all there is).
    finer: Callable[[], npt.NDArray[np.uint8]] | None = None


# Scene cuts between samples: a picture flashed for a few frames falls between the time-grid
# samples, so a frame whose luma differs this much (mean absolute difference of a 16x16 grid,
# 0-255) from the frame before it is also queried. Bounded per second and per video.
_CUT_THRESHOLD = 24.0
_CUTS_PER_SECOND = 4
_MAX_CUTS = 240
_LUMA_FORMATS = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
)


def _luma_grid(frame: av.VideoFrame) -> npt.NDArray[np.int16] | None:
    """A 16x16 sample of the frame's 8-bit luma plane, read without converting the frame."""
    if frame.format.name not in _LUMA_FORMATS:
        return None
    plane = frame.planes[0]
    width, height = plane.width, plane.height
    if width < 16 or height < 16:
        return None
    rows = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)
    ys = np.linspace(0, height - 1, 16).astype(np.intp)
    xs = np.linspace(0, width - 1, 16).astype(np.intp)
    return rows[np.ix_(ys, xs)].astype(np.int16)


def _frame_grid(image: Image.Image) -> npt.NDArray[np.int16]:
    """A 16x16 sample of an animation frame's luma (nearest pixels: no full conversion)."""
    return np.asarray(image.resize((16, 16), Image.Resampling.NEAREST).convert("L"), np.int16)


def _changed(grid: npt.NDArray[np.int16] | None, previous: npt.NDArray[np.int16] | None) -> bool:
    """Whether a frame's luma grid differs from the one before it as a scene cut does (a video's
    frames and an animation's alike)."""
    if grid is None or previous is None:
        return False
    return float(np.abs(grid - previous).mean()) > _CUT_THRESHOLD


class Sampler:
    """One frame per `interval` seconds of presentation time, starting with the first frame."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = 0.0

    def wants(self, timestamp: float) -> bool:
        if timestamp + 1e-6 < self.next_at:
            return False
        # The next whole interval after this frame: a gap in the stream never makes a burst.
        self.next_at = (math.floor(timestamp / self.interval + 1e-6) + 1) * self.interval
        return True

    def shown(self, start: float, end: float) -> float | None:
        """For a frame on screen from `start` until `end` (an animation's frame and its delay):
        the first sampling time it is on screen at, or None when it is on screen at none.

        Asking by display interval rather than by start time matters: a GIF's short benign
        first frame followed by a long-held second one would otherwise have its second frame
        skipped (it starts before the next sampling time, and no frame follows it).
        """
        if end <= self.next_at + 1e-6:
            return None
        at = max(start, self.next_at)
        self.wants(at)
        return at


def sparser_interval(
    interval: float, seconds_per_hash: float, duration_s: float | None, dense_samples: int | None
) -> float:
    """The sampling interval for a video of `duration_s`: `interval` (a whole number of samples
    per `seconds_per_hash`) while that is at most `dense_samples` samples in all, fewer samples
    per slot for a longer video, and never fewer than one per slot (vPDQ's own rate)."""
    if dense_samples is None or not duration_s or duration_s <= 0:
        return interval
    per_slot = max(1, round(seconds_per_hash / interval))
    fitting = max(1, math.floor(dense_samples * seconds_per_hash / duration_s))
    return seconds_per_hash / min(per_slot, fitting)


class PyAvSource:
    """Sampled frames of a video container, decoded by libavcodec within the limits.
    `dense_samples`: see `sparser_interval` (the time budget cannot cover every sample of a
    long video at the query's density)."""

    def __init__(
        self,
        limits: VideoLimits,
        budget: Budget,
        fast: bool,
        interval: float,
        stream: int = 0,
        cuts: bool = False,
        picture_limits: MediaLimits | None = None,
        dense_samples: int | None = None,
    ) -> None:
        self.limits = limits
        self.dense_samples = dense_samples
        # Caps for a still picture the container carries (cover art): those of still uploads.
        self.picture_limits = picture_limits or MediaLimits()
        self.budget = budget
        self.fast = fast
        self.interval = interval
        self.cuts = cuts  # also yield scene cuts between samples (marked `cut`)
        self.stream = stream  # which video stream of the container (players may show any)
        self.video_streams = 0
        self.codec: str | None = None
        self.width = self.height = 0
        self.fps: float | None = None
        self.duration_s: float | None = None
        self.decoded = 0

    def frames(
        self, data: bytes, media_type: MediaType, cut_short: bool = False
    ) -> Iterator[Frame]:
        """The sampled frames. `cut_short`: a container cut short is decoded as far as its data
        goes, then refused all the same (what a player shows of an unfinished upload)."""
        cut = Truncation.missing(data, media_type)
        truncated = MediaRefused("truncated", f"{media_type} data ends early: {cut}")
        if cut is not None and not cut_short:
            raise truncated
        try:
            # max_pixels reaches the decoders libavformat runs to probe the streams, too: a
            # header claiming 16000x9000 otherwise costs ~200 MB before any check of ours.
            container = av.open(
                io.BytesIO(data),
                mode="r",
                format=_DEMUXERS[media_type],
                options={"max_pixels": str(self.limits.max_pixels)},
            )
        except av.error.FFmpegError as exc:
            raise (truncated if cut is not None else refusal(media_type, exc)) from exc
        try:
            yield from self._frames(container, media_type)
        except av.error.FFmpegError as exc:
            raise (truncated if cut is not None else refusal(media_type, exc)) from exc
        except MediaRefused as exc:
            # Where the data stops, the demuxer's complaint is that it stops.
            raise (truncated if cut is not None and exc.reason == "corrupt" else exc) from exc
        finally:
            container.close()
        if cut is not None:
            raise truncated

    def _frames(
        self, container: av.container.InputContainer, media_type: MediaType
    ) -> Iterator[Frame]:
        limits = self.limits
        self.video_streams = len(container.streams.video)
        if self.video_streams == 0 and container.streams.audio:
            # A voice note or a song: nothing a player shows (cover art is a video stream).
            raise MediaRefused("no_picture", f"{media_type} holds only audio")
        if self.stream >= self.video_streams:
            raise MediaRefused("corrupt", f"{media_type} holds no video stream {self.stream}")
        stream = container.streams.video[self.stream]
        if stream.disposition & av.stream.Disposition.attached_pic:
            yield self._attached_picture(container, stream, media_type)
            return
        context = stream.codec_context
        self.codec = context.codec.canonical_name if context.codec else None
        if self.codec not in DECODABLE_CODECS:
            raise MediaRefused(
                "unsupported_codec",
                f"{media_type} video codec {self.codec or 'unknown'} is not decoded here",
            )
        self.width, self.height = context.width, context.height
        self._check_size(media_type, self.width, self.height)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.duration_s = self._declared_duration(container, stream)
        if self.duration_s is not None and self.duration_s > limits.max_duration_s:
            raise MediaRefused(
                "duration_cap",
                f"{media_type} declares {self.duration_s:,.0f} s, over the "
                f"{limits.max_duration_s:g} s cap",
            )
        self.budget.allow_for(self.duration_s)
        # libavcodec refuses to allocate any frame larger than this, whatever the stream says
        # later (a mid-stream size change is the classic way past a header check).
        context.options = {"max_pixels": str(limits.max_pixels)}
        context.thread_type = "AUTO"
        context.thread_count = limits.decode_threads
        if self.fast and self.codec in _SKIPPABLE:
            context.skip_frame = "NONREF"
            context.options = {**context.options, "skip_loop_filter": "bidir"}
        declared_frames = stream.frames
        packets = 0
        self.interval = sparser_interval(
            self.interval, limits.seconds_per_hash, self.duration_s, self.dense_samples
        )
        sampler = Sampler(self.interval)
        start: float | None = None
        previous: npt.NDArray[np.int16] | None = None
        cuts = 0
        cut_second, cuts_this_second = -1, 0
        for packet in container.demux(stream):
            self.budget.check()
            if packet.size:
                packets += 1
            for frame in packet.decode():
                index = self.decoded
                self.decoded += 1
                if self.decoded > limits.max_decoded_frames:
                    raise MediaRefused(
                        "frame_cap",
                        f"{media_type} has more than {limits.max_decoded_frames:,} frames",
                    )
                at: float | None = frame.time  # None when the stream carries no timestamps
                if at is None:
                    at = index / self.fps if self.fps else float(index)
                start = at if start is None else start
                timestamp = max(0.0, at - start)
                if timestamp > limits.max_duration_s:
                    raise MediaRefused(
                        "duration_cap",
                        f"{media_type} runs past the {limits.max_duration_s:g} s cap",
                    )
                luma = _luma_grid(frame) if self.cuts else None
                changed = _changed(luma, previous)
                previous = luma
                cut = False
                if not sampler.wants(timestamp):
                    second = int(timestamp)
                    if second != cut_second:
                        cut_second, cuts_this_second = second, 0
                    if not changed or cuts >= _MAX_CUTS or cuts_this_second >= _CUTS_PER_SECOND:
                        continue
                    cuts += 1
                    cuts_this_second += 1
                    cut = True
                self._check_size(media_type, frame.width, frame.height)
                number = round(timestamp * self.fps) if self.fps and self.fast else index
                converted = self._convert(frame, number, timestamp)
                yield replace(converted, cut=True) if cut else converted
        if declared_frames and packets < declared_frames:
            raise MediaRefused(
                "truncated",
                f"{media_type} data ends early: {packets:,} of {declared_frames:,} frames present",
            )
        if self.decoded == 0:
            raise MediaRefused("corrupt", f"{media_type} has no decodable frame")

    def _attached_picture(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        media_type: MediaType,
    ) -> Frame:
        """A still picture the container carries (an M4A's cover art, a Matroska attachment):
        one packet holding a whole JPEG, PNG or BMP file, which players show for as long as the
        audio plays. It is decoded as a still upload is (Pillow, the still caps), not by
        libavcodec, and is not held to the video caps on duration: its stream lasts as long as
        the recording it illustrates."""
        context = stream.codec_context
        codec = context.codec.canonical_name if context.codec else "unknown"
        self.codec = f"{codec} (attached picture)"
        for packet in container.demux(stream):
            self.budget.check()
            if not packet.size:
                continue
            picture = decode_image(bytes(packet), self.picture_limits)
            self.width, self.height = picture.width, picture.height
            self.decoded = 1
            image = picture.image.resize(
                scaled_size(picture.width, picture.height), Image.Resampling.BOX
            )
            return Frame(
                0, 0.0, np.asarray(image, dtype=np.uint8), None, finer=_finer(picture.image)
            )
        raise MediaRefused("corrupt", f"{media_type} attached picture holds no data")

    @staticmethod
    def _declared_duration(
        container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> float | None:
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return None

    def _check_size(self, media_type: MediaType, width: int, height: int) -> None:
        limits = self.limits
        if width < 1 or height < 1:
            raise MediaRefused(
                "corrupt",
                f"{media_type} frame size cannot be read: corrupt, or over the "
                f"{limits.max_pixels:,} pixel cap",
            )
        if width * height > limits.max_pixels or max(width, height) > limits.max_side:
            raise MediaRefused(
                "pixel_cap",
                f"{media_type} frames are {width}x{height} = {width * height:,} pixels, over the "
                f"{limits.max_pixels:,} pixel / {limits.max_side:,} px side cap",
            )

    @staticmethod
    def _convert(frame: av.VideoFrame, number: int, timestamp: float) -> Frame:
        stored = _scaled(frame, PDQ_SIDE)
        rotation = int(frame.rotation or 0)
        shown = upright(stored, rotation)
        finer = None
        if max(frame.width, frame.height) > PDQ_SIDE:
            finer = partial(_finer_frame, frame, rotation)
        return Frame(number, timestamp, shown, stored if shown is not stored else None, finer=finer)


def _scaled(frame: av.VideoFrame, side: int) -> npt.NDArray[np.uint8]:
    width, height = scaled_size(frame.width, frame.height, side)
    # libswscale's area filter averages like Pillow's box reduce on the image path.
    return np.asarray(
        frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA"),
        dtype=np.uint8,
    )


def _finer_frame(frame: av.VideoFrame, rotation: int) -> npt.NDArray[np.uint8]:
    return upright(_scaled(frame, FINER_FRAME_SIDE), rotation)


def _finer(image: Image.Image) -> Callable[[], npt.NDArray[np.uint8]] | None:
    """A still frame (an animation's, cover art) at FINER_FRAME_SIDE, where PDQ_SIDE reduces it."""
    if max(image.size) <= PDQ_SIDE:
        return None
    return lambda: np.asarray(
        image.resize(scaled_size(*image.size, FINER_FRAME_SIDE), Image.Resampling.BOX), np.uint8
    )


class AnimationSource:
    """Frames of an animated image (GIF, APNG, animated WebP) sampled by their display times,
    and every page of a multi-page TIFF."""

    def __init__(
        self, limits: VideoLimits, budget: Budget, interval: float, cuts: bool = False
    ) -> None:
        self.limits = limits
        self.budget = budget
        self.interval = interval
        self.cuts = cuts  # also give the frames that change the picture between samples
        self.width = self.height = 0
        self.duration_s: float | None = None
        self.decoded = 0

    def frames(self, data: bytes, media_type: MediaType) -> Iterator[Frame]:
        # The image path (decode_image) has already checked the canvas size and the frame count;
        # the count is checked again here for callers that come straight to the video path.
        cap = self.limits.max_decoded_frames
        if media_type is MediaType.GIF and _GifFrameCounter(data).count(cap) > cap:
            raise MediaRefused("frame_cap", f"{media_type} has more than {cap:,} frames")
        try:
            with Image.open(io.BytesIO(data)) as image:
                self.width, self.height = image.size
                count = int(getattr(image, "n_frames", 1))
                if count > cap:
                    raise MediaRefused("frame_cap", f"{media_type} has more than {cap:,} frames")
                sampler = Sampler(self.interval)
                clock = 0.0
                previous: npt.NDArray[np.int16] | None = None
                cuts = 0
                for index in range(count):
                    self.budget.check()
                    image.seek(index)
                    # Pillow 13 reads an animated WebP frame's duration only when the frame is
                    # loaded: without this every frame read as 0.1 s, so a picture held after a
                    # short first frame was never sampled (found by the adversarial pass).
                    image.load()
                    self.decoded += 1
                    delay = float(image.info.get("duration") or 0) / 1000
                    # Browsers show a frame of 10 ms or less for 100 ms (a60 F6: at 10 ms a
                    # 40-frame GIF read as 0.4 s long, and 2 of its frames were looked at).
                    delay = delay if delay > _SHORTEST_DELAY_S else _GIF_DEFAULT_DELAY_S
                    if media_type is MediaType.TIFF:
                        # Pages, not frames: each is looked at as long as the sampler needs to
                        # take it (adversarial pass a5: a banked picture on page 2 passed).
                        delay = max(delay, self.interval)
                    at = sampler.shown(clock, clock + delay)
                    grid = _frame_grid(image) if self.cuts else None
                    changed = _changed(grid, previous)
                    previous = grid
                    # A picture between samples (a loop of two frames, a flicker) is on screen
                    # all the same: its frame is asked about too (image bank), as a video's cuts.
                    cut = at is None and changed and cuts < _MAX_CUTS
                    if at is not None or cut:
                        cuts += cut
                        full = image.convert("RGB")
                        rgb = full.resize(scaled_size(*image.size), Image.Resampling.BOX)
                        shown = clock if at is None else at
                        yield Frame(index, shown, np.asarray(rgb, np.uint8), None, cut=cut,
                                    finer=_finer(full))  # fmt: skip
                    clock += delay
                    if clock > self.limits.max_duration_s:
                        break  # a looping animation's length is its frames, not a duration
                self.duration_s = clock
        except MediaRefused:
            raise
        except Exception as exc:
            raise MediaRefused(
                "corrupt", f"{media_type} animation could not be decoded: {exc}"
            ) from exc


def refusal(media_type: MediaType, exc: Exception) -> MediaRefused:
    text = str(exc)
    if any(cue in text.lower() for cue in _TRUNCATION_CUES) or isinstance(exc, av.error.EOFError):
        return MediaRefused("truncated", f"{media_type} data ends early: {text}")
    return MediaRefused("corrupt", f"{media_type} could not be decoded: {text}")


def count_video_streams(data: bytes, media_type: MediaType, limits: VideoLimits) -> int:
    """How many video streams a container holds (1 when it cannot be read): a file whose first
    stream cannot be decoded still has its other streams judged."""
    demuxer = _DEMUXERS.get(media_type)
    if demuxer is None:
        return 1
    try:
        options = {"max_pixels": str(limits.max_pixels)}
        with av.open(io.BytesIO(data), mode="r", format=demuxer, options=options) as container:
            return max(1, len(container.streams.video))
    except (av.error.FFmpegError, ValueError, OSError):
        return 1
