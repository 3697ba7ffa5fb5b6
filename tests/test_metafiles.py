"""Pictures that documents carry without an image signature are judged (adversarial pass a42
F8/F9): a DIB drawn by a Windows metafile (WMF alone or placeable, an RTF's `\\wmetafile8` as hex
or `\\bin`, an EMF, a WMF inside a zipped Office file), and a ZIP that does not start the bytes
(after a self-extractor's program, appended to a picture)."""

from __future__ import annotations

import binascii
import io
import random
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.config import parse_config
from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractLimits
from schoolgate.endpoints.metafile import metafile_pictures
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.proxy_harness import bank_photo

LIMITS = ExtractLimits()
PUPIL = InspectionContext(client_ip="192.0.2.9")


def dib(picture: Image.Image) -> bytes:
    """A packed DIB (BITMAPINFOHEADER and pixels), as a BMP file holds it after its 14 bytes."""
    out = io.BytesIO()
    picture.convert("RGB").save(out, "BMP")
    return out.getvalue()[14:]


def record(function: int, parameters: bytes) -> bytes:
    parameters += b"\x00" * (len(parameters) % 2)
    return struct.pack("<IH", 3 + len(parameters) // 2, function) + parameters


def wmf(picture: Image.Image, function: int = 0x0F43, placeable: bool = False) -> bytes:
    """A WMF that draws `picture` with one DIB record (META_STRETCHDIB by default), as
    Windows' GDI writes it: a header, SETMAPMODE, the record, META_EOF."""
    width, height = picture.size
    size_words = (width, height, 0, 0, height, width, 0, 0)
    before_dib = {
        0x0F43: struct.pack("<IH8h", 0x00CC0020, 0, *size_words),  # STRETCHDIB: SRCCOPY
        0x0B41: struct.pack("<I8h", 0x00CC0020, *size_words),  # DIBSTRETCHBLT
        0x0940: struct.pack("<I6h", 0x00CC0020, 0, 0, height, width, 0, 0),  # DIBBITBLT
    }[function]
    records = record(0x0103, struct.pack("<h", 8)) + record(function, before_dib + dib(picture))
    records += record(0x0000, b"")
    words = (18 + len(records)) // 2
    largest = max(len(records) // 2, 3)
    body = struct.pack("<HHHIHIH", 1, 9, 0x0300, words, 0, largest, 0) + records
    if not placeable:
        return body
    head = struct.pack("<IH4hHI", 0x9AC6CDD7, 0, 0, 0, width, height, 1440, 0)
    checksum = 0
    for (word,) in struct.iter_unpack("<H", head[:20]):
        checksum ^= word
    return head + struct.pack("<H", checksum) + body


def emf(picture: Image.Image) -> bytes:
    """An EMF whose one drawing record is EMR_STRETCHDIBITS."""
    packed = dib(picture)
    info, bits = packed[:40], packed[40:]
    width, height = picture.size
    fixed = 80  # the record's fixed fields
    stretch = struct.pack(
        "<II4i6i6I2i",
        81, fixed + len(info) + len(bits), 0, 0, width, height,
        0, 0, 0, 0, width, height,
        fixed, len(info), fixed + len(info), len(bits), 0, 0x00CC0020, width, height,
    ) + info + bits  # fmt: skip
    end = struct.pack("<IIIII", 14, 20, 0, 0, 20)
    header = bytearray(struct.pack("<II4i4i", 1, 88, 0, 0, width, height, 0, 0, width, height))
    header += b" EMF" + struct.pack("<IIIHHIII", 0x10000, 0, 3, 0, 0, 0, 0, 0)
    header += struct.pack("<4i", 1024, 768, 320, 240)
    total = len(header) + len(stretch) + len(end)
    struct.pack_into("<I", header, 48, total)
    return bytes(header) + stretch + end


def rtf_hex(picture: Image.Image) -> bytes:
    hexed = binascii.hexlify(wmf(picture))
    lines = b"\n".join(hexed[i : i + 128] for i in range(0, len(hexed), 128))
    return (
        b"{\\rtf1\\ansi{\\fonttbl{\\f0 Arial;}}\\f0 Holiday\\par{\\pict\\wmetafile8\\picw%d"
        b"\\pich%d\n" % picture.size + lines + b"}\\par}"
    )


def rtf_binary(picture: Image.Image) -> bytes:
    metafile = wmf(picture)
    return b"{\\rtf1{\\pict\\wmetafile8\\bin%d " % len(metafile) + metafile + b"}\\par}"


def zipped(name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    return out.getvalue()


def bmp(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "BMP")
    return out.getvalue()


def jpeg(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90)
    return out.getvalue()


FORMS: dict[str, tuple[Callable[[Image.Image], bytes], str]] = {
    "wmf stretchdib": (wmf, "image/wmf"),
    "wmf dibstretchblt": (lambda p: wmf(p, 0x0B41), "image/wmf"),
    "wmf dibbitblt": (lambda p: wmf(p, 0x0940), "image/wmf"),
    "placeable wmf": (lambda p: wmf(p, placeable=True), "application/octet-stream"),
    "emf": (emf, "image/emf"),
    "rtf wmetafile8 hex": (rtf_hex, "application/rtf"),
    "rtf wmetafile8 bin": (rtf_binary, "application/rtf"),
    "wmf in a docx": (lambda p: zipped("word/media/image1.wmf", wmf(p)), "application/zip"),
    "zip after junk": (
        lambda p: random.Random(1).randbytes(5000) + zipped("holiday.bmp", bmp(p)),
        "application/octet-stream",
    ),
    "zip appended to a picture": (
        lambda p: jpeg(Image.new("RGB", (64, 64), (30, 120, 200))) + zipped("h.bmp", bmp(p)),
        "image/jpeg",
    ),
}


@pytest.fixture(scope="module")
def picture(benign_photos: dict[str, Image.Image]) -> Image.Image:
    return benign_photos["chelsea"].convert("RGB").resize((160, 120))


@pytest.fixture
def inspector(data_dir: Path, picture: Image.Image) -> Iterator[Inspector]:
    """An inspector whose bank holds `picture`'s PDQ hash (no classifier)."""
    bank_photo(data_dir, picture, "incident-docs")
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_picture_a_document_carries_is_found(picture: Image.Image, form: str) -> None:
    make, declared = FORMS[form]
    found = []
    for item in extract_items(make(picture), declared, LIMITS):
        with Image.open(io.BytesIO(item.data)) as image:
            found.append(image.convert("RGB").tobytes() == picture.tobytes())
    assert any(found), form


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_banked_picture_in_a_document_is_blocked_and_another_is_not(
    inspector: Inspector,
    picture: Image.Image,
    benign_photos: dict[str, Image.Image],
    form: str,
) -> None:
    make, declared = FORMS[form]
    items = extract_items(make(picture), declared, LIMITS)
    assert any(inspector.evaluate(item.data, PUPIL).blocked for item in items), form
    other = benign_photos["coffee"].convert("RGB").resize((160, 120))
    for item in extract_items(make(other), declared, LIMITS):
        assert not inspector.evaluate(item.data, PUPIL).blocked, form


@pytest.mark.parametrize(
    "damage",
    ["cut in the dib", "cut in the header", "zero-length record", "huge record", "random"],
)
def test_a_damaged_metafile_gives_no_error(picture: Image.Image, damage: str) -> None:
    whole = wmf(picture)
    data = {
        "cut in the dib": whole[: len(whole) // 2],
        "cut in the header": whole[:10],
        "zero-length record": whole[:18] + struct.pack("<IH", 0, 0x0F43) + whole[24:],
        "huge record": whole[:18] + struct.pack("<IH", 0xFFFFFFFF, 0x0F43) + whole[24:],
        "random": whole[:18] + random.Random(2).randbytes(4000),
    }[damage]
    for item in extract_items(data, "image/wmf", LIMITS):
        assert item.data  # whatever is found is handed on; nothing raises
    assert len(metafile_pictures(data, LIMITS.max_decoded_bytes)) <= 1


def test_a_metafile_with_many_pictures_is_bounded(picture: Image.Image) -> None:
    small = picture.resize((16, 12))
    one = record(
        0x0F43, struct.pack("<IH8h", 0x00CC0020, 0, 12, 16, 0, 0, 12, 16, 0, 0) + dib(small)
    )
    records = one * 500 + record(0, b"")
    body = struct.pack("<HHHIHIH", 1, 9, 0x0300, (18 + len(records)) // 2, 0, len(one), 0)
    assert len(metafile_pictures(body + records, LIMITS.max_decoded_bytes)) == 32
    assert len(metafile_pictures(body + records, 1300)) == 2  # the decoded-size budget
    assert metafile_pictures(body + records, 600) == []


def tar_of(name: str, content: bytes) -> bytes:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        member = tarfile.TarInfo(name)
        member.size = len(content)
        archive.addfile(member, io.BytesIO(content))
    return out.getvalue()


BASE64_CARRIED: dict[str, Callable[[Image.Image], bytes]] = {
    "a tar": lambda p: tar_of("holiday.bmp", bmp(p)),
    "a zip after junk": lambda p: b"MZ" + zipped("holiday.bmp", bmp(p)),
    "a picture after a junk byte": lambda p: b"\x00" + jpeg(p),
}


@pytest.mark.parametrize("carried", sorted(BASE64_CARRIED))
@pytest.mark.parametrize("body", ["mail attachment json", "form field"])
def test_what_base64_carries_is_opened_like_a_body(
    inspector: Inspector, picture: Image.Image, carried: str, body: str
) -> None:
    """a44 F3: decoded base64 was judged only when it started as media or a ZIP; a tar, a ZIP
    after junk and a picture after one junk byte passed in a Graph attachment's contentBytes
    and in an imgur / X form field."""
    import base64
    import json

    encoded = base64.b64encode(BASE64_CARRIED[carried](picture)).decode()
    data, declared = {
        "mail attachment json": (
            json.dumps(
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": "a.bin",
                    "contentBytes": encoded,
                }
            ).encode(),
            "application/json",
        ),
        "form field": (
            f"image={encoded.replace('+', '%2B')}&type=base64".encode(),
            "application/x-www-form-urlencoded",
        ),
    }[body]
    items = extract_items(data, declared, LIMITS)
    assert any(inspector.evaluate(item.data, PUPIL).blocked for item in items)


def test_random_base64_tokens_give_no_items() -> None:
    import base64
    import json

    rng = random.Random(5)
    tokens = [base64.b64encode(rng.randbytes(rng.randrange(40, 3000))).decode() for _ in range(200)]
    assert extract_items(json.dumps({"tokens": tokens}).encode(), "application/json", LIMITS) == []


def rtf_wrapped(picture: Image.Image) -> bytes:
    """`\\jpegblip` hex two digits to a line, upper case (a44 F5): RTF readers skip the breaks."""
    hexed = binascii.hexlify(jpeg(picture)).upper()
    lines = b"\n".join(hexed[i : i + 2] for i in range(0, len(hexed), 2))
    return b"{\\rtf1\\ansi{\\pict{\\*\\blipuid 00ff}\\jpegblip\\picw160\\pich120 " + lines + b"}}"


def uuencoded(picture: Image.Image) -> bytes:
    data = jpeg(picture)
    lines = [binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45)]
    return b"begin 644 holiday.jpg\n" + b"".join(lines) + b"`\nend\n"


def rtf_blipuid(picture: Image.Image) -> bytes:
    """Word's form (a47 F13): the picture's id in a group right before the hex, no space."""
    hexed = binascii.hexlify(jpeg(picture))
    groups = b" ".join(hexed[i : i + 64] for i in range(0, len(hexed), 64))
    return b"{\\rtf1\\ansi{\\pict{\\*\\picprop}\\jpegblip{\\*\\blipuid 0123abcd}" + groups + b"}}"


def rtf_groups(picture: Image.Image) -> bytes:
    """The hex in groups of its own, `{hex}{hex}` (a48 F4)."""
    hexed = binascii.hexlify(jpeg(picture))
    groups = b"".join(b"{" + hexed[i : i + 64] + b"}" for i in range(0, len(hexed), 64))
    return b"{\\rtf1{\\pict\\jpegblip\\picw160{\\*\\blipuid 0123abcd}" + groups + b"}}"


def uuencoded_after_text(picture: Image.Image) -> bytes:
    """A uuencoded block after a mail's text (a48 F5)."""
    return b"Hi,\nsee attached\n\n" + uuencoded(picture)


@pytest.mark.parametrize(
    "make",
    [rtf_wrapped, rtf_blipuid, rtf_groups, uuencoded, uuencoded_after_text],
    ids=["rtf wrapped hex", "rtf blipuid", "rtf groups", "uuencode", "uuencode after text"],
)
def test_text_that_spells_a_picture_as_a_whole_is_read(
    inspector: Inspector, picture: Image.Image, make: Callable[[Image.Image], bytes]
) -> None:
    items = extract_items(make(picture), "application/octet-stream", LIMITS)
    assert any(inspector.evaluate(item.data, PUPIL).blocked for item in items)


def test_an_rtf_without_pictures_gives_no_items() -> None:
    text = b"{\\rtf1\\ansi{\\fonttbl{\\f0 Arial;}}\\f0\\fs24 " + b"Homework: read chapter 4. " * 200
    assert extract_items(text + b"}", "application/rtf", LIMITS) == []


def nested_zips(content: bytes, levels: int) -> bytes:
    for level in range(levels):
        content = zipped(f"level{level}.zip" if level else "holiday.jpg", content)
    return content


def test_nested_archives_are_opened_deep_and_refused_deeper(picture: Image.Image) -> None:
    """a47 F4: a ZIP 6 deep (and a mail forwarded 3 times) was taken for "no media" at the
    depth limit; pictures are found 10 deep now, and deeper containers are refused (the fail
    policy decides), never waved through."""
    from schoolgate.endpoints.extract import ExtractionError

    photo = jpeg(picture)
    for levels in (6, 10):
        assert photo in [i.data for i in extract_items(nested_zips(photo, levels), None, LIMITS)]
    with pytest.raises(ExtractionError) as refused:
        extract_items(nested_zips(photo, 13), None, LIMITS)
    assert refused.value.reason == "too_many_parts"


def password_protected(name: str, content: bytes) -> bytes:
    """A ZIP whose member says it is encrypted (the general-purpose flag's bit 0, in the local
    header and the central directory): what `zip -P` writes, as far as a reader can tell."""
    data = bytearray(zipped(name, content))
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        where = data.find(signature)
        data[where + at] |= 0x01
    return bytes(data)


def test_a_picture_in_a_password_protected_zip_is_refused(picture: Image.Image) -> None:
    """a47 F5: the member named cat.jpg could not be read and the ZIP was forwarded unjudged."""
    from schoolgate.endpoints.extract import ExtractionError

    with pytest.raises(ExtractionError) as refused:
        extract_items(password_protected("cat.jpg", jpeg(picture)), None, LIMITS)
    assert refused.value.reason == "encrypted"
    assert extract_items(password_protected("notes.txt", b"homework " * 50), None, LIMITS) == []


@pytest.mark.parametrize(("fmt", "missing"), [("JPEG", 1), ("JPEG", 2), ("JPEG", 3), ("PNG", 1),
                                              ("PNG", 4), ("PNG", 7)])  # fmt: skip
def test_a_picture_less_its_first_bytes_is_judged_whole(
    inspector: Inspector, picture: Image.Image, fmt: str, missing: int
) -> None:
    """a47 F1-F3: the first byte sent apart (a tus part, a storage object composed later, a
    session begun on another network) left the rest without a signature: taken for no media."""
    out = io.BytesIO()
    picture.save(out, fmt)
    items = extract_items(out.getvalue()[missing:], "application/offset+octet-stream", LIMITS)
    assert any(inspector.evaluate(item.data, PUPIL).blocked for item in items)


def test_random_bytes_that_start_like_a_jpeg_segment_give_no_items() -> None:
    rng = random.Random(9)
    for lead in (b"\xd8\xff\xe0", b"\xff\xe1", b"\xe0\x00\x10JFIF", b"NG\r\n\x1a\n"):
        for _ in range(50):
            assert extract_items(lead + rng.randbytes(rng.randrange(10, 3000)), None, LIMITS) == []
