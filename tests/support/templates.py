"""Pictures made from one template: letters on one letterhead, charts of one style, one app's list
screen (adversarial pass a10's innocent pictures that were blocked). Benign Pillow drawings."""

from __future__ import annotations

import functools
import random

from PIL import Image, ImageDraw, ImageFont


@functools.cache
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, as a10 drew with (Debian's fonts-dejavu-core); Pillow's own otherwise."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


_WORDS = (  # noqa: SIM905 (a sentence reads better than a list of words)
    "hey are you coming to the match later lol yeah cant wait see you at the gate did you do the "
    "maths homework no idea what question four means ok bring snacks the bus is late again miss "
    "said we need our pe kit tomorrow haha that was so funny"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def letter(seed: int, width: int = 850, height: int = 1100) -> Image.Image:
    """A school letter: the same letterhead and footer, its own text."""
    rng = random.Random(seed)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    draw.ellipse((40, 30, 150, 140), fill=(20, 50, 120))
    draw.polygon([(95, 45), (135, 120), (55, 120)], fill=(240, 200, 30))
    draw.text((170, 45), "Hillside Academy", font=_font(44, bold=True), fill=(20, 50, 120))
    draw.text((170, 100), "Learning together since 1952  |  01234 567890", font=_font(20),
              fill=(80, 80, 80))  # fmt: skip
    draw.line((40, 160, width - 40, 160), fill=(20, 50, 120), width=4)
    draw.text((40, 190), "Dear Parent/Carer,", font=_font(24), fill="black")
    y = 240
    for _ in range(rng.randint(14, 20)):
        draw.text((40, y), _sentence(rng, 10), font=_font(22), fill="black")
        y += 36
    draw.text((40, y + 30), "Yours sincerely, Mrs " + rng.choice(["Patel", "Jones", "Okoye"]),
              font=_font(24), fill="black")  # fmt: skip
    draw.rectangle((0, height - 60, width, height), fill=(20, 50, 120))
    draw.text((40, height - 45), "www.hillside.example  Registered charity 0000000",
              font=_font(20), fill="white")  # fmt: skip
    return page


def bar_chart(seed: int, width: int = 900, height: int = 600) -> Image.Image:
    """An attendance chart: the same title, axes, grid and legend, its own bars."""
    rng = random.Random(seed)
    chart = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(chart)
    draw.text((260, 15), "Year 9 attendance by week", font=_font(28, bold=True), fill="black")
    for step in range(6):
        y = 520 - step * 90
        draw.line((80, y, width - 30, y), fill=(210, 210, 210))
        draw.text((30, y - 12), f"{step * 20}%", font=_font(18), fill="black")
    draw.line((80, 70, 80, 520), fill="black", width=2)
    draw.line((80, 520, width - 30, 520), fill="black", width=2)
    for week in range(10):
        share, x = rng.uniform(0.3, 1.0), 100 + week * 78
        draw.rectangle((x, 520 - share * 450, x + 50, 520), fill=(50, 110, 200))
        draw.text((x + 5, 530), f"W{week + 1}", font=_font(18), fill="black")
    draw.rectangle((width - 200, 70, width - 40, 110), outline="black")
    draw.text((width - 190, 78), "present", font=_font(18), fill="black")
    return chart


def homework_screen(seed: int, width: int = 720, height: int = 1400) -> Image.Image:
    """One app's homework list: the same header, cards and tab bar, its own entries."""
    rng = random.Random(seed)
    screen = Image.new("RGB", (width, height), (245, 245, 247))
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, width, 140), fill="white")
    draw.text((30, 60), "Homework", font=_font(40, bold=True), fill="black")
    for card in range(8):
        y = 170 + card * 140
        draw.rounded_rectangle((20, y, width - 20, y + 120), 16, fill="white")
        colour = (rng.randint(50, 220), rng.randint(50, 220), rng.randint(50, 220))
        draw.ellipse((40, y + 25, 110, y + 95), fill=colour)
        draw.text((130, y + 25), _sentence(rng, 3).title(), font=_font(26, bold=True),
                  fill="black")  # fmt: skip
        draw.text((130, y + 70), "Due " + rng.choice(["Mon", "Tue", "Wed", "Thu", "Fri"]),
                  font=_font(20), fill=(120, 120, 120))  # fmt: skip
    draw.rectangle((0, height - 120, width, height), fill="white")
    for tab in range(4):
        draw.ellipse((70 + tab * 170, height - 95, 120 + tab * 170, height - 45),
                     outline=(0, 122, 255), width=4)  # fmt: skip
    return screen
