"""Whether an upload's key-frame matches in the robust tier find a banked video, or only a card
it shares with other videos.

An upload that no hash matched has a few key frames looked up in the robust tier (the engine's
video analysis). One key frame matching a banked video decided, and a banked clip that opens
with a channel's intro card then matched every other clip opening with the same card, even for
half a second (adversarial pass a57 F1: 8 of 9 blocked). What different videos share is a
picture held on screen: an intro or end card, a title, a logo. Footage (a camera moving, a
person moving, a clip playing inside a screen recording) is one recording's own.

The rule:
- A banked picture is found by one key frame, as the image bank finds a photo shown for a
  moment in a slideshow.
- A banked video is found by one key frame that shows footage (`SampledFrame.held_still` is
  not True) edited: a weak copy (a small screen recording with a caption) may align on one
  frame only.
- A key frame held still, or one that shows the banked frame as it is (the hash tier matched
  that frame, not the upload: an animated intro copied bit for bit into another clip), counts
  towards the banked video, and finds it when the upload's key frames that match it show two
  different moments of it (two different banked key frames,
  matched by upload frames whose PDQ hashes are more than 31 bits apart: a card held for two
  seconds is one moment however many key frames fall on it), or are at least half of the key
  frames looked up (a copy of a video that is one held picture throughout).

Left alone: an animated intro re-encoded with an edit over it (a caption across the whole
clip) is edited footage by these tests, and a clip that is mostly the shared card (a
one-second upload of the intro alone) still matches.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields, replace

from schoolgate.matching.matcher import DEFAULT_PDQ_MAX_DISTANCE, BankMatch, FrameMatch
from schoolgate.media.hashing import PdqHash, pdq_hash
from schoolgate.media.video import SampledFrame

MOMENTS_NEEDED = 2
SHARE_NEEDED = 0.5
# Two upload frames this close in PDQ show the same moment (the hash tier's own match radius).
SAME_MOMENT_BITS = DEFAULT_PDQ_MAX_DISTANCE


@dataclass
class _BankedVideo:
    """What the upload's key frames have shown of one banked video so far."""

    first: FrameMatch  # its match at the first key frame that matched it
    frames: int = 0  # upload key frames that matched it
    moments: list[tuple[PdqHash, int]] = field(default_factory=list)  # (upload frame, banked)

    def add_moment(self, shown: PdqHash, banked_frame: int) -> None:
        if any(banked == banked_frame for _, banked in self.moments):
            return
        if any(seen.distance(shown) <= SAME_MOMENT_BITS for seen, _ in self.moments):
            return
        self.moments.append((shown, banked_frame))


class KeyFrameEvidence:
    """The robust matches of an upload's key frames, gathered a frame at a time."""

    def __init__(
        self, key_frames: int, shown_as_is: Mapping[tuple[str, str], Collection[int]]
    ) -> None:
        """`shown_as_is`: for each banked video, the upload's frames (numbers) that the hash
        tier matched to one of its frames (`VideoMatcher.frames_shown`)."""
        self.needed_frames = max(1, math.ceil(SHARE_NEEDED * key_frames))
        self.shown_as_is = shown_as_is
        self._videos: dict[tuple[str, str], _BankedVideo] = {}

    def add(self, frame: SampledFrame, matches: list[BankMatch]) -> list[FrameMatch]:
        """Record one key frame's matches; the banked items they now find (empty until one is
        found). A match's evidence names the banked key frame it aligned with, where the item
        is a video."""
        found: list[FrameMatch] = []
        picture: PdqHash | None = None
        for match in matches:
            at_frame = _at_frame(match, frame)
            banked_frame = dict(match.evidence).get("banked_frame")
            if banked_frame is None:
                found.append(at_frame)  # a banked picture
                continue
            key = (match.bank, str(match.value))
            video = self._videos.setdefault(key, _BankedVideo(at_frame))
            video.frames += 1
            picture = picture or pdq_hash(frame.image())
            video.add_moment(picture, int(banked_frame))
            shared = frame.held_still is True or frame.frame in self.shown_as_is.get(key, ())
            if (
                not shared
                or len(video.moments) >= MOMENTS_NEEDED
                or video.frames >= self.needed_frames
            ):
                found.append(_with_coverage(video))
        return found


def _at_frame(match: BankMatch, frame: SampledFrame) -> FrameMatch:
    copied = {f.name: getattr(match, f.name) for f in fields(BankMatch)}
    return FrameMatch(**copied, frame=frame.frame, timestamp=frame.timestamp)


def _with_coverage(video: _BankedVideo) -> FrameMatch:
    """The video's first match, with what decided it in its evidence for the auditor."""
    extra = (("key_frames_matched", float(video.frames)), ("moments", float(len(video.moments))))
    return replace(video.first, evidence=(*video.first.evidence, *extra))
