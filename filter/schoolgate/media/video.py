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
Banking (`hashes add`/`compute`) decodes every frame, like the reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import numpy.typing as npt
import pdqhash
from PIL import Image

from schoolgate.errors import MediaRefused
from schoolgate.media.decode import MediaLimits, VideoLimits
from schoolgate.media.hashing import (
    STRETCH_BELOW_QUALITY,
    PdqHash,
    pdq_dihedral,
    stretched_pdq,
)
from schoolgate.media.normalise import analysis_views
from schoolgate.media.sniff import MediaKind, MediaType, sniff
from schoolgate.media.video_frames import Box, Letterbox
from schoolgate.media.video_sources import AnimationSource, Budget, Frame, PyAvSource

TIMESTAMP_DECIMALS = 3  # the reference's output precision (vpdqio.cpp)
# A query samples `samples_per_hash` frames per slot only while that is at most this many in
# all; a longer video has fewer per slot, down to vPDQ's own one (adversarial pass a57 F4: a
# 3-minute 720p clip sampled 4 a second spent ~5 s of the 10 s budget on them and timed out).
DENSE_SAMPLES = 360


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
    """A sampled frame, upright, RGB, longer side at most PDQ_SIDE (`finer`: a key frame kept
    finer by a query, for its small pictures). `held_still`: whether the picture is the same as
    the sample before it or the sample after it (a card or a title held on screen); None where
    it was not measured (no key frames asked for)."""

    frame: int
    timestamp: float
    rgb: npt.NDArray[np.uint8]
    held_still: bool | None = None
    finer: npt.NDArray[np.uint8] | None = None  # a key frame at up to FINER_FRAME_SIDE

    def image(self) -> Image.Image:
        return Image.fromarray(self.rgb, "RGB")

    @property
    def finer_image(self) -> Callable[[], Image.Image] | None:
        """The frame finer than `image()`, to crop its small pictures from; None if no finer."""
        finer = self.finer
        return None if finer is None else partial(Image.fromarray, finer, "RGB")


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
    stream: int = 0  # which video stream of the container these hashes are of
    video_streams: int = 1  # how many the container holds (each is judged)

    def lines(self) -> str:
        """The whole vPDQ text (one line per sampled frame)."""
        return "".join(f"{feature.line()}\n" for feature in self.features)


# Which of a still's dihedral hashes (hashing.DIHEDRAL_TRANSFORMS order) a video frame is also
# matched with against banked videos: as shown, and mirrored left-right (front cameras and
# "flip" edits). Quarter turns of video are what rotation flags are for; each variant costs a
# lookup per frame in the video index.
_VPDQ_DIHEDRAL = (0, 5)


# A sample is held still when under this share of its pixels differ by more than STILL_LEVELS
# (of 255) from the sample before or after it: codec noise on a held card moves a few levels,
# footage (a pan, a person talking, a clip playing inside a screen recording) whole regions.
STILL_LEVELS = 12
STILL_SHARE = 0.005


def held_still(first: npt.NDArray[np.uint8], later: npt.NDArray[np.uint8]) -> bool:
    """Whether `later` shows the same picture as `first` (both RGB, the same shape)."""
    if first.shape != later.shape:
        return False
    moved = np.abs(first.astype(np.int16) - later.astype(np.int16)).max(axis=2) > STILL_LEVELS
    return float(moved.mean()) < STILL_SHARE


def _pdq(rgb: npt.NDArray[np.uint8]) -> tuple[str, int]:
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return bytes(np.packbits(bits.astype(np.uint8))).hex(), int(quality)


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

    def keeps_next(self) -> bool:
        """Whether the next frame offered will be kept (a frame not kept now never is)."""
        return self.n > 0 and self.seen % self.stride == 0

    def offer(self, frame: SampledFrame) -> None:
        if self.n <= 0:
            return
        if self.keeps_next():
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
      proxy. With `finer_key_frames` they are also kept at FINER_FRAME_SIDE, so that a picture
      shown small in a screen recording is large enough to look up (a59 F4). With `key_stride`
      they are every sampled frame, or every other one, or every fourth..., at most
      `key_frames`: every part of the video lies as near one as any other, where frames spread
      over those kept fell 1 s apart here and 3 s there (a84 F1: a 4 s excerpt of a banked
      video inside 24 s of other footage went through, and with 8 s of padding was found).
    - `picture_limits` are the caps on a still picture a container carries (an M4A's cover
      art), which is decoded as a still upload is.
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
        finer_key_frames: bool = False,
        key_stride: bool = False,
        picture_limits: MediaLimits | None = None,
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
        self.finer_key_frames = finer_key_frames
        self.key_stride = key_stride
        self.picture_limits = picture_limits
        self.time_budget_s = limits.time_budget_s if time_budget_s is None else time_budget_s
        self.grows = time_budget_s is None

    def hash(
        self,
        data: bytes,
        media_type: MediaType | None = None,
        stream: int = 0,
        cut_short: bool = False,
    ) -> VideoHashes:
        """Hash `data` (a video container's video stream number `stream`, or an animated
        image). Raises MediaRefused only when nothing could be read at all; a stop part-way is
        reported in `VideoHashes.refused`. `cut_short`: a container cut short is hashed as far
        as it goes (refused "truncated" all the same) instead of refused before decoding."""
        media_type = media_type or sniff(data)
        # The limits' budget grows with a video's declared length; a budget given here does not.
        budget = Budget(self.time_budget_s, self.limits if self.grows else None)
        interval = self.limits.seconds_per_hash / self.samples
        source: PyAvSource | AnimationSource
        if media_type.kind is MediaKind.VIDEO:
            source = PyAvSource(
                self.limits,
                budget,
                self.fast,
                interval,
                stream,
                cuts=bool(self.stills),
                picture_limits=self.picture_limits,
                dense_samples=DENSE_SAMPLES if self.samples > 1 else None,
            )
        elif media_type.kind is MediaKind.IMAGE:
            source = AnimationSource(self.limits, budget, interval, cuts=self.stills)
        else:
            raise MediaRefused("unsupported", "not a recognised video or animation (magic bytes)")
        features: list[VpdqFeature] = []
        stills: list[StillQuery] = []
        keeper = _Keeper(self.keep)
        # At one stride, up to key_frames: a keeper of half as many keeps them all.
        key_keeper = _Keeper(-(-self.key_frames // 2) if self.key_stride else self.key_frames)
        stillness: dict[int, bool] = {}  # a slot start's frame -> held still (see SampledFrame)
        refused: MediaRefused | None = None
        try:
            last_slot = -1
            slot_start: Frame | None = None  # waiting for the sample after it
            sample_before: Frame | None = None
            boxes: dict[str, Box | None] = {}
            frames = (
                source.frames(data, media_type, cut_short)
                if isinstance(source, PyAvSource)
                else source.frames(data, media_type)
            )
            for frame in frames:
                if frame.cut:
                    # Between samples: only the image bank is asked about it (the vPDQ hashes
                    # stay on the time grid that banked videos were hashed on).
                    if self.stills:
                        stills.append(_still(frame))
                    continue
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
                if slot_start is not None:
                    stillness[slot_start.frame] = stillness[slot_start.frame] or held_still(
                        slot_start.rgb, frame.rgb
                    )
                    slot_start = None
                if slot != last_slot:
                    # Stillness only of what may become a key frame: ~5 ms a comparison.
                    if key_keeper.keeps_next():
                        slot_start = frame
                        stillness[frame.frame] = sample_before is not None and held_still(
                            sample_before.rgb, frame.rgb
                        )
                    sampled = SampledFrame(frame.frame, frame.timestamp, frame.rgb)
                    keeper.offer(sampled)
                    if self.finer_key_frames and frame.finer and key_keeper.keeps_next():
                        sampled = replace(sampled, finer=frame.finer())
                    key_keeper.offer(sampled)
                    last_slot = slot
                sample_before = frame
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
            key_frames=tuple(
                replace(key, held_still=stillness.get(key.frame))
                for key in (key_keeper.frames if self.key_stride else key_keeper.spread())
            ),
            stream=stream,
            video_streams=max(1, getattr(source, "video_streams", 1)),
        )

    def _feature(
        self,
        frame: Frame,
        slot: int,
        boxes: dict[str, Box | None],
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
        if self.variants and quality < STRETCH_BELOW_QUALITY:
            # A washed-out copy's frame (contrast turned down): matched by its stretched hash,
            # which is also what makes the frame count (queries below min quality are ignored).
            for stretched in stretched_pdq(Image.fromarray(frame.rgb, "RGB"), dihedral=False):
                variants.append(value)
                value, quality = stretched.hex, stretched.quality
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


def _still(frame: Frame) -> StillQuery:
    """The image-bank query hashes of one sampled frame, as the image path makes them."""
    hashes: list[PdqHash] = []
    views = analysis_views(Image.fromarray(frame.rgb, "RGB"))
    for view in views:
        hashes.extend(pdq_dihedral(view))
    if hashes[0].quality < STRETCH_BELOW_QUALITY:
        hashes.extend(stretched_pdq(views[0], dihedral=True))
    return StillQuery(frame.frame, round(frame.timestamp, 6), tuple(hashes))
