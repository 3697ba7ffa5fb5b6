"""The files of a ZIP archive: Office documents, zipped photos, and ZIPs that do not start the
bytes. ZIP readers find an archive from its end (its central directory), so one still opens
after a self-extractor's program or appended to a picture, which the service stores as a
picture and a friend renames and unzips (adversarial pass a42 F9: a BMP in a ZIP after junk
bytes passed). Encrypted members cannot be opened here or by any filter; they are skipped."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from typing import Final

from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.endpoints.libarchive import zip_files
from schoolgate.media.sniff import claims_media

ZIP_MAGIC: Final = b"PK\x03\x04"
# A split ZIP's first piece (`zip -s`: .z01, ...) starts with the spanning marker before its
# first local header (APPNOTE 8.5.3); its directory is in the last piece.
SPLIT_ZIP_MAGIC: Final = b"PK\x07\x08" + ZIP_MAGIC
_END_OF_DIRECTORY: Final = b"PK\x05\x06"
_FROM_THE_END: Final = 22 + 65_535  # the end record, then a comment of up to 64 KiB
_MAX_ZIP_MEMBERS: Final = 2000


def holds_zip(data: bytes) -> bool:
    """Whether a ZIP ends `data` (wherever it starts): a local file header before an
    end-of-central-directory record in the last 64 KiB."""
    end = data.rfind(_END_OF_DIRECTORY, max(0, len(data) - _FROM_THE_END))
    return end >= 0 and data.find(ZIP_MAGIC, 0, end) >= 0


def zip_members(
    data: bytes, limits: ExtractLimits, grow: Callable[[int], None]
) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each readable file; nothing when `data` holds no ZIP after all. Each
    member's size is passed to `grow` before it is read; bombs and huge counts are refused."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        return  # not a ZIP after all: carving still looks at its bytes
    if len(members) > _MAX_ZIP_MEMBERS:
        raise ExtractionError("too_many_parts", f"an archive of over {_MAX_ZIP_MEMBERS} files")
    library: dict[str, bytes] | None = None  # its files as libarchive reads them, if needed
    for member in members:
        if member.flag_bits & 0x1 and claims_media(None, member.filename):
            # A picture or video locked with a password the message gives (a47 F5): no filter can
            # read it, so the fail policy decides, as for any media that cannot be judged.
            raise ExtractionError(
                "encrypted", f"{member.filename[:80]!r} is media in a password-protected archive"
            )
        if member.is_dir() or member.flag_bits & 0x1:
            continue  # encrypted, not named as media: passes (docs/dsl.md)
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > 1 << 20 and ratio > limits.max_ratio:
            raise ExtractionError("encoding_bomb", f"{member.filename[:80]!r} expands {ratio:.0f}x")
        grow(member.file_size)
        try:
            with archive.open(member) as handle:
                content = handle.read(member.file_size + 1)
        except NotImplementedError:
            # A method zipfile lacks (PPMd, Deflate64, WinZip's JPEG): libarchive reads some,
            # and what neither reads is refused as unreadable (a75 G1: a banked picture in a
            # Deflate64 ZIP went through as a ZIP holding nothing).
            if library is None:
                library = zip_files(data, limits)
            if member.filename not in library:
                raise ExtractionError(
                    "unreadable", f"{member.filename[:80]!r} is compressed in a way not read here"
                ) from None
            content = library[member.filename]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            continue
        if len(content) > member.file_size:
            raise ExtractionError("encoding_bomb", "an archive member is larger than it says")
        yield member.filename, content
