"""Magic-byte sniffing and bounded image decoding on generated benign media and hostile bytes."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from schoolgate.errors import MediaRefused
from schoolgate.media.decode import DecodedImage, MediaLimits, VideoLimits, decode_image
from schoolgate.media.sniff import MediaKind, MediaType, sniff
from tests.conftest import encode

# --- generated media --------------------------------------------------------------------------


def _gradient(width: int = 96, height: int = 64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    rgb = np.stack(
        [np.tile(x, (height, 1)), np.tile(y[:, None], (1, width)), np.full((height, width), 90)],
        axis=-1,
    ).astype(np.uint8)
    return Image.fromarray(rgb)


def _video(container: str, codec: str, width: int = 64, height: int = 48) -> bytes:
    """A three-frame synthetic clip (flat grey levels) muxed by PyAV/FFmpeg."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        for i in range(3):
            pixels = np.full((height, width, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


IMAGE_ENCODERS: dict[MediaType, Callable[[Image.Image], bytes]] = {
    MediaType.JPEG: lambda im: encode(im, "JPEG", quality=90),
    MediaType.PNG: lambda im: encode(im, "PNG"),
    MediaType.GIF: lambda im: encode(im, "GIF"),
    MediaType.WEBP: lambda im: encode(im, "WEBP", quality=90),
    MediaType.BMP: lambda im: encode(im, "BMP"),
    MediaType.TIFF: lambda im: encode(im, "TIFF"),
    MediaType.HEIF: lambda im: encode(im, "HEIF", quality=90),  # pillow-heif's x265 encoder
    MediaType.AVIF: lambda im: encode(im, "AVIF", quality=90),  # Pillow's libavif encoder
}

VIDEO_ENCODERS: dict[str, tuple[MediaType, str, str, dict[str, int]]] = {
    "mp4-h264": (MediaType.MP4, "mp4", "libx264", {}),
    "mp4-mpeg4": (MediaType.MP4, "mp4", "mpeg4", {}),
    "mov-h264": (MediaType.MOV, "mov", "libx264", {}),
    "3gp-h263": (MediaType.THREEGP, "3gp", "h263", {"width": 128, "height": 96}),
    "3gp-mpeg4": (MediaType.THREEGP, "3gp", "mpeg4", {}),
    "webm-vp8": (MediaType.WEBM, "webm", "libvpx", {}),
    "webm-vp9": (MediaType.WEBM, "webm", "libvpx-vp9", {}),
    "mkv-mpeg4": (MediaType.MKV, "matroska", "mpeg4", {}),
}


@pytest.fixture(scope="module")
def image_files() -> dict[MediaType, bytes]:
    picture = _gradient()
    return {media_type: make(picture) for media_type, make in IMAGE_ENCODERS.items()}


# --- sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", list(IMAGE_ENCODERS))
def test_sniff_generated_images(image_files: dict[MediaType, bytes], media_type: MediaType) -> None:
    assert sniff(image_files[media_type]) is media_type
    assert media_type.kind is MediaKind.IMAGE


@pytest.mark.parametrize("name", list(VIDEO_ENCODERS))
def test_sniff_generated_videos(name: str) -> None:
    expected, container, codec, size = VIDEO_ENCODERS[name]
    data = _video(container, codec, **size)
    assert sniff(data) is expected
    assert expected.kind is MediaKind.VIDEO


def test_file_name_and_declared_type_are_irrelevant(
    image_files: dict[MediaType, bytes], tmp_path: Path
) -> None:
    # A JPEG saved as "holiday.gif" and served as image/png is still a JPEG: only bytes count.
    disguised = tmp_path / "holiday.gif"
    disguised.write_bytes(image_files[MediaType.JPEG])
    declared_content_type = "image/png"
    data = disguised.read_bytes()
    assert declared_content_type != "image/jpeg"
    assert sniff(data) is MediaType.JPEG
    assert decode_image(data).media_type is MediaType.JPEG
    # ...and a PNG renamed to .jpg is a PNG.
    renamed = tmp_path / "photo.jpg"
    renamed.write_bytes(image_files[MediaType.PNG])
    assert sniff(renamed.read_bytes()) is MediaType.PNG


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free"


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), MediaType.HEIF),
        (_ftyp(b"heix", b"mif1"), MediaType.HEIF),
        (_ftyp(b"mif1", b"mif1", b"heic"), MediaType.HEIF),
        (_ftyp(b"mif1", b"mif1", b"miaf", b"avif"), MediaType.AVIF),
        (_ftyp(b"avif", b"mif1", b"miaf"), MediaType.AVIF),
        (_ftyp(b"avis", b"msf1"), MediaType.AVIF),
        (_ftyp(b"qt  ", b"qt  "), MediaType.MOV),
        (_ftyp(b"3gp5", b"3gp5", b"isom"), MediaType.THREEGP),
        (_ftyp(b"3g2a", b"3g2a"), MediaType.THREEGP),
        (_ftyp(b"isom", b"isom", b"avc1"), MediaType.MP4),
        (_ftyp(b"mp42", b"isom"), MediaType.MP4),
        (_ftyp(b"zzzz", b"yyyy", b"mp42"), MediaType.MP4),
        (_ftyp(b"M4A ", b"M4A ", b"isom"), MediaType.MP4),
        # a brand nobody lists is still ISO media: the video decoder decides (issue 16)
        (_ftyp(b"zzzz"), MediaType.MP4),
        (b"\x00\x00\x00\x10uuid" + bytes(8) + _ftyp(b"isom"), MediaType.MP4),
        (b"RIFF\x00\x10\x00\x00AVI LIST", MediaType.AVI),
        (b"\x00\x00\x00\x10uuid" + bytes(8) + b"\x00\x00\x00\x02junk", MediaType.UNKNOWN),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x10mdat", MediaType.MOV),
    ],
)
def test_sniff_iso_bmff_brands(box: bytes, expected: MediaType) -> None:
    assert sniff(box) is expected


def _ebml(doctype: bytes | None) -> bytes:
    body = b"\x42\x86\x81\x01"  # EBMLVersion 1
    if doctype is not None:
        body += b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body + b"\x18\x53\x80\x67"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_ebml(b"webm"), MediaType.WEBM),
        (_ebml(b"matroska"), MediaType.MKV),
        (_ebml(None), MediaType.MKV),  # DocType's default is "matroska"
        (_ebml(b"other"), MediaType.UNKNOWN),
        (b"\x1a\x45\xdf\xa3\x00", MediaType.UNKNOWN),  # invalid size vint
        (b"\x1a\x45\xdf\xa3\x9f\x42", MediaType.UNKNOWN),  # header cut short
    ],
)
def test_sniff_ebml_doctype(header: bytes, expected: MediaType) -> None:
    assert sniff(header) is expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\xff\xd8",
        b"GIF8",
        b"BM" + b"\x00" * 30,
        b"RIFF\x00\x00\x00\x00WAVE",
        b"%PDF-1.7",
    ],
    ids=["empty", "one-byte", "jpeg-prefix", "gif-prefix", "bm-bad-dib", "riff-wave", "pdf"],
)
def test_sniff_unknown(data: bytes) -> None:
    assert sniff(data) is MediaType.UNKNOWN
    assert MediaType.UNKNOWN.kind is MediaKind.UNKNOWN


def test_media_type_values_are_short_lowercase_labels() -> None:
    for media_type in MediaType:
        assert media_type.value == media_type.value.lower()
        assert str(media_type) == media_type.value
    assert MediaType.THREEGP.value == "3gp"


# --- decoding: good inputs --------------------------------------------------------------------


@pytest.mark.parametrize("media_type", list(IMAGE_ENCODERS))
def test_decode_each_image_format(
    image_files: dict[MediaType, bytes], media_type: MediaType
) -> None:
    decoded = decode_image(image_files[media_type])
    assert isinstance(decoded, DecodedImage)
    assert decoded.media_type is media_type
    assert (decoded.width, decoded.height) == (96, 64) == decoded.image.size
    assert decoded.image.mode == "RGB"
    assert decoded.frame_count == 1
    # The gradient survives: left edge dark red channel, right edge bright.
    pixels = np.asarray(decoded.image)
    assert pixels[32, 2, 0] < 60 < 200 < pixels[32, 93, 0]


def test_decode_jpeg_with_trailing_junk(image_files: dict[MediaType, bytes]) -> None:
    # Polyglot/trailer junk after the EOI marker is common in the wild: decode what is there.
    junky = image_files[MediaType.JPEG] + b"\x00junk" * 2000
    assert decode_image(junky).image.size == (96, 64)


def _frames(count: int) -> list[Image.Image]:
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    return [Image.new("RGB", (40, 30), colours[i % 3]) for i in range(count)]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_report_frames_and_give_the_first(fmt: str) -> None:
    first, *rest = _frames(5)
    data = encode(first, fmt, save_all=True, append_images=rest, duration=100, loop=0)
    decoded = decode_image(data)
    assert decoded.frame_count == 5
    red, green, blue = decoded.image.getpixel((20, 15))  # type: ignore[misc]
    assert red > 200 > green
    assert blue < 60


def test_multipage_tiff_reports_pages() -> None:
    first, *rest = _frames(4)
    decoded = decode_image(encode(first, "TIFF", save_all=True, append_images=rest))
    assert decoded.frame_count == 4


def test_non_rgb_modes_become_rgb() -> None:
    picture = _gradient()
    for mode, fmt in [("L", "PNG"), ("RGBA", "PNG"), ("P", "GIF"), ("CMYK", "JPEG"), ("1", "BMP")]:
        decoded = decode_image(encode(picture.convert(mode), fmt))
        assert decoded.image.mode == "RGB", mode


@pytest.mark.parametrize(
    ("size", "expected", "scale"),
    [((2000, 1200), (500, 300), 0.25), ((1000, 800), (500, 400), 0.5), ((600, 400), (600, 400), 1)],
)
def test_reduce_to_scales_jpeg_decoding(
    size: tuple[int, int], expected: tuple[int, int], scale: float
) -> None:
    data = encode(_gradient(*size), "JPEG", quality=90)
    reduced = decode_image(data, reduce_to=300)
    assert reduced.image.size == (reduced.width, reduced.height) == expected
    assert reduced.scale == scale
    assert max(reduced.image.size) >= 300


def test_reduce_to_leaves_other_formats_and_caps_alone() -> None:
    png = encode(_gradient(800, 600), "PNG")
    assert decode_image(png, reduce_to=100).image.size == (800, 600)
    jpeg = encode(_gradient(800, 600), "JPEG")
    # The pixel cap judges the stored size, not the reduced one.
    refusal = _refusal_with(jpeg, MediaLimits(max_pixels=800 * 600 // 4 - 1), reduce_to=100)
    assert refusal.reason == "pixel_cap"
    with pytest.raises(ValueError, match="reduce_to"):
        decode_image(jpeg, reduce_to=0)


def _refusal_with(data: bytes, limits: MediaLimits, reduce_to: int) -> MediaRefused:
    with pytest.raises(MediaRefused) as caught:
        decode_image(data, limits, reduce_to=reduce_to)
    return caught.value


def test_decoding_is_thread_safe(image_files: dict[MediaType, bytes]) -> None:
    inputs = list(image_files.values()) * 4
    serial = [np.asarray(decode_image(data).image) for data in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda data: np.asarray(decode_image(data).image), inputs))
    for a, b in zip(serial, parallel, strict=True):
        assert np.array_equal(a, b)


# --- decoding: refusals -----------------------------------------------------------------------


def _refusal(data: bytes, limits: MediaLimits | None = None) -> MediaRefused:
    with pytest.raises(MediaRefused) as caught:
        decode_image(data) if limits is None else decode_image(data, limits)
    assert str(caught.value), "a refusal must explain itself"
    return caught.value


def test_empty_input() -> None:
    assert _refusal(b"").reason == "empty"


def test_byte_cap(image_files: dict[MediaType, bytes]) -> None:
    refusal = _refusal(image_files[MediaType.PNG], MediaLimits(max_bytes=100))
    assert refusal.reason == "byte_cap"
    assert "100" in str(refusal)


def test_random_bytes_are_unsupported() -> None:
    data = np.random.default_rng(3).integers(0, 256, 4096, np.uint8).tobytes()
    assert sniff(data) is MediaType.UNKNOWN
    assert _refusal(data).reason == "unsupported"


def test_video_is_not_an_image() -> None:
    refusal = _refusal(_video("mp4", "mpeg4"))
    assert refusal.reason == "unsupported"
    assert "video" in str(refusal)


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95])
def test_truncated_jpeg(keep: float) -> None:
    data = encode(_gradient(400, 300), "JPEG", quality=95)
    assert _refusal(data[: int(len(data) * keep)]).reason == "truncated"


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "BMP"])
def test_truncated_other_formats(fmt: str) -> None:
    data = encode(_gradient(200, 150), fmt)
    assert _refusal(data[: len(data) // 2]).reason == "truncated"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height RGB with a tiny zlib stream (a few rows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * (3 * 64), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def forbid_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any Pillow image gets as far as allocating and decoding pixels."""

    def refuse_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"{self.size} image was loaded: the cap must be checked first")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_load)


@pytest.mark.usefixtures("forbid_pixel_decoding")
def test_png_bomb_50000_square() -> None:
    data = _png_bomb(50_000, 50_000)
    assert len(data) < 200
    refusal = _refusal(data)
    assert refusal.reason == "pixel_cap"


@pytest.mark.usefixtures("forbid_pixel_decoding")
def test_pixel_cap_is_ours_not_only_pillows() -> None:
    # 81 M pixels: under Pillow's own bomb threshold (~89 M), over our default 80 M.
    assert Image.MAX_IMAGE_PIXELS > 9_000 * 9_000  # type: ignore[operator]
    refusal = _refusal(_png_bomb(9_000, 9_000))
    assert refusal.reason == "pixel_cap"
    assert "81,000,000" in str(refusal)


@pytest.mark.usefixtures("forbid_pixel_decoding")
def test_configured_pixel_and_side_caps(image_files: dict[MediaType, bytes]) -> None:
    jpeg = image_files[MediaType.JPEG]
    png = image_files[MediaType.PNG]
    assert _refusal(png, MediaLimits(max_pixels=96 * 64 - 1)).reason == "pixel_cap"
    # A baseline JPEG is decoded at half scale up to 4x the cap (a 108 MP photo), not further.
    assert _refusal(jpeg, MediaLimits(max_pixels=96 * 64 // 4 - 1)).reason == "pixel_cap"
    assert _refusal(jpeg, MediaLimits(max_side=95)).reason == "pixel_cap"


def _gif_with_frames(count: int) -> bytes:
    """A hand-built 1x1 GIF with `count` image blocks (no pixels beyond one per frame)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * count + b"\x3b"


def test_gif_frame_counter_agrees_with_pillow() -> None:
    data = _gif_with_frames(7)
    with Image.open(io.BytesIO(data)) as opened:
        assert getattr(opened, "n_frames", 1) == 7
    assert decode_image(data).frame_count == 7


def test_gif_at_the_frame_cap_decodes() -> None:
    assert decode_image(_gif_with_frames(1000)).frame_count == 1000


def test_a_gif_over_max_frames_is_decoded_for_sampling() -> None:
    # An animation is judged on frames sampled by display time: past max_frames is not a bomb.
    assert decode_image(_gif_with_frames(1001)).frame_count == 1001


@pytest.mark.parametrize("count", [36_001, 200_000])
def test_gif_frame_bomb(count: int) -> None:
    # More frames than a video may decode (VideoLimits.max_decoded_frames).
    assert _refusal(_gif_with_frames(count)).reason == "frame_cap"


def test_apng_frame_cap_from_header() -> None:
    first, *rest = _frames(4)
    data = encode(first, "PNG", save_all=True, append_images=rest)
    limits = MediaLimits(max_frames=3, video=VideoLimits(max_decoded_frames=3))
    assert _refusal(data, limits).reason == "frame_cap"


def test_corrupt_png_header() -> None:
    data = bytearray(encode(_gradient(), "PNG"))
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    assert _refusal(bytes(data)).reason == "corrupt"


def test_jpeg_marker_then_garbage() -> None:
    data = b"\xff\xd8\xff\xe0" + np.random.default_rng(5).integers(0, 256, 2000, np.uint8).tobytes()
    assert _refusal(data).reason in {"corrupt", "truncated"}


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        MediaLimits(max_pixels=0)
    with pytest.raises(ValueError, match="max_frames"):
        MediaLimits(max_frames=True)


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ_LIMITS = MediaLimits(max_pixels=2_000_000, max_frames=50)
_SEED_IMAGE = _gradient(48, 32)
SEEDS = [
    encode(_SEED_IMAGE, fmt)
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
]


REASONS = {"empty", "byte_cap", "unsupported", "pixel_cap", "frame_cap", "truncated", "corrupt"}


def _decode_or_refuse(data: bytes) -> str:
    """'decoded' or the refusal reason; any other exception fails the fuzz test."""
    sniff(data)
    try:
        result = decode_image(data, FUZZ_LIMITS)
    except MediaRefused as refusal:
        return refusal.reason
    assert isinstance(result, DecodedImage)
    assert result.image.mode == "RGB"
    assert result.image.size == (result.width, result.height)
    return "decoded"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    assert _decode_or_refuse(data) in {*REASONS, "decoded"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=12),
    cut=st.integers(8, 8192),
)
def test_fuzz_mutated_real_files(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    # Valid magic bytes get the input past sniffing and into every decoder's parser.
    data = bytearray(seed[:cut])
    for offset, value in edits:
        if data:
            data[offset % len(data)] = value
    assert _decode_or_refuse(bytes(data)) in {*REASONS, "decoded"}
