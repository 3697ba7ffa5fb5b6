"""Pictures a PDF stores as pixels, as PNG files.

PDF writers embed a PNG as an image XObject: the PNG's own compressed scanlines (FlateDecode
with the PNG predictors) plus the width, height and colour space in the stream's dictionary. No
image signature is left in the file, so the carve that finds JPEGs (DCTDecode keeps the JPEG
whole) never saw them (adversarial pass a4). Each such stream becomes a PNG file again: the
samples (still PNG-filtered for the PNG predictors, otherwise given filter 0 per row) are wrapped
in a PNG of the same layout and libpng undoes the filters. Every colour space a writer uses is
read: grey, RGB, CMYK (carried as RGBA, then converted), ICC-based and calibrated spaces by their
component count, palettes (inline or in their own stream), 1 to 16 bits per component, and a
space nobody can name by the size of its samples. Bounded by the body's decoded-size cap, a pixel
cap and count caps; an image past them is not opened (a document is never refused for it).
PostScript and EPS are read in `schoolgate.endpoints.documents`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Final

from PIL import Image

from schoolgate.endpoints.extract import ExtractLimits

MAX_IMAGES: Final = 32
_MAX_STREAMS: Final = 4096  # stream objects looked at in one PDF (pages, fonts, images)
MAX_SIDE: Final = 20_000
_MAX_SLOW_LZW: Final = 8 << 20  # bytes decoded in Python per image: about 5 s of CPU at worst
MAX_PIXELS: Final = 40_000_000  # the engine's own caps refuse bigger; a PDF is not refused for it
_HEX: Final = rb"<[0-9A-Fa-f\s]*>"  # a hex string (a palette's lookup) inside a dictionary
_DICT: Final = rb"<<((?:[^<>]|%s|<<(?:[^<>]|%s|<<[^<>]*>>)*>>){0,4096})>>" % (_HEX, _HEX)
_STREAM: Final = re.compile(_DICT + rb"\s*stream\r?\n", re.S)
_REFERENCE: Final = re.compile(rb"^\s*(\d{1,7})\s+(\d{1,5})\s+R")
_NAMED: Final = {b"/DeviceGray": 1, b"/CalGray": 1, b"/G": 1, b"/DeviceRGB": 3, b"/CalRGB": 3,
                 b"/RGB": 3, b"/Lab": 3, b"/DeviceCMYK": 4, b"/CMYK": 4}  # fmt: skip
_PNG_KIND: Final = {1: 0, 3: 2, 4: 6}  # components -> PNG colour type (CMYK rides as RGBA)
_WRAPPERS: Final = (
    b"/FlateDecode",
    b"/Fl",
    b"/ASCIIHexDecode",
    b"/AHx",
    b"/ASCII85Decode",
    b"/A85",
    b"/LZWDecode",
)
# Inline images are meant to be small (the PDF reference: 4 KB); 1 MiB is read at most.
_INLINE: Final = re.compile(rb"\bBI\s((?:(?!\bID\s).){1,2000}?)\sID\s(.{1,1048576}?)\sEI\b", re.S)
_MAX_INLINE_TRIED: Final = 64
_INLINE_KEYS: Final = {b"W": b"/Width", b"H": b"/Height", b"CS": b"/ColorSpace",
                       b"BPC": b"/BitsPerComponent", b"F": b"/Filter", b"DP": b"/DecodeParms",
                       b"IM": b"/ImageMask", b"D": b"/Decode", b"I": b"/Interpolate"}  # fmt: skip
_INLINE_NAMES: Final = {
    b"AHx": b"/ASCIIHexDecode", b"A85": b"/ASCII85Decode", b"Fl": b"/FlateDecode",
    b"RL": b"/RunLengthDecode", b"DCT": b"/DCTDecode", b"LZW": b"/LZWDecode", b"G": b"/DeviceGray",
    b"RGB": b"/DeviceRGB", b"CMYK": b"/DeviceCMYK",
}  # fmt: skip


@dataclass(frozen=True)
class Colours:
    components: int
    palette: bytes | None = None  # RGB triples for an /Indexed space


def pdf_images(data: bytes, limits: ExtractLimits) -> list[bytes]:
    """PNG files for the pixel images in a PDF."""
    images: list[bytes] = []
    budget = limits.max_decoded_bytes
    for tried, match in enumerate(_STREAM.finditer(data)):
        if len(images) >= MAX_IMAGES or tried >= _MAX_STREAMS:
            break
        dictionary = match[1]
        if b"/Image" not in dictionary or b"/JPXDecode" in dictionary:
            continue
        end = data.find(b"endstream", match.end())
        if end < 0:
            break  # no later stream can end either (and each search would read to the end)
        found = _picture(data, dictionary, data[match.end() : end].rstrip(b"\r\n"), budget)
        if found is not None:
            budget -= len(found)
            images.append(found)
    for tried, inline in enumerate(_INLINE.finditer(data)):  # BI <dictionary> ID <samples> EI
        if len(images) >= MAX_IMAGES or tried >= _MAX_INLINE_TRIED:
            break
        dictionary = _expand_inline(inline[1])
        found = _picture(data, dictionary, inline[2], budget)
        if found is not None:
            budget -= len(found)
            images.append(found)
    return images


def _picture(data: bytes, dictionary: bytes, raw: bytes, budget: int) -> bytes | None:
    """A PNG of a pixel image, or the JPEG of a DCT image wrapped in other filters (a JPEG kept
    whole is found by the carve; Flate- or ASCII-wrapped, it has no signature left)."""
    if b"/DCTDecode" not in dictionary and b"/DCT" not in dictionary:
        return _image(data, dictionary, raw, budget)
    if not any(name in dictionary for name in _WRAPPERS):
        return None  # a plain JPEG: the carve finds it
    try:
        unwrapped = _unwrap(dictionary, raw)
    except (ValueError, binascii.Error):
        return None
    if b"/FlateDecode" in dictionary or b"/Fl" in dictionary:
        unwrapped = _inflate(unwrapped, budget, budget)
    elif b"/LZWDecode" in dictionary:  # a44 F7
        unwrapped = _lzw(unwrapped, None, budget, _value(dictionary, b"/EarlyChange") != 0)
    return unwrapped if unwrapped.startswith(b"\xff\xd8\xff") else None


def _expand_inline(dictionary: bytes) -> bytes:
    """An inline image's abbreviated keys and names as an image XObject's."""
    expanded = re.sub(
        rb"/(W|H|CS|BPC|F|DP|IM|D|I)(?![A-Za-z])",
        lambda key: _INLINE_KEYS[key[1]],
        dictionary,
    )
    return b"/Subtype /Image " + re.sub(
        rb"/(AHx|A85|Fl|RL|DCT|LZW|G|RGB|CMYK)(?![A-Za-z])",
        lambda name: _INLINE_NAMES[name[1]],
        expanded,
    )


def _value(dictionary: bytes, key: bytes) -> int | None:
    match = re.search(re.escape(key) + rb"\s*(\d{1,6})(?!\s+\d+\s+R)", dictionary)
    return int(match[1]) if match else None


def _entry(data: bytes, dictionary: bytes, key: bytes) -> bytes | None:
    """The raw text of a dictionary entry's value, following one indirect reference."""
    match = re.search(re.escape(key) + rb"(?![A-Za-z])\s*", dictionary)
    if match is None:
        return None
    value = dictionary[match.end() : match.end() + 4096]
    reference = _REFERENCE.match(value)
    return _object(data, reference) if reference else value


def _object(data: bytes, reference: re.Match[bytes]) -> bytes | None:
    found = re.search(rb"(?<!\d)%s\s+%s\s+obj\b" % (reference[1], reference[2]), data)
    return data[found.end() : found.end() + 65_536] if found else None


def _declared(data: bytes, dictionary: bytes) -> Colours | None:
    if b"/ImageMask true" in dictionary:
        return Colours(1)
    space = _entry(data, dictionary, b"/ColorSpace") or _entry(data, dictionary, b"/CS")
    return _space(data, space) if space else None


def _inferred(samples: int, width: int, height: int, bits: int) -> Colours | None:
    """No space we can read (a private or broken one): the sample count says how many."""
    for components in (3, 1, 4):
        if samples == height * -(-width * components * bits // 8):
            return Colours(components)
    return None


def _space(data: bytes, space: bytes, depth: int = 0) -> Colours | None:
    space = space.lstrip()
    if depth > 2:
        return None  # a space that names itself (hostile): an Indexed base is one level deep
    if space.startswith(b"["):
        space = space[1:].lstrip()
        if re.match(rb"/(Indexed|I)(?![A-Za-z])", space):
            return _indexed(data, re.sub(rb"^/(Indexed|I)\s*", b"", space), depth)
        if space.startswith(b"/ICCBased"):
            stream = _entry(data, space, b"/ICCBased")
            count = _value(stream.split(b"stream")[0], b"/N") if stream else None
            return Colours(count) if count in (1, 3, 4) else None
    for name, components in _NAMED.items():
        if space.startswith(name) and not space[len(name) : len(name) + 1].isalpha():
            return Colours(components)
    return None


def _indexed(data: bytes, after: bytes, depth: int) -> Colours | None:
    """``[/Indexed base hival lookup]``: the lookup as RGB triples for a PNG palette."""
    reference = _REFERENCE.match(after)
    if reference:
        base_text, rest = _object(data, reference) or b"", after[reference.end() :]
    elif after.startswith(b"["):
        close = after.find(b"]") + 1
        base_text, rest = after[:close], after[close:]
    else:
        name = re.match(rb"/[A-Za-z]+", after)
        if name is None:
            return None
        base_text, rest = name[0], after[name.end() :]
    base = _space(data, base_text, depth + 1)
    high = re.match(rb"\s*(\d{1,3})\s*", rest)
    if base is None or base.palette is not None or high is None:
        return None
    lookup = _lookup(data, rest[high.end() :], (int(high[1]) + 1) * base.components)
    return None if lookup is None else Colours(1, _to_rgb(lookup, base.components))


def _lookup(data: bytes, text: bytes, size: int) -> bytes | None:
    reference = _REFERENCE.match(text)
    if reference:
        body = _object(data, reference) or b""
        header, _, stream = body.partition(b"stream")
        stream = stream.lstrip(b"\r\n")
        if b"/FlateDecode" in header or b"/Fl" in header:
            stream = _inflate(stream, size, size)
        return stream[:size] if len(stream) >= size else None
    if text.startswith(b"<"):
        table = hex_string(text[1:])
    elif text.startswith(b"("):
        table = _literal(text[1:])
    else:
        return None
    return table[:size] if len(table) >= size else None


def _literal(text: bytes) -> bytes:
    """A PDF literal string's bytes (backslash escapes undone) up to its closing parenthesis."""
    out, depth, pos = bytearray(), 0, 0
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}
    while pos < len(text):
        byte = text[pos]
        if byte == 0x5C and pos + 1 < len(text):  # backslash
            pos += 1
            octal = re.match(rb"[0-7]{1,3}", text[pos : pos + 3])
            if octal:
                out.append(int(octal[0], 8) & 0xFF)
                pos += len(octal[0])
                continue
            if text[pos] not in (10, 13):
                out.append(escapes.get(text[pos], text[pos]))
        elif byte == 0x29 and depth == 0:  # the closing parenthesis
            break
        else:
            depth += {0x28: 1, 0x29: -1}.get(byte, 0)
            out.append(byte)
        pos += 1
    return bytes(out)


def _to_rgb(table: bytes, components: int) -> bytes:
    if components == 3:
        return table
    if components == 1:
        return bytes(value for grey in table for value in (grey, grey, grey))
    cmyk = Image.frombytes("CMYK", (len(table) // 4, 1), table)
    return cmyk.convert("RGB").tobytes()


def _image(data: bytes, dictionary: bytes, raw: bytes, budget: int) -> bytes | None:
    width, height = _value(dictionary, b"/Width") or 0, _value(dictionary, b"/Height") or 0
    bits = _value(dictionary, b"/BitsPerComponent") or (1 if b"/ImageMask true" in dictionary
                                                        else 8)  # fmt: skip
    if not width or not height or bits not in (1, 2, 4, 8, 16):
        return None
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        return None  # a poster-sized scan: not opened; a document is never refused for it
    try:
        samples = _unwrap(dictionary, raw)
    except (ValueError, binascii.Error):
        return None
    predicted = (_value(dictionary, b"/Predictor") or 1) >= 10
    flate = b"/FlateDecode" in dictionary or b"/Fl" in dictionary
    lzw = b"/LZWDecode" in dictionary  # a42 F9: older writers' compression
    colours = _declared(data, dictionary)
    if lzw:
        exact = None
        if colours is not None:
            exact = height * (-(-width * colours.components * bits // 8) + predicted)
        early = _value(dictionary, b"/EarlyChange") != 0
        samples = _lzw(samples, exact, min(budget, width * height * 8 + height), early)
        if samples and exact is not None and exact <= budget:
            samples = samples.ljust(exact, b"\x00")  # cut short: readers show the rows it has
    inflated = samples
    if flate and not (predicted and colours is not None):
        # Predicted data is inflated here only to count samples for an unnamed colour space.
        inflated = _inflate(samples, min(budget, width * height * 8 + height), budget)
    if colours is None:
        colours = _inferred(len(inflated) - (height if predicted else 0), width, height, bits)
    if colours is None or colours.components not in _PNG_KIND:
        return None
    stride = -(-width * colours.components * bits // 8)
    if stride * height > budget:
        return None
    if flate and predicted:
        idat = samples  # already PNG image data, filters and all
    elif lzw and predicted:
        idat = zlib.compress(samples, 1)  # PNG-filtered rows
    else:
        return samples_png(width, height, bits, colours, inflated)
    return _png(width, height, bits, colours, idat)


def samples_png(
    width: int, height: int, bits: int, colours: Colours, samples: bytes
) -> bytes | None:
    """A PNG of unfiltered samples, rows packed to whole bytes (PDF and PostScript layout)."""
    stride = -(-width * colours.components * bits // 8)
    if len(samples) < stride * height:
        return None
    rows = (b"\x00" + samples[i * stride : (i + 1) * stride] for i in range(height))
    return _png(width, height, bits, colours, zlib.compress(b"".join(rows), 1))


def _unwrap(dictionary: bytes, raw: bytes) -> bytes:
    """Undo the text and run-length filters (Flate is undone by the caller, with its cap)."""
    if b"/ASCIIHexDecode" in dictionary or b"/AHx" in dictionary:
        raw = hex_string(raw)
    elif b"/ASCII85Decode" in dictionary or b"/A85" in dictionary:
        text = raw.split(b"~>")[0].removeprefix(b"<~")
        raw = base64.a85decode(text, adobe=False, ignorechars=b" \t\r\n\x0c\x00")
    if b"/RunLengthDecode" in dictionary or b"/RL" in dictionary:
        raw = _run_length(raw)
    return raw


def hex_string(text: bytes) -> bytes:
    """A PDF hex string's bytes, up to its closing '>' (whitespace skipped, an odd last digit
    taken as followed by 0, as the PDF reference says)."""
    hexed = re.sub(rb"[^0-9A-Fa-f]", b"", text.split(b">")[0])
    return binascii.unhexlify(hexed + (b"0" if len(hexed) % 2 else b""))


def _run_length(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while pos < len(data) and data[pos] != 128 and len(out) < MAX_PIXELS * 4:
        length = data[pos]
        if length < 128:
            out += data[pos + 1 : pos + 2 + length]
            pos += length + 2
        else:
            out += data[pos + 1 : pos + 2] * (257 - length)
            pos += 2
    return bytes(out)


def _lzw(data: bytes, exact: int | None, cap: int, early_change: bool) -> bytes:
    """LZW decoded by libtiff (TIFF's LZW is PDF's with early change) where the decoded size is
    known; else, or where libtiff refuses the stream (no end code, cut short), by `lzw_decode`,
    which is a hundred times slower and so bounded tighter."""
    if exact is not None and early_change and 0 < exact <= cap:
        # A one-row 8-bit grey TIFF of `exact` bytes whose only strip is the stream.
        strip_at = 8 + 2 + 12 * 9 + 4  # after the header and the IFD of 9 entries
        tags = [(256, 4, exact), (257, 4, 1), (258, 3, 8), (259, 3, 5), (262, 3, 1),
                (273, 4, strip_at), (277, 3, 1), (278, 4, 1), (279, 4, len(data))]  # fmt: skip
        entries = b"".join(struct.pack("<HHII" if kind == 4 else "<HHIHxx", tag, kind, 1, value)
                           for tag, kind, value in tags)  # fmt: skip
        tiff = b"II*\x00" + struct.pack("<IH", 8, len(tags)) + entries + bytes(4) + data
        try:
            with Image.open(io.BytesIO(tiff)) as carrier:
                return carrier.tobytes()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            pass
    return lzw_decode(data, min(cap, _MAX_SLOW_LZW), early_change)


def lzw_decode(data: bytes, cap: int, early_change: bool = True) -> bytes:
    """PDF's (and TIFF's) LZW: MSB-first codes of 9 to 12 bits, 256 clears the table and 257
    ends the data; with `early_change` (the PDF default) a code widens one entry early. Stops at
    `cap` bytes, at the end code or at the first code that cannot be (what came before is kept,
    as readers show a damaged image's first rows)."""
    out = bytearray()
    table: list[bytes] = [bytes((n,)) for n in range(256)] + [b"", b""]
    width, pending, count = 9, 0, 0
    previous = b""
    early = 1 if early_change else 0
    for byte in data:
        pending, count = (pending << 8) | byte, count + 8
        while count >= width:
            count -= width
            code = pending >> count
            pending &= (1 << count) - 1
            if code == 256:
                del table[258:]
                width, previous = 9, b""
                continue
            if code == 257:
                return bytes(out)
            if code < len(table):
                entry = table[code]
                if previous and len(table) < 4096:
                    table.append(previous + entry[:1])
            elif code == len(table) and previous:
                entry = previous + previous[:1]
                table.append(entry)
            else:
                return bytes(out)
            out += entry
            if len(out) >= cap:
                return bytes(out[:cap])
            previous = entry
            if len(table) + early >= 1 << width and width < 12:
                width += 1
    return bytes(out)


def _inflate(data: bytes, expected: int, budget: int) -> bytes:
    if expected > budget:
        return b""  # past the body's decoded-size cap: not opened
    try:
        return zlib.decompressobj().decompress(data, expected)
    except zlib.error:
        return b""


def _png(width: int, height: int, bits: int, colours: Colours, idat: bytes) -> bytes | None:
    kind = 3 if colours.palette is not None else _PNG_KIND[colours.components]
    if (kind in (2, 6) and bits < 8) or (kind == 3 and bits > 8):
        return None  # layouts PNG has no form for (and no writer produces)

    def chunk(name: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(name + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + name + body + crc

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, kind, 0, 0, 0))
    palette = chunk(b"PLTE", colours.palette[: 3 * 256]) if colours.palette else b""
    png = b"\x89PNG\r\n\x1a\n" + header + palette + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    if colours.components != 4:
        return png
    try:  # CMYK samples rode as RGBA: read them back as CMYK and give the picture as RGB
        with Image.open(io.BytesIO(png)) as carrier:
            cmyk = Image.frombytes("CMYK", carrier.size, carrier.convert("RGBA").tobytes())
    except (OSError, ValueError, SyntaxError):
        return None
    out = io.BytesIO()
    cmyk.convert("RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()
