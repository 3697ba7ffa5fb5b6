"""`schoolgate hashes` and `schoolgate scan` as a person runs them: real processes, exit codes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from tests.conftest import encode
from tests.support.onnx_models import PATTERN_INPUT_SIZE, make_pattern_model, pattern_image

NO_MODELS = "classifier:\n  models: []\n"


def schoolgate(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "schoolgate.cli", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def hash_only_config(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "hash-only.yaml"
    path.write_text(NO_MODELS)
    return path


@pytest.fixture
def photos(tmp_path: Path, benign_photos: dict[str, Image.Image]) -> dict[str, Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        path = folder / f"{name}.jpg"
        path.write_bytes(encode(benign_photos[name], "JPEG", quality=92))
        paths[name] = path
    return paths


def test_hashes_compute_json(hash_only_config: Path, photos: dict[str, Path]) -> None:
    path = str(photos["coffee"])
    result = schoolgate("hashes", "compute", "--json", path, config=hash_only_config)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["media_type"] == "jpeg"
    assert [len(info[k]) for k in ("sha256", "md5", "sha1", "pdq")] == [64, 32, 40, 64]
    assert 0 <= info["pdq_quality"] <= 100


def test_banked_image_and_its_edited_copies_are_blocked(
    hash_only_config: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    added = schoolgate(
        "hashes", "add", str(photos["astronaut"]), "--bank", "incident-test",
        config=hash_only_config,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "the files themselves were not stored" in added.stdout

    original = Image.open(photos["astronaut"]).convert("RGB")
    edits = {
        "recompressed.jpg": encode(original, "JPEG", quality=40),
        "resized.png": encode(original.resize((200, 200)), "PNG"),
        "mirrored.webp": encode(ImageOps.mirror(original), "WEBP"),
        "rotated.jpg": encode(original.rotate(90, expand=True), "JPEG"),
    }
    edited_dir = tmp_path / "edited"
    edited_dir.mkdir()
    for name, data in edits.items():
        (edited_dir / name).write_bytes(data)

    for path in [photos["astronaut"], *sorted(edited_dir.iterdir())]:
        result = schoolgate("scan", str(path), config=hash_only_config)
        assert result.returncode == 1, f"{path.name} was not blocked: {result.stdout}"
        assert "bank incident-test" in result.stdout

    unrelated = [str(photos[name]) for name in ("coffee", "chelsea", "rocket")]
    result = schoolgate("scan", *unrelated, config=hash_only_config)
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("ALLOW") == 3


def test_a_zip_is_judged_item_by_item_as_the_proxy_judges_it(
    hash_only_config: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    """a40: `scan` called a ZIP holding a banked picture `allow unknown`; the proxy blocks it."""
    added = schoolgate("hashes", "add", str(photos["astronaut"]), "--bank", "incident-test",
                       config=hash_only_config)  # fmt: skip
    assert added.returncode == 0, added.stderr
    album = tmp_path / "album.zip"
    with zipfile.ZipFile(album, "w", zipfile.ZIP_STORED) as archive:
        archive.write(photos["coffee"], "a.jpg")
        archive.write(photos["astronaut"], "b.jpg")
    result = schoolgate("scan", "--json", str(album), config=hash_only_config)
    assert result.returncode == 1, result.stdout
    items = {r["item"]: r["decision"] for r in map(json.loads, result.stdout.splitlines())}
    assert items == {"body/zip:a.jpg": "allow", "body/zip:b.jpg": "block"}
    plain = schoolgate("scan", str(photos["astronaut"]), config=hash_only_config)
    assert plain.returncode == 1
    assert "[" not in plain.stdout  # a picture is judged as itself: no item named


def test_scan_json_and_folder(hash_only_config: Path, photos: dict[str, Path]) -> None:
    result = schoolgate("scan", "--json", str(photos["coffee"].parent), config=hash_only_config)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {Path(r["file"]).name for r in records} == {p.name for p in photos.values()}
    assert all(r["decision"] == "allow" and r["hashes"]["pdq"] for r in records)


def test_pattern_model_flags_the_synthetic_pattern(
    tmp_path: Path, data_dir: Path, photos: dict[str, Path]
) -> None:
    model = make_pattern_model(tmp_path / "pattern.onnx")
    config = tmp_path / "pattern.yaml"
    config.write_text(
        "classifier:\n  models:\n"
        f"    - {{name: pattern, adapter: onnx, path: {model}, labels: [flag],"
        f" input_size: {PATTERN_INPUT_SIZE}, thresholds: {{flag: 0.5}}}}\n"
    )
    red = tmp_path / "red.png"
    red.write_bytes(encode(pattern_image(), "PNG"))
    blocked = schoolgate("scan", str(red), config=config)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "classifier pattern: flag" in blocked.stdout
    allowed = schoolgate("scan", str(photos["chelsea"]), config=config)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_bad_files_get_reasons_not_tracebacks(
    hash_only_config: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos["coffee"].read_bytes()[:2000])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    wrong_extension = tmp_path / "holiday.txt"
    wrong_extension.write_bytes(photos["rocket"].read_bytes())

    result = schoolgate("scan", "--json", str(truncated), str(empty), str(wrong_extension),
                        config=hash_only_config)  # fmt: skip
    assert "Traceback" not in result.stderr
    records = {Path(r["file"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    # Media that cannot be decoded is refused, and the default fail policy is closed.
    assert records["truncated.jpg"]["decision"] == "block"
    assert records["truncated.jpg"]["failure"] == "refused"
    assert records["empty.jpg"]["decision"] == "allow"  # nothing to inspect
    assert records["holiday.txt"]["media_type"] == "jpeg"  # sniffed, not trusted to the name
    assert result.returncode == 1

    missing = schoolgate("scan", str(tmp_path / "missing.jpg"), config=hash_only_config)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr


def test_default_models_do_not_flag_benign_photos(data_dir: Path, photos: dict[str, Path]) -> None:
    """The embedded default (open_nsfw enabled) allows ordinary photos."""
    result = schoolgate("scan", "--json", *map(str, photos.values()))
    assert result.returncode == 0, result.stdout + result.stderr
    for record in map(json.loads, result.stdout.splitlines()):
        scores = {s["model"]: s for s in record["scores"]}
        assert "open_nsfw" in scores
        assert not scores["open_nsfw"]["flagged"]


def test_hashes_list_stats_remove(hash_only_config: Path, photos: dict[str, Path]) -> None:
    schoolgate("hashes", "add", str(photos["coffee"]), "--bank", "b1", config=hash_only_config)
    listed = schoolgate("hashes", "list", "--json", config=hash_only_config)
    banks = json.loads(listed.stdout)
    assert [b["name"] for b in banks] == ["b1"]
    assert banks[0]["counts"] == {"sha256": 1, "md5": 1, "sha1": 1, "pdq": 1}
    signals = schoolgate("hashes", "list", "--bank", "b1", "--type", "pdq", "--json",
                         config=hash_only_config)  # fmt: skip
    pdq = json.loads(signals.stdout.splitlines()[0])["value"]
    removed = schoolgate("hashes", "remove", "--bank", "b1", pdq, "--type", "pdq",
                         config=hash_only_config)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    again = schoolgate("hashes", "remove", "--bank", "b1", pdq, "--type", "pdq",
                       config=hash_only_config)  # fmt: skip
    assert again.returncode == 2
    stats = schoolgate("hashes", "stats", "--json", config=hash_only_config)
    assert stats.returncode == 0
    deleted = schoolgate("hashes", "remove", "--bank", "b1", "--all", config=hash_only_config)
    assert deleted.returncode == 0
    assert json.loads(schoolgate("hashes", "list", "--json", config=hash_only_config).stdout) == []


def test_removing_a_files_sha256_removes_all_it_was_banked_with(
    hash_only_config: Path, benign_photos: dict[str, Image.Image], tmp_path: Path
) -> None:
    """a41 F6: a picture banked by mistake and removed by the hashes `hashes compute` prints
    kept blocking: `hashes add` had also banked the PDQ of the picture inside its bands."""
    framed = ImageOps.expand(benign_photos["coffee"], border=120, fill="white")
    path = tmp_path / "framed.png"
    path.write_bytes(encode(framed, "PNG"))
    schoolgate("hashes", "add", str(path), "--bank", "b1", config=hash_only_config)
    listed = json.loads(schoolgate("hashes", "list", "--json", config=hash_only_config).stdout)
    assert listed[0]["counts"]["pdq"] == 2  # the whole picture, and the one inside its bands
    assert schoolgate("scan", str(path), config=hash_only_config).returncode == 1
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    removed = schoolgate("hashes", "remove", "--bank", "b1", sha, "--type", "sha256",
                         config=hash_only_config)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert "more entries of its item" in removed.stdout
    listed = json.loads(schoolgate("hashes", "list", "--json", config=hash_only_config).stdout)
    assert listed[0]["counts"] == {}
    assert schoolgate("scan", str(path), config=hash_only_config).returncode == 0


def test_import_export_round_trip(hash_only_config: Path, tmp_path: Path) -> None:
    pdqs = [f"{i:02x}" * 32 for i in (17, 34, 51)]
    hex_list = tmp_path / "list.txt"
    hex_list.write_text("# shared by a trusted partner\n" + "\n".join(pdqs) + "\n")
    imported = schoolgate("hashes", "import", str(hex_list), "--bank", "partner", "--type", "pdq",
                          config=hash_only_config)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert "3 new hashes in bank partner" in imported.stdout

    exported = schoolgate("hashes", "export", "--bank", "partner", "--type", "pdq",
                          config=hash_only_config)  # fmt: skip
    assert sorted(exported.stdout.split()) == sorted(pdqs)

    table = tmp_path / "table.csv"
    written = schoolgate("hashes", "export", "--bank", "partner", "--format", "signal-table",
                         "--out", str(table), config=hash_only_config)  # fmt: skip
    assert written.returncode == 0, written.stderr
    again = schoolgate("hashes", "import", str(table), "--bank", "copy", "--format",
                       "signal-table", config=hash_only_config)  # fmt: skip
    assert "3 new hashes in bank copy" in again.stdout

    csv_file = tmp_path / "partner.csv"
    csv_file.write_text("kind,hash\nmd5,0123456789abcdef0123456789abcdef\n")
    mapped = schoolgate("hashes", "import", str(csv_file), "--bank", "csvbank", "--format", "csv",
                        "--column", "value=hash", "--column", "type=kind",
                        config=hash_only_config)  # fmt: skip
    assert "1 new hashes" in mapped.stdout, mapped.stderr

    vpdq = tmp_path / "clip.vpdq"
    vpdq.write_text("".join(f"{n},100,{pdqs[n % 3]},{n:.3f}\n" for n in range(4)))
    frames = schoolgate("hashes", "import", str(vpdq), "--bank", "videos", "--format", "vpdq",
                        config=hash_only_config)  # fmt: skip
    assert frames.returncode == 0, frames.stderr
    back = schoolgate("hashes", "export", "--bank", "videos", "--format", "vpdq",
                      config=hash_only_config)  # fmt: skip

    def rows(text: str) -> list[tuple[int, int, str, float]]:
        parsed = [line.split(",") for line in text.splitlines()]
        return [(int(f), int(q), h, float(t)) for f, q, h, t in parsed]

    assert rows(back.stdout) == rows(vpdq.read_text())

    broken = tmp_path / "broken.txt"
    broken.write_text(pdqs[0] + "\nnot-a-hash\n")
    failed = schoolgate("hashes", "import", str(broken), "--bank", "partner", "--type", "pdq",
                        config=hash_only_config)  # fmt: skip
    assert failed.returncode == 2
    assert "line 2" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_bank_a_subscription_owns_is_not_changed_by_hand(
    hash_only_config: Path, photos: dict[str, Path]
) -> None:
    """Adversarial pass a30 L1: hashes added by hand to a bank the trust's subscription owns
    were wiped without a word by its next sync."""
    from schoolgate.banks.store import BankStore
    from schoolgate.config import load_config
    from schoolgate.trust.bundle import BankContent, Bundle
    from schoolgate.trust.replica import Replica

    with BankStore(load_config(hash_only_config).banks.path) as store:
        full = Bundle("full", "Test Trust", 1, 1.0, {"trust-incidents": BankContent()},
                      channel="trust")  # fmt: skip
        Replica(store).apply("trust", full)
    for command in (("add", str(photos["coffee"])), ("remove", "0" * 64, "--type", "sha256")):
        refused = schoolgate("hashes", *command, "--bank", "trust-incidents",
                             config=hash_only_config)  # fmt: skip
        assert refused.returncode != 0, command
        assert "subscription trust's" in refused.stderr, refused.stderr
    added = schoolgate("hashes", "add", str(photos["coffee"]), "--bank", "incident-ours",
                       config=hash_only_config)  # fmt: skip
    assert added.returncode == 0, added.stderr
    # clearing it is allowed: its next sync fills it afresh (docs/trust.md, exchanges)
    cleared = schoolgate("hashes", "remove", "--bank", "trust-incidents", "--all",
                         config=hash_only_config)  # fmt: skip
    assert cleared.returncode == 0, cleared.stderr
