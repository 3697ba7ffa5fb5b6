"""RAR 5 archives with stored files, written here from the format's published description (RAR
5.0 archive format, rarlab.com/technote.htm): no RAR writer is packaged for Debian or PyPI. Only
the store method is written (RAR's compression is proprietary to write); libarchive reads the
compressed ones too."""

from __future__ import annotations

import zlib

SIGNATURE = b"Rar!\x1a\x07\x01\x00"
_MAIN, _FILE, _END = 1, 2, 5
_HAS_DATA = 0x0002
_FILE_HAS_CRC = 0x0004


def _vint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _block(kind: int, flags: int, fields: bytes, data: bytes = b"") -> bytes:
    body = _vint(kind) + _vint(flags) + (_vint(len(data)) if flags & _HAS_DATA else b"") + fields
    sized = _vint(len(body)) + body
    return zlib.crc32(sized).to_bytes(4, "little") + sized + data


def stored_rar(files: dict[str, bytes], method: int = 0) -> bytes:
    """A RAR 5 archive holding `files` stored, names as given. `method` other than 0 claims the
    bytes are compressed (they are not: a file a reader cannot undo)."""
    blocks = [SIGNATURE, _block(_MAIN, 0, _vint(0))]
    for name, content in files.items():
        encoded = name.encode()
        fields = (
            _vint(_FILE_HAS_CRC)  # file flags: a CRC32 of the data follows
            + _vint(len(content))  # unpacked size
            + _vint(0x20)  # attributes (archive)
            + zlib.crc32(content).to_bytes(4, "little")
            + _vint(method << 7)  # compression: version 0, not solid, the method (0: store)
            + _vint(0)  # host OS: Windows
            + _vint(len(encoded))
            + encoded
        )
        blocks.append(_block(_FILE, _HAS_DATA, fields, content))
    blocks.append(_block(_END, 0, _vint(0)))
    return b"".join(blocks)
