"""Video frame hashes compatible with Meta's vPDQ, decoded with PyAV under hard bounds.

vPDQ hashes one frame per `seconds_per_hash` with PDQ and annotates it with its frame number,
quality and timestamp (`frame,quality,pdqhex,timestamp` lines, timestamps to 3 decimals). The
reference (ThreatExchange vpdq) picks every int(fps)-th decoded frame; this module picks the first
frame at or after each whole second of presentation time, which is the same frame for constant
frame rates and stays one per second for variable-rate phone video and for GIF animations.

Decoding is bounded before and while it runs: the demuxer is the one the magic bytes named, only
common camera/app codecs are decoded, the declared size and duration are checked before the first
frame and every frame is checked again (and libavcodec's own `max_pixels` refuses larger buffers),
the number of decoded frames is capped, and a time budget stops slow input with what was hashed so
far. Every failure is a `MediaRefused` with a stable reason, as for images.

`fast` decoding (the proxy's) skips frames no other frame refers to (B-frames) and the loop
filter on the remaining B-frames: about 2-3x faster on H.264, bit-identical on every P/I frame.
A sampling target that falls on a skipped frame takes the next decoded one (<= 0.1 s later).
Banking (`hashes add`/`compute`) decodes every frame, like the reference.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import av.error
import numpy as np
import numpy.typing as npt
import pdqhash
from PIL import Image

from schoolgate.errors import MediaRefused
from schoolgate.media.decode import MediaKind, MediaType, VideoLimits, _read_ebml_vint, sniff
from schoolgate.media.hashing import PdqHash, pdq_dihedral
from schoolgate.media.normalise import analysis_views

PDQ_SIDE = 512  # frames are scaled to this longer side before PDQ, as images are
TIMESTAMP_DECIMALS = 3  # the reference's output precision (vpdqio.cpp)

# The demuxer the magic bytes named, so a file cannot steer libavformat into another one (an
# HLS playlist with file:// entries is the classic).
_DEMUXERS: dict[MediaType, str] = {
    MediaType.MP4: "mov",
    MediaType.MOV: "mov",
    MediaType.THREEGP: "mov",
    MediaType.WEBM: "matroska",
    MediaType.MKV: "matroska",
}
# What phones, cameras and sharing apps produce. Everything else in libavcodec stays unreachable
# from an upload: fewer parsers facing hostile input, and nothing an app would play anyway.
DECODABLE_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "h263", "mjpeg", "prores", "mpeg2video"}
)
# Codecs whose non-reference frames can be skipped without touching any other frame.
_SKIPPABLE = frozenset({"h264", "hevc", "mpeg4", "mpeg2video"})
_TRUNCATION_CUES = ("moov atom not found", "end of file", "truncat", "eof")
_GIF_DEFAULT_DELAY_S = 0.1  # browsers show 0-delay GIF frames for 100 ms


@dataclass(frozen=True)
class VpdqFeature:
    """One sampled frame: PDQ hex and quality, frame number and presentation time in seconds.

    `variants` are extra query-side hashes of the same frame (letterbox bars cropped, stored
    orientation of a rotated video) and `slot` the 1-per-`seconds_per_hash` sample the frame
    stands for (several frames share one when a query is sampled densely); neither is written
    to vPDQ files.
    """

    frame: int
    quality: int
    hex: str
    timestamp: float
    variants: tuple[str, ...] = ()
    slot: int | None = None

    def line(self) -> str:
        """The reference text line: `frame,quality,pdqhex,timestamp` (3 decimals)."""
        return f"{self.frame},{self.quality},{self.hex},{self.timestamp:.{TIMESTAMP_DECIMALS}f}"


@dataclass(frozen=True)
class SampledFrame:
    """A sampled frame, upright, RGB, longer side at most PDQ_SIDE."""

    frame: int
    timestamp: float
    rgb: npt.NDArray[np.uint8]

    def image(self) -> Image.Image:
        return Image.fromarray(self.rgb, "RGB")


@dataclass(frozen=True)
class StillQuery:
    """A sampled frame's hashes for the IMAGE bank: the 8 dihedral PDQ variants of the whole
    frame and of its content box(es) (`normalise.analysis_views`), so a banked photo shown for a
    moment inside an animation or a slideshow clip is found as it would be in a still upload."""

    frame: int
    timestamp: float
    hashes: tuple[PdqHash, ...]


@dataclass(frozen=True)
class VideoHashes:
    """What hashing a video found. `refused` is set when decoding stopped early (truncated data,
    time budget, a cap): `features` then hold the frames hashed before that point."""

    media_type: MediaType
    codec: str | None
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    decoded_frames: int
    features: tuple[VpdqFeature, ...]
    kept: tuple[SampledFrame, ...] = ()
    refused: MediaRefused | None = None
    stills: tuple[StillQuery, ...] = ()
    key_frames: tuple[SampledFrame, ...] = ()  # spread over the video, for local features

    def lines(self) -> str:
        """The whole vPDQ text (one line per sampled frame)."""
        return "".join(f"{feature.line()}\n" for feature in self.features)


# ---------------------------------------------------------------------------------------------
# Frame geometry


def _scaled_size(width: int, height: int, side: int = PDQ_SIDE) -> tuple[int, int]:
    longer = max(width, height)
    if longer <= side:
        return width, height
    scale = side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def upright(rgb: npt.NDArray[np.uint8], rotation: int) -> npt.NDArray[np.uint8]:
    """Apply a display-matrix rotation (degrees counter-clockwise, as libavutil reports it)."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class Letterbox:
    """Finds uniform bars (letterbox or pillarbox) around a frame's content.

    A copy re-shared in another aspect ratio (a landscape clip in a portrait story, a screen
    recording) gets bars that change PDQ beyond any useful distance; hashing the content inside
    them as well recovers the match. Bars must be flat and on both opposite sides, so ordinary
    frames with a plain sky or wall are rarely cropped (and a wrong crop only adds a variant).
    """

    MAX_LINE_STD = 6.0
    MIN_BAR_SHARE = 0.03
    MIN_CONTENT_SHARE = 0.2

    @classmethod
    def content_box(cls, rgb: npt.NDArray[np.uint8]) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) of the content inside bars, or None without bars."""
        height, width = rgb.shape[:2]
        # Every step-th pixel is plenty to find bars, and ~20x cheaper than every pixel.
        step = max(1, min(height, width) // 96)
        luma = rgb[::step, ::step].astype(np.float32).mean(axis=2)
        top, bottom, left, right = (
            bars * step for pair in (cls._bars(luma), cls._bars(luma.T)) for bars in pair
        )
        rows = top >= cls.MIN_BAR_SHARE * height and bottom >= cls.MIN_BAR_SHARE * height
        cols = left >= cls.MIN_BAR_SHARE * width and right >= cls.MIN_BAR_SHARE * width
        if not rows and not cols:
            return None
        box = (
            top if rows else 0,
            height - bottom if rows else height,
            left if cols else 0,
            width - right if cols else width,
        )
        if (box[1] - box[0]) < cls.MIN_CONTENT_SHARE * height or (
            box[3] - box[2]
        ) < cls.MIN_CONTENT_SHARE * width:
            return None  # a flat frame (black, one colour), not content inside bars
        return box

    @classmethod
    def _bars(cls, luma: npt.NDArray[np.float32]) -> tuple[int, int]:
        """Flat lines at the start and at the end of axis 0 (rows of `luma`)."""
        flat = luma.std(axis=1) <= cls.MAX_LINE_STD
        means = luma.mean(axis=1)
        return cls._run(flat, means), cls._run(flat[::-1], means[::-1])

    @staticmethod
    def _run(flat: npt.NDArray[np.bool_], means: npt.NDArray[np.float32]) -> int:
        if not flat.size or not flat[0]:
            return 0
        # Bars are one colour: stop at the first line that is not flat or not the same colour.
        same = np.abs(means - means[0]) <= 12.0
        stops = np.flatnonzero(~(flat & same))
        return int(stops[0]) if stops.size else int(flat.size)


class Truncation:
    """Whether a container's top-level structure runs past the end of the data.

    A cut-off upload (an interrupted transfer, or a deliberate cut to make decoding fail) is
    named as such instead of surfacing as a generic demuxer error. Cheap: top-level boxes only.
    """

    MAX_BOXES = 10_000

    @classmethod
    def missing(cls, data: bytes, media_type: MediaType) -> str | None:
        """What is cut off, or None when the structure is whole."""
        if _DEMUXERS.get(media_type) == "mov":
            return cls._iso_bmff(data)
        if _DEMUXERS.get(media_type) == "matroska":
            return cls._matroska(data)
        return None

    @classmethod
    def _iso_bmff(cls, data: bytes) -> str | None:
        pos = 0
        for _ in range(cls.MAX_BOXES):
            if pos + 8 > len(data):
                return f"box header at byte {pos:,}" if pos < len(data) else None
            size = int.from_bytes(data[pos : pos + 4], "big")
            kind = data[pos + 4 : pos + 8].decode("latin-1")
            if size == 1:
                if pos + 16 > len(data):
                    return f"box {kind!r} header at byte {pos:,}"
                size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            elif size == 0:
                return None  # the last box runs to the end of the file
            if size < 8:
                return None  # malformed, not truncated: the demuxer will say so
            if pos + size > len(data):
                return f"box {kind!r} declares {size:,} bytes, {len(data) - pos:,} present"
            pos += size
        return None

    @staticmethod
    def _matroska(data: bytes) -> str | None:
        try:
            _, pos = _read_ebml_vint(data, 0, keep_marker=True)
            header, pos = _read_ebml_vint(data, pos, keep_marker=False)
            pos += header
            element, pos = _read_ebml_vint(data, pos, keep_marker=True)
            start = pos
            size, pos = _read_ebml_vint(data, pos, keep_marker=False)
        except ValueError:
            return None
        unknown = (1 << (7 * (pos - start))) - 1  # all-ones: size unknown (live streams)
        if element == 0x18538067 and size != unknown and pos + size > len(data):
            return f"segment declares {size:,} bytes, {len(data) - pos:,} present"
        return None


_Box = tuple[int, int, int, int]
# Which of a still's dihedral hashes (hashing.DIHEDRAL_TRANSFORMS order) a video frame is also
# matched with against banked videos: as shown, and mirrored left-right (front cameras and
# "flip" edits). Quarter turns of video are what rotation flags are for; each variant costs a
# lookup per frame in the video index.
_VPDQ_DIHEDRAL = (0, 5)


def _pdq(rgb: npt.NDArray[np.uint8]) -> tuple[str, int]:
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return bytes(np.packbits(bits.astype(np.uint8))).hex(), int(quality)


# ---------------------------------------------------------------------------------------------
# Frame sources


@dataclass
class _Budget:
    """The wall-clock budget of one hashing job."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed > self.seconds:
            raise MediaRefused(
                "time_budget",
                f"video analysis stopped after {elapsed:.1f} s (budget {self.seconds:g} s)",
            )


@dataclass(frozen=True)
class _Frame:
    frame: int
    timestamp: float
    rgb: npt.NDArray[np.uint8]  # upright, scaled
    stored: npt.NDArray[np.uint8] | None  # as stored, when a rotation flag made them differ


class _Sampler:
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


class _PyAvSource:
    """Sampled frames of a video container, decoded by libavcodec within the limits."""

    def __init__(self, limits: VideoLimits, budget: _Budget, fast: bool, interval: float) -> None:
        self.limits = limits
        self.budget = budget
        self.fast = fast
        self.interval = interval
        self.codec: str | None = None
        self.width = self.height = 0
        self.fps: float | None = None
        self.duration_s: float | None = None
        self.decoded = 0

    def frames(self, data: bytes, media_type: MediaType) -> Iterator[_Frame]:
        cut = Truncation.missing(data, media_type)
        if cut is not None:
            raise MediaRefused("truncated", f"{media_type} data ends early: {cut}")
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
            raise _refusal(media_type, exc) from exc
        try:
            yield from self._frames(container, media_type)
        except av.error.FFmpegError as exc:
            raise _refusal(media_type, exc) from exc
        finally:
            container.close()

    def _frames(
        self, container: av.container.InputContainer, media_type: MediaType
    ) -> Iterator[_Frame]:
        limits = self.limits
        if not container.streams.video:
            raise MediaRefused("corrupt", f"{media_type} holds no video stream")
        stream = container.streams.video[0]
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
        sampler = _Sampler(self.interval)
        start: float | None = None
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
                if not sampler.wants(timestamp):
                    continue
                self._check_size(media_type, frame.width, frame.height)
                number = round(timestamp * self.fps) if self.fps and self.fast else index
                yield self._convert(frame, number, timestamp)
        if declared_frames and packets < declared_frames:
            raise MediaRefused(
                "truncated",
                f"{media_type} data ends early: {packets:,} of {declared_frames:,} frames present",
            )
        if self.decoded == 0:
            raise MediaRefused("corrupt", f"{media_type} has no decodable frame")

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
    def _convert(frame: av.VideoFrame, number: int, timestamp: float) -> _Frame:
        width, height = _scaled_size(frame.width, frame.height)
        # libswscale's area filter averages like Pillow's box reduce on the image path.
        stored = np.asarray(
            frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA"),
            dtype=np.uint8,
        )
        rotation = int(frame.rotation or 0)
        shown = upright(stored, rotation)
        return _Frame(number, timestamp, shown, stored if shown is not stored else None)


class _AnimationSource:
    """Frames of an animated image (GIF, APNG, animated WebP) sampled by their display times."""

    def __init__(self, limits: VideoLimits, budget: _Budget, interval: float) -> None:
        self.limits = limits
        self.budget = budget
        self.interval = interval
        self.width = self.height = 0
        self.duration_s: float | None = None
        self.decoded = 0

    def frames(self, data: bytes, media_type: MediaType) -> Iterator[_Frame]:
        # The image path (decode_image) has already checked the canvas size and the frame count.
        try:
            with Image.open(io.BytesIO(data)) as image:
                self.width, self.height = image.size
                count = int(getattr(image, "n_frames", 1))
                sampler = _Sampler(self.interval)
                clock = 0.0
                for index in range(count):
                    self.budget.check()
                    image.seek(index)
                    # Pillow 13 reads an animated WebP frame's duration only when the frame is
                    # loaded: without this every frame read as 0.1 s, so a picture held after a
                    # short first frame was never sampled (found by the adversarial pass).
                    image.load()
                    self.decoded += 1
                    delay = float(image.info.get("duration") or 0) / 1000
                    delay = delay if delay > 0 else _GIF_DEFAULT_DELAY_S
                    at = sampler.shown(clock, clock + delay)
                    if at is not None:
                        rgb = image.convert("RGB").resize(
                            _scaled_size(*image.size), Image.Resampling.BOX
                        )
                        yield _Frame(index, at, np.asarray(rgb, dtype=np.uint8), None)
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


def _refusal(media_type: MediaType, exc: Exception) -> MediaRefused:
    text = str(exc)
    if any(cue in text.lower() for cue in _TRUNCATION_CUES) or isinstance(exc, av.error.EOFError):
        return MediaRefused("truncated", f"{media_type} data ends early: {text}")
    return MediaRefused("corrupt", f"{media_type} could not be decoded: {text}")


# ---------------------------------------------------------------------------------------------
# Hashing


class _Keeper:
    """Keeps at most 2 * n sampled frames spread evenly over a video of unknown length.

    Frames are kept at a stride that doubles (dropping every other kept frame) whenever the
    store is full, so memory stays bounded and the kept frames cover the whole video.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.stride = 1
        self.seen = 0
        self.frames: list[SampledFrame] = []

    def offer(self, frame: SampledFrame) -> None:
        if self.n <= 0:
            return
        if self.seen % self.stride == 0:
            self.frames.append(frame)
            if len(self.frames) >= 2 * self.n:
                self.frames = self.frames[::2]
                self.stride *= 2
        self.seen += 1

    def spread(self) -> tuple[SampledFrame, ...]:
        """n frames (or fewer) evenly spread over those kept."""
        kept = self.frames
        if len(kept) <= self.n:
            return tuple(kept)
        step = len(kept) / self.n
        return tuple(kept[int(i * step)] for i in range(self.n))


class VideoHasher:
    """vPDQ frame hashes (and optionally sampled frames for a classifier) of one video.

    Banking uses the defaults: one frame per `seconds_per_hash`, every frame decoded, as the
    reference does. The proxy hashes uploads as a query:

    - `samples_per_hash` > 1 samples that many frames per `seconds_per_hash` (each tagged with
      its `slot`). A copy trimmed at an arbitrary point is sampled at another phase than the
      banked original, and half a second of motion moves PDQ by 30-60 bits on lively footage;
      dense query sampling puts a query frame within 1/(2n) s of every banked frame, and the
      matcher counts a slot as matched when any of its frames matches.
    - `fast` is the decoding shortcut described in the module docstring.
    - `variants` adds hashes of letterboxed content and of the stored orientation of a
      rotated video.
    - `keep` sampled frames (slot starts only), spread over the video, are returned for
      classification.
    - `stills` adds a `StillQuery` per sampled frame (dihedral PDQ of the frame and of its
      content boxes) for matching against the image bank: a banked photo shown for a moment
      inside an animation or a slideshow clip. Bounded like everything else here by the
      sampled-frame cap and the time budget.
    - `key_frames` sampled frames (slot starts only), spread over the video like `keep`'s, are
      returned for the robust tier (local features): banked by `hashes add`, looked up by the
      proxy.
    """

    def __init__(
        self,
        limits: VideoLimits,
        *,
        keep: int = 0,
        fast: bool = False,
        variants: bool = False,
        samples_per_hash: int = 1,
        time_budget_s: float | None = None,
        stills: bool = False,
        key_frames: int = 0,
    ) -> None:
        if samples_per_hash < 1:
            raise ValueError(f"samples_per_hash must be at least 1, got {samples_per_hash}")
        self.limits = limits
        self.keep = keep
        self.fast = fast
        self.variants = variants
        self.samples = samples_per_hash
        self.stills = stills
        self.key_frames = key_frames
        self.time_budget_s = limits.time_budget_s if time_budget_s is None else time_budget_s

    def hash(self, data: bytes, media_type: MediaType | None = None) -> VideoHashes:
        """Hash `data` (a video container, or an animated image). Raises MediaRefused only when
        nothing could be read at all; a stop part-way is reported in `VideoHashes.refused`."""
        media_type = media_type or sniff(data)
        budget = _Budget(self.time_budget_s)
        interval = self.limits.seconds_per_hash / self.samples
        source: _PyAvSource | _AnimationSource
        if media_type.kind is MediaKind.VIDEO:
            source = _PyAvSource(self.limits, budget, self.fast, interval)
        elif media_type.kind is MediaKind.IMAGE:
            source = _AnimationSource(self.limits, budget, interval)
        else:
            raise MediaRefused("unsupported", "not a recognised video or animation (magic bytes)")
        features: list[VpdqFeature] = []
        stills: list[StillQuery] = []
        keeper = _Keeper(self.keep)
        key_keeper = _Keeper(self.key_frames)
        refused: MediaRefused | None = None
        try:
            last_slot = -1
            boxes: dict[str, _Box | None] = {}
            for frame in source.frames(data, media_type):
                slot = math.floor(frame.timestamp / self.limits.seconds_per_hash + 1e-6)
                cap = self.limits.max_sampled_frames
                if slot >= cap:
                    raise MediaRefused(
                        "frame_cap", f"{media_type} needs more than {cap:,} sampled frames"
                    )
                if slot != last_slot:
                    boxes.clear()  # look for bars again once a second
                still: StillQuery | None = None
                if self.stills:
                    still = _still(frame)
                    stills.append(still)
                features.append(self._feature(frame, slot, boxes, still))
                if slot != last_slot:
                    sampled = SampledFrame(frame.frame, frame.timestamp, frame.rgb)
                    keeper.offer(sampled)
                    key_keeper.offer(sampled)
                    last_slot = slot
        except MediaRefused as exc:
            if not features:
                raise
            refused = exc
        fps = getattr(source, "fps", None)
        return VideoHashes(
            media_type=media_type,
            codec=getattr(source, "codec", None) or media_type.value,
            width=source.width,
            height=source.height,
            fps=fps,
            duration_s=source.duration_s,
            decoded_frames=source.decoded,
            features=tuple(features),
            kept=keeper.spread(),
            refused=refused,
            stills=tuple(stills),
            key_frames=key_keeper.spread(),
        )

    def _feature(
        self,
        frame: _Frame,
        slot: int,
        boxes: dict[str, _Box | None],
        still: StillQuery | None = None,
    ) -> VpdqFeature:
        """The frame's hash and its variants. `boxes` carries the letterbox found at the
        slot's first frame to the slot's other frames (bars do not move within a second).
        `still` holds the frame's image-bank hashes where they were computed: the whole
        frame's unturned one is the frame's PDQ, and its content boxes (a screen recording's
        picture inside the status bar and the app's bars) and mirror images are variants."""
        if still is None:
            value, quality = _pdq(frame.rgb)
        else:
            value, quality = still.hashes[0].hex, still.hashes[0].quality
        variants: list[str] = []
        if self.variants and still is not None:
            for view in range(0, len(still.hashes), 8):
                variants.extend(still.hashes[view + turn].hex for turn in _VPDQ_DIHEDRAL)
        if self.variants:
            for orientation, pixels in (("shown", frame.rgb), ("stored", frame.stored)):
                if pixels is None:
                    continue
                if orientation == "stored":
                    variants.append(_pdq(pixels)[0])
                if orientation not in boxes:
                    boxes[orientation] = Letterbox.content_box(pixels)
                box = boxes[orientation]
                if box is not None:
                    top, bottom, left, right = box
                    variants.append(_pdq(pixels[top:bottom, left:right])[0])
        unique = tuple(dict.fromkeys(v for v in variants if v != value))
        return VpdqFeature(frame.frame, quality, value, round(frame.timestamp, 6), unique, slot)


def _still(frame: _Frame) -> StillQuery:
    """The image-bank query hashes of one sampled frame, as the image path makes them."""
    hashes: list[PdqHash] = []
    for view in analysis_views(Image.fromarray(frame.rgb, "RGB")):
        hashes.extend(pdq_dihedral(view))
    return StillQuery(frame.frame, round(frame.timestamp, 6), tuple(hashes))
