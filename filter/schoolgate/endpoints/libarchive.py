"""What libarchive, the system's archive library, reads for us through a thin ctypes binding:
the files of a 7z archive (7-Zip, the archiver many Windows machines have), a RAR archive
(WinRAR) or a cabinet (.cab, Windows' own), a ZIP's files compressed in ways Python's zipfile
does not read (PPMd), and an lz4 stream (`lz4`, frame or legacy format). Python's standard
library reads none of them, and no reader of them is packaged for this appliance. A banked
picture in a .7z, a .cab or a .tar.lz4 sent whole went through as bytes with no picture in
them (adversarial passes a73 L1, L3, L4; a75 G1).

A 7z's directory is at its end, so only a whole archive is read (a first part shows nothing:
its files are found from the end). A file that cannot be read at all (a coder or a filter this
libarchive lacks: 7-Zip's ARM64 and RISC-V filters, Deflate64; a75 G1) is refused as
unreadable: what cannot be looked at is not passed as holding nothing. Encrypted files are
skipped, and refused where their names say they are pictures or videos (as in a ZIP), and so
is an archive whose names are hidden by its password (a75 G4). What is decompressed is capped
like a ZIP's."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import Final

from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.media.sniff import claims_media

SEVEN_ZIP_MAGIC: Final = b"7z\xbc\xaf\x27\x1c"
CAB_MAGIC: Final = b"MSCF\x00\x00\x00\x00"
RAR_MAGIC: Final = b"Rar!\x1a\x07"  # then 0x00 (RAR 4) or 0x01 0x00 (RAR 5)
ARCHIVE_MAGICS: Final = (SEVEN_ZIP_MAGIC, CAB_MAGIC, RAR_MAGIC)  # archives whose files are read
LZ4_FRAME: Final = b"\x04\x22\x4d\x18"
LZ4_LEGACY: Final = b"\x02\x21\x4c\x18"
MAGICS: Final = (*ARCHIVE_MAGICS, LZ4_FRAME, LZ4_LEGACY)  # what starts what libarchive reads here
_OK: Final = 0
_EOF: Final = 1
_WARN: Final = -20
_REGULAR: Final = 0o100000  # AE_IFREG
_FILE_TYPE: Final = 0o170000  # AE_IFMT
_STEP: Final = 256 * 1024
_MAX_MEMBERS: Final = 2000
_RAR5: Final = RAR_MAGIC + b"\x01\x00"
_SEVEN_ZIP_START: Final = 32  # a 7z's start header: where its directory lies, and its size
_RAR5_END: Final = 5  # the end-of-archive block's type


class _Library:
    """The libarchive calls used here, with their C types."""

    def __init__(self, library: ctypes.CDLL) -> None:
        pointer, size = ctypes.c_void_p, ctypes.c_size_t
        self.read_new = library.archive_read_new
        self.read_new.restype = pointer
        self.support_7zip = library.archive_read_support_format_7zip
        self.support_7zip.argtypes = [pointer]
        self.support_cab = library.archive_read_support_format_cab
        self.support_cab.argtypes = [pointer]
        self.support_rar = library.archive_read_support_format_rar
        self.support_rar.argtypes = [pointer]
        self.support_rar5 = library.archive_read_support_format_rar5
        self.support_rar5.argtypes = [pointer]
        self.support_zip = library.archive_read_support_format_zip
        self.support_zip.argtypes = [pointer]
        self.has_encrypted = library.archive_read_has_encrypted_entries
        self.has_encrypted.argtypes = [pointer]
        self.support_raw = library.archive_read_support_format_raw
        self.support_raw.argtypes = [pointer]
        self.support_lz4 = library.archive_read_support_filter_lz4
        self.support_lz4.argtypes = [pointer]
        self.open_memory = library.archive_read_open_memory
        self.open_memory.argtypes = [pointer, ctypes.c_char_p, size]
        self.next_header = library.archive_read_next_header
        self.next_header.argtypes = [pointer, ctypes.POINTER(pointer)]
        self.read_data = library.archive_read_data
        self.read_data.argtypes = [pointer, pointer, size]
        self.read_data.restype = ctypes.c_ssize_t
        self.read_free = library.archive_read_free
        self.read_free.argtypes = [pointer]
        self.error_string = library.archive_error_string
        self.error_string.argtypes = [pointer]
        self.error_string.restype = ctypes.c_char_p
        self.pathname = library.archive_entry_pathname
        self.pathname.argtypes = [pointer]
        self.pathname.restype = ctypes.c_char_p
        self.filetype = library.archive_entry_filetype
        self.filetype.argtypes = [pointer]
        self.filetype.restype = ctypes.c_uint
        self.size = library.archive_entry_size
        self.size.argtypes = [pointer]
        self.size.restype = ctypes.c_int64
        self.is_encrypted = library.archive_entry_is_encrypted
        self.is_encrypted.argtypes = [pointer]


@functools.cache
def _library() -> _Library | None:
    name = ctypes.util.find_library("archive") or "libarchive.so.13"
    try:
        return _Library(ctypes.CDLL(name))
    except (OSError, AttributeError):
        return None


def archive_members(
    data: bytes,
    limits: ExtractLimits,
    grow: Callable[[int], None] = lambda size: None,
    strict: bool = True,
) -> list[tuple[str, bytes]]:
    """(name, bytes) of each readable file of the 7z archive, cabinet or RAR archive `data`,
    each one's size passed to `grow`. Raises ExtractionError when libarchive is missing (the
    archive cannot be looked into: the fail policy decides), for a picture or video in it
    locked with a password or names hidden by one, for a bomb, and (when `strict`: a whole
    archive) for a file it cannot read at all. Not strict, a file cut short or missing gives
    what there is of it."""
    what = archive_kind(data)[1]

    def formats(library: _Library, archive: int) -> None:
        library.support_7zip(archive)
        library.support_cab(archive)
        library.support_rar(archive)
        library.support_rar5(archive)

    found = _read(data, limits, what, formats, strict)
    for _, content in found:
        grow(len(content))
    return found


def archive_kind(data: bytes) -> tuple[str, str]:
    """What the archive `data` (one of ARCHIVE_MAGICS) is: a short name and in words."""
    if data.startswith(SEVEN_ZIP_MAGIC):
        return "7z", "a 7z archive"
    return ("cab", "a cabinet") if data.startswith(CAB_MAGIC) else ("rar", "a RAR archive")


def cut_short(data: bytes) -> bool:
    """Whether the 7z archive, cabinet or RAR 5 archive `data` ends before its own structure
    does: a 7z's start header says where its directory ends, a cabinet's header gives its
    size, and a RAR 5 archive's blocks are walked to its end block (a78 I1: such a part sent
    whole gave nothing of its last file, and was refused as unreadable where a ZIP cut the
    same way was read; a79: a 7z's first volume, sent whole, was carved as raw bytes, its
    picture broken by LZMA2's chunk headers). RAR 4 archives are not walked: False."""
    if data.startswith(SEVEN_ZIP_MAGIC):
        if len(data) < _SEVEN_ZIP_START:
            return True
        directory = int.from_bytes(data[12:20], "little") + int.from_bytes(data[20:28], "little")
        return _SEVEN_ZIP_START + directory > len(data)
    if data.startswith(CAB_MAGIC):
        return len(data) < 12 or int.from_bytes(data[8:12], "little") > len(data)
    if not data.startswith(_RAR5):
        return False
    position = len(_RAR5)
    while position < len(data):
        size, start = _vint(data, position + 4)  # after the block's CRC32
        kind, at = _vint(data, start)
        flags, at = _vint(data, at)
        if size is None or kind is None or flags is None or start + size > len(data):
            return True  # a block cut in its header
        if kind == _RAR5_END:
            return False
        if flags & 0x01:  # an extra area's size, then the data's
            _, at = _vint(data, at)
        carried = _vint(data, at)[0] if flags & 0x02 else 0
        if carried is None:
            return True
        position = start + size + carried
    return position > len(data)


def _vint(data: bytes, at: int) -> tuple[int | None, int]:
    """A RAR 5 variable-length integer at `at` (7 bits a byte, low first), and where it ends;
    None where `data` ends inside it."""
    value = 0
    for shift in range(0, 70, 7):
        if at >= len(data):
            return None, at
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
    return None, at


def zip_files(data: bytes, limits: ExtractLimits) -> dict[str, bytes]:
    """A ZIP's files as libarchive reads them (methods Python's zipfile lacks: PPMd), by name.
    Raises ExtractionError as `archive_members` does, for a file it cannot read either."""

    def formats(library: _Library, archive: int) -> None:
        library.support_zip(archive)

    return dict(_read(data, limits, "a ZIP archive", formats, strict=True))


def lz4_contents(data: bytes, limits: ExtractLimits) -> bytes:
    """What an lz4 stream (frame or legacy format) decompresses to, as far as its bytes go (a
    first part gives what it holds). Raises ExtractionError as `archive_members` does."""

    def formats(library: _Library, archive: int) -> None:
        library.support_lz4(archive)
        library.support_raw(archive)

    found = _read(data, limits, "an lz4 stream", formats, strict=False)
    return found[0][1] if found else b""


def _read(data: bytes, limits: ExtractLimits, what: str,
          formats: Callable[[_Library, int], object], strict: bool
          ) -> list[tuple[str, bytes]]:  # fmt: skip
    library = _library()
    if library is None:
        raise ExtractionError(
            "unreadable", f"{what}, and libarchive is not installed (apt install libarchive13)"
        )
    archive = library.read_new()
    if not archive:
        raise MemoryError("libarchive could not start a reader")
    try:
        formats(library, archive)
        if library.open_memory(archive, data, len(data)) != _OK:
            return []  # not one after all: carving still looks at its bytes
        return _members(library, archive, limits, len(data), what if strict else None)
    finally:
        library.read_free(archive)


def _members(
    library: _Library, archive: int, limits: ExtractLimits, packed: int, whole: str | None
) -> list[tuple[str, bytes]]:
    """The files read. `whole` (what the archive is, where it is read as a whole archive)
    refuses a file that cannot be read at all, and an archive whose names a password hides."""
    found: list[tuple[str, bytes]] = []
    budget = limits.max_decoded_bytes
    entry = ctypes.c_void_p()
    buffer = ctypes.create_string_buffer(_STEP)
    listed = 0
    while len(found) < _MAX_MEMBERS:
        status = library.next_header(archive, ctypes.byref(entry))
        if status < _WARN and not listed and whole and library.has_encrypted(archive) == 1:
            raise ExtractionError("encrypted", f"{whole} whose names are hidden by a password")
        if status == _EOF or status < _WARN:
            break  # the end, or damage: what was read before it is what a reader gets
        listed += 1
        raw_name = library.pathname(entry) or b""
        name = raw_name.decode("utf-8", "replace")
        if library.filetype(entry) & _FILE_TYPE != _REGULAR:
            continue
        if library.is_encrypted(entry):
            if claims_media(None, name):
                raise ExtractionError(
                    "encrypted", f"{name[:80]!r} is media in a password-protected archive"
                )
            continue
        content = bytearray()
        while True:
            read = library.read_data(archive, buffer, _STEP)
            if read < 0 and not content and whole:
                error = (library.error_string(archive) or b"").decode("utf-8", "replace")
                raise ExtractionError(
                    "unreadable", f"{name[:80]!r} in {whole} cannot be read here: {error[:120]}"
                )
            if read <= 0:
                break  # its end (0), or damage (< 0): what was read is kept
            content += buffer.raw[:read]
            if len(content) > budget:
                raise ExtractionError("encoding_bomb", f"{name[:80]!r} inflates past the cap")
            if len(content) > (1 << 20) and len(content) > packed * limits.max_ratio:
                raise ExtractionError("encoding_bomb", f"{name[:80]!r} expands past the ratio")
        budget -= len(content)
        if content:
            found.append((name, bytes(content)))
    return found


def lz4_first_part(data: bytes, limits: ExtractLimits) -> bytes:
    """What an lz4 stream, perhaps cut short, holds as far as its bytes go: its whole blocks read
    by libarchive, then the block it was cut in, read here as far as it goes (a74 F3: `lz4`
    writes 4 MiB blocks, so a picture in a .tar.lz4 was in one block that gave nothing until
    its end, and the last 3 kB from the phone completed it)."""
    closed, cut = closed_lz4(data)
    contents = lz4_contents(closed, limits) if closed else b""
    if cut is None:
        return contents
    payload, stored = cut
    return contents + (payload if stored else _partial_block(payload, contents, limits))


def closed_lz4(data: bytes) -> tuple[bytes, tuple[bytes, bool] | None]:
    """An lz4 stream cut short, ended after its last whole block (a frame's end mark added),
    and what there is of the block it was cut in (and whether that one is stored as is): a
    reader gives nothing of a block cut short, and libarchive holds back the last of what it
    has when the stream breaks off. Whole streams are returned as they are, with None."""
    position = 0
    while position < len(data):
        if data.startswith(LZ4_LEGACY, position):
            end, closed = _blocks(data, position + 4, checksums=0, legacy=True)
        elif data.startswith(LZ4_FRAME, position) and position + 7 <= len(data):
            flags = data[position + 4]
            start = position + 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
            end, closed = _blocks(data, start, checksums=4 if flags & 0x10 else 0, legacy=False)
            if closed:
                end += 4 if flags & 0x04 else 0  # the content checksum after the end mark
            else:
                # The content checksum is of the whole: the cut frame says it has none.
                descriptor = bytes([flags & ~0x04]) + data[position + 5 : start - 1]
                header = LZ4_FRAME + descriptor + bytes([_xxh32(descriptor) >> 8 & 0xFF])
                return data[:position] + header + data[start:end] + bytes(4), _cut(data, end)
        else:
            return data[:position], None
        if not closed:
            whole = data[:end] if end > position + 4 else data[:position]
            return whole, _cut(data, end)
        position = end
    return data, None


def _cut(data: bytes, block: int) -> tuple[bytes, bool] | None:
    """The bytes of the block cut short at `block` (its size first), and whether it is stored."""
    if block + 4 >= len(data):
        return None
    return data[block + 4 :], bool(data[block + 3] & 0x80)


# A block cut short is read here at most this many sequences far (a text's 4 MiB block has
# about a million; a photo's, whose bytes do not compress, a few thousand).
_MAX_SEQUENCES: Final = 1 << 17


def _partial_block(block: bytes, history: bytes, limits: ExtractLimits) -> bytes:
    """An lz4 block's sequences (literals, then a match: an offset back and a length) decoded
    as far as `block` goes; `history` is what came before it (a linked block reaches into it)."""
    out = bytearray(history)
    position, sequences = 0, 0
    while position < len(block) and sequences < _MAX_SEQUENCES:
        sequences += 1
        token = block[position]
        position += 1
        literals, position = _length(block, position, token >> 4)
        out += block[position : position + literals]
        position += literals
        if position + 2 > len(block):
            break
        offset = block[position] | block[position + 1] << 8
        matched, position = _length(block, position + 2, token & 0x0F)
        matched += 4
        if not 0 < offset <= len(out) or position > len(block):
            break
        start = len(out) - offset
        if offset >= matched:
            out += out[start : start + matched]
        else:  # the match overlaps what it writes: its pattern repeats
            out += (out[start:] * (matched // offset + 1))[:matched]
        if len(out) - len(history) > limits.max_decoded_bytes:
            raise ExtractionError("encoding_bomb", "an lz4 block inflates past the cap")
    return bytes(out[len(history) :])


def _length(block: bytes, position: int, length: int) -> tuple[int, int]:
    """A literal or match length: 15 is continued by bytes that add up until one is not 255."""
    if length == 15:
        while position < len(block):
            more = block[position]
            position += 1
            length += more
            if more != 255:
                break
    return length, position


_PRIMES: Final = (2654435761, 2246822519, 3266489917, 668265263, 374761393)
_WORD: Final = 0xFFFFFFFF


def _xxh32(data: bytes) -> int:
    """XXH32 (seed 0) of fewer than 16 bytes: an lz4 frame descriptor's checksum."""

    def turned(value: int, bits: int) -> int:
        return (value << bits | value >> (32 - bits)) & _WORD

    digest = (_PRIMES[4] + len(data)) & _WORD
    whole = len(data) // 4 * 4
    for at in range(0, whole, 4):
        digest = digest + int.from_bytes(data[at : at + 4], "little") * _PRIMES[2] & _WORD
        digest = turned(digest, 17) * _PRIMES[3] & _WORD
    for byte in data[whole:]:
        digest = turned(digest + byte * _PRIMES[4] & _WORD, 11) * _PRIMES[0] & _WORD
    digest = (digest ^ digest >> 15) * _PRIMES[1] & _WORD
    digest = (digest ^ digest >> 13) * _PRIMES[2] & _WORD
    return digest ^ digest >> 16


def _blocks(data: bytes, position: int, checksums: int, legacy: bool) -> tuple[int, bool]:
    """Where the blocks from `position` end (after the end mark where there is one), and whether
    they end whole; else where the last whole one ends."""
    while position + 4 <= len(data):
        size = int.from_bytes(data[position : position + 4], "little")
        if legacy and data.startswith((LZ4_LEGACY, LZ4_FRAME), position):
            return position, True  # the next stream
        if not legacy and size == 0:
            return position + 4, True  # the end mark
        following = position + 4 + (size & 0x7FFFFFFF) + checksums
        if following > len(data):
            return position, False
        position = following
    return position, legacy and position == len(data)
