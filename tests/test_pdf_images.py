"""Pictures a PDF or an EPS file stores as pixels are judged (adversarial pass a4: Flate and
ASCIIHex image streams and EPS exports hid a banked picture; only JPEGs inside PDFs were found)."""

from __future__ import annotations

import binascii
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractLimits
from schoolgate.endpoints.pdfimages import lzw_decode
from schoolgate.media.hashing import pdq_hash
from schoolgate.pipeline.engine import InspectionContext, Inspector

LIMITS = ExtractLimits()
PUPIL = InspectionContext(client_ip="192.0.2.9")


def pdf_with_image(dictionary: bytes, stream: bytes) -> bytes:
    """A one-page PDF whose only image is the given XObject stream."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] "
        b"/Resources << /XObject << /Im1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /XObject /Subtype /Image " + dictionary
        + b" /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Length 30 >>\nstream\nq 200 0 0 200 0 0 cm /Im1 Do Q\nendstream",
    ]  # fmt: skip
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    for number, body in enumerate(objects, start=1):
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    out.write(b"trailer << /Root 1 0 R >>\n%%EOF\n")
    return out.getvalue()


def idat_of(png: bytes) -> bytes:
    data, pos = b"", 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return data


@pytest.fixture(scope="module")
def picture(benign_photos: dict[str, Image.Image]) -> Image.Image:
    return benign_photos["chelsea"].convert("RGB").resize((150, 100))


@pytest.fixture
def inspector(data_dir: Path, picture: Image.Image) -> Iterator[Inspector]:
    """An inspector whose bank holds `picture`'s PDQ hash (no classifier)."""
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident-pdf")
        pdq = pdq_hash(picture)
        signal = SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)
        store.add_signals("incident-pdf", [signal], "t")
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


def forms(picture: Image.Image) -> dict[str, bytes]:
    width, height = picture.size
    pixels = picture.tobytes()
    common = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8" % (width, height)
    png = io.BytesIO()
    picture.save(png, "PNG")
    return {
        "flate": pdf_with_image(common + b" /Filter /FlateDecode", zlib.compress(pixels)),
        "png predictors": pdf_with_image(
            common + b" /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 3 "
            b"/BitsPerComponent 8 /Columns %d >>" % width,
            idat_of(png.getvalue()),
        ),
        "asciihex": pdf_with_image(
            common + b" /Filter /ASCIIHexDecode", binascii.hexlify(pixels) + b">"
        ),
    }


@pytest.mark.parametrize("form", ["flate", "png predictors", "asciihex"])
def test_a_pixel_image_in_a_pdf_is_found_as_the_same_picture(
    picture: Image.Image, form: str
) -> None:
    (item,) = extract_items(forms(picture)[form], "application/pdf", LIMITS)
    found = np.asarray(Image.open(io.BytesIO(item.data)).convert("RGB"))
    assert np.array_equal(found, np.asarray(picture))


def test_a_banked_picture_stored_as_pdf_pixels_is_blocked(
    inspector: Inspector, picture: Image.Image, benign_photos: dict[str, Image.Image]
) -> None:
    for pdf in forms(picture).values():
        (item,) = extract_items(pdf, "application/pdf", LIMITS)
        assert inspector.evaluate(item.data, PUPIL).blocked
    other = benign_photos["coffee"].convert("RGB").resize((150, 100))
    (item,) = extract_items(forms(other)["flate"], "application/pdf", LIMITS)
    assert not inspector.evaluate(item.data, PUPIL).blocked


def test_a_text_only_pdf_gives_no_items() -> None:
    text = pdf_with_image(
        b"/Width 1 /Height 1 /ColorSpace /DeviceCMYK /BitsPerComponent 8", b"\x00"
    )
    assert (
        extract_items(
            text.replace(b"/Subtype /Image", b"/Subtype /Form"), "application/pdf", LIMITS
        )
        == []
    )


def same_picture(item_data: bytes, expected: Image.Image) -> bool:
    found = np.asarray(Image.open(io.BytesIO(item_data)).convert("RGB"), dtype=np.int16)
    wanted = np.asarray(expected.convert("RGB"), dtype=np.int16)
    return found.shape == wanted.shape and int(np.abs(found - wanted).max()) <= 2


def colour_forms(picture: Image.Image) -> dict[str, tuple[bytes, Image.Image]]:
    """The colour spaces and encodings PDF writers use besides 8-bit RGB (pass a4 follow-up)."""
    width, height = picture.size
    size = b"/Width %d /Height %d" % (width, height)
    palette = picture.quantize(64)
    lookup = bytes(palette.getpalette()[: 64 * 3])  # type: ignore[index]
    grey = picture.convert("L")
    cmyk = picture.convert("CMYK")
    one_bit = grey.point(lambda v: 255 if v > 110 else 0).convert("1")
    rgb16 = np.asarray(picture, dtype=">u2") * 257
    png = io.BytesIO()
    palette.save(png, "PNG")
    icc_pdf = pdf_with_image(
        size + b" /ColorSpace [/ICCBased 6 0 R] /BitsPerComponent 8 /Filter /FlateDecode",
        zlib.compress(picture.tobytes()),
    ).replace(b"trailer", b"6 0 obj\n<< /N 3 /Length 0 >>\nstream\n\nendstream\nendobj\ntrailer")
    return {
        "indexed, hex lookup": (
            pdf_with_image(
                size
                + b" /ColorSpace [/Indexed /DeviceRGB 63 <"
                + binascii.hexlify(lookup)
                + b">] /BitsPerComponent 8 /Filter /FlateDecode",
                zlib.compress(palette.tobytes()),
            ),
            palette,
        ),
        "indexed, png predictors": (
            pdf_with_image(
                size
                + b" /ColorSpace [/Indexed /DeviceRGB 63 <"
                + binascii.hexlify(lookup)
                + b">] /BitsPerComponent 8 /Filter /FlateDecode /DecodeParms << /Predictor 15"
                b" /Colors 1 /Columns %d >>" % width,
                idat_of(png.getvalue()),
            ),
            palette,
        ),
        "cmyk": (
            pdf_with_image(
                size + b" /ColorSpace /DeviceCMYK /BitsPerComponent 8 /Filter /FlateDecode",
                zlib.compress(cmyk.tobytes()),
            ),
            cmyk,
        ),
        "grey, run-length": (
            pdf_with_image(
                size + b" /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /RunLengthDecode",
                b"".join(
                    b"\x7f" + grey.tobytes()[i : i + 128] for i in range(0, width * height, 128)
                )
                + b"\x80",
            ),
            grey,
        ),
        "1-bit": (
            pdf_with_image(
                size + b" /ColorSpace /DeviceGray /BitsPerComponent 1 /Filter /FlateDecode",
                zlib.compress(one_bit.tobytes()),
            ),
            one_bit,
        ),
        "16-bit rgb, ascii85": (
            pdf_with_image(
                size + b" /ColorSpace /DeviceRGB /BitsPerComponent 16 /Filter /ASCII85Decode",
                __import__("base64").a85encode(rgb16.tobytes()) + b"~>",
            ),
            picture,
        ),
        "icc-based, referenced": (icc_pdf, picture),
        "unnamed space": (
            pdf_with_image(
                size + b" /ColorSpace /Private /BitsPerComponent 8 /Filter /FlateDecode",
                zlib.compress(picture.tobytes()),
            ),
            picture,
        ),
    }


@pytest.mark.parametrize(
    "form",
    ["indexed, hex lookup", "indexed, png predictors", "cmyk", "grey, run-length", "1-bit",
     "16-bit rgb, ascii85", "icc-based, referenced", "unnamed space"],
)  # fmt: skip
def test_every_colour_space_and_depth_is_rebuilt_as_the_same_picture(
    picture: Image.Image, form: str
) -> None:
    pdf, expected = colour_forms(picture)[form]
    (item,) = extract_items(pdf, "application/pdf", LIMITS)
    assert same_picture(item.data, expected)


def test_a_pdf_header_after_junk_is_still_read(picture: Image.Image) -> None:
    pdf = b"junk line a reader skips\n" + forms(picture)["flate"]
    (item,) = extract_items(pdf, "application/pdf", LIMITS)
    assert same_picture(item.data, picture)


@pytest.mark.parametrize(
    "dictionary",
    [
        b"/Width 20000 /Height 2000 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /Fl",
        b"/Width 10 /Height 10 /ColorSpace 6 0 R /BitsPerComponent 8",
        b"/Width 10 /Height 10 /ColorSpace [/Indexed 6 0 R 255 <00>] /BitsPerComponent 8",
        b"/Width 10 /Height 10 /ColorSpace [/Indexed /DeviceRGB 255 9 0 R] /BitsPerComponent 8",
        b"/Width 10 /Height 10 /ColorSpace [/ICCBased 4 0 R] /BitsPerComponent 3",
        b"/Width 10 /Height 10 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /RunLengthDecode",
        b"/Width 10 /Height 10 /ColorSpace /DeviceRGB /Filter /ASCII85Decode",
    ],
)
def test_hostile_image_dictionaries_give_no_item_and_no_error(dictionary: bytes) -> None:
    """Self-referencing palettes, missing objects, short or undecodable data: nothing is made up
    and nothing raises (the document's other content is still judged by the carve)."""
    pdf = pdf_with_image(dictionary, zlib.compress(b"\x00" * 50) + b"\xfe~>").replace(
        b"trailer", b"6 0 obj\n[/Indexed 6 0 R 255 <00>]\nendobj\ntrailer"
    )
    assert [item for item in extract_items(pdf, "application/pdf", LIMITS)
            if "document-image" in item.locator] == []  # fmt: skip


def eps(image: Image.Image, reader: bytes, operator: bytes, samples: bytes) -> bytes:
    width, height = image.size
    return (
        b"%%!PS-Adobe-3.0 EPSF-3.0\n%%%%BoundingBox: 0 0 %d %d\ngsave\n%d %d scale\n"
        b"%d %d 8 [%d 0 0 -%d 0 %d]\n" % (width, height, width, height, width, height, width,
                                          height, height)
        + reader + b"\n" + operator + b"\n" + samples + b"\ngrestore\nshowpage\n%%EOF\n"
    )  # fmt: skip


def eps_forms(picture: Image.Image) -> dict[str, tuple[bytes, Image.Image]]:
    """EPS as editors export it (pass a4: a banked picture saved as EPS was delivered)."""
    pillow = io.BytesIO()
    picture.save(pillow, "EPS")
    grey = picture.convert("L")
    hexed = binascii.hexlify(picture.tobytes())
    wrapped = b"\n".join(hexed[i : i + 78] for i in range(0, len(hexed), 78))
    ps85 = eps(picture, b"currentfile /ASCII85Decode filter", b"false 3 colorimage",
               __import__("base64").a85encode(picture.tobytes(), wrapcol=72) + b"~>")  # fmt: skip
    tiff = io.BytesIO()
    picture.save(tiff, "TIFF")
    body = eps(picture, b"{ currentfile buf readhexstring pop } bind", b"false 3 colorimage",
               wrapped)  # fmt: skip
    dos = struct.pack("<4s6IH", b"\xc5\xd0\xd3\xc6", 30, len(body), 0, 0, 30 + len(body),
                      len(tiff.getvalue()), 0xFFFF) + body + tiff.getvalue()  # fmt: skip
    return {
        "pillow": (pillow.getvalue(), picture),
        "grey, binary": (
            eps(grey, b"{ currentfile buf readstring pop } bind", b"image", grey.tobytes()),
            grey,
        ),
        "ascii85": (ps85, picture),
        "dos eps": (dos, picture),
    }


@pytest.mark.parametrize("form", ["pillow", "grey, binary", "ascii85", "dos eps"])
def test_a_picture_in_an_eps_file_is_found_as_the_same_picture(
    picture: Image.Image, form: str
) -> None:
    data, expected = eps_forms(picture)[form]
    items = extract_items(data, "application/postscript", LIMITS)
    assert items
    assert all(same_picture(item.data, expected) for item in items)


def test_a_banked_picture_in_an_eps_file_is_blocked_and_another_is_not(
    inspector: Inspector, picture: Image.Image, benign_photos: dict[str, Image.Image]
) -> None:
    (item,) = extract_items(eps_forms(picture)["pillow"][0], None, LIMITS)
    assert inspector.evaluate(item.data, PUPIL).blocked
    other = benign_photos["coffee"].convert("RGB").resize((150, 100))
    (item,) = extract_items(eps_forms(other)["pillow"][0], None, LIMITS)
    assert not inspector.evaluate(item.data, PUPIL).blocked
    text = b"%!PS-Adobe-3.0\n/Helvetica findfont 12 scalefont setfont (hello) show\n"
    assert extract_items(text, "application/postscript", LIMITS) == []


def test_a_jpeg2000_image_in_a_pdf_is_judged_as_a_picture(
    inspector: Inspector, picture: Image.Image, benign_photos: dict[str, Image.Image]
) -> None:
    """Adversarial pass a5: a scanned homework PDF with a JPXDecode image was blocked; its JPEG
    2000 file was carved from its `ftyp` box as a broken MP4 (fail closed)."""

    def jpx_pdf(image: Image.Image) -> bytes:
        jp2 = io.BytesIO()
        image.save(jp2, "JPEG2000")
        size = b"/Width %d /Height %d" % image.size
        return pdf_with_image(size + b" /ColorSpace /DeviceRGB /Filter /JPXDecode", jp2.getvalue())

    (banked,) = extract_items(jpx_pdf(picture), "application/pdf", LIMITS)
    assert inspector.evaluate(banked.data, PUPIL).blocked
    other = benign_photos["coffee"].convert("RGB").resize((150, 100))
    (innocent,) = extract_items(jpx_pdf(other), "application/pdf", LIMITS)
    verdict = inspector.evaluate(innocent.data, PUPIL)
    assert not verdict.blocked, verdict.to_dict()
    assert verdict.to_dict().get("failure") is None


def test_a_jpeg_wrapped_in_other_filters_or_inline_is_found(picture: Image.Image) -> None:
    """Adversarial pass a5: a JPEG image stream also Flate- or ASCIIHex-compressed, and an
    inline image (BI ... ID ... EI) holding a hex JPEG, have no JPEG signature left to carve."""
    jpeg = io.BytesIO()
    picture.save(jpeg, "JPEG", quality=90)
    size = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8" % picture.size
    flate = pdf_with_image(
        size + b" /Filter [/FlateDecode /DCTDecode]", zlib.compress(jpeg.getvalue())
    )
    hexed = pdf_with_image(
        size + b" /Filter [/ASCIIHexDecode /DCTDecode]", binascii.hexlify(jpeg.getvalue()) + b">"
    )
    inline = (
        pdf_with_image(b"/Width 1 /Height 1 /ColorSpace /DeviceGray", b"\x00")
        .replace(
            b"q 200 0 0 200 0 0 cm /Im1 Do Q",
            b"q 200 0 0 200 0 0 cm BI /W %d /H %d /CS /RGB /BPC 8 /F [/AHx /DCT] ID %s> EI Q"
            % (*picture.size, binascii.hexlify(jpeg.getvalue())),
        )
        .replace(b"<< /Length 30 >>", b"<< >>")
    )
    for pdf in (flate, hexed, inline):
        items = extract_items(pdf, "application/pdf", LIMITS)
        assert jpeg.getvalue() in [item.data for item in items]


def lzw(raw: bytes) -> bytes:
    """`raw` LZW-compressed by libtiff (TIFF's LZW is PDF's with its default EarlyChange 1): an
    encoder that is not ours, so the decoder is checked against someone else's reading."""
    out = io.BytesIO()
    Image.frombytes("L", (len(raw), 1), raw).save(out, "TIFF", compression="tiff_lzw")
    with TiffImagePlugin.TiffImageFile(io.BytesIO(out.getvalue())) as tiff:
        (offset,), (count,) = tiff.tag_v2[273], tiff.tag_v2[279]
    return out.getvalue()[offset : offset + count]


def lzw_forms(picture: Image.Image) -> dict[str, bytes]:
    """a42 F9: the pixels of an image XObject compressed with /LZWDecode, as older writers do."""
    width, height = picture.size
    common = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8" % (width, height)
    png = io.BytesIO()
    picture.save(png, "PNG")
    filtered = zlib.decompress(idat_of(png.getvalue()))
    compressed = lzw(picture.tobytes())
    return {
        "lzw": pdf_with_image(common + b" /Filter /LZWDecode", compressed),
        "lzw, png predictors": pdf_with_image(
            common + b" /Filter /LZWDecode /DecodeParms << /Predictor 15 /Colors 3 "
            b"/Columns %d >>" % width,
            lzw(filtered),
        ),
        "lzw, no colour space": pdf_with_image(
            b"/Width %d /Height %d /BitsPerComponent 8 /Filter /LZWDecode" % picture.size,
            compressed,
        ),
        "lzw inline": pdf_with_image(b"/Width 1 /Height 1 /ColorSpace /DeviceGray", b"\x00")
        .replace(
            b"q 200 0 0 200 0 0 cm /Im1 Do Q",
            b"q 200 0 0 200 0 0 cm BI /W %d /H %d /CS /RGB /BPC 8 /F [/AHx /LZW] ID %s> EI Q"
            % (width, height, binascii.hexlify(compressed)),
        )
        .replace(b"<< /Length 30 >>", b"<< >>"),
    }


@pytest.mark.parametrize(
    "form", ["lzw", "lzw, png predictors", "lzw, no colour space", "lzw inline"]
)
def test_an_lzw_image_in_a_pdf_is_found_as_the_same_picture(
    picture: Image.Image, form: str
) -> None:
    items = extract_items(lzw_forms(picture)[form], "application/pdf", LIMITS)
    assert any(same_picture(item.data, picture) for item in items)


def test_an_lzw_image_cut_short_or_without_its_end_code_is_still_blocked(
    inspector: Inspector, picture: Image.Image
) -> None:
    """Readers draw the rows a damaged stream holds; libtiff refuses it, so this is our decoder."""
    width, height = picture.size
    common = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8" % (width, height)
    compressed = lzw(picture.tobytes())
    for cut in (compressed[:-2], compressed[: len(compressed) * 9 // 10]):
        items = extract_items(pdf_with_image(common + b" /Filter /LZWDecode", cut), None, LIMITS)
        assert any(inspector.evaluate(item.data, PUPIL).blocked for item in items)


@pytest.mark.parametrize("size", [10, 600, 5000, 300_000])
def test_the_lzw_decoder_reads_what_libtiff_wrote(size: int) -> None:
    """Code widths 9 to 12 and the table cleared when full (300 kB of noise fills it often)."""
    raw = np.random.default_rng(size).integers(0, 24, size, dtype=np.uint8).tobytes()
    assert lzw_decode(lzw(raw), size + 10) == raw
    assert lzw_decode(lzw(raw), size // 2) == raw[: size // 2]  # the cap


def test_a_jpeg_under_lzw_is_found(picture: Image.Image) -> None:
    """a44 F7: `[/LZWDecode /DCTDecode]` left no JPEG signature to carve."""
    jpeg = io.BytesIO()
    picture.save(jpeg, "JPEG", quality=90)
    size = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8" % picture.size
    pdf = pdf_with_image(size + b" /Filter [/LZWDecode /DCTDecode]", lzw(jpeg.getvalue()))
    assert jpeg.getvalue() in [item.data for item in extract_items(pdf, None, LIMITS)]


def test_a_jpeg_an_eps_image_dictionary_reads_through_ascii85_is_found(
    picture: Image.Image,
) -> None:
    """a44 F11: `/DataSource currentfile /ASCII85Decode filter /DCTDecode filter` in a level 2
    image dictionary, the ASCII85 of a JPEG after `image`."""
    import base64

    jpeg = io.BytesIO()
    picture.save(jpeg, "JPEG", quality=90)
    width, height = picture.size
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 150 100\n/DeviceRGB setcolorspace\n"
        + b"<< /ImageType 1 /Width %d /Height %d /BitsPerComponent 8 /Decode [0 1 0 1 0 1] "
        b"/ImageMatrix [%d 0 0 -%d 0 %d] /DataSource currentfile /ASCII85Decode filter "
        b"/DCTDecode filter >> image\n"
        % (width, height, width, height, height)
        + base64.a85encode(jpeg.getvalue(), wrapcol=72, adobe=False)
        + b"~>\nshowpage\n"
    )
    assert jpeg.getvalue() in [item.data for item in extract_items(eps, None, LIMITS)]
