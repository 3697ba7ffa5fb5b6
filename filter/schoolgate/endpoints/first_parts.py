"""What of an upload the gateway holds is judged: a whole reassembled upload read as a body is
(`inside`), whether the service already holds a whole picture or video (`held_whole`), and what
of an unfinished upload's first part is looked at for a banked one (`FirstPart`)."""

from __future__ import annotations

from dataclasses import dataclass

from schoolgate.endpoints.archive_starts import archive_start_members, is_archive_start
from schoolgate.endpoints.bodyscan import ExtractedItem, extract_items, is_media
from schoolgate.endpoints.carving import restored_start
from schoolgate.endpoints.extract import ExtractionError, ExtractLimits, whole_picture
from schoolgate.media.containers import whole_gif, whole_still, whole_video
from schoolgate.media.cutshort import as_shown, shows_part


@dataclass(frozen=True)
class FirstPart:
    """The first part of an unfinished upload of `total` bytes (None: not declared), looked at
    before when `since` bytes long (0: never)."""

    data: bytes
    total: int | None
    since: int = 0

    def looked_at(self, limits: ExtractLimits) -> list[bytes]:
        """What of it is looked at for a banked picture or video (in a thread: it decompresses
        and carves). A picture or video cut short is shown as far as it goes (`as_shown`; a
        GIF or WebP the closing request has yet to end is whole: a60 F1); an archive's or a
        compressed file's first part gives the files it holds so far, not yet whole at the last
        look (a70 F8, a71 N1-N3, a72 B, C: its end, which a reader needs, may be sent from
        elsewhere). Each is read as a body is, so a picture after another or after other bytes
        is looked at too (a72 A, and a banked JPEG after junk in a Dropbox start). What holds no
        picture or video is not looked at."""
        data = self.data
        if shows_part(data) or held_whole(data):
            held = [as_shown(data, self.total)]
        elif is_archive_start(data):
            held = [file for _, file in archive_start_members(data, limits, self.since)]
        else:
            held = [data]
        pieces = dict.fromkeys(piece for file in held for piece in _part_inside(file, limits))
        return list(pieces)[: limits.max_items]  # each once (a stored file is also carved)


def _part_inside(part: bytes, limits: ExtractLimits) -> list[bytes]:
    """The pictures and videos a first part or a file in it holds (`inside`); a part is cut
    anywhere, so what cannot be read of it is looked at as it stands."""
    try:
        pieces = [item.data for item in inside(part, limits)]
    except ExtractionError:
        pieces = [part]
    shown = [restored_start(piece) or piece for piece in pieces]
    return [piece for piece in shown if is_media(piece)]


def inside(data: bytes, limits: ExtractLimits) -> list[ExtractedItem]:
    """What a reassembled upload or its first part holds, read as a body is: itself where it is
    media, and the media its bytes spell or contain (a52 F7: base64 or hex of a banked picture
    sent in the chunks of a Drive, OneDrive or Dropbox session went through, 18 of 18; a72 A: a
    banked JPEG after an innocent picture, 24 of 24, as only the first picture was judged)."""
    itself = [ExtractedItem(data, None, None, "body")]
    if len(data) > limits.max_body_bytes:
        return itself  # past the body cap (a restored first byte): judged as it stands
    return extract_items(data, None, limits) or itself


def held_whole(data: bytes) -> bool:
    """Whether the service holds a whole picture or video: `data` itself, or `data` less its
    first bytes, which a tus `Upload-Concat` or a storage compose joins to a byte sent apart
    (a47 F1, F2; a58 F3: a video's chunks of unknown total)."""
    restored = restored_start(data)
    return any(
        whole_picture(candidate)
        or whole_gif(candidate)
        or whole_still(candidate)
        or whole_video(candidate)
        for candidate in (data, restored)
        if candidate is not None
    )
