"""Benign synthetic surrounds for the robust tier's precision suite (issue 18): chat-app
screenshots and pairs of *different* pictures that share what surrounds them (a texture of thin
lines, a watermark, a photo frame, a meme template, a fixed background).

A local-feature matcher that matches what surrounds a picture instead of the picture blocks
innocent pupils: every pair made here is two different pictures, and must never match.

Everything here is benign by construction: tiles of the photos in `tests.support.imagery`
(scikit-image's sample photos and the PDQ reference photos read in place), procedural scenes and
Pillow drawings. Nothing is downloaded and nothing is written into the repository.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

from tests.support.imagery import procedural_scene, real_photos

Colour = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

SCREEN = (540, 1170)
APPS = ("chatty", "snappy")
THEMES = ("light", "dark")
STYLES = [(app, theme) for app in APPS for theme in THEMES]

_NAMES = (
    "Sam", "Alex P", "Jordan", "Priya", "Mo", "Charlie W", "Taylor", "Ellie", "Noah", "Zara",
    "Kai", "Ruby", "Leo B", "Amara", "Finn", "Isla", "Yusuf", "Maya", "Olly", "Grace",
)  # fmt: skip
_MESSAGES = (
    "did you see this", "look what i found", "haha", "omg", "where was this", "send it to me",
    "is that from the trip", "lol no way", "what time is practice", "ok see you at 4",
    "bring the charger pls", "this is so good", "who took it", "wait what", "nice one",
    "can you send the homework", "brb", "on my way", "that's mine", "yes!!",
)  # fmt: skip


@functools.cache
def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _fit(image: Image.Image, max_w: int, max_h: int) -> Image.Image:
    scale = min(max_w / image.width, max_h / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _rounded_paste(canvas: Image.Image, picture: Image.Image, xy: tuple[int, int], r: int) -> None:
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, *picture.size), radius=r, fill=255)
    canvas.paste(picture, xy, mask)


# ---------------------------------------------------------------------------------------------
# Chat-app screenshots


@dataclass(frozen=True)
class _Style:
    status_bg: Colour
    status_fg: Colour
    header_bg: Colour
    header_fg: Colour
    chat_bg: Colour
    doodle: Colour
    incoming: Colour
    incoming_fg: Colour
    outgoing: Colour
    outgoing_fg: Colour
    input_bg: Colour
    field_bg: Colour
    field_fg: Colour
    accent: Colour
    keyboard_bg: Colour
    key_bg: Colour
    key_fg: Colour
    text_size: int
    name_size: int
    time_size: int


_STYLES: dict[tuple[str, str], _Style] = {
    ("chatty", "light"): _Style(
        (0, 94, 77), (255, 255, 255), (0, 128, 105), (255, 255, 255), (236, 229, 221),
        (222, 213, 203), (255, 255, 255), (20, 20, 20), (217, 253, 211), (20, 20, 20),
        (240, 240, 240), (255, 255, 255), (130, 130, 130), (0, 168, 132), (208, 211, 218),
        (255, 255, 255), (20, 20, 20), 17, 21, 12,
    ),
    ("chatty", "dark"): _Style(
        (17, 27, 33), (230, 230, 230), (31, 44, 52), (233, 237, 239), (11, 20, 26),
        (22, 33, 40), (32, 44, 51), (233, 237, 239), (0, 92, 75), (233, 237, 239),
        (31, 44, 52), (42, 57, 66), (140, 150, 155), (0, 168, 132), (40, 40, 42),
        (80, 80, 84), (240, 240, 240), 17, 21, 12,
    ),
    ("snappy", "light"): _Style(
        (255, 255, 255), (0, 0, 0), (255, 255, 255), (0, 0, 0), (255, 255, 255),
        (255, 255, 255), (233, 233, 235), (0, 0, 0), (10, 132, 255), (255, 255, 255),
        (255, 255, 255), (240, 240, 242), (142, 142, 147), (10, 132, 255), (209, 212, 217),
        (255, 255, 255), (0, 0, 0), 21, 25, 15,
    ),
    ("snappy", "dark"): _Style(
        (0, 0, 0), (255, 255, 255), (18, 18, 18), (255, 255, 255), (0, 0, 0),
        (0, 0, 0), (38, 38, 40), (255, 255, 255), (94, 92, 230), (255, 255, 255),
        (0, 0, 0), (28, 28, 30), (142, 142, 147), (94, 92, 230), (43, 43, 45),
        (90, 90, 94), (255, 255, 255), 21, 25, 15,
    ),
}  # fmt: skip


def _status_bar(draw: ImageDraw.ImageDraw, style: _Style, rng: random.Random, height: int) -> None:
    width = SCREEN[0]
    draw.rectangle((0, 0, width, height), fill=style.status_bg)
    clock = f"{rng.randint(7, 22)}:{rng.randint(0, 59):02d}"
    draw.text((24, height // 2), clock, fill=style.status_fg, font=_font(17), anchor="lm")
    fg, mid = style.status_fg, height // 2
    for i in range(4):  # signal bars
        draw.rectangle((400 + i * 7, mid + 6 - i * 4, 404 + i * 7, mid + 6), fill=fg)
    for r in (5, 9, 13):  # wi-fi arcs
        draw.arc((446 - r, mid + 6 - r, 446 + r, mid + 6 + r), 225, 315, fill=fg, width=2)
    level = rng.randint(20, 100)
    draw.rounded_rectangle((470, mid - 7, 505, mid + 7), radius=3, outline=fg, width=2)
    draw.rectangle((473, mid - 4, 473 + round(29 * level / 100), mid + 4), fill=fg)
    draw.rectangle((506, mid - 3, 509, mid + 3), fill=fg)


def _avatar(draw: ImageDraw.ImageDraw, centre: tuple[int, int], r: int, name: str,
            rng: random.Random) -> None:  # fmt: skip
    x, y = centre
    colour = (rng.randint(60, 220), rng.randint(60, 220), rng.randint(60, 220))
    draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    draw.text((x, y), name[0], fill=(255, 255, 255), font=_font(r), anchor="mm")


def _wrap(text: str, font: Font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _bubble(draw: ImageDraw.ImageDraw, style: _Style, app: str, y: int, text: str,
            outgoing: bool, clock: str) -> int:  # fmt: skip
    """One text bubble at height y; returns the y below it."""
    width = SCREEN[0]
    font, small = _font(style.text_size), _font(style.time_size)
    lines = _wrap(text, font, 300, draw)
    line_h = style.text_size + 6
    text_w = max(draw.textlength(line, font=font) for line in lines)
    inner_w = round(text_w + (draw.textlength(clock, font=small) + 12 if app == "chatty" else 0))
    box_w, box_h = inner_w + 24, len(lines) * line_h + 16
    x0 = width - 14 - box_w if outgoing else 14
    fill = style.outgoing if outgoing else style.incoming
    fg = style.outgoing_fg if outgoing else style.incoming_fg
    radius = 8 if app == "chatty" else box_h // 2 if len(lines) == 1 else 18
    draw.rounded_rectangle((x0, y, x0 + box_w, y + box_h), radius=radius, fill=fill)
    for i, line in enumerate(lines):
        draw.text((x0 + 12, y + 8 + i * line_h), line, fill=fg, font=font)
    if app == "chatty":
        draw.text((x0 + box_w - 8, y + box_h - 5), clock, fill=style.field_fg, font=small,
                  anchor="rd")  # fmt: skip
        if outgoing:  # read ticks
            for dx in (0, 5):
                tx, ty = (
                    x0 + box_w - 8 - draw.textlength(clock, font=small) - 20 + dx,
                    y + box_h - 9,
                )
                draw.line((tx, ty, tx + 3, ty + 3, tx + 9, ty - 4), fill=(83, 189, 235), width=2)
    return y + box_h + 8


def _header_chatty(draw: ImageDraw.ImageDraw, style: _Style, top: int, name: str,
                   rng: random.Random) -> int:  # fmt: skip
    width, bottom = SCREEN[0], top + 70
    fg = style.header_fg
    draw.rectangle((0, top, width, bottom), fill=style.header_bg)
    mid = (top + bottom) // 2
    draw.line((34, mid - 12, 22, mid, 34, mid + 12), fill=fg, width=3)  # back arrow
    draw.line((22, mid, 42, mid), fill=fg, width=3)
    _avatar(draw, (74, mid), 21, name, rng)
    draw.text((106, mid - 11), name, fill=fg, font=_font(style.name_size), anchor="lm")
    status = rng.choice(("online", "typing...", "last seen today"))
    draw.text((106, mid + 13), status, fill=fg, font=_font(13), anchor="lm")
    draw.rounded_rectangle((392, mid - 9, 412, mid + 9), radius=3, outline=fg, width=2)  # video
    draw.polygon(((413, mid - 2), (422, mid - 8), (422, mid + 8), (413, mid + 2)), fill=fg)
    draw.arc((446, mid - 12, 470, mid + 12), 100, 260, fill=fg, width=5)  # phone handset
    for dy in (-8, 0, 8):  # menu dots
        draw.ellipse((508, mid + dy - 2, 512, mid + dy + 2), fill=fg)
    return bottom


def _header_snappy(draw: ImageDraw.ImageDraw, style: _Style, top: int, name: str,
                   rng: random.Random) -> int:  # fmt: skip
    width, bottom = SCREEN[0], top + 84
    fg, accent = style.header_fg, style.accent
    draw.rectangle((0, top, width, bottom), fill=style.header_bg)
    mid = (top + bottom) // 2
    draw.line((30, mid - 14, 16, mid, 30, mid + 14), fill=accent, width=4)  # back chevron
    _avatar(draw, (width // 2, mid - 10), 22, name, rng)
    draw.text((width // 2, mid + 26), name, fill=fg, font=_font(15), anchor="mm")
    draw.ellipse((432, mid - 14, 460, mid + 14), outline=accent, width=3)  # call
    draw.rounded_rectangle((476, mid - 10, 500, mid + 10), radius=4, fill=accent)  # video
    draw.polygon(((501, mid - 3), (512, mid - 10), (512, mid + 10), (501, mid + 3)), fill=accent)
    draw.line((0, bottom, width, bottom), fill=style.incoming, width=1)
    return bottom + 1


def _doodles(canvas: Image.Image, style: _Style, box: tuple[int, int, int, int]) -> None:
    """The chat wallpaper: the same faint doodles on every screenshot of the app."""
    if style.doodle == style.chat_bg:
        return
    draw = ImageDraw.Draw(canvas)
    rng = random.Random(1234)  # fixed: part of the app, not of the conversation
    x0, y0, x1, y1 = box
    for y in range(y0, y1, 46):
        for x in range(x0 - 20, x1, 52):
            kind = rng.randrange(4)
            dx, dy = x + rng.randint(0, 20), y + rng.randint(0, 14)
            if kind == 0:
                draw.ellipse((dx, dy, dx + 14, dy + 14), outline=style.doodle, width=2)
            elif kind == 1:
                draw.rectangle((dx, dy, dx + 12, dy + 12), outline=style.doodle, width=2)
            elif kind == 2:
                draw.line((dx, dy + 12, dx + 7, dy, dx + 14, dy + 12), fill=style.doodle, width=2)
            else:
                draw.line((dx, dy, dx + 14, dy + 14), fill=style.doodle, width=2)


def _keyboard(draw: ImageDraw.ImageDraw, style: _Style, top: int) -> None:
    width, height = SCREEN
    draw.rectangle((0, top, width, height), fill=style.keyboard_bg)
    rows = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    key_w, key_h, gap = 48, 52, 6
    font = _font(22)
    for r, row in enumerate(rows):
        x = (width - len(row) * (key_w + gap) + gap) // 2
        y = top + 12 + r * (key_h + 12)
        for letter in row:
            draw.rounded_rectangle((x, y, x + key_w, y + key_h), radius=6, fill=style.key_bg)
            draw.text((x + key_w // 2, y + key_h // 2), letter, fill=style.key_fg, font=font,
                      anchor="mm")  # fmt: skip
            x += key_w + gap
    y = top + 12 + 3 * (key_h + 12)
    draw.rounded_rectangle((8, y, 110, y + key_h), radius=6, fill=style.key_bg)
    draw.text((59, y + key_h // 2), "123", fill=style.key_fg, font=_font(18), anchor="mm")
    draw.rounded_rectangle((120, y, 420, y + key_h), radius=6, fill=style.key_bg)
    draw.text((270, y + key_h // 2), "space", fill=style.key_fg, font=_font(18), anchor="mm")
    draw.rounded_rectangle((430, y, 532, y + key_h), radius=6, fill=style.accent)
    draw.text((481, y + key_h // 2), "send", fill=(255, 255, 255), font=_font(18), anchor="mm")


def _input_bar(draw: ImageDraw.ImageDraw, style: _Style, app: str, top: int) -> None:
    width = SCREEN[0]
    draw.rectangle((0, top, width, top + 64), fill=style.input_bg)
    mid = top + 32
    fg, accent = style.field_fg, style.accent
    if app == "chatty":
        draw.rounded_rectangle((8, mid - 22, 456, mid + 22), radius=22, fill=style.field_bg)
        draw.ellipse((20, mid - 10, 40, mid + 10), outline=fg, width=2)  # emoji
        draw.text((52, mid), "Message", fill=fg, font=_font(18), anchor="lm")
        draw.line((370, mid + 8, 384, mid - 8), fill=fg, width=2)  # paper clip
        draw.rounded_rectangle((404, mid - 8, 428, mid + 9), radius=4, outline=fg, width=2)
        draw.ellipse((411, mid - 4, 421, mid + 6), outline=fg, width=2)  # camera
        draw.ellipse((466, mid - 24, 514, mid + 24), fill=accent)  # mic button
        draw.rounded_rectangle((485, mid - 12, 495, mid + 4), radius=5, fill=(255, 255, 255))
        draw.line((490, mid + 4, 490, mid + 11), fill=(255, 255, 255), width=2)
    else:
        draw.ellipse((10, mid - 20, 50, mid + 20), fill=accent)  # camera button
        draw.rounded_rectangle((21, mid - 7, 39, mid + 8), radius=3, outline=(255, 255, 255),
                               width=2)  # fmt: skip
        draw.rectangle((62, mid - 8, 80, mid + 10), outline=accent, width=2)  # gallery
        draw.rounded_rectangle((94, mid - 20, 470, mid + 20), radius=20, fill=style.field_bg)
        draw.text((112, mid), "Aa", fill=fg, font=_font(20), anchor="lm")
        draw.ellipse((432, mid - 10, 452, mid + 10), outline=accent, width=2)
        draw.polygon(
            (
                (486, mid + 14),
                (486, mid - 2),
                (498, mid - 16),
                (502, mid - 14),
                (498, mid - 2),
                (516, mid - 2),
                (516, mid + 14),
            ),
            fill=accent,
        )  # thumbs up


def _photo_overlays(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int],
                    clock: str) -> None:  # fmt: skip
    """snappy draws its controls over the picture: a heart, a save arrow, a counter, a time."""
    x0, y0, x1, y1 = box
    white, shade = (255, 255, 255), (0, 0, 0)
    draw.rounded_rectangle((x1 - 74, y0 + 12, x1 - 14, y0 + 40), radius=14, fill=shade)
    draw.text((x1 - 44, y0 + 26), "1/1", fill=white, font=_font(15), anchor="mm")
    hx, hy = x1 - 44, y1 - 40  # heart
    draw.ellipse((hx - 14, hy - 10, hx, hy + 4), outline=white, width=3)
    draw.ellipse((hx, hy - 10, hx + 14, hy + 4), outline=white, width=3)
    draw.line((hx - 13, hy, hx, hy + 14, hx + 13, hy), fill=white, width=3)
    ax, ay = x0 + 34, y1 - 42  # save arrow
    draw.line((ax, ay - 14, ax, ay + 8), fill=white, width=3)
    draw.line((ax - 9, ay, ax, ay + 9, ax + 9, ay), fill=white, width=3)
    draw.line((ax - 12, ay + 15, ax + 12, ay + 15), fill=white, width=3)
    draw.rounded_rectangle((x0 + 12, y0 + 12, x0 + 82, y0 + 40), radius=14, fill=shade)
    draw.text((x0 + 47, y0 + 26), clock, fill=white, font=_font(14), anchor="mm")


def chat_screenshot(photo: Image.Image, app: str = "chatty", theme: str = "light",
                    seed: int = 0) -> Image.Image:  # fmt: skip
    """`photo` as a received picture in a synthetic chat app, as a 540x1170 phone screenshot.

    "chatty": a green header at the top with avatar, name and call icons, a doodled wallpaper,
    tailless green/white (dark: teal/slate) bubbles with times and read ticks, the photo inside a
    rounded incoming bubble at 72-82% of the width, a pill input bar with a mic button.
    "snappy": a centred avatar and name, blue/purple round bubbles, larger text, the photo
    full-width with controls drawn over it, a camera button and "Aa" field. The seed varies the
    contact, the messages, the clock and the battery, and (one seed in three) opens a keyboard;
    the interface stays the same app.
    """
    style = _STYLES[(app, theme)]
    rng = random.Random(seed * 7919 + 17)
    width, height = SCREEN
    canvas = Image.new("RGB", SCREEN, style.chat_bg)
    draw = ImageDraw.Draw(canvas)
    _status_bar(draw, style, rng, 40)
    name = rng.choice(_NAMES)
    header = _header_chatty if app == "chatty" else _header_snappy
    chat_top = header(draw, style, 40, name, rng)
    keyboard = seed % 3 == 2
    bottom = height - (300 if keyboard else 30)
    input_top = bottom - 64
    _doodles(canvas, style, (0, chat_top, width, input_top))
    draw = ImageDraw.Draw(canvas)
    hour, minute = rng.randint(7, 22), rng.randint(0, 50)

    def clock() -> str:
        nonlocal minute
        minute = min(59, minute + rng.randint(0, 3))
        return f"{hour}:{minute:02d}"

    y = chat_top + 12
    if app == "chatty":
        label = rng.choice(("TODAY", "YESTERDAY", "MONDAY"))
        lw = draw.textlength(label, font=_font(13))
        draw.rounded_rectangle(((width - lw) / 2 - 10, y, (width + lw) / 2 + 10, y + 24),
                               radius=6, fill=style.incoming)  # fmt: skip
        draw.text((width / 2, y + 12), label, fill=style.field_fg, font=_font(13), anchor="mm")
        y += 34
    room = input_top - y - 12
    above = rng.randint(1, 3 if room > 600 else 1)
    for _ in range(above):
        y = _bubble(draw, style, app, y, rng.choice(_MESSAGES), rng.random() < 0.5, clock())
    room = input_top - y - 80
    if app == "chatty":
        share = rng.uniform(0.72, 0.82)
        fitted = _fit(photo, round(width * share) - 12, min(room, 560) - 12)
        x0 = 14
        box = (x0, y, x0 + fitted.width + 12, y + fitted.height + 12 + 22)
        draw.rounded_rectangle(box, radius=10, fill=style.incoming)
        _rounded_paste(canvas, fitted, (x0 + 6, y + 6), 8)
        draw = ImageDraw.Draw(canvas)
        draw.text((box[2] - 8, box[3] - 5), clock(), fill=style.field_fg,
                  font=_font(style.time_size), anchor="rd")  # fmt: skip
        y = box[3] + 8
    else:
        fitted = _fit(photo, width, min(room, 620))
        x0 = (width - fitted.width) // 2
        canvas.paste(fitted, (x0, y))
        draw = ImageDraw.Draw(canvas)
        _photo_overlays(draw, (x0, y, x0 + fitted.width, y + fitted.height), clock())
        y += fitted.height + 10
    while y < input_top - 60 and rng.random() < 0.8:
        y = _bubble(draw, style, app, y, rng.choice(_MESSAGES), rng.random() < 0.6, clock())
    draw.rectangle((0, input_top - 2, width, height), fill=style.input_bg)  # clip the overflow
    _input_bar(draw, style, app, input_top)
    if keyboard:
        _keyboard(draw, style, bottom)
    draw.rounded_rectangle((width // 2 - 70, height - 14, width // 2 + 70, height - 9), radius=3,
                           fill=style.status_fg)  # home indicator  # fmt: skip
    return canvas


# ---------------------------------------------------------------------------------------------
# Different pictures sharing a surround

OVERLAY_SIZE = (640, 480)
Overlay = Callable[[list[Image.Image], int], tuple[Image.Image, Image.Image]]


def _fill(image: Image.Image, size: tuple[int, int] = OVERLAY_SIZE) -> Image.Image:
    return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


def _under(pictures: list[Image.Image], layer: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The first two pictures, filled to OVERLAY_SIZE, under the same RGBA layer."""
    first, second = (
        Image.alpha_composite(_fill(p).convert("RGBA"), layer).convert("RGB") for p in pictures[:2]
    )
    return first, second


def lines_overlay(pictures: list[Image.Image], seed: int) -> tuple[Image.Image, Image.Image]:
    """Two pictures under the same texture of thin lines (a hatch, a scribble, a grid)."""
    rng = random.Random(seed)
    texture = Image.new("RGBA", OVERLAY_SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(texture)
    colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255), 255)
    width, height = OVERLAY_SIZE
    style = seed % 3
    if style == 0:  # random thin strokes
        for _ in range(rng.randint(150, 300)):
            x, y = rng.randrange(width), rng.randrange(height)
            draw.line((x, y, x + rng.randint(-120, 120), y + rng.randint(-120, 120)),
                      fill=colour, width=rng.choice((1, 2)))  # fmt: skip
    elif style == 1:  # diagonal hatch
        step = rng.randint(8, 18)
        for x in range(-height, width, step):
            draw.line((x, 0, x + height, height), fill=colour, width=1)
    else:  # irregular grid
        x = 0
        while x < width:
            draw.line((x, 0, x, height), fill=colour, width=1)
            x += rng.randint(12, 40)
        y = 0
        while y < height:
            draw.line((0, y, width, y), fill=colour, width=1)
            y += rng.randint(12, 40)
    return _under(pictures, texture)


def watermark_overlay(pictures: list[Image.Image], seed: int) -> tuple[Image.Image, Image.Image]:
    """Two pictures carrying the same semi-transparent logo and repeated watermark text."""
    rng = random.Random(seed)
    mark = Image.new("RGBA", OVERLAY_SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    label = rng.choice(("SAMPLE", "© photo stock", "preview only", "schoolgate pics", "DRAFT"))
    alpha = rng.randint(90, 150)
    font = _font(rng.randint(28, 44))
    for row, y in enumerate(range(20, OVERLAY_SIZE[1], 110)):
        for x in range(-80 + (row % 2) * 120, OVERLAY_SIZE[0], 260):
            draw.text((x, y), label, fill=(255, 255, 255, alpha), font=font,
                      stroke_width=1, stroke_fill=(0, 0, 0, alpha))  # fmt: skip
    cx, cy = OVERLAY_SIZE[0] - 70, OVERLAY_SIZE[1] - 70  # round logo in a corner
    draw.ellipse((cx - 50, cy - 50, cx + 50, cy + 50), outline=(255, 255, 255, 200), width=6)
    draw.polygon(((cx - 25, cy + 25), (cx, cy - 30), (cx + 25, cy + 25)),
                 outline=(255, 255, 255, 200), width=5)  # fmt: skip
    draw.text((cx, cy + 36), label[:3], fill=(255, 255, 255, 200), font=_font(14), anchor="mm")
    mark = mark.rotate(rng.choice((0, 0, -20, 20)), Image.Resampling.BICUBIC)
    return _under(pictures, mark)


def frame_overlay(pictures: list[Image.Image], seed: int) -> tuple[Image.Image, Image.Image]:
    """Two pictures in the same decorative photo frame (a thick patterned border)."""
    rng = random.Random(seed)
    width, height = OVERLAY_SIZE
    border = rng.randint(round(width * 0.08), round(width * 0.15))
    frame = Image.new("RGB", OVERLAY_SIZE, (rng.randint(100, 230), rng.randint(60, 200), 40))
    draw = ImageDraw.Draw(frame)
    ink = (rng.randint(0, 120), rng.randint(0, 120), rng.randint(0, 255))
    pattern = seed % 3
    step = max(12, border // 3)
    for y in range(0, height, step):
        for x in range(0, width, step):
            if pattern == 0:
                draw.ellipse((x + 2, y + 2, x + step - 2, y + step - 2), outline=ink, width=2)
            elif pattern == 1 and (x // step + y // step) % 2:
                draw.rectangle((x, y, x + step - 1, y + step - 1), fill=ink)
            elif pattern == 2:
                draw.polygon(((x + step // 2, y + 2), (x + step - 2, y + step // 2),
                              (x + step // 2, y + step - 2), (x + 2, y + step // 2)),
                             outline=ink)  # fmt: skip
    draw.rectangle((border - 6, border - 6, width - border + 5, height - border + 5),
                   fill=(250, 250, 240))  # fmt: skip
    inner = (width - 2 * border, height - 2 * border)
    pair = []
    for picture in pictures[:2]:
        framed = frame.copy()
        framed.paste(_fill(picture, inner), (border, border))
        pair.append(framed)
    return pair[0], pair[1]


def meme_overlay(pictures: list[Image.Image], seed: int) -> tuple[Image.Image, Image.Image]:
    """A meme template: the same top and bottom text bars (impact-style, outlined capitals),
    a different picture in the middle."""
    rng = random.Random(seed)
    top_text = rng.choice(("WHEN THE BELL RINGS", "NOBODY:", "ME ON MONDAY", "POV:", "TEACHER:"))
    bottom_text = rng.choice(("AND IT'S FRIDAY", "ABSOLUTELY NOBODY", "HOMEWORK DONE",
                              "BUT WHY THO", "NOT TODAY"))  # fmt: skip
    width, height = OVERLAY_SIZE
    bar = round(height * rng.uniform(0.16, 0.22))
    bars_white = seed % 2 == 0
    pair = []
    for picture in pictures[:2]:
        canvas = Image.new("RGB", (width, height + 2 * bar),
                           (255, 255, 255) if bars_white else (0, 0, 0))  # fmt: skip
        canvas.paste(_fill(picture), (0, bar))
        draw = ImageDraw.Draw(canvas)
        fill, outline = ((0, 0, 0), (255, 255, 255)) if bars_white else ((255, 255, 255), (0, 0, 0))
        font = _font(round(bar * 0.55))
        for text, y in ((top_text, bar // 2), (bottom_text, height + bar + bar // 2)):
            draw.text((width // 2, y), text, fill=fill, font=font, anchor="mm", stroke_width=3,
                      stroke_fill=outline)  # fmt: skip
        pair.append(canvas)
    return pair[0], pair[1]


def _figure_subject(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A procedural 'person-like' subject in flat colours: a head, a rounded body and an arm,
    each figure in its own pose. Two figures of one outline in other colours would be a
    recoloured copy of one picture, which the tier must match (a greyscale or tinted copy)."""
    width, height = size
    subject = Image.new(
        "RGB", size, (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
    )
    draw = ImageDraw.Draw(subject)
    head = round(width * rng.uniform(0.22, 0.42))
    centre = round(width * rng.uniform(0.3, 0.7))
    top = rng.randint(4, max(5, height // 6))
    skin = (rng.randint(120, 240), rng.randint(90, 200), rng.randint(60, 180))
    draw.ellipse((centre - head // 2, top, centre + head // 2, top + head), fill=skin)
    shirt = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
    body = round(width * rng.uniform(0.5, 0.9))
    left = max(0, min(width - body, centre - body // 2))
    shoulders = top + head + rng.randint(4, 30)
    draw.rounded_rectangle((left, shoulders, left + body, height), radius=head // 2, fill=shirt)
    arm = max(6, width // 12)  # one arm, raised or lowered
    side = left if rng.random() < 0.5 else left + body - arm
    reach = rng.randint(-height // 3, height // 4)
    draw.rectangle((side, min(shoulders, shoulders + reach), side + arm,
                    max(shoulders, shoulders + reach)), fill=skin)  # fmt: skip
    for _ in range(rng.randint(2, 6)):  # print on the shirt
        x = rng.randint(left + body // 8, left + 7 * body // 8)
        y = rng.randint(min(shoulders + 20, height - 21), height - 20)
        r = rng.randint(6, 20)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(255 - c for c in shirt))
    return subject


def _before(background: Image.Image, subjects: list[Image.Image], seed: int
            ) -> tuple[Image.Image, Image.Image]:  # fmt: skip
    """Two scenes: the same background with each subject (filled to one size, cut as an oval
    or a box) in front of it, covering 25-50% of the area at the same place."""
    rng = random.Random(seed)
    width, height = OVERLAY_SIZE
    share = rng.uniform(0.25, 0.5)
    aspect = rng.uniform(0.6, 1.2)  # subject width / height
    sub_h = min(height, round((share * width * height / aspect) ** 0.5))
    sub_w = min(width, round(share * width * height / sub_h))
    x, y = rng.randint(0, width - sub_w), height - sub_h - rng.randint(0, (height - sub_h) // 3)
    mask = Image.new("L", (sub_w, sub_h), 0)
    if seed % 2 == 0:
        ImageDraw.Draw(mask).ellipse((0, 0, sub_w, sub_h), fill=255)
    else:
        ImageDraw.Draw(mask).rectangle((0, 0, sub_w, sub_h), fill=255)
    first, second = (background.copy() for _ in range(2))
    for scene, subject in ((first, subjects[0]), (second, subjects[1])):
        scene.paste(_fill(subject, (sub_w, sub_h)), (x, y), mask)
    return first, second


def background_overlay(pictures: list[Image.Image], seed: int) -> tuple[Image.Image, Image.Image]:
    """A fixed background (the third picture: the same wall, room or classroom) with a different
    photographed subject (the first two pictures) in front of it."""
    return _before(_fill(pictures[2]), pictures[:2], seed)


def figure_overlay(pictures: list[Image.Image], seed: int) -> tuple[Image.Image, Image.Image]:
    """The same background (the picture) with a different *drawn* flat-colour figure in front
    of it: to the content check, a different sticker over the same picture (see the DSL guide
    on what it cannot tell apart)."""
    width, height = OVERLAY_SIZE
    figures = [_figure_subject((width // 2, height * 2 // 3), random.Random(seed * 31 + n))
               for n in range(2)]  # fmt: skip
    return _before(_fill(pictures[0]), figures, seed)


def procedural_scene_pair(seed: int = 36) -> tuple[Image.Image, Image.Image]:
    """Two drawn scenes: the same background with a different drawn subject in front of it,
    whose whole-image PDQ hashes are within the default match distance (18 bits for seed 36)
    although the subjects differ: the shared layout carries the hash."""
    background = _fill(procedural_scene(1000 + seed))
    return _before(background, [procedural_scene(2000 + seed), procedural_scene(3000 + seed)], seed)


# kind -> (generator, pictures it consumes per pair)
OVERLAYS: dict[str, tuple[Overlay, int]] = {
    "lines": (lines_overlay, 2),
    "watermark": (watermark_overlay, 2),
    "frame": (frame_overlay, 2),
    "meme": (meme_overlay, 2),
    "background": (background_overlay, 3),
    "figure": (figure_overlay, 1),
}


def overlay_pictures(per_kind: int) -> int:
    """How many distinct pictures `overlay_pairs(per_kind, ...)` should be given: what the kinds
    consume, and half as many again for the plain ones it skips."""
    return per_kind * sum(count for _, count in OVERLAYS.values()) * 3 // 2


def overlay_pairs(per_kind: int, pictures: list[Image.Image], seed: int = 0
                  ) -> list[tuple[str, Image.Image, Image.Image]]:  # fmt: skip
    """`per_kind` pairs of each overlay kind, interleaved, each from its own distinct pictures
    (taken in order from `pictures`; raises if there are too few).

    Pictures too plain for a PDQ hash to describe (quality < 50: a tile of clear sky, a flat
    gradient) are skipped: two of them in one frame are the same picture to any viewer."""
    from schoolgate.media.hashing import pdq_hash

    pictures = [picture for picture in pictures if pdq_hash(picture).quality >= 50]
    pairs: list[tuple[str, Image.Image, Image.Image]] = []
    cursor = 0
    for number in range(per_kind):
        for kind, (make, needs) in OVERLAYS.items():
            if cursor + needs > len(pictures):
                raise ValueError(f"{len(pictures)} pictures are too few for {per_kind} per kind")
            first, second = make(pictures[cursor : cursor + needs], seed + number)
            pairs.append((kind, first, second))
            cursor += needs
    return pairs


# ---------------------------------------------------------------------------------------------
# Many distinct ordinary pictures


def _tiles(photo: Image.Image) -> list[Image.Image]:
    """Non-overlapping tiles: 3x3 for photos of 1000 px or more, quadrants otherwise."""
    grid = 3 if max(photo.size) >= 1000 else 2
    width, height = photo.size
    xs = [round(width * i / grid) for i in range(grid + 1)]
    ys = [round(height * i / grid) for i in range(grid + 1)]
    return [photo.crop((xs[c], ys[r], xs[c + 1], ys[r + 1]))
            for r in range(grid) for c in range(grid)]  # fmt: skip


@functools.cache
def _photo_tiles() -> tuple[Image.Image, ...]:
    tiles: list[Image.Image] = []
    for photo in real_photos().values():
        tiles += _tiles(photo)
    return tuple(tiles)


def photo_tile_count() -> int:
    return len(_photo_tiles())


def distinct_pictures(n: int, scene_seed: int = 70_000) -> list[Image.Image]:
    """`n` distinct ordinary pictures, deterministic: first the non-overlapping tiles of every
    real photo (different parts of a photo are different pictures), then procedural scenes from
    `scene_seed` on. The images are shared between calls: copy before drawing on one."""
    tiles = list(_photo_tiles()[:n])
    scenes = [procedural_scene(scene_seed + i) for i in range(n - len(tiles))]
    return tiles + scenes


def bankable(picture: Image.Image, min_features: int = 200) -> bool:
    """Whether a picture is one the robust tier can bank as an incident photo: enough texture
    for local features (flat gradients and tiny tiles give none) and PDQ quality >= 50."""
    from schoolgate.media.features import extract_features
    from schoolgate.media.hashing import pdq_hash

    return pdq_hash(picture).quality >= 50 and len(extract_features(picture)) >= min_features


def spread_bankable(pictures: list[Image.Image], count: int, among: int | None = None) -> list[int]:
    """Indices of `count` bankable pictures spread evenly over the first `among` (default: the
    photo tiles), so the banked set draws on many photos, not the first few."""
    limit = min(len(pictures), photo_tile_count() if among is None else among)
    candidates = [i for i in range(limit) if bankable(pictures[i])]
    if len(candidates) < count:
        raise ValueError(f"only {len(candidates)} bankable pictures among {limit}")
    step = len(candidates) / count
    return [candidates[int(k * step)] for k in range(count)]
