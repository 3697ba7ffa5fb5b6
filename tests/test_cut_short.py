"""A picture cut short is refused (the fail policy), and a banked one among the rows it still
shows is a match, so the DSL hears of it (adversarial pass a46 O1: the first 80% of a banked
JPEG, which any viewer shows, was blocked as `refused` and no alert was raised)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from tests.support.imagery import encode
from tests.test_robust_precision import CTX, Bank, _bank


@pytest.fixture(scope="module")
def bank(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[Bank]:
    items = {"banked.jpg": encode(benign_photos["astronaut"], "JPEG", quality=90)}
    with _bank(tmp_path_factory.mktemp("cut-short"), items) as banked:
        yield banked


@pytest.mark.parametrize("share", [0.6, 0.8, 0.95])
def test_a_banked_jpeg_cut_short_is_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], share: float
) -> None:
    data = encode(benign_photos["astronaut"], "JPEG", quality=90)
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked
    record = verdict.to_dict()
    assert record["failure"] == "refused"
    assert verdict.matches, record  # a match: the alert goes to the DSL
    assert dict(verdict.matches[0].evidence).get("cut_short") == 1.0


@pytest.mark.parametrize("share", [0.02, 0.5, 0.9])
def test_an_innocent_jpeg_cut_short_is_refused_without_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], share: float
) -> None:
    data = encode(benign_photos["coffee"], "JPEG", quality=90)
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked  # fail closed, as before
    assert not verdict.matches
