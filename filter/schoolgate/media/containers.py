"""A video container's top-level structure, read without decoding: whether it is cut short
(an interrupted or deliberately cut upload is named as such, not as a demuxer error) or already
whole (the first part of an upload that a service holds whole), and which libavformat demuxer
its magic bytes name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Literal

from schoolgate.media.sniff import MediaType, _read_ebml_vint, sniff


class Truncation:
    """Whether a container's top-level structure runs past the end of the data.

    A cut-off upload (an interrupted transfer, or a deliberate cut to make decoding fail) is
    named as such instead of surfacing as a generic demuxer error. Cheap: top-level boxes only.
    """

    MAX_BOXES = 10_000

    @classmethod
    def missing(cls, data: bytes, media_type: MediaType) -> str | None:
        """What is cut off, or None when the structure is whole."""
        if DEMUXERS.get(media_type) == "mov":
            return cls._iso_bmff(data)
        if DEMUXERS.get(media_type) == "matroska":
            return cls._matroska(data)
        return None

    @classmethod
    def _iso_bmff(cls, data: bytes) -> str | None:
        return cls._boxes(data)[1]

    @classmethod
    def _boxes(cls, data: bytes) -> tuple[set[bytes], str | None, bool]:
        """An MP4's top-level boxes: (their kinds, what is cut off or None, whether they end
        exactly where the data does). A box that runs to the end (size 0) or is malformed stops
        the walk: not cut off, not known to end there (the demuxer will say)."""
        pos, kinds = 0, set[bytes]()
        for _ in range(cls.MAX_BOXES):
            if pos + 8 > len(data):
                cut = f"box header at byte {pos:,}" if pos < len(data) else None
                return kinds, cut, pos == len(data)
            size = int.from_bytes(data[pos : pos + 4], "big")
            kind = data[pos + 4 : pos + 8]
            name = kind.decode("latin-1")
            if size == 1:
                if pos + 16 > len(data):
                    return kinds, f"box {name!r} header at byte {pos:,}", False
                size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            if size < 8:
                return kinds, None, False  # 0: the last box runs to the end; else malformed
            if pos + size > len(data):
                cut = f"box {name!r} declares {size:,} bytes, {len(data) - pos:,} present"
                return kinds, cut, False
            kinds.add(kind)
            pos += size
        return kinds, None, False

    @classmethod
    def whole(cls, data: bytes, media_type: MediaType) -> bool:
        """Whether the data holds a whole video container, as far as its top level tells: an
        MP4's boxes all present, its media (mdat) and its index (moov) among them; a Matroska
        segment of known size all present, and nothing after them. The first part of an upload
        that a service already holds whole (a58 F3, as `extract.whole_picture` for pictures)."""
        demuxer = DEMUXERS.get(media_type)
        if demuxer == "matroska":
            segment = _segment_header(data)
            return segment is not None and sum(segment) == len(data)
        if demuxer != "mov":
            return False
        kinds, _, ends_there = cls._boxes(data)
        return ends_there and {b"moov", b"mdat"} <= kinds

    @staticmethod
    def _matroska(data: bytes) -> str | None:
        segment = _segment_header(data)
        if segment is not None and sum(segment) > len(data):
            start, size = segment
            return f"segment declares {size:,} bytes, {len(data) - start:,} present"
        return None


def _segment_header(data: bytes) -> tuple[int, int] | None:
    """(where a Matroska Segment's data starts, its declared size), or None when the header
    does not parse or the size is unknown (live streams)."""
    try:
        _, pos = _read_ebml_vint(data, 0, keep_marker=True)
        header, pos = _read_ebml_vint(data, pos, keep_marker=False)
        pos += header
        element, pos = _read_ebml_vint(data, pos, keep_marker=True)
        start = pos
        size, pos = _read_ebml_vint(data, pos, keep_marker=False)
    except ValueError:
        return None
    unknown = (1 << (7 * (pos - start))) - 1  # all-ones: size unknown
    if element != 0x18538067 or size == unknown:
        return None
    return pos, size


def whole_video(data: bytes) -> bool:
    """Whether `data` is a whole MP4, MOV, WebM or MKV container (`Truncation.whole`)."""
    return Truncation.whole(data, sniff(data))


# ISO BMFF brands of still pictures (HEIF, HEIC, AVIF): a video's are whole_video's.
_STILL_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"avci"}
)
_TIFF_PIECES: Final = ((273, 279), (324, 325))  # (strip offsets, byte counts), tiles alike
_MAX_TIFF_VALUES: Final = 1 << 16


def whole_still(data: bytes) -> bool:
    """Whether `data` starts with a BMP, TIFF, HEIC or AVIF picture all of whose bytes are here,
    as its own structure says (BMP: the file size in its header; TIFF: every directory, strip
    and tile; HEIC or AVIF: its metadata box and its data box). Such a picture sent whole in an
    upload session's first request reached the service while only the closing request was
    refused (a70 F4: 15 of 15; GIFs, WebPs, JPEGs and PNGs were refused at once)."""
    if data[:2] == b"BM" and len(data) >= 26:
        return 26 <= int.from_bytes(data[2:6], "little") <= len(data)
    if (extent := tiff_extent(data)) is not None:
        return extent[0] <= len(data)
    if data[4:8] == b"ftyp" and data[8:12] in _STILL_BRANDS:
        return {b"meta", b"mdat"} <= Truncation._boxes(data)[0]
    return False


def tiff_extent(data: bytes) -> tuple[int, bool] | None:
    """Where a TIFF's last strip or tile ends, and whether any directory compresses them; None
    when `data` is no TIFF, or its directories or their strip lists are not all in it."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"

    def number(at: int, size: int) -> int:
        return int.from_bytes(data[at : at + size], order)

    end, pieces, compressed, seen = 0, 0, False, set[int]()
    directory = number(4, 4)
    while directory:
        if directory in seen or len(seen) >= 64 or directory + 2 > len(data):
            return None
        seen.add(directory)
        entries = number(directory, 2)
        if directory + 6 + 12 * entries > len(data):
            return None
        values: dict[int, list[int]] = {}
        for entry in range(directory + 2, directory + 2 + 12 * entries, 12):
            tag, kind, count = number(entry, 2), number(entry + 2, 2), number(entry + 4, 4)
            if tag == 259:  # compression: 1, none
                compressed |= number(entry + 8, 2 if kind == 3 else 4) != 1
            if tag in (273, 279, 324, 325):
                size = {3: 2, 4: 4}.get(kind)
                if size is None or count > _MAX_TIFF_VALUES:
                    return None
                at = entry + 8 if size * count <= 4 else number(entry + 8, 4)
                if at + size * count > len(data):
                    return None
                values[tag] = [number(at + size * k, size) for k in range(count)]
        for offsets, counts in _TIFF_PIECES:
            for offset, count in zip(values.get(offsets, ()), values.get(counts, ()), strict=False):
                end, pieces = max(end, offset + count), pieces + 1
        directory = number(directory + 2 + 12 * entries, 4)
    return (end, compressed) if pieces else None


def whole_gif(data: bytes) -> bool:
    """Whether `data` starts with a GIF that has come to its trailer, found by walking its
    blocks. An upload protocol's data request holding a whole GIF reached the service before its
    closing request was refused (a60 F1: its frames were never looked at)."""
    return any(block == _GIF_TRAILER for block, _ in gif_blocks(data))


_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER = 0x21, 0x2C, 0x3B


def gif_blocks(data: bytes) -> Iterator[tuple[int, int]]:
    """(introducer byte, position) of each block of a GIF after its header and global colour
    table, walking the sub-blocks between them (a search for a block's byte finds one inside
    image data); up to the trailer, a byte that starts no block, or the end of the data."""
    if not data.startswith((b"GIF87a", b"GIF89a")) or len(data) < 13:
        return
    flags = data[10]
    position = 13 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)
    while position < len(data):
        block = data[position]
        if block not in (_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER):
            return
        yield block, position
        if block == _GIF_TRAILER:
            return
        if block == _GIF_IMAGE:  # its descriptor, local colour table and LZW code size
            if position + 10 > len(data):
                return
            local = data[position + 9]
            position += 11 + (3 << ((local & 0x07) + 1) if local & 0x80 else 0)
        else:  # an extension: its label
            position += 2
        while position < len(data) and data[position]:  # sub-blocks up to a zero length
            position += 1 + data[position]
        position += 1


# The demuxer the magic bytes named, so a file cannot steer libavformat into another one (an
# HLS playlist with file:// entries is the classic).
DEMUXERS: dict[MediaType, str] = {
    MediaType.MP4: "mov",
    MediaType.MOV: "mov",
    MediaType.THREEGP: "mov",
    MediaType.WEBM: "matroska",
    MediaType.MKV: "matroska",
    MediaType.AVI: "avi",
    MediaType.MPEGTS: "mpegts",
    MediaType.MPEGPS: "mpeg",
    MediaType.FLV: "flv",
    MediaType.ASF: "asf",
}
