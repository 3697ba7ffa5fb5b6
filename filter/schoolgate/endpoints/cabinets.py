"""A cabinet's files read from its own structure, as far as its bytes go (Microsoft's cabinet
format, MS-CAB: a header, its folders, its files, then each folder's data blocks).

libarchive reads whole cabinets, but gives nothing of a file that a part cut short ends in; and
a stored folder's bytes are its data blocks' payloads, each behind an 8-byte block header, so a
picture in it is broken every 32 KiB and carving the raw bytes finds a picture that does not
decode (adversarial passes a75 G2, a78 I1). Here a folder stored as is or compressed with MSZIP
(deflate, block by block, each with the one before as its dictionary: what `gcab -z` and
Windows write) is read block by block, and each file is cut from its folder's stream where the
file table puts it, the last one as far as the part goes. Quantum and LZX folders give nothing
here (libarchive reads them whole). What is inflated is capped like a ZIP's.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.endpoints.libarchive import CAB_MAGIC

_HEADER: Final = 36
_RESERVE_PRESENT: Final = 0x0004
_PREVIOUS: Final = 0x0001  # a cabinet set's earlier cabinet is named (two strings)
_NEXT: Final = 0x0002
_STORED, _MSZIP = 0, 1
_BLOCK_HEADER: Final = 8
_HISTORY: Final = 32 * 1024


def cabinet_files(data: bytes, limits: ExtractLimits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file of the cabinet `data` whose bytes it holds, the last perhaps
    cut short; [] where `data` is no cabinet or too short to say what it holds."""
    if len(data) < _HEADER or not data.startswith(CAB_MAGIC):
        return []
    files_at = struct.unpack_from("<I", data, 16)[0]
    folder_count, file_count, flags = struct.unpack_from("<HHH", data, 26)
    position, folder_reserve, block_reserve = _HEADER, 0, 0
    if flags & _RESERVE_PRESENT:
        if len(data) < _HEADER + 4:
            return []
        header_reserve, folder_reserve, block_reserve = struct.unpack_from("<HBB", data, _HEADER)
        position += 4 + header_reserve
    for _ in range(2 * bool(flags & _PREVIOUS) + 2 * bool(flags & _NEXT)):
        position = data.find(b"\x00", position) + 1
        if position == 0:
            return []
    budget = limits.max_decoded_bytes  # what may still be inflated, by all the folders
    streams: list[bytes] = []
    for _ in range(folder_count):
        if position + 8 > len(data):
            break
        start, blocks, kind = struct.unpack_from("<IHH", data, position)
        position += 8 + folder_reserve
        stream = _folder(data, start, blocks, kind & 0x0F, block_reserve, budget)
        budget -= len(stream)
        streams.append(stream)
    files: list[tuple[str, bytes]] = []
    at = files_at
    for _ in range(file_count):
        end = data.find(b"\x00", at + 16)
        if at + 16 > len(data) or end < 0:
            break
        size, offset, folder = struct.unpack_from("<IIH", data, at)
        name = data[at + 16 : end].decode("utf-8", "replace")
        at = end + 1
        if folder < len(streams) and offset < len(streams[folder]):  # not one carried over
            files.append((name, streams[folder][offset : offset + size]))
    return files


def _folder(data: bytes, start: int, blocks: int, method: int, reserve: int,
            budget: int) -> bytes:  # fmt: skip
    """A folder's bytes, its data blocks read in turn from `start` as far as `data` goes
    (`budget`: what it may inflate to)."""
    if method not in (_STORED, _MSZIP):
        return b""
    stream = bytearray()
    at = start
    for _ in range(blocks):
        if at + _BLOCK_HEADER + reserve > len(data):
            break
        packed, unpacked = struct.unpack_from("<HH", data, at + 4)
        payload = data[at + _BLOCK_HEADER + reserve : at + _BLOCK_HEADER + reserve + packed]
        at += _BLOCK_HEADER + reserve + packed
        if method == _STORED:
            stream += payload
        else:
            if not payload.startswith(b"CK"):
                break
            history = bytes(stream[-_HISTORY:])
            decoder = zlib.decompressobj(-15, zdict=history) if history else zlib.decompressobj(-15)
            try:
                stream += decoder.decompress(payload[2:], unpacked or _HISTORY)
            except zlib.error:
                break  # damage: what was read before it is what a reader gets
        if len(stream) > budget:
            raise ExtractionError("encoding_bomb", "a cabinet's folder inflates past the cap")
    return bytes(stream)
