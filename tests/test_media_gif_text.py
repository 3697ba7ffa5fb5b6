"""Text that mentions "GIF89a" is not a GIF; a GIF is claimed only from a plausible structure
(adversarial pass, issue 16: chat about the GIF format was read as a GIF whose screen size came
from the next letters, refused as a decompression bomb and blocked)."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.config import parse_config
from schoolgate.errors import MediaRefused
from schoolgate.media.decode import decode_image
from schoolgate.media.sniff import MediaType, sniff
from schoolgate.pipeline.engine import InspectionContext, Inspector

PUPIL = InspectionContext(client_ip="192.0.2.20", app="testapp")

TEXTS = [
    b"GIF89a is old, right? yes",  # a comma where an image descriptor would start
    b"GIF89a is fab! it does transparency",  # an exclamation mark where an extension would
    b"GIF89a is fab!" + b" and so is PNG" * 30_000,  # ... in a long text file
    b"GIF89a",  # a message that is only the word
    b'GIF89a"}',  # the end of a JSON message
    b"GIF87a is the older one;",
    "GIF89a \u00e9t\u00e9 caf\u00e9 ! ,; the end".encode(),  # a 'colour table' flag from UTF-8
]


def _gif(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "GIF", **params)
    return buffer.getvalue()


def _drawing() -> Image.Image:
    image = Image.new("RGB", (64, 48), (20, 120, 200))
    image.paste((250, 200, 30), (10, 10, 40, 30))
    return image


@pytest.fixture
def inspector(data_dir: Path) -> Iterator[Inspector]:
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


@pytest.mark.parametrize("text", TEXTS, ids=lambda t: repr(t[:24]))
def test_text_that_starts_with_the_gif_header_is_not_a_gif(
    inspector: Inspector, text: bytes
) -> None:
    assert sniff(text) is MediaType.UNKNOWN
    with pytest.raises(MediaRefused) as refused:
        decode_image(text)
    assert refused.value.reason == "unsupported"  # never "pixel_cap" (a bomb) from letters
    verdict = inspector.evaluate(text, PUPIL)
    assert not verdict.blocked, verdict.to_dict()
    assert verdict.to_dict().get("failure") is None


def test_a_line_feed_where_a_code_size_would_be_is_still_text() -> None:
    # A comma at 13, nine letters (the image descriptor), then a line feed where the LZW code
    # size would be: 10 is a code size decoders accept, but no GIF is without zero bytes.
    text = b"GIF89a is oks," + b"abcdefghi" + b"\n" + b"more"
    assert sniff(text) is MediaType.UNKNOWN
    assert sniff(text.replace(b"more", b"\x00;")) is MediaType.GIF


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"comment": b"made in class"},
        {"comment": b"x" * 2_200_000},  # 8,600 sub-blocks before the first image
    ],
    ids=["plain", "comment", "huge-comment"],
)
def test_real_gifs_are_claimed_and_decoded(params: dict[str, object]) -> None:
    data = _gif(_drawing(), **params)
    assert sniff(data) is MediaType.GIF
    assert decode_image(data).image.size == (64, 48)


def test_an_animated_gif_with_its_loop_extension_is_claimed() -> None:
    frames = [_drawing(), Image.new("RGB", (64, 48), (200, 30, 30))]
    data = _gif(frames[0], save_all=True, append_images=frames[1:], loop=0, duration=200)
    assert sniff(data) is MediaType.GIF
    assert decode_image(data).frame_count == 2


def test_a_gif_cut_in_its_picture_is_still_claimed_and_refused_as_truncated() -> None:
    data = _gif(Image.effect_noise((64, 48), 60).convert("RGB"))
    cut = data[: len(data) // 2]
    assert sniff(cut) is MediaType.GIF
    with pytest.raises(MediaRefused) as refused:
        decode_image(cut)
    assert refused.value.reason in ("truncated", "corrupt")


def test_a_gif_cut_before_any_picture_is_not_claimed() -> None:
    data = _gif(_drawing())
    header = 13 + 3 * (2 ** ((data[10] & 7) + 1))
    assert sniff(data[:header]) is MediaType.UNKNOWN  # screen and colours, no picture


@pytest.mark.parametrize("local_table", [False, True])
def test_a_real_gif_bomb_is_still_refused(local_table: bool) -> None:
    """A valid structure with a 30000 x 30000 logical screen: a bomb, from a plausible header."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 30000, 30000, 0, 0, 0)
    flags = 0x80 if local_table else 0
    table = bytes(6) if local_table else b""
    image = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, flags) + table + b"\x02\x02\x44\x01\x00;"
    data = screen + image
    assert sniff(data) is MediaType.GIF
    with pytest.raises(MediaRefused) as refused:
        decode_image(data)
    assert refused.value.reason == "pixel_cap"


def test_a_gif_whose_only_block_is_the_trailer_is_not_a_picture() -> None:
    assert sniff(b"GIF89a" + struct.pack("<HHBBB", 30000, 30000, 0, 0, 0) + b";") is (
        MediaType.UNKNOWN
    )


def test_a_code_size_no_decoder_accepts_is_not_a_picture() -> None:
    screen = b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, 8, 8, 0)
    assert sniff(screen + image + b"\x02\x02\x44\x01\x00;") is MediaType.GIF
    assert sniff(screen + image + b"\x20\x02\x44\x01\x00;") is MediaType.UNKNOWN


WEBP_TEXTS = [
    b"RIFF....WEBPVP8 is how webp files start lol",  # adversarial pass a5: blocked as a picture
    b"RIFF\x10\x00\x00\x00WEBPVP8L header then what?",
    b"RIFF0000WEBPVP8X is the extended one",
]


@pytest.mark.parametrize("text", WEBP_TEXTS)
def test_text_that_quotes_a_webp_header_is_not_a_picture(text: bytes) -> None:
    assert sniff(text) is MediaType.UNKNOWN
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    try:
        assert not inspector.evaluate(text, PUPIL).blocked
    finally:
        inspector.close()


@pytest.mark.parametrize(
    "params",
    [{"lossless": False}, {"lossless": True}, {"lossless": True, "exact": True}],
    ids=["lossy", "lossless", "lossless-alpha"],
)
def test_every_kind_of_webp_is_still_a_webp(params: dict[str, object]) -> None:
    for mode in ("RGB", "RGBA"):
        frames = [Image.new(mode, (64, 48), (200, 30 * n, 90)) for n in range(3)]
        still, animated = io.BytesIO(), io.BytesIO()
        frames[0].save(still, "WEBP", **params)
        frames[0].save(animated, "WEBP", save_all=True, append_images=frames[1:], **params)
        assert sniff(still.getvalue()) is MediaType.WEBP
        assert sniff(animated.getvalue()) is MediaType.WEBP
