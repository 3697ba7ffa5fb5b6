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


def _crest(draw: ImageDraw.ImageDraw, x: int, y: int, side: int) -> None:
    gold, navy = (200, 160, 40), (20, 40, 110)
    draw.polygon([(x, y), (x + side, y), (x + side, y + side * 0.7), (x + side / 2, y + side),
                  (x, y + side * 0.7)], fill=navy, outline=gold, width=4)  # fmt: skip
    draw.line((x + side / 2, y + 8, x + side / 2, y + side * 0.9), fill=gold, width=5)
    draw.line((x + 8, y + side * 0.35, x + side - 8, y + side * 0.35), fill=gold, width=5)


def photo_letter(seed: int, width: int = 850, height: int = 1100) -> Image.Image:
    """A letter under a tall letterhead with a photo banner of the school (adversarial pass
    a11; the banner is a shared reference photo): the same banner, crest and footer, its own
    text."""
    from PIL import ImageOps

    from tests.support.imagery import reference_photo

    rng = random.Random(seed)
    page = Image.new("RGB", (width, height), "white")
    banner = reference_photo("reg-test-input/labelme-subset/q2821.jpg").convert("RGB")
    page.paste(ImageOps.fit(banner, (width, 220)), (0, 0))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 220, width, 300), fill=(20, 40, 110))
    _crest(draw, 30, 160, 120)
    draw.text((170, 235), "ST ALDHELM'S ACADEMY", font=_font(34, bold=True), fill="white")
    draw.text((170, 275), "Respect  Aspire  Achieve", font=_font(16), fill=(200, 160, 40))
    y = 340
    draw.text((60, y), "Dear " + rng.choice(["Parent", "Carer", "Mr Patel"]) + ",",
              font=_font(20), fill="black")  # fmt: skip
    y += 50
    for _ in range(rng.randint(12, 20)):
        draw.text((60, y), _sentence(rng, rng.randint(6, 10)), font=_font(18), fill="black")
        y += 32
    draw.rectangle((0, height - 60, width, height), fill=(20, 40, 110))
    draw.text((60, height - 45), "1 School Lane, Townsville  01234 567890", font=_font(14),
              fill="white")  # fmt: skip
    return page


def certificate(seed: int, width: int = 1100, height: int = 780) -> Image.Image:
    """A certificate of achievement (a11): the same border, crest and wording, another pupil's
    name and subject."""
    rng = random.Random(seed)
    name = rng.choice(["Alice Moreno", "Ben Okafor", "Zara Khan", "Tom Lee", "Ava Smith"])
    subject = rng.choice(["English", "Maths", "Science", "History", "Art", "Music"])
    page = Image.new("RGB", (width, height), (255, 252, 235))
    draw = ImageDraw.Draw(page)
    for inset in range(0, 40, 8):
        colour = (180, 140, 40) if inset % 16 else (20, 40, 110)
        draw.rectangle((20 + inset, 20 + inset, width - 20 - inset, height - 20 - inset),
                       outline=colour, width=4)  # fmt: skip
    _crest(draw, width // 2 - 55, 95, 110)
    centre = width // 2
    draw.text((centre, 250), "Certificate of Achievement", font=_font(54, bold=True),
              fill=(20, 40, 110), anchor="mm")  # fmt: skip
    draw.text((centre, 330), "This is to certify that", font=_font(24), fill="black", anchor="mm")
    draw.text((centre, 400), name, font=_font(50, bold=True), fill=(150, 20, 40), anchor="mm")
    draw.text((centre, 470), f"has shown outstanding effort in {subject}", font=_font(26),
              fill="black", anchor="mm")  # fmt: skip
    draw.line((150, 640, 450, 640), fill="black", width=2)
    draw.line((650, 640, 950, 640), fill="black", width=2)
    return page
