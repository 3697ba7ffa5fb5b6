"""`schoolgate hashes add` then `schoolgate scan` on the edited copies that circulate after an
incident: every edit is blocked, unrelated benign images are not, and the verdict says which tier
matched with what evidence."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.imagery import (
    EDITS,
    encode,
    phone_screenshot,
    skimage_photo,
    squash_along,
    squash_then_turn,
)
from tests.test_cli_scan import NO_MODELS, schoolgate

BANKED = "astronaut"
UNRELATED = ("coffee", "chelsea", "rocket", "camera", "coins")


@pytest.fixture
def config(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "hash-only.yaml"
    path.write_text(NO_MODELS)
    return path


@pytest.fixture
def banked(tmp_path: Path, config: Path) -> Path:
    original = tmp_path / "incident.jpg"
    original.write_bytes(encode(skimage_photo(BANKED), "JPEG", quality=92))
    added = schoolgate("hashes", "add", str(original), "--bank", "incident-1", config=config)
    assert added.returncode == 0, added.stderr
    assert "local feature sets" in added.stdout
    assert "squashed" not in added.stdout  # opt-in
    return original


def _write_edits(folder: Path) -> None:
    folder.mkdir()
    for seed, (edit, apply) in enumerate(EDITS.items()):
        (folder / f"{edit}.img").write_bytes(apply(skimage_photo(BANKED), seed))


def _scan(config: Path, *paths: Path) -> tuple[int, dict[str, dict[str, object]]]:
    result = schoolgate("scan", "--json", *map(str, paths), config=config)
    assert "Traceback" not in result.stderr, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return result.returncode, {Path(str(r["file"])).stem: r for r in records}


def test_every_edit_of_a_banked_photo_is_blocked(
    banked: Path, config: Path, tmp_path: Path
) -> None:
    _write_edits(tmp_path / "edits")
    code, records = _scan(config, tmp_path / "edits")
    assert code == 1
    assert set(records) == set(EDITS)
    allowed = [edit for edit, r in records.items() if r["decision"] != "block"]
    assert not allowed, allowed
    tiers = {edit: r["matches"][0]["tier"] for edit, r in records.items()}  # type: ignore[index]
    assert "robust" in tiers.values()  # some edits need the robust tier (crop, small rotation)
    robust = next(r for r in records.values() if r["matches"][0]["tier"] == "robust")  # type: ignore[index]
    evidence = robust["matches"][0]["evidence"]  # type: ignore[index]
    assert evidence["inliers"] >= 20
    assert evidence["spread"] >= 0.3


def test_squashed_and_turned_copies_are_blocked_when_opted_in(
    data_dir: Path, tmp_path: Path
) -> None:
    """Adversarial pass a16 (N2b/N2c), through `hashes add` and `scan`, with
    `banks.robust.bank_squashed` on."""
    config = tmp_path / "squashed.yaml"
    config.write_text(NO_MODELS + "banks:\n  robust:\n    bank_squashed: true\n")
    photo = skimage_photo(BANKED).convert("RGB")
    original = tmp_path / "incident.jpg"
    original.write_bytes(encode(photo, "JPEG", quality=92))
    added = schoolgate("hashes", "add", str(original), "--bank", "incident-1", config=config)
    assert added.returncode == 0, added.stderr
    assert "squashed to half along 4 axes" in added.stdout
    folder = tmp_path / "squashed"
    folder.mkdir()
    copies = {"half-height-turned-3": squash_then_turn(0.5, 1.0, 3),
              "half-width-turned-8": squash_then_turn(1.0, 0.5, -8),
              "half-along-45": squash_along(45, 0.5)}  # fmt: skip
    for name, edit in copies.items():
        (folder / f"{name}.jpg").write_bytes(encode(edit(photo), "JPEG", quality=88))
    code, records = _scan(config, folder)
    assert code == 1
    assert {name: r["decision"] for name, r in records.items()} == dict.fromkeys(copies, "block")


def test_unrelated_benign_images_are_allowed(banked: Path, config: Path, tmp_path: Path) -> None:
    folder = tmp_path / "unrelated"
    folder.mkdir()
    for seed, name in enumerate(UNRELATED):
        photo = skimage_photo(name)
        (folder / f"{name}.jpg").write_bytes(encode(photo, "JPEG", quality=90))
        (folder / f"{name}-screenshot.png").write_bytes(phone_screenshot(photo, seed))
        (folder / f"{name}-caption.jpg").write_bytes(EDITS["caption_middle"](photo, seed))
    code, records = _scan(config, folder)
    assert len(records) == 3 * len(UNRELATED)
    assert code == 0, [f for f, r in records.items() if r["decision"] == "block"]


def test_tiers_config_turns_the_robust_tier_off(banked: Path, tmp_path: Path) -> None:
    pdq_only = tmp_path / "pdq-only.yaml"
    pdq_only.write_text(NO_MODELS + "banks:\n  tiers: {'incident-*': [pdq]}\n")
    crop = tmp_path / "crop.jpg"
    crop.write_bytes(EDITS["crop_10"](skimage_photo(BANKED), 7))
    # The same bank and the same copy: blocked with the default tiers, allowed without "robust".
    default = tmp_path / "default.yaml"
    default.write_text(NO_MODELS)
    code, records = _scan(default, crop)
    assert code == 1
    assert records["crop"]["matches"][0]["tier"] == "robust"  # type: ignore[index]
    code, records = _scan(pdq_only, crop)
    assert code == 0, records


def test_bank_holds_features_not_the_picture(banked: Path, config: Path, data_dir: Path) -> None:
    database = data_dir / "banks.sqlite"
    with sqlite3.connect(database) as conn:
        views = conn.execute("SELECT view, length(data) FROM features").fetchall()
    assert {view for view, _ in views} >= {"whole", "mirror"}
    assert all(size <= 500 * 40 + 16 + 576 for _, size in views)  # features and content grid
    picture = banked.read_bytes()
    stored = b"".join(p.read_bytes() for p in data_dir.glob("banks.sqlite*"))
    assert picture[1000:1064] not in stored  # no stretch of the file's bytes is kept

    sha256 = json.loads(
        schoolgate("hashes", "compute", "--json", str(banked), config=config).stdout
    )["sha256"]
    removed = schoolgate("hashes", "remove", "--bank", "incident-1", sha256, "--type", "sha256",
                         config=config)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    stats = json.loads(schoolgate("hashes", "stats", "--json", config=config).stdout)
    assert stats["banks"]["incident-1"]["feature_items"] == 0


# ---------------------------------------------------------------------------------------------
# Issue 18 through the command line: a chat screenshot is banked on its picture, and other
# screenshots of the same app are not matched on the app's interface


def test_hashes_add_says_what_it_banked_and_scan_judges_the_picture(
    tmp_path: Path, config: Path
) -> None:
    from PIL import Image, ImageDraw

    from tests.support.screens import chat_screenshot, distinct_pictures, spread_bankable

    pictures = distinct_pictures(40)
    banked_index, *others = spread_bankable(pictures, 4)
    shot = tmp_path / "shot.png"
    shot.write_bytes(encode(chat_screenshot(pictures[banked_index], "chatty", "dark", 1), "PNG"))
    notes = Image.new("RGB", (540, 1170), "white")
    for y in range(40, 1100, 40):
        ImageDraw.Draw(notes).text((20, y), "homework due friday, bring your pe kit", fill="black")
    text = tmp_path / "notes.png"
    text.write_bytes(encode(notes, "PNG"))
    added = schoolgate("hashes", "add", str(shot), str(text), "--bank", "incident-2",
                       config=config)  # fmt: skip
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert any(line.strip().startswith("picture region") for line in lines), added.stdout
    assert any("warning: mostly interface, text or drawing" in line for line in lines)

    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "photo.jpg").write_bytes(encode(pictures[banked_index], "JPEG", quality=85))
    in_other_app = chat_screenshot(pictures[banked_index], "snappy", "light", 7)
    (queries / "other_app.png").write_bytes(encode(in_other_app, "PNG"))
    for number, index in enumerate(others):
        other = chat_screenshot(pictures[index], "chatty", "dark", 20 + number)
        (queries / f"innocent{number}.png").write_bytes(encode(other, "PNG"))
    _, records = _scan(config, queries)
    decisions = {name: record["decision"] for name, record in records.items()}
    assert decisions == {"photo": "block", "other_app": "block"} | {
        f"innocent{n}": "allow" for n in range(len(others))
    }
