"""What bytes are, from their magic bytes alone: image or video, and which format.

Nothing here trusts a file name or a Content-Type to say what the bytes are; `claims_media` only
records that the sender meant them as media (for `not_analysed`, when we cannot read them).
Cheap and allocation-free, so the proxy can sniff every candidate it finds in a body; the rarer
still formats are named by `raster_sniff` (one of which, a TGA without its footer, costs a
decode).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from schoolgate.media.raster_sniff import raster_format


class MediaKind(StrEnum):
    """Broad class of a media item: what pipeline handles it."""

    IMAGE = "image"
    VIDEO = "video"
    UNKNOWN = "unknown"


class MediaType(StrEnum):
    """Container format found by sniffing; values are short names for audit logs and metrics."""

    JPEG = "jpeg"
    PNG = "png"
    GIF = "gif"
    WEBP = "webp"
    HEIF = "heif"
    AVIF = "avif"
    BMP = "bmp"
    TIFF = "tiff"
    MP4 = "mp4"
    MOV = "mov"
    THREEGP = "3gp"
    WEBM = "webm"
    MKV = "mkv"
    AVI = "avi"
    MPEGTS = "mpegts"  # camcorder .mts/.m2ts, broadcast .ts
    MPEGPS = "mpegps"  # DVD .vob, .mpg
    FLV = "flv"
    ASF = "asf"  # .wmv, .asf
    # Still formats that image editors open and Pillow decodes: JPEG 2000, TGA, PCX, Netpbm,
    # SGI, headerless DIB, ICO, QOI, PSD, XBM, XPM (`raster_format` names the one).
    RASTER = "raster"
    UNKNOWN = "unknown"

    @property
    def kind(self) -> MediaKind:
        """Whether this format is a still/animated image, a video, or unknown."""
        if self in _VIDEO_TYPES:
            return MediaKind.VIDEO
        if self is MediaType.UNKNOWN:
            return MediaKind.UNKNOWN
        return MediaKind.IMAGE

    @property
    def lossy(self) -> bool:
        """Whether pictures in this format may carry compression noise (a WebP or a video may
        as well be lossless; they count as lossy)."""
        return self not in _LOSSLESS_TYPES


_LOSSLESS_TYPES = frozenset(
    {MediaType.PNG, MediaType.GIF, MediaType.BMP, MediaType.TIFF, MediaType.RASTER}
)


_VIDEO_TYPES = frozenset(
    {
        MediaType.MP4,
        MediaType.MOV,
        MediaType.THREEGP,
        MediaType.WEBM,
        MediaType.MKV,
        MediaType.AVI,
        MediaType.MPEGTS,
        MediaType.MPEGPS,
        MediaType.FLV,
        MediaType.ASF,
    }
)


class _IsoBrands:
    """ISO base media file format brands (the `ftyp` box) mapped to media types."""

    AVIF = frozenset({b"avif", b"avis"})
    JPEG2000 = frozenset({b"jp2 ", b"jpx ", b"jpm "})
    HEIF = frozenset(
        {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"heif"}
    )
    # Generic HEIF structure brands: the codec brand among the compatible ones decides.
    HEIF_GENERIC = frozenset({b"mif1", b"msf1", b"miaf"})
    MOV = frozenset({b"qt  "})
    MP4 = frozenset(
        {
            b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9",
            b"mp41", b"mp42", b"mp71", b"avc1", b"M4V ", b"M4VH", b"M4VP", b"dash", b"mmp4",
            b"f4v ", b"MSNV", b"NDAS", b"NDSC", b"NDSH", b"NDSM", b"NDSP", b"NDSS", b"NDXC",
            b"NDXH", b"NDXM", b"NDXP", b"NDXS", b"XAVC", b"cmfc", b"cmf2", b"av01",
        }
    )  # fmt: skip

    @classmethod
    def classify(cls, major: bytes, compatible: list[bytes]) -> MediaType:
        """Type from the major brand, falling back to the compatible brands in file order."""
        everything = set(compatible) | {major}
        if major in cls.JPEG2000:
            return MediaType.UNKNOWN  # a still; named by its signature box (raster_format)
        for brand in [major, *compatible]:
            if brand in cls.AVIF:
                return MediaType.AVIF
            if brand in cls.HEIF:
                return MediaType.HEIF
            if brand in cls.HEIF_GENERIC:
                return MediaType.AVIF if everything & cls.AVIF else MediaType.HEIF
            if brand in cls.MOV:
                return MediaType.MOV
            if brand.startswith((b"3gp", b"3g2", b"3ge", b"3gg", b"3gr", b"3gs")):
                return MediaType.THREEGP
            if brand in cls.MP4:
                return MediaType.MP4
        # A brand we do not list is still an ISO media file: the video decoder decides, and
        # what it cannot read is refused (an unusual brand must not mean "not media").
        return MediaType.MP4


# Old QuickTime files may start with one of these atoms instead of `ftyp`.
_QUICKTIME_LEAD_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"pnot", b"free", b"skip"})
_BMP_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _sniff_boxes(data: bytes) -> MediaType:
    """ISO media that starts with another box before `ftyp` (or none at all): the first boxes
    are walked by their sizes, and `ftyp` or a movie box decides."""
    position = 0
    for _ in range(16):
        size = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if len(kind) < 4 or not all(0x20 < c < 0x7F for c in kind):
            return MediaType.UNKNOWN
        if kind == b"ftyp":
            return _sniff_iso_bmff(data[position:])
        if kind in _QUICKTIME_LEAD_ATOMS or kind in (b"moof", b"styp", b"sidx"):
            return MediaType.MOV if kind in _QUICKTIME_LEAD_ATOMS else MediaType.MP4
        if size < 8:
            return MediaType.UNKNOWN
        position += size
    return MediaType.UNKNOWN


def _sniff_iso_bmff(data: bytes) -> MediaType:
    size = int.from_bytes(data[0:4], "big")
    end = min(len(data), size if size >= 16 else 16, 4096)
    major = data[8:12]
    compatible = [data[i : i + 4] for i in range(16, end - 3, 4)]
    return _IsoBrands.classify(major, compatible)


def _read_ebml_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """EBML variable-length integer at `pos`: (value, next position). Raises ValueError."""
    if pos >= len(data):
        raise ValueError("EBML header ends early")
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8 or pos + length > len(data):
        raise ValueError("bad EBML variable-length integer")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _sniff_ebml(data: bytes) -> MediaType:
    """WebM or Matroska from the EBML header's DocType (Matroska when it is absent)."""
    try:
        _, pos = _read_ebml_vint(data, 0, keep_marker=True)  # EBML element id
        header_size, pos = _read_ebml_vint(data, pos, keep_marker=False)
        end = min(len(data), pos + header_size, 4096)
        for _ in range(64):  # the EBML header holds a handful of elements
            if pos >= end:
                break
            element, pos = _read_ebml_vint(data, pos, keep_marker=True)
            size, pos = _read_ebml_vint(data, pos, keep_marker=False)
            if element == 0x4282:  # DocType
                doctype = data[pos : pos + size].rstrip(b"\x00")
                if doctype == b"webm":
                    return MediaType.WEBM
                if doctype == b"matroska":
                    return MediaType.MKV
                return MediaType.UNKNOWN
            pos += size
    except ValueError:
        return MediaType.UNKNOWN
    return MediaType.MKV


def ebml_header_end(data: bytes) -> int | None:
    """Where the EBML header at the start of `data` ends, where it parses and names its
    DocType (webm or matroska); None otherwise. A body is sniffed as Matroska without one, but
    four bytes found inside other bytes need the whole header (endpoints.carving)."""
    try:
        _, pos = _read_ebml_vint(data, 0, keep_marker=True)
        header_size, pos = _read_ebml_vint(data, pos, keep_marker=False)
    except ValueError:
        return None
    end = pos + header_size
    if end > min(len(data), 4096):
        return None
    doctype = None
    try:
        while pos < end:
            element, pos = _read_ebml_vint(data, pos, keep_marker=True)
            size, pos = _read_ebml_vint(data, pos, keep_marker=False)
            if element == 0x4282:
                doctype = data[pos : pos + size].rstrip(b"\x00")
            pos += size
    except ValueError:
        return None
    return end if pos == end and doctype in (b"webm", b"matroska") else None


# How far the walk over a GIF's extensions before its first image goes (XMP and ICC profiles
# come first in some files), in bytes and in blocks. A walk that gets this far without an
# answer decides by a zero byte: every GIF has them (block ends, coordinates), text never.
_ASF_GUID: Final = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


def _transport_stream(head: bytes) -> bool:
    """MPEG transport stream: a 0x47 sync byte every 188 bytes (or 192, as .m2ts prefixes each
    packet with a 4-byte timestamp), four packets in a row."""
    for offset, size in ((0, 188), (4, 192)):
        if len(head) >= offset + 3 * size + 1 and all(
            head[offset + n * size] == 0x47 for n in range(4)
        ):
            return True
    return False


_GIF_WALK_LIMIT: Final = 1 << 20
_GIF_WALK_BLOCKS: Final = 8192
# The largest LZW minimum code size a browser accepts (12-bit codes at most).
_GIF_MAX_CODE_SIZE: Final = 11


def _plausible_webp(head: bytes) -> bool:
    """A WebP's first chunk is one libwebp reads: a lossy frame's start code, a lossless
    stream's signature byte, or a 10-byte extended header. Chat text that quotes "RIFF....WEBPVP8"
    (a pupil asking about a file) is not a broken picture to fail closed on."""
    chunk = head[12:16]
    if chunk == b"VP8 ":
        return head[23:26] == b"\x9d\x01\x2a"
    if chunk == b"VP8L":
        return head[20:21] == b"\x2f"
    if chunk == b"VP8X":
        return head[16:20] == b"\x0a\x00\x00\x00"
    return chunk in (b"ALPH", b"ANIM", b"ICCP")  # before the frame in some writers' files


def _plausible_gif(data: bytes) -> bool:
    """Whether what follows "GIF89a" has a GIF's structure up to its first picture: the logical
    screen descriptor and the global colour table its flags announce, then extensions ("!", a
    label and sub-blocks up to an empty one), then an image descriptor (",") whose LZW code size
    a decoder accepts. Only that can show a picture; a trailer or anything else first cannot.

    Chat text that mentions "GIF89a" was read as a GIF whose screen size came from the next
    letters, refused as a decompression bomb and blocked (adversarial pass, issue 16). Text
    never holds the empty sub-block (a zero byte) that ends an extension, nor a code size of 8
    or less (a control character) ten bytes after a comma."""
    if len(data) < 14:
        return False  # not even one block after the screen descriptor: no picture
    flags = data[10]
    pos = 13 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)
    limit = min(len(data), _GIF_WALK_LIMIT)
    blocks = 0
    while pos < limit:
        block = data[pos]
        if block == 0x2C:  # image descriptor: position, size, flags; local colour table
            if pos + 10 > len(data):
                return False
            local = data[pos + 9]
            code = pos + 10 + (3 << ((local & 0x07) + 1) if local & 0x80 else 0)
            if code >= len(data) or data[code] > _GIF_MAX_CODE_SIZE:
                return False
            # 9-11 is outside the format (8-bit pixels) but decoders accept it; text could hold
            # it (a tab or a line feed there), never the zero bytes any GIF has.
            return data[code] <= 8 or b"\x00" in data
        if block != 0x21:
            return False  # the trailer, or bytes no decoder reads, before any picture
        pos += 2  # introducer and label, then sub-blocks up to the empty one
        while pos < limit:
            size = data[pos]
            pos += 1 + size
            blocks += 1
            if blocks > _GIF_WALK_BLOCKS:
                return b"\x00" in data
            if size == 0:
                break
    return pos >= _GIF_WALK_LIMIT and b"\x00" in data


def sniff(data: bytes) -> MediaType:
    """Media type from magic bytes only (never the file name or the Content-Type)."""
    head = bytes(data[:4096])
    if head.startswith(b"\xff\xd8\xff"):
        return MediaType.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaType.PNG
    if head.startswith((b"GIF87a", b"GIF89a")) and _plausible_gif(data):
        return MediaType.GIF
    if head[0:4] == b"RIFF" and head[8:12] == b"WEBP" and _plausible_webp(head):
        return MediaType.WEBP
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return MediaType.TIFF
    # "BM" alone is too weak a signature: also require a known DIB header size.
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return MediaType.BMP
    if head[4:8] == b"ftyp":
        return _sniff_iso_bmff(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _sniff_ebml(head)
    if head[4:8] in _QUICKTIME_LEAD_ATOMS and int.from_bytes(head[0:4], "big") >= 8:
        return MediaType.MOV
    if head[0:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return MediaType.AVI
    if head.startswith(_ASF_GUID):
        return MediaType.ASF
    if head.startswith(b"FLV\x01") and len(head) >= 9 and head[5:9] == b"\x00\x00\x00\x09":
        return MediaType.FLV
    if head.startswith(b"\x00\x00\x01\xba") and len(head) >= 14:
        return MediaType.MPEGPS
    if _transport_stream(head):
        return MediaType.MPEGTS
    if int.from_bytes(head[0:4], "big") >= 8 and head[4:8] in _LEAD_BOXES:
        return _sniff_boxes(head)
    if raster_format(data) is not None:
        return MediaType.RASTER
    return MediaType.UNKNOWN


# Boxes that may come before `ftyp` in ISO media written by unusual muxers.
_LEAD_BOXES = frozenset({b"uuid", b"pdin", b"styp", b"sidx", b"moof", b"prft", b"emsg", b"meta"})

_MEDIA_SUFFIXES = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".webp",
        ".heic",
        ".heif",
        ".avif",
        ".bmp",
        ".tif",
        ".tiff",
        ".jxl",
        ".jp2",
        ".mp4",
        ".m4v",
        ".mov",
        ".qt",
        ".3gp",
        ".3g2",
        ".webm",
        ".mkv",
        ".avi",
        ".wmv",
        ".asf",
        ".flv",
        ".mpg",
        ".mpeg",
        ".ts",
        ".ogv",
        # Still formats Pillow or other viewers read, some analysed here (raster_sniff), some not
        # (Palm bitmaps, raw sample dumps): named so, bytes we do not read are `not_analysed`
        # and the fail policy decides (a40: a banked picture sent as .palm and .rgb passed).
        *[
            ".apng",
            ".blp",
            ".bw",
            ".dcx",
            ".dds",
            ".dib",
            ".flc",
            ".fli",
            ".ftc",
            ".ftu",
            ".icns",
            ".im",
            ".j2c",
            ".j2k",
            ".jpc",
            ".jpf",
            ".jpx",
            ".mpo",
            ".msp",
            ".palm",
            ".pbm",
            ".pcd",
            ".pcx",
            ".pfm",
            ".pgm",
            ".pnm",
            ".ppm",
            ".psd",
            ".pxr",
            ".qoi",
            ".ras",
            ".raw",
            ".rgb",
            ".rgba",
            ".sgi",
            ".tga",
            ".xbm",
            ".xpm",
            ".spi",
            ".spider",
            ".avifs",
            ".jng",
            ".mng",
            ".jxr",
            ".wdp",
            ".hdp",
            ".exr",
            ".hdr",
            ".fits",
            ".fit",
            ".fts",
        ],
    ]
)


# Image types that are drawings or icons, not pictures: an SVG is text (the pictures inside it
# are looked for there), and web pages embed both as data: URLs by the dozen.
_NOT_PICTURES = frozenset({"image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon"})


def claims_media(declared_type: str | None, filename: str | None) -> bool:
    """Whether a Content-Type or a file name says image or video (never trusted to say what
    the bytes are: only that the sender meant them as media)."""
    main = declared_type.partition(";")[0].strip().lower() if declared_type else ""
    if main in _NOT_PICTURES:
        return False
    if main.startswith(("image/", "video/")):
        return True
    if filename and "." in filename:
        return "." + filename.rsplit(".", 1)[1].strip().lower() in _MEDIA_SUFFIXES
    return False


# Image formats some viewers show (Safari shows JPEG XL and JPEG 2000) that are not analysed
# here: recognised by their long signatures, so they are `not_analysed`, never "not media".
_UNANALYSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jpeg-xl"),
    # Video that VLC, mpv and ffplay play from files no demuxer here is asked to read (a44 F10:
    # forwarded as "no media"): they fail closed as the formats above do.
    (b"nut/multimedia container\x00", "nut video"),
    (b"DKIF\x00\x00\x20\x00", "ivf video"),
    (b"YUV4MPEG2 ", "y4m video"),
    (b".RMF\x00\x00\x00", "realmedia video"),
    (b"\x06\x0e\x2b\x34\x02\x05\x01\x01\x0d\x01\x02\x01\x01", "mxf video"),
    (b"\x1f\x07\x00\x3f", "dv video"),
    (b"\x1f\x07\x00\xbf", "dv video"),
    (b"\x12\x00\x0a", "av1 obu video"),  # a temporal delimiter, then a sequence header
    # a48 F1: GXF, SMJPEG, WTV, MPEG-2 and MPEG-4 part 2 elementary streams.
    (b"\x00\x00\x00\x00\x01\xbc", "gxf video"),
    (b"\x00\x0aSMJPEG", "smjpeg video"),
    (b"\xb7\xd8\x00\x20\x37\x49\xda\x11\xa6\x4e\x00\x07\xe9\x5e\xad\x8d", "wtv video"),
    (b"\x00\x00\x01\xb3", "mpeg-2 video"),
    (b"\x00\x00\x01\xb0", "mpeg-4 video"),
    # Raw H.264 / HEVC streams: a start code, then a parameter set, an access unit delimiter
    # or supplemental information, as encoders write them first.
    *(
        (b"\x00\x00\x00\x01" + unit, "h264 video")
        for unit in (b"\x67", b"\x27", b"\x47", b"\x09", b"\x06")
    ),
    *(
        (b"\x00\x00\x00\x01" + unit, "hevc video")
        for unit in (b"\x40\x01", b"\x46\x01", b"\x4e\x01")
    ),
)


def unanalysed_format(data: bytes) -> str | None:
    """The name of an image or video format that players show but this appliance does not
    analyse, when the bytes start with its signature; None otherwise."""
    for signature, name in _UNANALYSED_SIGNATURES:
        if data.startswith(signature):
            return name
    # Ogg holding video (Theora, VP8, Dirac); Ogg audio (voice notes) is not media here.
    if data.startswith(b"OggS") and any(c in data[:4096] for c in (b"\x80theora", b"OVP80",
                                                                      b"BBCD\x00")):  # fmt: skip
        return "ogg video"
    # Flash (FLV video in a SWF): "FWS" plain, "CWS"/"ZWS" compressed, a version, the length
    # (of the whole file, or uncompressed): a control byte after three letters, never text.
    if len(data) >= 8 and data[:3] in (b"FWS", b"CWS", b"ZWS") and 1 <= data[3] <= 60:
        length = int.from_bytes(data[4:8], "little")
        if length == len(data) or (data[0:1] != b"F" and length > len(data)):
            return "swf video"
    return None
