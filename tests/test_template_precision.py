"""Pictures made from one template (adversarial pass a10, goal "get an innocent picture blocked"):
another letter on a banked letter's letterhead, another chart in a banked chart's style, another
list in a banked app screen. Banked with `schoolgate hashes add`, judged as the proxy judges.

Letters are told apart since a drawing's letterhead band is no longer banked as its picture (a10:
letters matched at PDQ distance 0). Charts and app screens are not yet (issue 18 stays open): at
the 512-pixel scale both tiers work at, a list of entries is a texture, the same for any words,
and the shared axes, grid and labels carry the local features (a10: charts 218-236 inliers,
content agreement 0.84-0.89). Strict: these turn red when fixed. The banked files themselves,
edited, are still blocked: the bank works."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from PIL import Image, ImageFont

from tests.support.imagery import EDITS, SHARED_REFERENCE, encode
from tests.support.templates import bar_chart, certificate, homework_screen, letter, photo_letter
from tests.test_robust_precision import CTX, Bank, _bank

try:
    ImageFont.truetype("DejaVuSans-Bold.ttf", 10)
except OSError:  # a10 drew with DejaVu; `make test` installs fonts-dejavu-core
    pytest.skip("DejaVu fonts are missing (fonts-dejavu-core)", allow_module_level=True)

TEMPLATES: dict[str, Callable[[int], Image.Image]] = {
    "letter": letter,
    "chart": bar_chart,
    "screen": homework_screen,
    "certificate": certificate,
}
if SHARED_REFERENCE.is_dir():  # its banner is a shared reference photo
    TEMPLATES["photo_letter"] = photo_letter
_OPEN = ("issue 18 open: two pictures of one template (a chart style, an app screen, a form, a "
         "letterhead with a photo, a certificate) look alike at the scale the tiers compare; "
         "a10, a11")  # fmt: skip


@pytest.fixture(scope="module")
def template_bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    items = {f"{name}.png": encode(make(1), "PNG") for name, make in TEMPLATES.items()}
    with _bank(tmp_path_factory.mktemp("templates"), items) as bank:
        yield bank


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_edited_copies_of_a_banked_template_picture_are_blocked(
    template_bank: Bank, name: str
) -> None:
    picture = TEMPLATES[name](1)
    assert template_bank.blocked(picture, "JPEG")
    assert template_bank.inspector.evaluate(EDITS["crop_10"](picture, 3), CTX).blocked


def test_another_letter_on_the_same_letterhead_is_not_blocked(template_bank: Bank) -> None:
    """a10: a letter's content box was its letterhead alone, banked as a view of its own, so
    every letter on that letterhead matched at PDQ distance 0. A drawing's band is no longer
    banked as its picture."""
    blocked = [seed for seed in (2, 3, 4) if template_bank.blocked(letter(seed))]
    assert not blocked, f"letters {blocked} blocked"


@pytest.mark.xfail(strict=True, reason=_OPEN)
@pytest.mark.parametrize(
    "name",
    [
        "chart",
        "screen",
        "certificate",
        pytest.param(
            "photo_letter",
            marks=pytest.mark.skipif(
                not SHARED_REFERENCE.is_dir(), reason="needs ../shared/testdata"
            ),
        ),
    ],
)
def test_another_picture_of_the_same_template_is_not_blocked(
    template_bank: Bank, name: str
) -> None:
    blocked = [seed for seed in (2, 3) if template_bank.blocked(TEMPLATES[name](seed))]
    assert not blocked, f"{name} {blocked} blocked"


def test_templates_draw_a_different_picture_per_seed() -> None:
    for make in TEMPLATES.values():
        assert make(2).tobytes() != make(3).tobytes()
