"""Benign imagery for the robustness suite: package-shipped photos, procedural scenes and the edits
that circulating copies of an incident image go through (screenshots, crops, captions, ...).

Everything here is benign by construction: photos that ship inside scikit-image, the PDQ reference
photos read in place from `../shared/testdata`, and scenes drawn with Pillow and numpy. Nothing is
downloaded and nothing is written into the repository.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

SHARED_REFERENCE = Path(__file__).resolve().parents[3] / "shared/testdata/pdq-reference"

Edit = Callable[[Image.Image, int], bytes]
Reshape = Callable[[Image.Image], Image.Image]

# Distinct photos shipped by scikit-image (chelsea and cat are the same photo, so only one of them;
# motorcycle_left and motorcycle_right are a stereo pair of one scene, so only the left one).
SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text",
    "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "cell",
    "colorwheel", "logo", "motorcycle_left",
)  # fmt: skip
# Distinct photos among the PDQ reference images (the `dih` and `exif-rotn` folders each hold one
# photo in several orientations; `small.jpg` and `wee.jpg` are too small to stand for a photo, and
# q0003 and q0004, like scikit-image's blurred `clock`, are near-flat: PDQ quality < 50).
REFERENCE_PHOTOS = (
    "reg-test-input/dih/bridge-1-original.jpg",
    "reg-test-input/exif-rotn/exif-rotn-1.jpg",
    "reg-test-input/labelme-subset/q0122.jpg",
    "reg-test-input/labelme-subset/q0291.jpg",
    "reg-test-input/labelme-subset/q0746.jpg",
    "reg-test-input/labelme-subset/q1050.jpg",
    "reg-test-input/labelme-subset/q2821.jpg",
    "misc-images/c.png",
)


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def skimage_photo(name: str) -> Image.Image:
    from skimage import data

    if name == "motorcycle_left":
        array = data.stereo_motorcycle()[0]  # type: ignore[no-untyped-call]
    else:
        array = getattr(data, name)()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (array * 255).clip(0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def reference_photo(relative: str, max_side: int = 1600) -> Image.Image:
    image = ImageOps.exif_transpose(Image.open(SHARED_REFERENCE / relative)).convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def real_photos() -> dict[str, Image.Image]:
    """Every distinct package-shipped or shared reference photo, by a short name."""
    photos = {name: skimage_photo(name) for name in SKIMAGE_PHOTOS}
    if SHARED_REFERENCE.is_dir():
        for relative in REFERENCE_PHOTOS:
            photos[Path(relative).stem] = reference_photo(relative)
    return photos


# ---------------------------------------------------------------------------------------------
# Procedural benign scenes


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


_TEXT = (
    "maths homework due friday bring your pe kit the bus leaves at four science fair volcano "
    "team practice lunch menu pizza library books returned school trip museum history project "
    "rainy day football match assembly choir concert art club painting garden sunflowers"
)
_WORDS = tuple(_TEXT.split(" "))


def _noise_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Fractal value noise: sums of upscaled random grids (clouds, marble-like surfaces)."""
    width, height = size
    total = np.zeros((height, width), np.float32)
    for octave in range(1, 6):
        cells = 2**octave + 1
        grid = rng.random((cells, cells)).astype(np.float32)
        layer = Image.fromarray((grid * 255).astype(np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        )
        total += np.asarray(layer, np.float32) / 2**octave
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def procedural_scene(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A benign synthetic picture: gradients, noise textures, shapes, patterns and text.

    The kinds rotate with the seed so that every kind appears, including the hard cases for local
    features: repetitive patterns (tiles, stripes, checkerboards) and text-heavy pages.
    """
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    width, height = size
    kind = seed % 5
    colour_a = tuple(int(c) for c in rng.integers(0, 256, 3))
    colour_b = tuple(int(c) for c in rng.integers(0, 256, 3))
    if kind == 0:  # clouds / marble
        noise = _noise_texture(rng, size)[..., None]
        pixels = np.asarray(colour_a) * noise + np.asarray(colour_b) * (1 - noise)
        image = Image.fromarray(pixels.astype(np.uint8))
    elif kind == 1:  # repetitive tiles, stripes or checkerboard
        image = Image.new("RGB", size, colour_a)
        draw = ImageDraw.Draw(image)
        step = pick.randint(12, 48)
        style = pick.choice(("tiles", "stripes", "checker"))
        for y in range(0, height, step):
            for x in range(0, width, step):
                if style == "checker" and (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=colour_b)
                elif style == "tiles":
                    draw.rectangle((x + 2, y + 2, x + step - 3, y + step - 3), outline=colour_b)
            if style == "stripes":
                draw.rectangle((0, y, width, y + step // 2), fill=colour_b)
    elif kind == 2:  # a text page (a worksheet, a chat, a poster)
        image = Image.new("RGB", size, colour_a if sum(colour_a) > 380 else (245, 245, 240))
        draw = ImageDraw.Draw(image)
        y = pick.randint(5, 30)
        while y < height - 20:
            line = " ".join(pick.choice(_WORDS) for _ in range(pick.randint(3, 9)))
            draw.text((pick.randint(5, 60), y), line, fill=(20, 20, 20), font=_font(18))
            y += pick.randint(22, 40)
    else:  # gradient + noise + random shapes (a flat-colour "drawing")
        gradient = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        pixels = np.asarray(colour_a) * gradient + np.asarray(colour_b) * (1 - gradient)
        pixels = np.broadcast_to(pixels, (height, width, 3)).copy()
        pixels += rng.normal(0, 6 if kind == 3 else 18, pixels.shape)
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(pick.randint(6, 30)):
            x0, y0 = pick.randrange(width), pick.randrange(height)
            x1, y1 = x0 + pick.randint(10, 200), y0 + pick.randint(10, 200)
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = pick.choice(("rect", "ellipse", "line", "text"))
            if shape == "rect":
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            elif shape == "ellipse":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif shape == "line":
                draw.line((x0, y0, x1, y1), fill=fill, width=pick.randint(1, 8))
            else:
                font = _font(pick.randint(14, 48))
                draw.text((x0, y0), pick.choice(_WORDS), fill=fill, font=font)
    return image


# ---------------------------------------------------------------------------------------------
# Edits: what happens to an incident image as it circulates. Each takes (image, seed) -> bytes.


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    return encode(image.convert("RGB"), "JPEG", quality=quality)


def _crop(image: Image.Image, seed: int, per_side: float) -> bytes:
    """Remove on average `per_side` of each dimension from each side, split unevenly (a person's
    crop is rarely centred, and a centred crop would flatter centre-crop bank augmentation)."""
    rng = random.Random(seed)
    width, height = image.size
    left = round(width * 2 * per_side * rng.uniform(0.2, 0.8))
    top = round(height * 2 * per_side * rng.uniform(0.2, 0.8))
    right = width - (round(width * 2 * per_side) - left)
    bottom = height - (round(height * 2 * per_side) - top)
    return _jpeg(image.crop((left, top, right, bottom)))


def _pad(image: Image.Image, fraction: float) -> bytes:
    border = (round(image.width * fraction), round(image.height * fraction))
    padded = ImageOps.expand(image, border=(*border, *border), fill=(255, 255, 255))
    return _jpeg(padded)


def phone_screenshot(
    image: Image.Image, seed: int = 0, dark: tuple[int, int, int] = (0, 0, 0)
) -> bytes:
    """The photo as a phone shows it: fitted to a 1080x2340 (19.5:9) dark canvas with the status
    bar (clock, signal, battery) above and the home indicator below, saved as PNG."""
    canvas_w, canvas_h = 1080, 2340
    canvas = Image.new("RGB", (canvas_w, canvas_h), dark)
    scale = min(canvas_w / image.width, (canvas_h - 400) / image.height)
    fitted = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )
    top = (canvas_h - fitted.height) // 2 + random.Random(seed).randint(-60, 60)
    canvas.paste(fitted, ((canvas_w - fitted.width) // 2, max(130, top)))
    draw = ImageDraw.Draw(canvas)
    white = (255, 255, 255)
    draw.text((70, 38), "9:41", fill=white, font=_font(44))
    for i in range(4):  # signal bars
        draw.rectangle((820 + i * 16, 80 - i * 10, 830 + i * 16, 88), fill=white)
    draw.rounded_rectangle((900, 50, 990, 90), radius=8, outline=white, width=3)  # battery
    draw.rectangle((906, 56, 970, 84), fill=white)
    draw.rounded_rectangle((390, canvas_h - 40, 690, canvas_h - 28), radius=6, fill=white)
    return encode(canvas, "PNG")


def _caption(image: Image.Image, seed: int) -> bytes:
    """A solid caption bar across the middle with white text, as meme and story apps add."""
    captioned = image.convert("RGB")
    draw = ImageDraw.Draw(captioned)
    band = max(12, round(captioned.height * 0.12))
    top = (captioned.height - band) // 2
    draw.rectangle((0, top, captioned.width, top + band), fill=(0, 0, 0))
    text = random.Random(seed).choice(("omg look at this", "no way", "send to everyone", "lol"))
    draw.text((captioned.width // 10, top + band // 6), text, fill=(255, 255, 255),
              font=_font(max(8, round(band * 0.6))))  # fmt: skip
    return _jpeg(captioned)


def _sticker(image: Image.Image, seed: int) -> bytes:
    """An opaque emoji-like sticker covering 10% of the image, somewhere random."""
    rng = random.Random(seed)
    stickered = image.convert("RGB")
    side = round((0.10 * stickered.width * stickered.height) ** 0.5)
    x = rng.randint(0, stickered.width - side)
    y = rng.randint(0, stickered.height - side)
    draw = ImageDraw.Draw(stickered)
    draw.rectangle((x, y, x + side, y + side), fill=(255, 214, 0))
    draw.ellipse((x + side * 0.25, y + side * 0.3, x + side * 0.4, y + side * 0.45), fill=(0, 0, 0))
    draw.ellipse((x + side * 0.6, y + side * 0.3, x + side * 0.75, y + side * 0.45), fill=(0, 0, 0))
    draw.arc((x + side * 0.2, y + side * 0.4, x + side * 0.8, y + side * 0.8), 20, 160,
             fill=(0, 0, 0), width=max(1, side // 20))  # fmt: skip
    return _jpeg(stickered)


def _downscale(image: Image.Image, longest: int) -> bytes:
    scale = longest / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return _jpeg(image.resize(size, Image.Resampling.LANCZOS))


EDITS: dict[str, Edit] = {
    "jpeg_q30": lambda im, s: _jpeg(im, quality=30),
    "downscale_320": lambda im, s: _downscale(im, 320),
    "greyscale": lambda im, s: _jpeg(im.convert("L")),
    "brightness_130": lambda im, s: _jpeg(ImageEnhance.Brightness(im).enhance(1.3)),
    "mirror": lambda im, s: _jpeg(ImageOps.mirror(im)),
    "rotate_90": lambda im, s: _jpeg(im.rotate(90, expand=True)),
    "rotate_4": lambda im, s: _jpeg(im.rotate(4, Image.Resampling.BICUBIC, expand=True)),
    "crop_5": lambda im, s: _crop(im, s, 0.05),
    "crop_10": lambda im, s: _crop(im, s, 0.10),
    "pad_white_20": lambda im, s: _pad(im, 0.20),
    "screenshot": phone_screenshot,
    "caption_middle": _caption,
    "sticker_10": _sticker,
}


# ---------------------------------------------------------------------------------------------
# Unseen variants: different parameters of the same kinds of edit, written down before any
# result on them was seen and never used to choose a threshold. They show whether the figures
# above generalise beyond the exact edits the thresholds were chosen on.


def light_screenshot(image: Image.Image, seed: int = 0) -> bytes:
    """A light-mode 9:16 app screenshot: white canvas, grey status bar, a caption line under
    the photo, saved as JPEG (as many apps re-encode screenshots)."""
    canvas_w, canvas_h = 720, 1280
    canvas = Image.new("RGB", (canvas_w, canvas_h), (250, 250, 250))
    scale = min(canvas_w / image.width, (canvas_h - 300) / image.height)
    fitted = image.resize((round(image.width * scale), round(image.height * scale)))
    top = 120 + random.Random(seed).randint(0, 40)
    canvas.paste(fitted, ((canvas_w - fitted.width) // 2, top))
    draw = ImageDraw.Draw(canvas)
    grey = (60, 60, 60)
    draw.text((30, 20), "14:07", fill=grey, font=_font(28))
    draw.rounded_rectangle((620, 24, 680, 48), radius=6, outline=grey, width=2)
    draw.text((30, top + fitted.height + 20), "liked by 23 others", fill=grey, font=_font(26))
    return encode(canvas, "JPEG", quality=85)


def _meme_top(image: Image.Image, seed: int) -> bytes:
    """A white band above the photo with black caption text (the classic meme layout)."""
    band = max(24, round(image.height * 0.18))
    canvas = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    canvas.paste(image.convert("RGB"), (0, band))
    draw = ImageDraw.Draw(canvas)
    draw.text((image.width // 12, band // 4), "me when the bell rings", fill=(0, 0, 0),
              font=_font(max(8, band // 2)))  # fmt: skip
    return _jpeg(canvas)


def _two_stickers(image: Image.Image, seed: int) -> bytes:
    rng = random.Random(seed + 7)
    stickered = image.convert("RGB")
    draw = ImageDraw.Draw(stickered)
    side = round((0.05 * stickered.width * stickered.height) ** 0.5)
    for colour in ((255, 80, 160), (80, 200, 255)):
        x = rng.randint(0, stickered.width - side)
        y = rng.randint(0, stickered.height - side)
        draw.ellipse((x, y, x + side, y + side), fill=colour)
        draw.text((x + side // 4, y + side // 3), "wow", fill=(255, 255, 255),
                  font=_font(max(8, side // 4)))  # fmt: skip
    return _jpeg(stickered)


def _corner_crop(image: Image.Image, share: float) -> bytes:
    width, height = image.size
    return _jpeg(image.crop((0, 0, round(width * (1 - share)), round(height * (1 - share)))))


def _letterbox(image: Image.Image, share: float) -> bytes:
    bar = round(image.height * share)
    canvas = Image.new("RGB", (image.width, image.height + 2 * bar), (0, 0, 0))
    canvas.paste(image.convert("RGB"), (0, bar))
    return _jpeg(canvas)


VARIANT_EDITS: dict[str, Edit] = {
    "downscale_400_jpeg_q20": lambda im, s: _jpeg(
        Image.open(io.BytesIO(_downscale(im, 400))), quality=20
    ),
    "contrast_140": lambda im, s: _jpeg(ImageEnhance.Contrast(im).enhance(1.4)),
    "rotate_180": lambda im, s: _jpeg(im.rotate(180)),
    "rotate_minus_3_white": lambda im, s: _jpeg(
        im.rotate(-3, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    ),
    "corner_crop_14": lambda im, s: _corner_crop(im, 0.14),
    "crop_15": lambda im, s: _crop(im, s, 0.15),
    "letterbox_black_10": lambda im, s: _letterbox(im, 0.10),
    "light_screenshot": light_screenshot,
    "meme_caption_top": _meme_top,
    "two_stickers_5": _two_stickers,
}


def squash_then_turn(height: float, width: float, degrees: float) -> Reshape:
    """An editor's resize to the wrong aspect ratio, then a turn (a re-shoot, a tilted crop)."""

    def edit(image: Image.Image) -> Image.Image:
        size = (round(image.width * width), round(image.height * height))
        resized = image.resize(size, Image.Resampling.BICUBIC)
        return resized.rotate(degrees, Image.Resampling.BICUBIC, expand=True, fillcolor="white")

    return edit


def squash_along(degrees: float, ratio: float) -> Reshape:
    """Turn, squash, turn back: a squash along a slanted axis (a16's `diag*` copies)."""

    def edit(image: Image.Image) -> Image.Image:
        turned = image.rotate(degrees, Image.Resampling.BICUBIC, expand=True, fillcolor="white")
        size = (turned.width, round(turned.height * ratio))
        squashed = turned.resize(size, Image.Resampling.BICUBIC)
        return squashed.rotate(-degrees, Image.Resampling.BICUBIC, expand=True, fillcolor="white")

    return edit


def _tinted_tiles(name: str, tint: tuple[int, int, int], size: tuple[int, int],
                  scale: float = 1.0) -> Image.Image:  # fmt: skip
    """A scikit-image texture photo's shades in `tint`, at `scale` of its own size, tiled over
    `size` with every other tile mirrored (as adversarial passes a89 and a90 made their
    floors and walls)."""
    photo = skimage_photo(name).convert("L")
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)))
    shades = np.asarray(photo, np.float32)[..., None] / 255
    tile = Image.fromarray((shades * np.array(tint, np.float32)).astype(np.uint8))
    tiled = Image.new("RGB", size)
    for y in range(0, size[1], tile.height):
        for x in range(0, size[0], tile.width):
            mirrored = (x // tile.width + y // tile.height) % 2
            tiled.paste(ImageOps.mirror(tile) if mirrored else tile, (x, y))
    return tiled


def gravel_floor(side: int = 1080) -> Image.Image:
    """scikit-image's gravel at its own scale: sharp stones, unlike the photo scaled up, and
    seams everywhere on them."""
    return _tinted_tiles("gravel", (230, 215, 190), (side, side))


def brick_wall(size: tuple[int, int]) -> Image.Image:
    """scikit-image's brick wall, a little larger than its own scale."""
    return _tinted_tiles("brick", (220, 130, 100), size, scale=1.1)
