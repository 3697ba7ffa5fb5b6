"""Archives made with an ordinary archiver's other settings (adversarial pass a75): 7-Zip's
coders and filters, ZIP methods zipfile lacks, Windows cabinets, split ZIP volumes and
archives whose names a password hides. What is read is judged; what cannot be read is refused
as unreadable, never passed as holding nothing. Archives are made with 7-Zip (`7zz`) and
`gcab`, test system dependencies; benign photos only."""

from __future__ import annotations

import io
import random
import subprocess
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.endpoints.archive_starts import archive_start_members, seven_zip_coder_unread
from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.cabinets import cabinet_files
from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.endpoints.first_parts import FirstPart
from schoolgate.endpoints.libarchive import cut_short
from tests.conftest import encode
from tests.support.rar import stored_rar
from tests.test_cli_scan import schoolgate
from tests.test_libarchive_formats import _drive


def _seven_zip(tmp: Path, files: dict[str, bytes], *switches: str, name: str = "a.7z") -> bytes:
    """`7zz a` of `files` with `switches` (the archive's name sets its type: .7z, .zip)."""
    work = tmp / "in"
    work.mkdir(exist_ok=True)
    for file, content in files.items():
        (work / file).write_bytes(content)
    archive = tmp / name
    archive.unlink(missing_ok=True)
    subprocess.run(["7zz", "a", "-bso0", "-bsp0", *switches, str(archive), *files], cwd=work,
                   check=True)  # fmt: skip
    return archive.read_bytes() if archive.exists() else b""  # volumes are a.7z.001, ...


def _cabinet(tmp: Path, files: dict[str, bytes], compress: bool) -> bytes:
    work = tmp / "cab"
    work.mkdir(exist_ok=True)
    for file, content in files.items():
        (work / file).write_bytes(content)
    archive = tmp / "a.cab"
    archive.unlink(missing_ok=True)
    flags = ["-c", "-n", *(["-z"] if compress else [])]
    subprocess.run(["gcab", *flags, str(archive), *files], cwd=work, check=True)
    return archive.read_bytes()


_PPMD = 98  # the ZIP method number


@pytest.fixture
def photo(benign_photos: dict[str, Image.Image]) -> bytes:
    picture = encode(benign_photos["astronaut"].resize((1024, 1024)), "JPEG", quality=92)
    assert len(picture) > 128 * 1024  # more than two 64 KiB volumes
    return picture


@pytest.fixture
def others(benign_photos: dict[str, Image.Image]) -> dict[str, bytes]:
    return {f"{name}.jpg": encode(benign_photos[name], "JPEG", quality=92)
            for name in ("coffee", "rocket", "camera")}  # fmt: skip


@pytest.mark.parametrize(
    ("switches", "name"),
    [(("-m0=Deflate64",), "a.7z"), (("-mm=Deflate64",), "a.zip")],
)
def test_a_file_compressed_in_a_way_not_read_here_is_refused(
    tmp_path: Path, photo: bytes, switches: tuple[str, ...], name: str
) -> None:
    """a75 G1: a banked picture in a Deflate64 7z or ZIP (and behind 7-Zip's ARM64 and RISC-V
    filters) went through whole, as an archive holding nothing."""
    archive = _seven_zip(tmp_path, {"photo.jpg": photo}, *switches, name=name)
    with pytest.raises(ExtractionError) as refused:
        extract_items(archive, None, ExtractLimits())
    assert refused.value.reason == "unreadable"
    assert "photo.jpg" in str(refused.value)


@pytest.mark.parametrize("hidden", [True, False], ids=["names-hidden", "names-shown"])
def test_a_password_7z_holding_a_picture_or_hiding_its_names_is_refused(
    tmp_path: Path, photo: bytes, hidden: bool
) -> None:
    """a75 G4: `-mhe=on` hid the names, so the rule for media in an encrypted archive never
    applied. A file named as no media passes where its name shows (docs/dsl.md)."""
    switches = ("-pschool", *(("-mhe=on",) if hidden else ()))
    archive = _seven_zip(tmp_path, {"photo.jpg": photo}, *switches)
    with pytest.raises(ExtractionError) as refused:
        extract_items(archive, None, ExtractLimits())
    assert refused.value.reason == "encrypted"
    if not hidden:
        notes = _seven_zip(tmp_path, {"notes.txt": b"homework\n" * 50}, *switches, name="n.7z")
        assert extract_items(notes, None, ExtractLimits()) == []


def test_a_zip_compressed_in_a_way_zipfile_lacks_is_read(
    tmp_path: Path, benign_photos: dict[str, Image.Image]
) -> None:
    # A BMP, which PPMd compresses (7-Zip stores a JPEG it cannot make smaller).
    bitmap = encode(benign_photos["coffee"], "BMP")
    archive = _seven_zip(tmp_path, {"photo.bmp": bitmap}, "-mm=PPMd", name="a.zip")
    (member,) = zipfile.ZipFile(io.BytesIO(archive)).infolist()
    assert member.compress_type == _PPMD
    items = extract_items(archive, None, ExtractLimits())
    assert [item.data for item in items] == [bitmap]


@pytest.mark.parametrize("compress", [True, False], ids=["mszip", "stored"])
def test_a_cabinets_files_are_read(
    tmp_path: Path, photo: bytes, others: dict[str, bytes], compress: bool
) -> None:
    """a75 G1: a cabinet holding a banked picture went through whole; stored, its picture is
    broken every 32 KiB by a block header, so carving it gave a picture that did not decode."""
    archive = _cabinet(tmp_path, {**others, "photo.jpg": photo}, compress)
    items = extract_items(archive, None, ExtractLimits())
    assert photo in [item.data for item in items]
    assert all(item.locator.startswith("body/cab:") for item in items)


def test_a_split_zips_first_volume_is_read_from_its_local_headers(
    tmp_path: Path, photo: bytes
) -> None:
    """a75 G5: `7zz a -tzip -v64k`: each 64 KiB volume uploaded on its own went through, the
    first a ZIP with no directory, holding nothing to zipfile."""
    _seven_zip(tmp_path, {"photo.jpg": photo}, "-v64k", name="split.zip")
    first = (tmp_path / "split.zip.001").read_bytes()
    items = extract_items(first, None, ExtractLimits())
    assert len(items) == 1
    assert photo.startswith(items[0].data)
    assert len(items[0].data) > 60_000
    assert items[0].carved  # cut short where the volume ends: judged as a part is


@pytest.mark.parametrize(
    "switches",
    [("-m0=Deflate",), ("-m0=Delta", "-m1=LZMA2"), ("-m0=LZMA2", "-ms=off"),
     ("-m0=Delta", "-m1=LZMA2", "-ms=off")],
    ids=["deflate", "delta", "lzma2-not-solid", "delta-not-solid"],
)  # fmt: skip
def test_a_7zs_first_part_is_undone_for_more_of_7_zips_coders(
    tmp_path: Path, photo: bytes, others: dict[str, bytes], switches: tuple[str, ...]
) -> None:
    """a75 G2: every chunk of these was forwarded and only the last refused; the phone sent
    it. The picture is the last of four files, past the first part's first file."""
    archive = _seven_zip(tmp_path, {**others, "zz_photo.jpg": photo}, *switches)
    cut = archive[: len(archive) - len(photo) // 3]
    found = [content for _, content in archive_start_members(cut, ExtractLimits())]
    shown = [c[c.find(photo[:4096]) :][: len(photo)] for c in found if photo[:4096] in c]
    # Some reading gives the picture's first part as it was (the stored one is broken by
    # LZMA2's chunk headers, the other coders' guesses are not it).
    assert any(len(c) > len(photo) // 3 and photo.startswith(c) for c in shown)


def test_a_whole_7z_in_a_first_part_is_read_as_an_archive(
    tmp_path: Path, photo: bytes, others: dict[str, bytes]
) -> None:
    """a75 G6: the whole archive in Dropbox's start (or one X APPEND) was looked at as a first
    part, whose PPMd or BZip2 data gave nothing; the phone sent the empty commit."""
    archive = _seven_zip(tmp_path, {**others, "photo.jpg": photo}, "-m0=PPMd")
    assert photo in FirstPart(archive, None).looked_at(ExtractLimits())
    unreadable = _seven_zip(tmp_path, {"photo.jpg": photo}, "-m0=Deflate64")
    with pytest.raises(ExtractionError):
        FirstPart(unreadable, None).looked_at(ExtractLimits())


def test_a_banked_picture_in_a_cabinet_is_blocked_and_an_innocent_one_is_not(
    tmp_path: Path, catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    innocent = encode(benign_photos["coffee"], "JPEG", quality=90)
    assert _drive(catalog_addon, _cabinet(tmp_path, {"photo.jpg": banned}, True)) == 403
    assert _drive(catalog_addon, _cabinet(tmp_path, {"photo.jpg": innocent}, True)) == 200
    volume = tmp_path / "split.zip.001"
    _seven_zip(tmp_path, {"photo.jpg": innocent}, "-v64k", name="split.zip")
    assert _drive(catalog_addon, volume.read_bytes()) == 200  # a part cut short, innocent


def test_scan_judges_a_cut_volume_as_the_proxy_does(
    tmp_path: Path, data_dir: Path, benign_photos: dict[str, Image.Image]
) -> None:
    """a75: `schoolgate scan` refused what it found inside other bytes that the proxy allows
    (it did not tell the policy the item was found there)."""
    innocent = encode(benign_photos["coffee"].resize((1024, 1024)), "JPEG", quality=92)
    _seven_zip(tmp_path, {"photo.jpg": innocent}, "-v64k", name="split.zip")
    config = tmp_path / "hash-only.yaml"
    config.write_text("classifier:\n  models: []\n")
    result = schoolgate("scan", str(tmp_path / "split.zip.001"), config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ALLOW"), result.stdout
    assert "inside other bytes" in result.stdout


@pytest.mark.parametrize("method", ["BZip2", "PPMd"])
def test_a_whole_zip_in_a_first_part_is_read_in_any_method(
    tmp_path: Path, benign_photos: dict[str, Image.Image], method: str
) -> None:
    """a76 H5: a BZip2 ZIP whole in Dropbox's start, X's one APPEND or SharePoint's
    StartUpload was looked at as a first part (local headers, stored or deflated only); the
    phone sent the empty commit."""
    bitmap = encode(benign_photos["coffee"], "BMP")
    archive = _seven_zip(tmp_path, {"photo.bmp": bitmap}, f"-mm={method}", name="a.zip")
    (member,) = zipfile.ZipFile(io.BytesIO(archive)).infolist()
    assert member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
    assert bitmap in FirstPart(archive, None).looked_at(ExtractLimits())


def test_a_rar_archives_files_are_read_whole_and_in_a_first_part(
    tmp_path: Path, catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    """WinRAR's archives were not read: a RAR's compressed file went through as bytes with no
    picture in them (nothing here writes a compressed RAR; libarchive undoes RAR's methods,
    and these stored ones show the reading)."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    innocent = encode(benign_photos["coffee"], "JPEG", quality=90)
    archive = stored_rar({"notes.txt": b"homework\n" * 50, "photo.jpg": banned})
    items = extract_items(archive, None, ExtractLimits())
    assert [(item.locator, item.data) for item in items] == [("body/rar:photo.jpg", banned)]
    assert _drive(catalog_addon, archive) == 403
    assert _drive(catalog_addon, stored_rar({"photo.jpg": innocent})) == 200
    first = FirstPart(archive[: len(archive) * 2 // 3], len(archive)).looked_at(ExtractLimits())
    assert any(len(piece) > len(banned) // 3 and banned.startswith(piece) for piece in first)


def test_a_rar_file_that_cannot_be_undone_is_refused(photo: bytes) -> None:
    with pytest.raises(ExtractionError) as refused:
        extract_items(stored_rar({"photo.jpg": photo}, method=3), None, ExtractLimits())
    assert refused.value.reason == "unreadable"


def test_a_rar_or_cabinet_cut_short_says_so(tmp_path: Path, photo: bytes) -> None:
    rar = stored_rar({"notes.txt": b"homework\n" * 50, "photo.jpg": photo})
    cabinet = _cabinet(tmp_path, {"photo.jpg": photo}, False)
    for archive in (rar, cabinet):
        assert not cut_short(archive)
        for share in (0.05, 0.5, 0.9):
            assert cut_short(archive[: int(len(archive) * share)])
    assert not cut_short(stored_rar({}))
    assert not cut_short(b"Rar!\x1a\x07\x00" + bytes(200))  # RAR 4: not walked


@pytest.mark.parametrize("kind", ["rar", "cab", "cab-mszip"])
def test_a_rar_or_cabinet_cut_short_and_sent_whole_is_read_as_far_as_it_goes(
    tmp_path: Path, catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image],
    kind: str,
) -> None:  # fmt: skip
    """a78 I1: a RAR or a cabinet cut at 120 kB and sent as one body was refused as unreadable
    (its last file gave nothing), where a ZIP cut the same way was read."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    innocent = encode(benign_photos["coffee"].resize((1024, 768)), "JPEG", quality=92)

    def archive(files: dict[str, bytes]) -> bytes:
        if kind == "rar":
            return stored_rar(files)
        return _cabinet(tmp_path, files, compress=kind == "cab-mszip")

    cut = archive({"notes.txt": b"homework\n" * 50, "photo.jpg": innocent})
    cut = cut[: len(cut) * 3 // 4]
    (item,) = [item for item in extract_items(cut, None, ExtractLimits())
               if item.data.startswith(b"\xff\xd8")]  # fmt: skip
    assert item.carved
    assert len(item.data) > len(innocent) // 2
    assert innocent.startswith(item.data)
    assert _drive(catalog_addon, cut) == 200
    # The banked picture whole in the part, the file after it cut short.
    filler = random.Random(0).randbytes(200_000)  # as large packed as plain
    cut = archive({"a.jpg": banned, "b.bin": filler})
    assert _drive(catalog_addon, cut[: len(cut) - len(filler) // 2]) == 403


def test_a_cabinets_files_are_read_from_its_blocks(tmp_path: Path, photo: bytes) -> None:
    files = {"notes.txt": b"homework\n" * 5000, "photo.jpg": photo, "empty.txt": b""}
    for compress in (False, True):
        whole = _cabinet(tmp_path, files, compress)
        read = dict(cabinet_files(whole, ExtractLimits()))
        assert read == {name: content for name, content in files.items() if content}
        part = dict(cabinet_files(whole[: len(whole) // 2], ExtractLimits()))
        assert part["notes.txt"] == files["notes.txt"]
        assert 0 < len(part["photo.jpg"]) < len(photo)
        assert photo.startswith(part["photo.jpg"])
    assert cabinet_files(b"MSCF" + bytes(10), ExtractLimits()) == []


def test_a_cut_archive_whose_last_file_gives_nothing_is_still_refused() -> None:
    """Nothing of a file compressed in a way not read here, cut short: refused as before."""
    noise = bytes((n * 7919 + n // 3) % 251 for n in range(200_000))
    whole = stored_rar({"photo.jpg": noise}, method=3)
    assert cut_short(whole[: len(whole) * 3 // 4])
    with pytest.raises(ExtractionError) as refused:
        extract_items(whole[: len(whole) * 3 // 4], None, ExtractLimits())
    assert refused.value.reason == "unreadable"


def test_a_7z_volume_holding_a_picture_whole_is_read_as_a_first_part(
    tmp_path: Path, catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    """a79: `7z a -v200k` of a banked picture larger than 64 KiB and another file; the first
    volume, sent whole, holds the picture whole behind LZMA2's chunk headers, which carving the
    raw bytes broke (allowed; `7z x` gives it back)."""
    banned = encode(benign_photos["chelsea"].resize((1024, 680)), "JPEG", quality=92)
    innocent = encode(benign_photos["coffee"].resize((1024, 680)), "JPEG", quality=92)
    filler = random.Random(1).randbytes(150_000)
    assert 64 * 1024 < len(banned) < 190_000
    for picture, expected in ((banned, 403), (innocent, 200)):
        whole = _seven_zip(tmp_path, {"a.jpg": picture, "b.bin": filler}, name="w.7z")
        assert not cut_short(whole)
        _seven_zip(tmp_path, {"a.jpg": picture, "b.bin": filler}, "-v200k", name=f"v{expected}.7z")
        volume = (tmp_path / f"v{expected}.7z.001").read_bytes()
        assert cut_short(volume)
        assert _drive(catalog_addon, volume) == expected
        assert _drive(catalog_addon, whole[: len(whole) * 7 // 10]) == expected


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_split_zips_first_piece_is_read(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], method: int
) -> None:
    """a81 G1: the first piece of `zip -s 150k` (.z01) starts with the spanning marker before
    its first local header, and was taken for unknown bytes (allowed in under 1 ms, the banked
    picture back byte for byte after `zip -s 0`). Written here as zip writes it: the marker,
    then the archive's bytes up to the piece's end."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    innocent = encode(benign_photos["coffee"], "JPEG", quality=90)
    filler = random.Random(2).randbytes(100_000)
    for picture, expected in ((banned, 403), (innocent, 200)):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", method) as archive:
            archive.writestr("a.jpg", picture)
            archive.writestr("b.bin", filler)
        piece = b"PK\x07\x08" + buffer.getvalue()[: len(picture) + 50_000]
        assert _drive(catalog_addon, piece) == expected
        first = FirstPart(piece[: len(piece) * 2 // 3], None).looked_at(ExtractLimits())
        assert any(picture.startswith(part) and len(part) > 1000 for part in first)


def test_a_7z_volume_packed_in_a_coder_read_only_whole_is_refused(
    tmp_path: Path, photo: bytes
) -> None:
    """a81 G2: 7z volumes packed with BZip2 or PPMd (nothing of either is read before the
    archive's end) let a banked picture through, 11 of 12 sets; now refused as unreadable, as
    an archive's file no reader here opens is. LZMA, LZMA2, Deflate and stored volumes are
    read."""
    files = {"a.jpg": photo, "b.bin": random.Random(3).randbytes(50_000)}
    for coder, expected in (("BZip2", "BZip2"), ("PPMd", "PPMd"), ("LZMA", None),
                            ("LZMA2", None), ("Deflate", None), ("Copy", None)):  # fmt: skip
        _seven_zip(tmp_path, files, f"-m0={coder}", "-v100k", name=f"{coder}.7z")
        volume = (tmp_path / f"{coder}.7z.001").read_bytes()
        assert seven_zip_coder_unread(volume) == expected, coder
        if expected is None:
            assert any(item.data[:3] == b"\xff\xd8\xff"
                       for item in extract_items(volume, None, ExtractLimits()))  # fmt: skip
            continue
        with pytest.raises(ExtractionError) as refused:
            extract_items(volume, None, ExtractLimits())
        assert refused.value.reason == "unreadable"
        assert coder in str(refused.value)
