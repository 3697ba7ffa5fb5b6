"""The files an archive's first part holds: a ZIP's or a tar's, read from the start, each
compressed layer (gzip, bzip2, xz, zstd, LZMA) undone as far as its bytes go, and archives inside
archives read the same way, the last file perhaps cut short (adversarial passes a70 F8, a71
N1-N3, a72 B, C). A reader finds a ZIP's files from its central directory at its end, and a
tar's end blocks close it: both may be sent from elsewhere, so an unfinished upload's first part
is looked into as it grows.

- A ZIP's local headers are read in order; an entry whose sizes come after its data (a
  streamed ZIP, flag bit 3) runs to the end of its deflate stream, or when stored to the next
  header's signature.
- A tar's headers give each file's size.
- A compressed file is read through all its members, streams or frames (a tar split over two
  gzip members, a72 B), and what it holds is read again: a tar, a ZIP, a picture.

Cut files give what they hold (their rows are looked at). Encrypted ZIP entries are skipped;
what is inflated is capped (ExtractLimits.max_decoded_bytes) and bombs are refused.
"""

from __future__ import annotations

import lzma
import re
import zlib
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np

from schoolgate.endpoints.cabinets import cabinet_files
from schoolgate.endpoints.encoding import compressed_start, decompress_members
from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.endpoints.libarchive import (
    ARCHIVE_MAGICS,
    CAB_MAGIC,
    RAR_MAGIC,
    SEVEN_ZIP_MAGIC,
    archive_members,
)
from schoolgate.endpoints.tarball import tar_files
from schoolgate.endpoints.ziparchive import SPLIT_ZIP_MAGIC, ZIP_MAGIC, holds_zip, zip_members

_MAX_MEMBERS: Final = 2000
_MAX_DEPTH: Final = 4  # a tar in a gzip in a ZIP in a ZIP
_SEVEN_ZIP_HEADER: Final = 32
_LZMA_STEP: Final = 64 * 1024
_DELTA_DISTANCES: Final = (1, 2, 4)  # 7-Zip writes Delta:4 unless told otherwise
_PROBE: Final = 64 * 1024  # of a 7z's packed data, to tell its coder
_BZIP2_START: Final = re.compile(rb"BZh[1-9]1AY&SY")  # a bzip2 stream and its first block
_PICTURE_STARTS: Final = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00",
                          b"MM\x00*", b"ftyp")  # fmt: skip
_ZIP_SIGNATURES: Final = re.compile(b"PK\x07\x08|PK\x03\x04|PK\x01\x02")
# A picture's start as it is written, past its first four bytes (which Delta:4 leaves as they
# are): a JPEG's first segment, a PNG's or a GIF's whole signature, a WebP's chunk.
_CLEAR_PICTURE_START: Final = re.compile(
    b"\xff\xd8\xff(?:\xe0..JFIF|\xe1..Exif|\xdb\x00[\x43\x84\xc5]|\xee..Adobe)"
    b"|\x89PNG\r\n\x1a\n|GIF8[79]a|WEBPVP8",
    re.DOTALL,
)

# (name, its bytes so far, how many of them the last look saw)
_Member = tuple[str, bytes, int]


def is_archive_start(data: bytes) -> bool:
    """Whether `data` starts a ZIP, a tar, a 7z, a cabinet, a RAR archive or a compressed file
    (which may hold any of them)."""
    return (data.startswith((ZIP_MAGIC, SPLIT_ZIP_MAGIC, *ARCHIVE_MAGICS))
            or data[257:262] == b"ustar"
            or compressed_start(data))  # fmt: skip


def archive_start_members(
    data: bytes, limits: ExtractLimits, since: int = 0
) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file in the first part `data` of an archive or a compressed file
    that was not yet whole in its first `since` bytes (those were looked at before); a file
    that is itself an archive or compressed gives the files it holds instead."""
    return _files(data, limits, since, depth=0)


def _files(data: bytes, limits: ExtractLimits, since: int, depth: int) -> list[tuple[str, bytes]]:
    if data.startswith(SPLIT_ZIP_MAGIC):  # a split ZIP's first piece: its marker, then a ZIP
        marker = len(SPLIT_ZIP_MAGIC) - len(ZIP_MAGIC)
        return _files(data[marker:], limits, max(0, since - marker), depth)
    if data.startswith(ZIP_MAGIC):
        members = _zip_members(data, limits, since)
    elif data.startswith(SEVEN_ZIP_MAGIC):
        members = _seven_zip_streams(data, limits, since)
    elif data.startswith((CAB_MAGIC, RAR_MAGIC)):
        members = _library_files(data, limits, since)
    elif data[257:262] == b"ustar":
        members = _tar_members(data, since)
    else:
        members = _decompressed(data, limits, since)
    found: list[tuple[str, bytes]] = []
    for name, content, seen in members:
        if seen >= len(content):
            continue  # whole at the last look (judged then), or grown by nothing since
        if depth < _MAX_DEPTH and is_archive_start(content):
            inner = _files(content, limits, seen, depth + 1)
            found += [(f"{name}/{path}" if name else path, held) for path, held in inner]
        else:
            found.append((name, content))
    return found


def _decompressed(data: bytes, limits: ExtractLimits, since: int) -> list[_Member]:
    """What a compressed file's first part decompresses to, as one member (photo.jpg.gz holds
    a picture, .tar.xz a tar); none where it is no compressed file."""
    found = decompress_members(data, limits)
    if found is None:
        return []
    before = decompress_members(data[:since], limits) if since else None
    return [("", found[1], len(before[1]) if before is not None else 0)]


def _seven_zip_streams(data: bytes, limits: ExtractLimits, since: int) -> list[_Member]:
    """A 7z's first part (its directory, with its files' names, coders and sizes, is at its end,
    and may come from elsewhere: a73 L3). Where the part holds its end, it is the whole archive,
    read as one (a75 G6: the whole archive in a Dropbox start or an X APPEND, the empty commit
    from the phone). Otherwise its packed data, after the 32-byte signature header, is looked
    at as stored and undone as 7-Zip's coders undo it, as far as the bytes go: LZMA2 (each
    file's stream after the last where a solid block is not used; a75 G2), with or without the
    x86 or the Delta filter, LZMA's default properties, and Deflate. Each is its files end to
    end; the pictures in them are carved (FirstPart). PPMd and BZip2 give nothing here."""
    whole = archive_members(data, limits, strict=True)
    if whole:
        return [(name, content, len(content) if since >= len(data) else 0)
                for name, content in whole]  # fmt: skip
    packed, seen = data[_SEVEN_ZIP_HEADER:], max(0, since - _SEVEN_ZIP_HEADER)
    found: list[_Member] = [_since_last_picture("7z", packed, seen)]
    # The dictionary never reaches past what was decoded; within the decoded-bytes cap.
    dictionary = min(1 << 26, max(1 << 20, 1 << (len(packed) * 8).bit_length()))
    for name, filters in (
        ("7z/lzma2", [{"id": lzma.FILTER_LZMA2, "dict_size": dictionary}]),
        ("7z/x86+lzma2", [{"id": lzma.FILTER_X86},
                          {"id": lzma.FILTER_LZMA2, "dict_size": dictionary}]),
        ("7z/lzma", [{"id": lzma.FILTER_LZMA1, "dict_size": dictionary}]),
    ):  # fmt: skip
        before, content, starts = _raw_lzma(packed, seen, filters, limits)
        if len(content) >= _SEVEN_ZIP_HEADER:
            found.append(_since_last_picture(name, content, before))
            if name == "7z/lzma2" and _CLEAR_PICTURE_START.search(content) is None:
                # 7-Zip's Delta filter under LZMA2, 1, 2 or 4 bytes apart: its output shows
                # no picture's signature until undone.
                streams = zip(starts, [*starts[1:], len(content)], strict=True)
                pieces = [content[start:end] for start, end in streams]
                for distance in _DELTA_DISTANCES:
                    undone = b"".join(_undelta(piece, distance) for piece in pieces)
                    found.append(_since_last_picture(f"7z/delta{distance}", undone, before))
    before, content = _raw_deflate(packed, seen, limits)
    if len(content) >= _SEVEN_ZIP_HEADER:
        found.append(_since_last_picture("7z/deflate", content, before))
    return found


def seven_zip_coder_unread(data: bytes) -> str | None:
    """The coder the packed data of a 7z cut short (`data`) is in, where it is one read here only
    at the archive's end: BZip2 (a 900 kB block before its first byte; its signature says so)
    or PPMd (no reader here: its range coder starts with a zero byte, as LZMA's does, but
    LZMA's decoder fails on it at once). None where the packed data starts as a coder read here
    undoes it, or as stored bytes (a stored file whose first byte is zero is taken for PPMd)."""
    packed = data[_SEVEN_ZIP_HEADER : _SEVEN_ZIP_HEADER + _PROBE]
    if _BZIP2_START.match(packed):
        return "BZip2"
    if not packed.startswith(b"\x00"):
        return None  # LZMA2's chunks, Deflate, or stored bytes
    decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1}])
    try:
        decoder.decompress(packed, _PROBE)
    except lzma.LZMAError:
        return "PPMd"
    return None


def _undelta(data: bytes, distance: int) -> bytes:
    """What 7-Zip's Delta filter encoded: each byte added to the one `distance` before it."""
    encoded = np.frombuffer(data, np.uint8)
    decoded = np.empty_like(encoded)
    for lane in range(distance):
        decoded[lane::distance] = np.cumsum(encoded[lane::distance], dtype=np.uint8)
    return decoded.tobytes()


def _library_files(data: bytes, limits: ExtractLimits, since: int) -> list[_Member]:
    """A RAR archive's or a cabinet's files that libarchive reads in the part (those whole in
    it: it gives nothing of a file cut short), and then a cabinet's files as far as the part
    goes (cabinets.py), or the part of a RAR archive after its signature as it stands, whose
    stored files' pictures are carved (FirstPart)."""
    found = archive_members(data, limits, strict=False)
    before = dict(archive_members(data[:since], limits, strict=False)) if since else {}
    if data.startswith(CAB_MAGIC):
        whole = {name for name, _ in found}
        found += [file for file in cabinet_files(data, limits) if file[0] not in whole]
        before |= dict(cabinet_files(data[:since], limits)) if since else {}
    files = [(name, content, _held_before(before.get(name), content)) for name, content in found]
    if data.startswith(CAB_MAGIC):
        return files
    signature = len(RAR_MAGIC)
    stored = _since_last_picture("stored", data[signature:], max(0, since - signature))
    return [*files, stored]


def _since_last_picture(name: str, content: bytes, seen: int) -> _Member:
    """`content` from the last picture that started in its first `seen` bytes (those before it
    were whole at the last look, and judged then), with how much of that the look saw."""
    starts = [content.rfind(signature, 0, seen) for signature in _PICTURE_STARTS]
    start = max(0, *starts)
    return name, content[start:], seen - start


def _raw_lzma(packed: bytes, seen: int, filters: list[dict[str, int]], limits: ExtractLimits
              ) -> tuple[int, bytes, list[int]]:  # fmt: skip
    """How much of `packed[:seen]` decodes to, what `packed` decodes to as far as it goes (the
    steps before damage or a wrong guess of its coder), and where each stream starts in that.
    A stream that ends (LZMA2 marks its end) is followed by the next one: each file of a 7z
    that is not solid is one."""
    return _streams(packed, seen, limits,
                    lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters))  # fmt: skip


def _raw_deflate(packed: bytes, seen: int, limits: ExtractLimits) -> tuple[int, bytes]:
    """`_raw_lzma` for Deflate streams, one after another (7-Zip's Deflate coder)."""
    before, content, _ = _streams(packed, seen, limits, lambda: zlib.decompressobj(-15))
    return before, content


class _Decoder(Protocol):
    """What an LZMA decompressor and a zlib decompress object share."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def _streams(packed: bytes, seen: int, limits: ExtractLimits, decoder_for: Callable[[], _Decoder]
             ) -> tuple[int, bytes, list[int]]:  # fmt: skip
    """`packed` decoded a step at a time, a new decoder started where a stream ends: how much
    `packed[:seen]` decoded to, all it decoded to, and where each stream starts in that."""
    decoder = decoder_for()
    out, before, at, starts = bytearray(), 0, 0, [0]
    while at < len(packed):
        step = packed[at : at + _LZMA_STEP]
        try:
            out += decoder.decompress(step, limits.max_decoded_bytes)
        except (lzma.LZMAError, zlib.error, EOFError):
            break
        if at < seen:
            before = len(out)
        if len(out) > limits.max_decoded_bytes:
            raise ExtractionError("encoding_bomb", "a 7z's packed data inflates past the cap")
        if decoder.eof:
            if not decoder.unused_data or not out:
                break
            at += len(step) - len(decoder.unused_data)
            decoder = decoder_for()
            starts.append(len(out))
            continue
        at += len(step)
    return before, bytes(out), starts


def _zip_members(data: bytes, limits: ExtractLimits, since: int) -> list[_Member]:
    """Each entry, with how much of it the first `since` bytes held. A part that holds the
    ZIP's directory is the whole archive, read as one, in every method read anywhere (a76 H5:
    a BZip2 ZIP whole in a Dropbox start, the commit from the phone)."""
    if holds_zip(data):
        whole = list(zip_members(data, limits, lambda size: None))
        # What of each file the last look held was looked at then (a file whole then, judged).
        earlier = {name: held for name, held, _ in _zip_local_members(data[:since], limits, 0)}
        return [(name, content, _held_before(earlier.get(name), content))
                for name, content in whole]  # fmt: skip
    return _zip_local_members(data, limits, since)


def _held_before(before: bytes | None, content: bytes) -> int:
    """How much of a file the last look held (and looked at)."""
    return len(before) if before is not None and content.startswith(before) else 0


def _zip_local_members(data: bytes, limits: ExtractLimits, since: int) -> list[_Member]:
    """Each entry, from the local headers in order (the directory is at the ZIP's end)."""
    found: list[_Member] = []
    position, budget = 0, limits.max_decoded_bytes
    while data.startswith(ZIP_MAGIC, position) and len(found) < _MAX_MEMBERS:
        header = data[position : position + 30]
        if len(header) < 30:
            break
        flags, method, size, names, extra = (
            int.from_bytes(header[at : at + width], "little")
            for at, width in ((6, 2), (8, 2), (18, 4), (26, 2), (28, 2))
        )
        start = position + 30 + names + extra
        name = data[position + 30 : position + 30 + names].decode("utf-8", "replace")
        if size == 0xFFFFFFFF or method not in (0, 8):
            break  # ZIP64 or a method not read here
        streamed = bool(flags & 0x8) and not size
        content, end, seen = _zip_entry(data, start, size, method, streamed, since, budget)
        if len(content) > budget:
            raise ExtractionError("encoding_bomb", f"{name[:80]!r} inflates past the cap")
        if not flags & 0x1 and content:
            budget -= len(content)
            found.append((name, content, seen))
        if end is None:
            break
        position = end
    return found


def _zip_entry(data: bytes, start: int, size: int, method: int, streamed: bool, since: int,
               budget: int) -> tuple[bytes, int | None, int]:  # fmt: skip
    """An entry's bytes (inflated), where the next header may start (None: unknown), and how
    many of its bytes the first `since` bytes of `data` held."""
    seen = max(0, since - start)
    if method == 8:
        inflater = zlib.decompressobj(-15)
        stored = data[start:] if streamed else data[start : start + size]
        try:
            before = inflater.decompress(stored[:seen], budget + 1)
            content = before + inflater.decompress(stored[seen:], budget + 1)
        except zlib.error:
            return b"", None, 0
        if not streamed:
            return content, start + size, len(before)
        if not inflater.eof:
            return content, None, len(before)
        end = len(data) - len(inflater.unused_data)
        seen = len(before)
    elif streamed:
        found = _ZIP_SIGNATURES.search(data, start)
        end = found.start() if found else len(data)
        content = data[start:end]
        if found is None:
            return content, None, seen
    else:
        return data[start : start + size], start + size, seen
    # A streamed entry's data descriptor: its signature (optional), CRC and two sizes.
    return content, end + (16 if data.startswith(b"PK\x07\x08", end) else 12), seen


def _tar_members(data: bytes, since: int) -> list[_Member]:
    """Each regular file, with how much of it the first `since` bytes held."""
    files = tar_files(data) or []
    return [(name, content, max(0, since - start)) for name, content, start in files]
