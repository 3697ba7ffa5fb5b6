"""Undo a body's Content-Encoding (gzip, deflate, br, zstd, and chains of them), bounded; and
read a text body sent in UTF-16 or UTF-32 (`wide_text`) as the UTF-8 the scanner reads.

Decoding streams with an output cap and a ratio cap, so a decompression bomb is refused after at
most one step past a cap and never allocated whole. Every refusal is an `ExtractionError` with a
stable reason ("encoding_bomb", "oversize", "bad_encoding"), so a hostile body reaches the fail
policy, never a traceback.
"""

from __future__ import annotations

import bz2
import codecs
import lzma
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Final

import brotli  # ships no type information

from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.endpoints.libarchive import (
    LZ4_FRAME,
    LZ4_LEGACY,
    MAGICS,
    lz4_first_part,
)
from schoolgate.media.sniff import MediaKind, sniff

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # the backport of PEP 784's compression.zstd, with the same API
    from backports import zstd

_MiB: Final = 1 << 20
# Decoded output is produced in steps of this size, so a bomb is stopped one step past a cap.
_STEP: Final = 256 * 1024
_CHUNK: Final = 16 * 1024
# Below this much output the ratio cap is not applied: tiny bodies legitimately compress well.
_RATIO_FLOOR: Final = _MiB
_MAX_ENCODINGS: Final = 4
_MAX_GZIP_MEMBERS: Final = 64
_MAX_ZSTD_FRAMES: Final = 64
# The window cap bounds the decoder's own memory, whatever a frame header asks for (128 MiB).
_ZSTD_OPTIONS: Final[dict[int, int]] = {zstd.DecompressionParameter.window_log_max: 27}


class _Sink:
    """Collects decoded output, refusing it past the size cap or the ratio cap.

    The ratio is output over the input consumed so far, so a bomb is recognised as one early,
    whatever its total size.
    """

    def __init__(self, limits: ExtractLimits) -> None:
        self.buffer = bytearray()
        self.consumed = 0
        self.unused = b""  # what followed the last stream decoded (_stream)
        self.starts: list[int] = []  # where each member, stream or frame began in the output
        self.limits = limits

    def write(self, data: bytes) -> None:
        self.buffer += data
        size = len(self.buffer)
        consumed = max(self.consumed, 1)
        if size > _RATIO_FLOOR and size > consumed * self.limits.max_ratio:
            self.buffer = bytearray()
            raise ExtractionError(
                "encoding_bomb",
                f"compressed body expands more than {self.limits.max_ratio}x "
                f"({size} bytes from the first {consumed})",
            )
        if size > self.limits.max_decoded_bytes:
            self.buffer = bytearray()
            raise ExtractionError(
                "oversize", f"decoded body exceeds {self.limits.max_decoded_bytes} bytes"
            )


def decode_content_encoding(body: bytes, encodings: str | None, limits: ExtractLimits) -> bytes:
    """Undo a Content-Encoding header ("gzip", "deflate", "br", "zstd", chains like "gzip, br").

    Decoding streams with an output cap and a ratio cap; a bomb is refused ("encoding_bomb")
    after at most one step past the cap, never fully allocated. Unknown codings, corrupt or
    truncated data raise "bad_encoding".
    """
    if len(body) > limits.max_body_bytes:
        raise ExtractionError("oversize", f"body exceeds {limits.max_body_bytes} bytes")
    names = [
        name.strip().lower()
        for name in (encodings or "").split(",")
        if name.strip() and name.strip().lower() != "identity"
    ]
    if len(names) > _MAX_ENCODINGS:
        raise ExtractionError("bad_encoding", f"more than {_MAX_ENCODINGS} chained encodings")
    data = body
    # Codings are listed in the order they were applied, so they are undone in reverse.
    for name in reversed(names):
        decoder = _DECODERS.get(name)
        if decoder is None:
            raise ExtractionError("bad_encoding", f"unsupported Content-Encoding {name!r}")
        sink = _Sink(limits)
        try:
            decoder(data, sink)
        except ExtractionError:
            raise
        except (zlib.error, brotli.error, zstd.ZstdError, ValueError, EOFError) as error:
            raise ExtractionError("bad_encoding", f"corrupt {name} data: {error}") from error
        data = bytes(sink.buffer)
    return data


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        yield bytes(view[start : start + _CHUNK])


def _inflate(data: bytes, wbits: int, sink: _Sink) -> bytes:
    """Inflate one zlib/gzip/raw-deflate stream; returns the bytes after its end."""
    stream = zlib.decompressobj(wbits)
    base = sink.consumed
    fed = 0
    for chunk in _chunks(data):
        fed += len(chunk)
        pending = chunk
        while pending and not stream.eof:
            output = stream.decompress(pending, _STEP)
            pending = stream.unconsumed_tail
            sink.consumed = base + fed - len(pending)
            sink.write(output)
        if stream.eof:
            break
    if not stream.eof:
        raise ExtractionError("bad_encoding", "compressed data is truncated")
    sink.write(stream.flush())
    # unused_data is what followed the end in the chunks fed so far, not in all of `data`.
    consumed = fed - len(stream.unused_data)
    sink.consumed = base + consumed
    return data[consumed:]


def _gunzip(data: bytes, sink: _Sink) -> None:
    sink.starts.append(len(sink.buffer))
    rest = _inflate(data, 31, sink)
    members = 1
    # Concatenated gzip members are one valid body; trailing zero padding is tolerated.
    while rest.strip(b"\x00"):
        members += 1
        if members > _MAX_GZIP_MEMBERS:
            raise ExtractionError("bad_encoding", "too many gzip members")
        sink.starts.append(len(sink.buffer))
        rest = _inflate(rest, 31, sink)


def _deflate(data: bytes, sink: _Sink) -> None:
    # "deflate" is meant to be zlib-wrapped, but some servers and clients send raw deflate.
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    _inflate(data, 15 if zlib_header else -15, sink)


def _unbrotli(data: bytes, sink: _Sink) -> None:
    decompressor = brotli.Decompressor()
    for chunk in _chunks(data):
        sink.consumed += len(chunk)
        sink.write(decompressor.process(chunk, output_buffer_limit=_STEP))
        # Output past the limit waits inside the decompressor, and can_accept_more_data() does
        # not say so: drain it step by step (each step checked by the sink) until none is left.
        while not decompressor.is_finished():
            output = decompressor.process(b"", output_buffer_limit=_STEP)
            if not output:
                break
            sink.write(output)
    if not decompressor.is_finished():
        raise ExtractionError("bad_encoding", "brotli data is truncated")


def _unzstd(data: bytes, sink: _Sink) -> None:
    # One decompressor per frame: concatenated frames are one valid body, as gzip members are.
    view = memoryview(data)
    offset = 0
    frames = 0
    while offset < len(view):
        frames += 1
        if frames > _MAX_ZSTD_FRAMES:
            raise ExtractionError("bad_encoding", "too many zstd frames")
        decompressor = zstd.ZstdDecompressor(options=_ZSTD_OPTIONS)
        sink.starts.append(len(sink.buffer))
        while not decompressor.eof:
            if offset >= len(view):
                raise ExtractionError("bad_encoding", "zstd data is truncated")
            chunk = bytes(view[offset : offset + _CHUNK])
            offset += len(chunk)
            sink.consumed += len(chunk)
            sink.write(decompressor.decompress(chunk, _STEP))
            # Output past the step waits in the decompressor: drain it, each step checked.
            while not decompressor.eof and not decompressor.needs_input:
                sink.write(decompressor.decompress(b"", _STEP))
        # The frame ended inside the last chunk: what follows it starts the next frame.
        unused = len(decompressor.unused_data)
        offset -= unused
        sink.consumed -= unused


def _streams(
    make: Callable[[], bz2.BZ2Decompressor | lzma.LZMADecompressor], magic: bytes
) -> Callable[[bytes, _Sink], None]:
    """A decoder of concatenated streams, each with a decompressor of its own: `bzip2 -dc` and
    `xz -dc` write them all out, as gzip members and zstd frames are, and pbzip2 and pixz write
    files of many streams. Reading the first alone let an empty first stream hide a banked
    picture in the second (adversarial pass a40 F4). What follows the last stream (xz's zero
    padding, other bytes) ends the file, as those tools end it."""

    def decode(data: bytes, sink: _Sink) -> None:
        rest = data
        for _ in range(_MAX_STREAMS):
            sink.starts.append(len(sink.buffer))
            _stream(make(), rest, sink)
            rest = sink.unused.lstrip(b"\x00") if magic == _XZ else sink.unused
            if not rest.startswith(magic):
                return
        raise ExtractionError("bad_encoding", "too many compressed streams")

    return decode


def _stream(
    decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor, data: bytes, sink: _Sink
) -> None:
    """One stream; what follows it is left in `sink.unused`."""
    view = memoryview(data)
    for offset in range(0, len(data), _CHUNK):
        chunk = bytes(view[offset : offset + _CHUNK])
        sink.consumed += len(chunk)
        sink.write(decompressor.decompress(chunk, _STEP))
        while not decompressor.eof and not decompressor.needs_input:
            sink.write(decompressor.decompress(b"", _STEP))
        if decompressor.eof:
            sink.unused = decompressor.unused_data + data[offset + len(chunk) :]
            sink.consumed -= len(decompressor.unused_data)
            return
    raise ExtractionError("bad_encoding", "the compressed file ends early")


def _lzma_alone(data: bytes) -> bool:
    """The header of an LZMA-alone file (.lzma: `xz --format=lzma`, 7-Zip, Python's
    FORMAT_ALONE), which has no magic: the properties every writer uses (lc 3, lp 0, pb 2), a
    dictionary size of 2^n or 3·2^(n-1) from 4 KiB to 1.5 GiB, and a size, unknown or below
    2^48 (a40 F4: a banked picture in a .lzma passed)."""
    if len(data) < 13 or data[0] != 0x5D:
        return False
    dictionary = int.from_bytes(data[1:5], "little")
    size = int.from_bytes(data[5:13], "little")
    shapes = {1 << n for n in range(12, 31)} | {3 << n for n in range(11, 30)}
    return dictionary in shapes and (size == (1 << 64) - 1 or size < 1 << 48)


_XZ: Final = b"\xfd7zXZ\x00"
_MAX_STREAMS: Final = 64


# The decoder's own memory (its dictionary), whatever a header asks for: xz -9 needs 65 MiB.
_LZMA_MEMLIMIT: Final = 256 * _MiB


def _alone() -> lzma.LZMADecompressor:
    return lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT)


def _xz() -> lzma.LZMADecompressor:
    return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)


def _unlz4(data: bytes, sink: _Sink) -> None:
    sink.starts.append(0)
    sink.consumed = len(data)
    sink.write(lz4_first_part(data, sink.limits))


# A file compressed on its own (photo.jpg.gz, .bz2, .xz, .lzma): the recipient decompresses it.
_COMPRESSED_FILES: Final = (
    (b"\x1f\x8b\x08", "gzip", _gunzip),
    # "BZh" and the block size, then the first block's magic (pi's digits) or, for an empty
    # stream, the end-of-stream magic (sqrt(pi)'s): text never starts so.
    (b"BZh", "bzip2", _streams(bz2.BZ2Decompressor, b"BZh")),
    (_XZ, "xz", _streams(_xz, _XZ)),
    (b"\x28\xb5\x2f\xfd", "zstd", _unzstd),
    (b"\x5d", "lzma", lambda data, sink: _stream(_alone(), data, sink)),
    # zlib's own wrapping (`pigz -z`, a .zz file): a42 F2 sent a banked picture in one.
    (b"\x78", "zlib", lambda data, sink: _whole_zlib(data, sink)),
    # `lz4`, frame and legacy formats (a73 L1, L4), read by libarchive.
    (LZ4_FRAME, "lz4", _unlz4),
    (LZ4_LEGACY, "lz4", _unlz4),
)


# What starts a compressed file for certain (not LZMA-alone's or zlib's few bytes), a 7z or lz4.
STARTS: Final = (b"\x1f\x8b\x08", b"BZh", _XZ, b"\x28\xb5\x2f\xfd", *MAGICS)


def _whole_zlib(data: bytes, sink: _Sink) -> None:
    if _inflate(data, 15, sink).strip(b"\x00"):
        raise ExtractionError("bad_encoding", "bytes after the zlib stream")


_BZIP2_STARTS: Final = (b"1AY&SY", b"\x17rE8P\x90")
_ZLIB_LEVELS: Final = frozenset({0x01, 0x5E, 0x9C, 0xDA})  # the second byte zlib itself writes


def _claims(name: str, data: bytes) -> bool:
    if name == "bzip2":
        return data[3:4] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9") and (
            data[4:10] in _BZIP2_STARTS
        )
    if name == "zlib":
        return len(data) >= 2 and data[1] in _ZLIB_LEVELS and (data[0] << 8 | data[1]) % 31 == 0
    return name != "lzma" or _lzma_alone(data)


def compressed_start(data: bytes) -> bool:
    """Whether `data` starts a gzip, bzip2, xz, zstd or LZMA-alone file (`decompress_members`
    reads it as far as it goes; a zlib stream is read only whole)."""
    return any(
        data.startswith(magic) and _claims(name, data)
        for magic, name, _ in _COMPRESSED_FILES
        if name != "zlib"
    )


def brotli_file(data: bytes, limits: ExtractLimits) -> bytes | None:
    """What a brotli file (.br, which has no signature) holds, as far as its bytes go, where that
    starts a picture, a video or an archive; None for anything else (a73 L2: a .tar.br of a banked
    picture passed). Other bytes fail to decode within a few bytes, or decode to no such start."""
    sink = _Sink(limits)
    try:
        _unbrotli(data, sink)
    except ExtractionError as error:
        if error.reason != "bad_encoding":
            raise
    except brotli.error:
        pass
    found = bytes(sink.buffer)
    if sniff(found).kind is not MediaKind.UNKNOWN or found[257:262] == b"ustar":
        return found
    return (
        found
        if any(found.startswith(magic) for magic, _, _ in _COMPRESSED_FILES[:4])
        or (found.startswith((b"PK\x03\x04", *MAGICS)))
        else None
    )


def decompress_file(data: bytes, limits: ExtractLimits) -> tuple[str, bytes] | None:
    """(format, contents) of a gzip, bzip2, xz, zstd or LZMA-alone file, within the same caps as
    a body's Content-Encoding; None for anything else. Raises ExtractionError for a bomb."""
    found = decompress_members(data, limits)
    return (found[0], found[1]) if found is not None else None


def decompress_members(
    data: bytes, limits: ExtractLimits
) -> tuple[str, bytes, tuple[int, ...]] | None:
    """As `decompress_file`, with where in the contents each member (gzip), stream (bzip2,
    xz) or frame (zstd) began: a file after the first is a file of its own to a reader that
    looks for pictures at the start of one (a42 F2: a BMP in a second gzip member passed)."""
    for magic, name, decoder in _COMPRESSED_FILES:
        if data.startswith(magic) and _claims(name, data):
            sink = _Sink(limits)
            try:
                decoder(data, sink)
            except ExtractionError as error:
                if error.reason != "bad_encoding":
                    raise  # a bomb, or over the caps
                if name == "zlib":
                    continue  # two bytes of signature: only a whole stream says it was one
            except (zlib.error, OSError, lzma.LZMAError, ValueError, EOFError):
                if name == "zlib":
                    continue
            # Cut short or corrupt further on: what did decompress is what the recipient gets.
            return name, bytes(sink.buffer), tuple(sink.starts)
    return None


_DECODERS: Final[dict[str, Callable[[bytes, _Sink], None]]] = {
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _deflate,
    "br": _unbrotli,
    "zstd": _unzstd,
}


# Sample read to tell how a UTF-16/32 text without a BOM is laid out (where its zero bytes are).
_LAYOUT_SAMPLE: Final = 64 * 1024
_BOMS: Final = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def wide_text(data: bytes, charset: str) -> tuple[bytes, bool] | None:
    """The body read as UTF-16/32 text and written as UTF-8, and whether the charset or a BOM
    said so (else the caller must check the text has the shape it guessed); None when it is none.

    The encoding comes from the charset parameter (any spelling Python knows: "UTF-16",
    "utf16", "UTF-32BE"), the BOM, or, for JSON (RFC 4627 §3, json.detect_encoding), the zero
    bytes around the first characters. Without a BOM a bare "utf-16"/"utf-32" has its byte order
    told by where the zero bytes fall (ASCII in UTF-16LE is `A\0`), big-endian when they say
    nothing (RFC 2781 §4.3). Undecodable code units are read as Python reads JSON
    (surrogatepass) or, failing that, as Java and .NET do (U+FFFD). The result is at most 1.5
    times the body (UTF-16 CJK); the caller counts it against the decoded-size cap."""
    declared = _wide_family(charset)
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None)
    if encoding is None and declared is not None:
        encoding = _byte_order(data, declared)
    if encoding is None:
        encoding = _detected_json_encoding(data)
        if encoding is None:
            return None
    try:
        text = data.decode(encoding, "surrogatepass")
    except UnicodeDecodeError:
        text = data.decode(encoding, "replace")
    narrow = text.lstrip("\ufeff").encode("utf-8", "surrogatepass")
    return narrow, declared is not None or data.startswith(tuple(bom for bom, _ in _BOMS))


def _wide_family(charset: str) -> str | None:
    """ "utf-16" or "utf-32" (with its byte order when named) for a charset parameter."""
    name = charset.strip().strip("\"'").lower()
    if not name:
        return None
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return None
    return canonical if canonical.startswith(("utf-16", "utf-32")) else None


def _byte_order(data: bytes, declared: str) -> str:
    if declared.endswith(("-le", "-be")):
        return declared
    sample = data[:_LAYOUT_SAMPLE]
    if declared == "utf-16":
        little = sample[1::2].count(0) > sample[0::2].count(0)
        return "utf-16-le" if little else "utf-16-be"
    little = sample[3::4].count(0) > sample[0::4].count(0)
    return "utf-32-le" if little else "utf-32-be"


def _detected_json_encoding(data: bytes) -> str | None:
    head = data[:4]
    if len(head) < 4 or 0 not in head:
        return None
    zeros = "".join("0" if byte == 0 else "x" for byte in head)
    return {"000x": "utf-32-be", "x000": "utf-32-le", "0x0x": "utf-16-be", "x0x0": "utf-16-le"}.get(
        zeros
    )
