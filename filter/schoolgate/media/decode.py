"""Bounded, thread-safe still-image decoding, and the limits for image and video decoding.

Nothing here trusts a file name or a Content-Type: the bytes decide. Decoding refuses bombs
(pixel and frame caps checked from headers before any pixel is allocated) and maps every decoder
failure to `MediaRefused` with a stable reason code, so the fail policy, not a traceback, decides
what happens to an upload.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from schoolgate.errors import MediaRefused
from schoolgate.media.iccview import shown_through_profile
from schoolgate.media.raster_sniff import raster_format
from schoolgate.media.sniff import MediaKind, MediaType, sniff

# Registering is idempotent and touches only Pillow's plugin tables, so doing it once at import
# keeps decode_image free of global mutations (it runs on a worker pool).
pillow_heif.register_heif_opener()
Image.init()

_EXIF_ORIENTATION = 0x0112
# Words Pillow, libwebp and libheif use when the data stops before the image does.
_TRUNCATION_CUES = ("truncat", "unexpected end", "end of file", "premature end")


# Pillow plugin names per sniffed type: Image.open is restricted to the plugin the magic bytes
# named, so a file cannot steer Pillow into a different (possibly weaker) parser.
_PILLOW_FORMATS: dict[MediaType, str] = {
    MediaType.JPEG: "JPEG",
    MediaType.PNG: "PNG",
    MediaType.GIF: "GIF",
    MediaType.WEBP: "WEBP",
    MediaType.HEIF: "HEIF",
    MediaType.AVIF: "AVIF" if "AVIF" in Image.OPEN else "HEIF",
    MediaType.BMP: "BMP",
    MediaType.TIFF: "TIFF",
}


# How far over the pixel cap a baseline JPEG may be: it is decoded at 1/2 scale (or less).
_JPEG_REDUCIBLE = 4
# Animated formats: judged as video (frames sampled by display time) when they have frames.
_ANIMATIONS = frozenset({MediaType.GIF, MediaType.PNG, MediaType.WEBP})


# ---------------------------------------------------------------------------------------------
# Decoding


def _check_positive(owner: object, names: tuple[str, ...], integral: bool) -> None:
    for name in names:
        value = getattr(owner, name)
        number = isinstance(value, int) if integral else isinstance(value, int | float)
        if isinstance(value, bool) or not number or not value > 0:
            kind = "integer" if integral else "number"
            raise ValueError(
                f"{type(owner).__name__}.{name} must be a positive {kind}, got {value!r}"
            )


@dataclass(frozen=True)
class VideoLimits:
    """Caps on video decoding (and animated images analysed as video), checked as frames arrive.

    A declared size or duration over a cap is refused before any frame is decoded; frames that
    turn out larger, longer or more numerous than declared are refused when they appear. The
    time budget stops decoding on slow or pathological input with what was hashed so far.
    """

    max_duration_s: float = 600.0
    max_pixels: int = 4096 * 2160  # per frame: DCI 4K; phones record at most 3840x2160
    max_side: int = 8192
    max_decoded_frames: int = 36_000  # 10 minutes at 60 fps
    max_sampled_frames: int = 600  # sample slots of seconds_per_hash (10 minutes at 1 s)
    time_budget_s: float = 10.0
    # More for each minute a video declares: decoding costs in proportion to its length, and a
    # fixed budget failed every 4-minute 1080p recording (a61 F4: about 9 s to judge here).
    time_budget_per_minute_s: float = 2.5
    seconds_per_hash: float = 1.0
    decode_threads: int = 2

    def __post_init__(self) -> None:
        _check_positive(
            self,
            (
                "max_pixels",
                "max_side",
                "max_decoded_frames",
                "max_sampled_frames",
                "decode_threads",
            ),
            integral=True,
        )
        _check_positive(self, ("max_duration_s", "time_budget_s", "seconds_per_hash"), False)
        if self.time_budget_per_minute_s < 0:
            raise ValueError(
                f"time_budget_per_minute_s must be at least 0, got {self.time_budget_per_minute_s}"
            )

    def budget_for(self, duration_s: float | None) -> float:
        """The time budget of a video that declares `duration_s` (None: undeclared)."""
        minutes = min(duration_s or 0.0, self.max_duration_s) / 60
        return self.time_budget_s + self.time_budget_per_minute_s * minutes

    @property
    def longest_budget_s(self) -> float:
        """The budget of the longest video the caps allow."""
        return self.budget_for(self.max_duration_s)


@dataclass(frozen=True)
class MediaLimits:
    """Caps that make decoding safe on hostile input; over a cap means MediaRefused.

    `max_frames` caps the frames of a still format that holds several (TIFF pages, HEIF
    sequences). A GIF, APNG or animated WebP is judged as a video on frames sampled by display
    time, so its frames are capped by `video.max_decoded_frames` instead (when that is higher):
    a long animation is sampled, a frame bomb refused. A baseline JPEG over `max_pixels` (up to
    4x: a 108 MP phone photo) is decoded at half scale or less instead of being refused."""

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 80_000_000
    max_frames: int = 1000
    max_side: int = 65_535
    video: VideoLimits = VideoLimits()

    def __post_init__(self) -> None:
        _check_positive(self, ("max_bytes", "max_pixels", "max_frames", "max_side"), True)
        if not isinstance(self.video, VideoLimits):
            raise ValueError(f"MediaLimits.video must be VideoLimits, got {self.video!r}")


@dataclass(frozen=True)
class DecodedImage:
    """First frame of an image, upright (EXIF orientation applied) and in RGB.

    width and height are those of `image`. `scale` is below 1 only when decode_image was asked
    to `reduce_to` a size and the format could decode smaller (JPEG DCT scaling); `finer` then
    decodes the picture again finer, where the caller offers it (signals.decode_for_analysis).
    """

    image: Image.Image
    media_type: MediaType
    width: int
    height: int
    frame_count: int
    scale: float = 1.0
    finer: Callable[[], Image.Image] | None = field(default=None, repr=False, compare=False)


# A picture this much longer than wide is a long one: a scrolling screenshot, a panorama (a
# phone's own screenshot is up to about 2.2).
LONG_PICTURE: Final = 2.5


class _GifFrameCounter:
    """Counts GIF image descriptors without decoding, stopping one past the cap.

    Pillow's own `n_frames` walks every frame of the file; a crafted GIF of millions of tiny
    frames would make that slow, so the count stops as soon as the cap is exceeded.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data

    def _skip_sub_blocks(self, pos: int) -> int:
        data = self._data
        while pos < len(data):
            length = data[pos]
            pos += 1 + length
            if length == 0:
                return pos
        return len(data)

    def count(self, cap: int) -> int:
        """Frames in the file, or cap + 1 when there are more than cap (at least 1)."""
        data = self._data
        if len(data) < 13:
            return 1
        pos = 13
        flags = data[10]
        if flags & 0x80:
            pos += 3 * (2 ** ((flags & 0x07) + 1))
        frames = 0
        while pos < len(data) and frames <= cap:
            block = data[pos]
            if block == 0x3B:  # trailer
                break
            if block == 0x21:  # extension: label, then sub-blocks
                pos = self._skip_sub_blocks(pos + 2)
            elif block == 0x2C:  # image descriptor
                frames += 1
                if pos + 10 > len(data):
                    break
                local = data[pos + 9]
                pos += 10
                if local & 0x80:
                    pos += 3 * (2 ** ((local & 0x07) + 1))
                pos = self._skip_sub_blocks(pos + 1)  # after the LZW minimum code size
            else:
                break  # malformed: the decoder will report it
        return max(frames, 1)


class _Pam:
    """Netpbm's PAM ("P7"), which GIMP and ImageMagick write and Pillow does not read: a header
    of keyword lines up to ENDHDR, then samples, one or two bytes each (big-endian), row by row.
    The declared size is checked against the caps before any pixel is allocated."""

    _HEADER_END = re.compile(rb"(?:\A|\n)ENDHDR\n")
    _DEPTHS = frozenset({1, 2, 3, 4})  # L, LA, RGB, RGBA
    MAX_HEADER = 4096

    @classmethod
    def read(cls, data: bytes, check: Callable[[int, int], None]) -> Image.Image:
        end = cls._HEADER_END.search(data, 0, cls.MAX_HEADER)
        if end is None:
            raise ValueError("PAM header has no ENDHDR line")
        fields: dict[str, str] = {}
        for line in data[3 : end.start()].decode("ascii").splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.strip().partition(" ")
                fields[key] = value.strip()
        try:
            width, height = int(fields["WIDTH"]), int(fields["HEIGHT"])
            depth, maxval = int(fields["DEPTH"]), int(fields["MAXVAL"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"PAM header lacks a number: {exc}") from exc
        check(width, height)
        if depth not in cls._DEPTHS or not 1 <= maxval <= 65535:
            raise ValueError(f"PAM depth {depth} / maxval {maxval} is not a picture read here")
        sample = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        count = width * height * depth
        start = end.end()
        if len(data) - start < count * sample.itemsize:
            raise EOFError("PAM samples end early")
        samples = np.frombuffer(data, sample, count, start).reshape(height, width, depth)
        if maxval != 255:
            samples = samples.astype(np.uint32) * 255 // maxval
        pixels = samples.astype(np.uint8)
        return Image.fromarray(pixels[:, :, 0] if depth == 1 else pixels)  # L, LA, RGB, RGBA


def _farbfeld(data: bytes, check: Callable[[int, int], None]) -> Image.Image:
    """farbfeld: "farbfeld", width and height (32-bit big-endian), then 16-bit big-endian RGBA
    samples row by row; the size is checked against the caps before any pixel is allocated."""
    width, height = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
    check(width, height)
    count = width * height * 4
    if len(data) - 16 < count * 2:
        raise EOFError("farbfeld samples end early")
    samples = np.frombuffer(data, ">u2", count, 16).reshape(height, width, 4)
    return Image.fromarray((samples >> 8).astype(np.uint8), "RGBA")


class ImageDecoder:
    """Bounded decoding of one still or animated image (first frame) with Pillow."""

    def __init__(self, limits: MediaLimits, reduce_to: int | None = None) -> None:
        if reduce_to is not None and (isinstance(reduce_to, bool) or reduce_to < 1):
            raise ValueError(f"reduce_to must be a positive number of pixels, got {reduce_to!r}")
        self._limits = limits
        self._reduce_to = reduce_to

    def decode(self, data: bytes) -> DecodedImage:
        """Decode `data` or raise MediaRefused with a stable reason code."""
        media_type = self._admit(data)
        try:
            return self._decode(data, media_type)
        except MediaRefused:
            raise
        except Image.DecompressionBombError as exc:
            raise MediaRefused("pixel_cap", f"{media_type} image refused: {exc}") from exc
        except Exception as exc:
            # Pillow and its plugins signal bad input with many exception types (OSError,
            # SyntaxError, ValueError, EOFError, struct.error, ...): all mean "not decodable".
            raise self._classify_failure(media_type, exc, data) from exc

    def _admit(self, data: bytes) -> MediaType:
        if not data:
            raise MediaRefused("empty", "the upload is empty (zero bytes)")
        if len(data) > self._limits.max_bytes:
            raise MediaRefused(
                "byte_cap",
                f"the upload is {len(data):,} bytes, over the {self._limits.max_bytes:,} byte cap",
            )
        media_type = sniff(data)
        if media_type is MediaType.UNKNOWN:
            raise MediaRefused("unsupported", "not a recognised image format (magic bytes)")
        if media_type.kind is MediaKind.VIDEO:
            raise MediaRefused(
                "unsupported",
                f"{media_type} is a video container, not an image: use the video path",
            )
        return media_type

    def _decode(self, data: bytes, media_type: MediaType) -> DecodedImage:
        plugin = raster_format(data) if media_type is MediaType.RASTER else None
        if plugin in ("PAM", "FARBFELD"):
            reader = _Pam.read if plugin == "PAM" else _farbfeld
            read = reader(data, lambda w, h: self._check_dimensions(media_type, w, h))
            picture = read.convert("RGB")
            return DecodedImage(picture, media_type, picture.width, picture.height, frame_count=1)
        with Image.open(
            io.BytesIO(data), formats=[plugin or _PILLOW_FORMATS[media_type]]
        ) as opened:
            reducible = media_type is MediaType.JPEG and not opened.info.get("progressive")
            self._check_dimensions(media_type, *opened.size, reducible=reducible)
            frame_count = self._frame_count(opened, data, media_type)
            stored_width = opened.width
            self._draft(opened, media_type)
            self._check_dimensions(media_type, *opened.size)  # as decoded
            opened.load()
            upright = self._upright(opened)
            rgb = _displayed(upright, opened.info.get("icc_profile"))
            if rgb is None:
                rgb = upright if upright.mode == "RGB" and upright is not opened else None
            if rgb is None:
                rgb = _as_rgb(upright)
        return DecodedImage(
            image=rgb,
            media_type=media_type,
            width=rgb.width,
            height=rgb.height,
            frame_count=frame_count,
            scale=opened.width / stored_width,
        )

    def _draft(self, opened: Image.Image, media_type: MediaType) -> None:
        # libjpeg can decode at 1/2, 1/4 or 1/8 scale for a fraction of the time; Pillow picks
        # the smallest scale that still covers the requested box, so the longer side stays
        # >= reduce_to. Only JPEG supports this; other formats decode at full size. A JPEG over
        # the pixel cap (a 108 MP phone photo) is decoded at half scale at least.
        if media_type is not MediaType.JPEG:
            return
        width, height = opened.size
        box: tuple[int, int] | None = None
        # A long picture (a scrolling screenshot) keeps its short side instead: it is looked at
        # a screen at a time, and at 1/8 a 1080 x 9000 one was 135 px wide (a53 F1).
        side = max(width, height)
        side = min(width, height) if side >= LONG_PICTURE * min(width, height) else side
        if self._reduce_to is not None and self._reduce_to / side < 0.5:
            factor = self._reduce_to / side
            box = (math.ceil(width * factor), math.ceil(height * factor))
        if width * height > self._limits.max_pixels:
            half = (math.ceil(width / 2), math.ceil(height / 2))
            box = half if box is None else (min(box[0], half[0]), min(box[1], half[1]))
        if box is not None:
            opened.draft(None, box)

    def _check_dimensions(
        self, media_type: MediaType, width: int, height: int, *, reducible: bool = False
    ) -> None:
        """Refuse a size over the caps. `reducible`: a baseline JPEG, which libjpeg decodes at
        half scale or less, may be up to 4x the pixel cap (never a progressive one: libjpeg
        keeps all its coefficients, at full size, whatever the scale)."""
        limits = self._limits
        if width < 1 or height < 1:
            raise MediaRefused("corrupt", f"{media_type} header gives an empty {width}x{height}")
        allowed = limits.max_pixels * (_JPEG_REDUCIBLE if reducible else 1)
        if width * height > allowed:
            raise MediaRefused(
                "pixel_cap",
                f"{media_type} header says {width}x{height} = {width * height:,} pixels, over "
                f"the {allowed:,} pixel cap (decompression bomb or oversized image)",
            )
        if max(width, height) > limits.max_side:
            raise MediaRefused(
                "pixel_cap",
                f"{media_type} is {width}x{height}, a side over the {limits.max_side:,} px cap",
            )

    def _frame_count(self, opened: Image.Image, data: bytes, media_type: MediaType) -> int:
        cap = self._limits.max_frames
        if media_type in _ANIMATIONS:
            # An animation is judged as a video, on frames sampled by display time: a long one
            # (a 1,100-frame sticker) is sampled, not refused. Only a frame bomb, more frames
            # than a video may decode, is refused here.
            cap = max(cap, self._limits.video.max_decoded_frames)
        if media_type is MediaType.GIF:
            frames = _GifFrameCounter(data).count(cap)
        elif media_type is MediaType.TIFF:
            frames = self._count_by_seeking(opened, cap)
        else:
            # PNG (acTL), WebP (libwebp demux) and HEIF report the count from headers.
            frames = int(getattr(opened, "n_frames", 1))
        if frames > cap:
            raise MediaRefused(
                "frame_cap",
                f"{media_type} has more than {cap:,} frames (frame bomb or oversized animation)",
            )
        return max(frames, 1)

    @staticmethod
    def _count_by_seeking(opened: Image.Image, cap: int) -> int:
        # Multi-page TIFF: walk the IFD chain, but never further than one past the cap.
        frames = 1
        try:
            while frames <= cap:
                opened.seek(frames)
                frames += 1
        except EOFError:
            pass
        opened.seek(0)
        return frames

    @staticmethod
    def _upright(image: Image.Image) -> Image.Image:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(image)
        return image

    @staticmethod
    def _classify_failure(media_type: MediaType, exc: Exception, data: bytes) -> MediaRefused:
        text = str(exc)
        lowered = text.lower()
        # A WebP's decoder says only that it failed: its RIFF header says it was cut short.
        riff_cut = data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 > len(data)
        if isinstance(exc, EOFError) or riff_cut or any(c in lowered for c in _TRUNCATION_CUES):
            return MediaRefused("truncated", f"{media_type} data ends early: {text or 'EOF'}")
        if isinstance(exc, UnidentifiedImageError):
            return MediaRefused("corrupt", f"{media_type} header could not be parsed")
        return MediaRefused(
            "corrupt", f"{media_type} could not be decoded ({type(exc).__name__}: {text})"
        )


def decode_image(
    data: bytes, limits: MediaLimits = MediaLimits(), *, reduce_to: int | None = None
) -> DecodedImage:
    """Decode the first frame of an image into upright RGB, within `limits`.

    `reduce_to` (optional) lets JPEGs decode at a reduced scale whose longer side is still at
    least that many pixels: enough for PDQ (512) or a classifier, at a fraction of the cost.
    Caps always apply to the stored size. Raises MediaRefused with reason empty, byte_cap,
    unsupported, pixel_cap, frame_cap, truncated or corrupt.
    """
    return ImageDecoder(limits, reduce_to).decode(data)


def decode_finer(data: bytes, decoded: DecodedImage, limits: MediaLimits, side: int) -> Image.Image:
    """The picture `decoded` was reduced from, decoded again with its longer side at least
    `side` (never past its stored size); `decoded`'s own picture where it was not reduced or
    the second decode fails."""
    if decoded.scale >= 1:
        return decoded.image
    try:
        return decode_image(data, limits, reduce_to=side).image
    except MediaRefused:
        return decoded.image


_WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_PROFILE_SPACES: Final = {"RGB": "RGB", "L": "GRAY", "CMYK": "CMYK"}
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _displayed(image: Image.Image, profile: object) -> Image.Image | None:
    """The picture as colour-managed viewers (browsers, phones, Windows Photos) show it: its
    embedded ICC profile applied, to sRGB. A profile's curves can remap every stored value, so
    the stored pixels are noise that every viewer shows as the banked photo (adversarial pass
    a44 F8). None where there is no profile, or one that does not describe these pixels (they
    are shown as stored)."""
    if not isinstance(profile, bytes) or not profile:
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if source.profile.xcolor_space.strip() != _PROFILE_SPACES.get(image.mode):
            return None
        if (curved := shown_through_profile(image, profile)) is not None:
            return curved  # a matrix/TRC profile: its curves as written (schoolgate.iccview)
        shown = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError, struct.error):
        return None
    return shown if isinstance(shown, Image.Image) else None


def _as_rgb(image: Image.Image) -> Image.Image:
    """RGB as a viewer shows it. Pillow's own conversion clips 16-bit grey (PNG, TIFF) at 255,
    a white page (adversarial pass a5: a banked picture saved as 16-bit grey passed unmatched);
    viewers show its high byte."""
    if image.mode in _WIDE_GREY:
        values = np.asarray(image, dtype=np.float32)
        grey = np.clip(values / 257.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "F":
        # Float samples (SPIDER, float TIFF) have no fixed range: viewers stretch what the
        # picture holds to black..white, as Pillow's SPIDER reader does. Clipped at 0..255, a
        # picture scaled to 0..1 was black (a40).
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0,
                               neginf=0.0)  # fmt: skip
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        grey = np.clip((values - low) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")
