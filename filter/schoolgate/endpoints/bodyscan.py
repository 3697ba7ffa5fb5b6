"""Find every media item in a request body by its structure, not by its first bytes.

A body is opened by what it declares and parses as: multipart parts, form fields and JSON string
values (looked into again: a part may be JSON, a string base64 of a ZIP), ZIP and compressed
files, data: URLs and base64 in any text, media signatures anywhere in binary, and a PDF's pixel
images. Nothing is trusted for being first: a decoy before a multipart body's first boundary does
not stop the parts being opened.

"No media anywhere" is an answer (an empty list), not an error: most bodies sent to an app's API
are chat messages. What the container says is media but is not recognised is still returned
(`claimed`): the engine calls it `not_analysed`. Everything is bounded (depth, items, members,
decompressed size, the scan's own work); JSON is scanned for its string literals without
building the document, so any body costs time linear in its length.

Why one module of this length: the scan is one recursive walk; each container (a multipart
body, a form, JSON, text, an archive) is a step of it that hands what it holds back to the walk,
with the walk's depth, budget and items.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import unquote_to_bytes

from schoolgate.endpoints.archive_starts import archive_start_members, seven_zip_coder_unread
from schoolgate.endpoints.carving import carved, probe_carved, restored_start
from schoolgate.endpoints.documents import document_images
from schoolgate.endpoints.encoding import STARTS, brotli_file, decompress_members, wide_text
from schoolgate.endpoints.extract import (
    ExtractionError,
    ExtractLimits,
    b64decode,
    lenient_b64_readings,
    parse_header_params,
    parse_multipart,
)
from schoolgate.endpoints.fragments import quoted_fragment
from schoolgate.endpoints.libarchive import (
    ARCHIVE_MAGICS,
    SEVEN_ZIP_MAGIC,
    archive_kind,
    archive_members,
    cut_short,
)
from schoolgate.endpoints.mail import mail_message
from schoolgate.endpoints.metafile import is_metafile, metafile_pictures
from schoolgate.endpoints.rtf import is_rtf, rtf_pictures
from schoolgate.endpoints.tarball import tar_members
from schoolgate.endpoints.textbytes import (
    byte_arrays,
    declared_reading,
    escaped_readings,
    hex_reading,
    unescape_json,
)
from schoolgate.endpoints.ziparchive import SPLIT_ZIP_MAGIC, ZIP_MAGIC, holds_zip, zip_members
from schoolgate.media.sniff import MediaKind, MediaType, claims_media, sniff, unanalysed_format

_MAX_DEPTH: Final = 10  # a mail forwarded 4 times is 8 deep
_MIN_STRING: Final = 16  # shorter strings cannot hold a picture worth judging
_JSON_STRING: Final = re.compile(rb'"((?:[^"\\]++|\\.)*+)"', re.DOTALL)
_DATA_URL: Final = re.compile(rb"data:([\w.+-]{1,64}/[\w.+-]{1,64})?[^,\"'\s]{0,200}?,", re.I)
# Base64 (or hex) as text carries it: one run, or lines of it (wrapped at 60, 64 or 76, maybe
# escaped).
_BASE64_RUN: Final = re.compile(
    rb"[A-Za-z0-9+/_-]{56,}+(?:(?:\r?\n|\\n|%0[aAdD]|&#10;)[A-Za-z0-9+/_-]++)*+={0,2}"
)
# Base64 wrapped at any width (`base64 -w 50`): lines too short to start a run above (a52 F3).
# Tried only where a run starts: from inside a long line it would be tried at every character.
_WRAPPED_RUN: Final = re.compile(
    rb"(?<![A-Za-z0-9+/_-])(?:[A-Za-z0-9+/_-]{16,}+(?:\r?\n|\\n|%0[aAdD]|&#10;)){3,}+"
    rb"[A-Za-z0-9+/_-]*+={0,2}"
)
_PAYLOAD_END: Final = re.compile(rb"[\"')<>\s]")
_BASE64_PAYLOAD: Final = re.compile(rb"(?:[A-Za-z0-9+/=_-]++|\s++|%0[aAdD]|&#1[03];|\\[nr])*+")
_LINE_BREAKS: Final = re.compile(rb"\s+|%0[aAdD]|&#1[03];|\\[nr]")
_FORM_LIKE: Final = re.compile(rb"\A[\w.%*~\[\]-]{1,256}=")
_JSON_LIKE: Final = re.compile(rb"\A\s*[\[{]")
_MARKUP: Final = re.compile(rb"\A\s*[\[{<]")

_KEPT: Final = (ZIP_MAGIC, SPLIT_ZIP_MAGIC, *STARTS)  # archives and compressed files
_CONTAINER_TYPES: Final = frozenset(
    {"application/x-www-form-urlencoded", "application/json", "text/plain", "text/html"}
)


@dataclass(frozen=True)
class ExtractedItem:
    """A candidate media item: its bytes, what the client declared, and where it was found.

    `claimed`: the container says this is media (a part typed image/*, a file named .jpg, a data
    URL of an image) even when the bytes are not a format we recognise. `carved`: found by its
    signature inside other bytes (InspectionContext.carved)."""

    data: bytes
    filename: str | None
    declared_type: str | None
    locator: str
    claimed: bool = False
    carved: bool = False


def is_media(data: bytes) -> bool:
    """Whether the magic bytes say image or video."""
    return sniff(data).kind is not MediaKind.UNKNOWN


class _Scan:
    """One body's walk: collects items under the item, size and work caps."""

    def __init__(
        self, limits: ExtractLimits, probe: Callable[[bytes], bool] = probe_carved
    ) -> None:
        self.limits = limits
        self.probe = probe
        self.items: list[ExtractedItem] = []
        self.decoded = 0
        self.visited = 0  # blobs and strings looked at: bounds the work a hostile body can cause

    def add(self, item: ExtractedItem) -> None:
        if len(self.items) >= self.limits.max_items:
            raise ExtractionError("too_many_items", f"more than {self.limits.max_items} items")
        self.items.append(item)

    def grow(self, size: int) -> None:
        """Count bytes we made (decompressed, decoded) against the decoded-size cap."""
        self.decoded += size
        if self.decoded > self.limits.max_decoded_bytes:
            raise ExtractionError("oversize", "decoded content exceeds the decoded-size cap")

    def visit(self) -> None:
        self.visited += 1
        if self.visited > 64 * self.limits.max_parts:
            raise ExtractionError("too_many_parts", "the body holds too many values to scan")

    # -- blobs --------------------------------------------------------------------------------

    def blob(
        self,
        data: bytes,
        content_type: str | None,
        where: str,
        depth: int,
        filename: str | None = None,
    ) -> None:
        """Look for media in `data` (a body, a part, a member, a decoded string)."""
        self.visit()
        if not data:
            return
        if depth > _MAX_DEPTH:
            if is_media(data):  # judged wherever it is found
                self.add(ExtractedItem(data, filename, content_type, where, claimed=True))
                return
            if data.startswith(_KEPT) or holds_zip(data) or data[257:262] == b"ustar" or (
                (content_type or "").lower().startswith(("multipart/", "message/"))
            ):  # fmt: skip
                # A container nested past the limit is refused, not taken for no media (a47 F4:
                # a picture in a ZIP 6 deep passed unjudged; the fail policy decides now).
                raise ExtractionError("too_many_parts", f"containers nested over {_MAX_DEPTH} deep")
            return
        claimed = claims_media(content_type, filename) or unanalysed_format(data) is not None
        main, params = parse_header_params(content_type) if content_type else ("", {})
        narrow = None
        if not main.startswith("multipart/") and not is_media(data):
            charset = params.get("charset", "")
            narrow = _wide_reading(data, charset) or declared_reading(data, charset)
        self._as_sent(data, main, content_type, where, depth, filename, claimed)
        if narrow is not None:
            # JSON or a form in UTF-16/32 (Python, Java and .NET parsers accept them), scanned
            # again as the same text in UTF-8, where its strings and base64 can be read. The
            # bytes as sent were scanned first: PHP and others ignore the charset, and a
            # lenient base64 decoder skips the zero bytes. What both readings find is kept once.
            self.grow(len(narrow))
            found = {item.data for item in self.items}
            before = len(self.items)
            self.blob(narrow, main or None, f"{where}/utf-16-32", depth + 1, filename)
            self.items[before:] = [item for item in self.items[before:] if item.data not in found]

    def _as_sent(
        self,
        data: bytes,
        main: str,
        content_type: str | None,
        where: str,
        depth: int,
        filename: str | None,
        claimed: bool,
    ) -> None:
        container = main.startswith("multipart/") or main in _CONTAINER_TYPES
        before = len(self.items)
        if is_media(data):
            self.add(ExtractedItem(data, filename, content_type, where, claimed=True))
            if sniff(data).kind is MediaKind.IMAGE:
                # What a picture carries besides itself: an EXIF thumbnail, an MPO's second
                # image, a motion photo's video, a file appended after its end (pass a5).
                self.carve(data, None, None, where)
            if not container:
                if holds_zip(data):  # a ZIP appended to the picture: unzipped, it is files
                    self.archive(data, f"{where}/appended", depth + 1)
                return
            # A picture sent as a form or a multipart body: the picture is judged, and so is
            # what the declared structure holds (a decoy before the first boundary hides
            # nothing: servers ignore the preamble and read the parts).
        elif (whole := restored_start(data)) is not None:  # a picture less its first bytes
            self.add(ExtractedItem(whole, filename, content_type, f"{where}/restored", True))
        self._by_structure(data, main, content_type, where, depth)
        if len(self.items) == before:
            self.carve(data, filename, content_type, where)
        for number, png in enumerate(document_images(data, self.limits)):
            self.add(
                ExtractedItem(png, None, "image/png", f"{where}/document-image#{number}", True)
            )
        for number, dib in enumerate(metafile_pictures(data, self.limits.max_decoded_bytes)):
            if is_media(dib):  # a DIB record's bitmap (a WMF, an RTF's \wmetafile8, an EMF)
                self.grow(len(dib))
                self.add(ExtractedItem(dib, None, None, f"{where}/metafile#{number}", True))
        if len(self.items) == before and claimed:  # said to be media: the engine decides
            self.add(ExtractedItem(data, filename, content_type, where, claimed=True))

    def _by_structure(
        self, data: bytes, main: str, content_type: str | None, where: str, depth: int
    ) -> None:
        if main.startswith("multipart/") and _has_boundary(data, content_type):
            self.multipart(data, content_type, where, depth)
        elif data.startswith(ZIP_MAGIC) or holds_zip(data):
            self.archive(data, where, depth)
        elif data.startswith(SPLIT_ZIP_MAGIC):  # a split ZIP's first piece (a81 G1)
            self.archive(data[len(SPLIT_ZIP_MAGIC) - len(ZIP_MAGIC) :], where, depth)
        elif data.startswith(ARCHIVE_MAGICS):
            self.library_archive(data, where, depth)
        elif (mail := mail_message(data)) is not None:  # a mail sent through an API (a46 F1)
            self.blob(mail[1], mail[0], f"{where}/mail", depth + 1)
        elif (inner := decompress_members(data, self.limits)) is not None:
            name, contents, starts = inner
            self.grow(len(contents))
            whole = len(self.items)
            self.blob(contents, None, f"{where}/{name}", depth + 1)
            found = {item.data for item in self.items[whole:]}
            for number, start in enumerate(starts[1:], 1):  # each further member on its own
                end = starts[number + 1] if number + 1 < len(starts) else len(contents)
                mark = len(self.items)
                self.blob(contents[start:end], None, f"{where}/{name}#{number + 1}", depth + 1)
                self.items[mark:] = [i for i in self.items[mark:] if i.data not in found]
        elif (files := tar_members(data)) is not None:
            for name, content in files:
                self.blob(content, None, f"{where}/tar:{name[:120]}", depth + 1, name)
        elif not data[:16].isascii() and (unpacked := brotli_file(data, self.limits)) is not None:
            self.grow(len(unpacked))  # (text is no brotli stream: JSON and forms are not tried)
            self.blob(unpacked, None, f"{where}/brotli", depth + 1)
        elif main == "application/x-www-form-urlencoded" or (
            not main and _FORM_LIKE.match(data[:4096]) is not None and b"=" in data
        ):
            self.form(data, where, depth)
        elif main.endswith(("/json", "+json")) or _JSON_LIKE.match(data) is not None:
            before = len(self.items)
            self.json(data, where, depth)
            if len(self.items) == before:
                # Braces that are not JSON's (RTF, whose \pict groups hold pictures as hex;
                # scripts): read as text (adversarial pass a7).
                self.text(data, where, depth)
        else:
            self.text(data, where, depth)

    def multipart(self, data: bytes, content_type: str | None, where: str, depth: int) -> None:
        for part in parse_multipart(data, content_type, self.limits):
            if part.content_type is None and part.filename is None:
                # A plain form field: a value, like a form's or a JSON string.
                self.string(part.data, f"{where}/{part.locator}", depth + 1)
                continue
            self.blob(
                part.data, part.content_type, f"{where}/{part.locator}", depth + 1, part.filename
            )

    def archive(self, data: bytes, where: str, depth: int) -> None:
        """ZIP members (Office files, zipped photos, a ZIP after other bytes). A ZIP with no
        directory (a split archive's first volume, a ZIP cut short) is read from its local
        headers, as a first part is (a75 G5: `7z a -v64k` volumes, each uploaded whole on its
        own, went through as ZIPs holding nothing)."""
        members = list(zip_members(data, self.limits, self.grow))
        cut = not members and data.startswith(ZIP_MAGIC) and not holds_zip(data)
        if cut:
            members = archive_start_members(data, self.limits)
            for _, content in members:
                self.grow(len(content))
        before = len(self.items)
        for name, content in members:
            self.blob(content, None, f"{where}/zip:{name[:120]}", depth + 1, name)
        if cut:  # its last file may be cut short, as a volume ends: judged as a part is
            self.items[before:] = [replace(item, carved=True) for item in self.items[before:]]

    def library_archive(self, data: bytes, where: str, depth: int) -> None:
        """A 7z archive, cabinet or RAR archive's files. One cut short (a split archive's first
        volume, a part sent whole) is read as a first part is: its whole files, and its last
        one's pictures as far as they go, judged as carved (a78 I1: a stored picture in it was
        refused as unreadable). Where that finds nothing (its last file compressed), it is read
        as a whole archive, which refuses a file that gives nothing."""
        kind = archive_kind(data)[0]
        before = len(self.items)
        if cut_short(data):
            for name, content in archive_start_members(data, self.limits):
                self.grow(len(content))
                self.blob(content, None, f"{where}/{kind}:{name[:120]}", depth + 1, name)
            self.items[before:] = [replace(item, carved=True) for item in self.items[before:]]
            if len(self.items) > before:
                return
            if data.startswith(SEVEN_ZIP_MAGIC) and (coder := seven_zip_coder_unread(data)):
                # What cannot be read is not passed as holding nothing (a81 G2: a banked
                # picture in BZip2 and PPMd 7z volumes, 11 of 12 sets through).
                raise ExtractionError(
                    "unreadable", f"a 7z cut short (a volume) packed with {coder}, read only whole"
                )
        for name, content in archive_members(data, self.limits, self.grow):
            self.blob(content, None, f"{where}/{kind}:{name[:120]}", depth + 1, name)

    def form(self, data: bytes, where: str, depth: int) -> None:
        before = len(self.items)
        self._fields(data, where, depth)
        if len(self.items) == before:
            # A raw upload route stores the body as sent, whatever its label: base64 or a hex
            # dump labelled a form (curl's default for --data-binary) is one long field name,
            # its '=' padding the value (adversarial pass a51 F1: Drive and OneDrive uploads).
            self.text(data, where, depth)

    def _fields(self, data: bytes, where: str, depth: int) -> None:
        for number, field in enumerate(data.split(b"&")):
            name, _, value = field.partition(b"=")
            if len(value) < _MIN_STRING:
                continue
            # latin-1 keeps percent-decoded bytes 1:1; an unescaped '+' in base64 stays a '+'.
            raw = unquote_to_bytes(value)
            label = f"{where}/form:{unquote_to_bytes(name)[:60].decode('latin-1')}[{number}]"
            before = len(self.items)
            self.string(raw, label, depth)
            if b"+" in value:
                # ... unless the client meant spaces (a form's '+', which lenient decoders skip):
                # the reading that gives whole pictures is the one the server will store.
                first = self.items[before:]
                if any(_looks_whole(item.data) for item in first):
                    continue
                del self.items[before:]
                self.string(unquote_to_bytes(value.replace(b"+", b" ")), label + "+", depth)
                if first and not any(_looks_whole(item.data) for item in self.items[before:]):
                    del self.items[before:]
                    self.items.extend(first)

    def json(self, data: bytes, where: str, depth: int) -> None:
        for number, match in enumerate(_JSON_STRING.finditer(data)):
            literal = match.group(1)
            if len(literal) < _MIN_STRING:
                continue
            self.string(unescape_json(literal), f"{where}/json#{number}", depth)
        for offset, decoded in byte_arrays(data):  # [255,216,...] or {"0":255,"1":216,...}
            self.decoded_blob(decoded, f"{where}/json-bytes@{offset}", depth)

    def text(self, data: bytes, where: str, depth: int) -> None:
        """data: URLs and long base64 runs in any text (SVG, HTML, XML, CSS, plain), an RTF's
        pictures, and a text that is uuencode, base32, base85 or a hex dump as a whole."""
        before = len(self.items)
        spelt = escaped_readings(data.strip()) if len(data) >= 64 else []
        if is_rtf(data):
            spelt += rtf_pictures(data, self.limits.max_decoded_bytes - self.decoded)
        for number, whole in enumerate(spelt):
            self.decoded_blob(whole, f"{where}/spelt#{number}", depth)
        spelt_items = len(self.items) - before
        found = {item.data for item in self.items[before:]}
        covered: list[tuple[int, int]] = []
        for match in _DATA_URL.finditer(data):
            covered.append(self.data_url(data, match, where, depth))
        runs = list(_BASE64_RUN.finditer(data))
        spans = [(match.start(), match.end()) for match in runs]
        runs += [match for match in _WRAPPED_RUN.finditer(data)
                 if not any(a < match.end() and match.start() < b for a, b in spans)]  # fmt: skip
        for number, match in enumerate(runs):
            if any(start <= match.start() < end for start, end in covered):
                continue  # the payload of a data: URL, already looked at
            run = _compact(match.group(0))
            for reading, decoded in (("base64", b64decode(run)), ("hex", hex_reading(run))):
                if decoded is not None and self.decoded_blob(
                    decoded, f"{where}/{reading}#{number}", depth
                ):
                    break
        self.items[before:] = [  # what the whole-text reading found already is kept once
            item
            for number, item in enumerate(self.items[before:])
            if number < spelt_items or item.data not in found
        ]
        if len(self.items) == before and (lenient := _lenient_b64(data.strip())) is not None:
            # Base64 cut by junk every few characters ('.', '*', spaces, NUL) that a lenient
            # decoder skips: the whole text as one such decoder reads it (a52 F3).
            self.decoded_blob(lenient, f"{where}/lenient", depth)

    def data_url(
        self, data: bytes, match: re.Match[bytes], where: str, depth: int
    ) -> tuple[int, int]:
        """Open one data: URL; returns the span of its payload."""
        declared = (match.group(1) or b"").decode("ascii", "replace") or None
        if b";base64" in match.group(0).lower():
            payload_match = _BASE64_PAYLOAD.match(data, match.end())
            end = payload_match.end() if payload_match else match.end()
            if end < len(data) and _PAYLOAD_END.match(data, end) is None:
                # Junk inside the payload ('.' every 4 characters): Python's b64decode and PHP
                # read on to the end of the value, skipping it.
                stop = _PAYLOAD_END.search(data, end)
                end = stop.start() if stop else len(data)
            compact = _compact(data[match.end() : end])
            decoded = b64decode(compact) or _lenient_b64(compact)
        else:
            stop = _PAYLOAD_END.search(data, match.end())
            end = stop.start() if stop else len(data)
            decoded = unquote_to_bytes(data[match.end() : end])
        if decoded and not quoted_fragment(decoded):
            self.grow(len(decoded))
            self.blob(decoded, declared, f"{where}/data-url@{match.start()}", depth + 1)
        return match.start(), end

    # -- strings and decoded bytes ------------------------------------------------------------

    def string(self, raw: bytes, where: str, depth: int) -> None:
        """A string value: media itself, a data: URL, base64 (strictly or leniently), or text
        that holds one of those (stringified JSON, HTML, base64 pasted into a message)."""
        self.visit()
        if is_media(raw):  # a fragment here is binary a '"' cut out: the carve finds the whole
            if not quoted_fragment(raw):
                self.add(ExtractedItem(raw, None, None, where, claimed=True))
            return
        stripped = raw.strip()
        if stripped[:5].lower() == b"data:":
            self.text(stripped, where, depth + 1)
            return
        hexed = hex_reading(stripped)
        for spelt in ([hexed] if hexed is not None else []) + escaped_readings(stripped):
            if self.decoded_blob(spelt, f"{where}:spelt", depth):
                return  # hex is base64's alphabet too: the reading that gives a file is the one
        decoded = b64decode(stripped)
        if decoded is not None:
            # Wholly base64: what it decodes to is all there is ('<', '{' and ':' are not base64).
            self.decoded_blob(decoded, where + ":base64", depth)
            return
        before = len(self.items)
        if _MARKUP.match(stripped) or b"data:" in stripped or _BASE64_RUN.search(stripped):
            self.blob(stripped, None, where, depth + 1)
        if len(self.items) == before:
            # Nothing whole inside: the value as a lenient decoder reads it, junk skipped.
            lenient = _lenient_b64(stripped)
            if lenient is not None:
                self.decoded_blob(lenient, where + ":base64", depth)

    def decoded_blob(self, decoded: bytes, where: str, depth: int) -> bool:
        """Decoded base64: media or a container is scanned, random bytes dropped; True if kept."""
        if quoted_fragment(decoded):
            return False
        if (
            is_media(decoded)
            or decoded.startswith(_KEPT)
            or is_metafile(decoded)
            or _MARKUP.match(decoded)
        ):
            self.grow(len(decoded))
            self.blob(decoded, None, where, depth + 1)
            return True
        if _BASE64_RUN.fullmatch(decoded.strip()) and depth < _MAX_DEPTH:
            self.grow(len(decoded))  # base64 of base64: decoded again
            self.string(decoded, where + ":base64", depth + 1)
            return True
        if decoded[257:262] == b"ustar" or holds_zip(decoded) or mail_message(decoded):
            self.grow(len(decoded))  # a tar, a ZIP after junk (a mail attachment: a44 F3)
            self.blob(decoded, None, where, depth + 1)
            return True
        before = len(self.items)  # media after junk bytes: only what parses as media is kept
        self.carve(decoded, None, None, where)
        self.items[before:] = [i for i in self.items[before:] if not quoted_fragment(i.data)]
        return len(self.items) > before

    # -- carving ------------------------------------------------------------------------------

    def carve(self, data: bytes, filename: str | None, declared: str | None, where: str) -> None:
        """Media that starts somewhere inside `data`: after junk bytes, inside a PDF, after or
        inside another picture (a thumbnail, an MPO's second image, a motion photo's video)."""
        for offset, candidate in carved(data, self.probe):
            self.add(ExtractedItem(candidate, filename, declared, f"{where}@{offset}", carved=True))


def _has_boundary(data: bytes, content_type: str | None) -> bool:
    boundary = parse_header_params(content_type or "")[1].get("boundary", "")
    return bool(boundary) and b"--" + boundary.encode("latin-1", "replace") in data


def _wide_reading(data: bytes, charset: str) -> bytes | None:
    """The body as UTF-8 if it is UTF-16/32 text; guessed from zero bytes alone, the text must
    read as JSON, a form or markup (binary formats start with zero bytes too)."""
    wide = wide_text(data, charset)
    if wide is None:
        return None
    narrow, told = wide
    if not told and not (_MARKUP.match(narrow) or _FORM_LIKE.match(narrow[:4096])):
        return None
    return narrow


def _looks_whole(data: bytes) -> bool:
    """Cheaply: a picture that ends as its format ends (base64 read out of step does not)."""
    media = sniff(data)
    tail = data[-32:].rstrip(b"\x00\r\n")
    if media is MediaType.JPEG:
        return tail.endswith(b"\xff\xd9")
    if media is MediaType.PNG:
        return b"IEND" in tail
    if media is MediaType.GIF:
        return tail.endswith(b";")
    return media.kind is not MediaKind.UNKNOWN


def _compact(data: bytes) -> bytes:
    return _LINE_BREAKS.sub(b"", data)


def _lenient_b64(data: bytes) -> bytes | None:
    """The lenient reading of `data` (see `lenient_b64_readings`) that gives a picture ending
    where its format ends; else the first that gives media, a ZIP or markup; else the reading
    of a decoder that takes both alphabets (the last)."""
    readings = lenient_b64_readings(data)
    for decoded in readings:
        if is_media(decoded) and _looks_whole(decoded):
            return decoded
    for decoded in readings:
        if is_media(decoded) or decoded.startswith(ZIP_MAGIC) or _MARKUP.match(decoded):
            return decoded
    return readings[-1] if readings else None


# Pictures judged per body or message; more is refused (the fail policy decides). A slide deck
# or a zipped album holds hundreds of pictures; each is judged in turn.
MAX_BODY_ITEMS = 500


def body_limits(max_held_body_bytes: int) -> ExtractLimits:
    """The caps the proxy applies to a body it holds, decoded to at most the same again."""
    return ExtractLimits(
        max_body_bytes=max_held_body_bytes,
        max_decoded_bytes=max_held_body_bytes,
        max_items=MAX_BODY_ITEMS,
    )


def extract_items(
    body: bytes,
    content_type: str | None,
    limits: ExtractLimits,
    *,
    whole: bool = False,
    probe: Callable[[bytes], bool] = probe_carved,
) -> list[ExtractedItem]:
    """Media items in an (already content-decoded) request body; [] when there are none.

    `whole`: the body is one item whatever it holds (a chunk of a resumable upload, judged after
    reassembly). Raises ExtractionError for bodies refused on purpose (a broken multipart that
    declares itself multipart, bombs, over the caps)."""
    if len(body) > limits.max_body_bytes:
        raise ExtractionError("oversize", f"body exceeds {limits.max_body_bytes} bytes")
    declared = content_type.strip() if content_type else None
    if whole:
        return [ExtractedItem(body, None, declared, "raw:body")] if body else []
    scan = _Scan(limits, probe)
    scan.blob(body, declared, "body", 0)
    return scan.items
