"""Whether an upload's key-frame matches in the robust tier find a banked video, or only a card
it shares with other videos.

An upload that no hash matched has a few key frames looked up in the robust tier (the engine's
video analysis). One key frame matching a banked video decided, and a banked clip that opens
with a channel's intro card then matched every other clip opening with the same card, even for
half a second (adversarial passes a57 F1, a58 F1). What different videos share is a picture
held on screen (an intro or end card, a title, a logo) or an animated intro or end card copied
bit for bit; edited footage (a caption over it, a screen recording of it) is a copy.

The rule:
- A banked picture is found by one key frame, as the image bank finds a photo shown for a
  moment in a slideshow.
- A banked video is found by one key frame that shows its footage edited: a weak copy (a small
  screen recording with a caption) may align on one frame only.
- A *shared-looking* key frame counts towards the banked video without deciding alone: one
  held still (`SampledFrame.held_still`), or one within ENDS_S of the upload's start or end
  that shows one of the banked video's first or last two key frames as it is (the hash tier
  matched that frame; copied anywhere else it is an excerpt, as in a compilation). The
  banked video is found when the upload's key frames that match it show two different moments
  of it (two different banked key frames, matched by upload frames whose PDQ hashes are more
  than 31 bits apart: a card held for two seconds is one moment however many key frames fall
  on it), or are at least half of the key frames looked up (a copy of a video that is one held
  picture throughout).

Left alone: an intro re-rendered (another animation of the same card) or edited over (a
caption across the whole clip) is edited footage by these tests; a clip that is mostly the
shared card (a one-second upload of the intro alone) still matches; and the hash tier's own
rule (half of the upload's seconds) still matches a short clip that is half intro.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace

from schoolgate.matching.matcher import DEFAULT_PDQ_MAX_DISTANCE, BankMatch, FrameMatch
from schoolgate.media.hashing import PdqHash, pdq_hash
from schoolgate.media.video import SampledFrame

MOMENTS_NEEDED = 2
SHARE_NEEDED = 0.5
ENDS_S = 5.0  # an intro or an end card runs at most this long
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
        self,
        key_frames: int,
        shown_as_is: Callable[[], Mapping[tuple[str, str], Collection[int]]],
        duration_s: float | None = None,
    ) -> None:
        """`shown_as_is`: for each banked video, the upload's frames (numbers) that the hash
        tier matched to one of its frames (`VideoMatcher.frames_shown`), asked for only when a
        key frame matches a banked video; `duration_s`: the upload's length."""
        self.needed_frames = max(1, math.ceil(SHARE_NEEDED * key_frames))
        self._shown_as_is = shown_as_is
        self._shown: Mapping[tuple[str, str], Collection[int]] | None = None
        self.duration_s = duration_s
        self._videos: dict[tuple[str, str], _BankedVideo] = {}

    def shown_as_is(self, video: tuple[str, str]) -> Collection[int]:
        if self._shown is None:
            self._shown = self._shown_as_is()
        return self._shown.get(video, ())

    def add(self, frame: SampledFrame, matches: list[BankMatch]) -> list[FrameMatch]:
        """Record one key frame's matches; the banked items they now find (empty until one is
        found). A match's evidence names the banked key frame it aligned with, where the item
        is a video."""
        found: list[FrameMatch] = []
        picture: PdqHash | None = None
        for match in matches:
            at_frame = FrameMatch.at(match, frame.frame, frame.timestamp)
            banked_frame = dict(match.evidence).get("banked_frame")
            if banked_frame is None:
                found.append(at_frame)  # a banked picture
                continue
            key = (match.bank, str(match.value))
            video = self._videos.setdefault(key, _BankedVideo(at_frame))
            video.frames += 1
            picture = picture or pdq_hash(frame.image())
            video.add_moment(picture, int(banked_frame))
            # Copied as is, at an end of the upload, from an end of the banked video: what an
            # intro or an end card is; anywhere else, an excerpt (a compilation of clips: a58).
            copied = frame.frame in self.shown_as_is(key)
            at_ends = self._at_an_end(frame) and dict(match.evidence).get("banked_at_end") == 1.0
            shared = frame.held_still is True or (copied and at_ends)
            if not shared:  # this frame decides: it is what the verdict names
                found.append(_with_coverage(at_frame, video))
            elif len(video.moments) >= MOMENTS_NEEDED or video.frames >= self.needed_frames:
                found.append(_with_coverage(video.first, video))
        return found

    def _at_an_end(self, frame: SampledFrame) -> bool:
        """Whether the frame is within ENDS_S of the upload's start or end."""
        end = self.duration_s if self.duration_s is not None else math.inf
        return frame.timestamp <= ENDS_S or frame.timestamp >= end - ENDS_S


def _with_coverage(match: FrameMatch, video: _BankedVideo) -> FrameMatch:
    """The match, with what decided it in its evidence for the auditor."""
    extra = (("key_frames_matched", float(video.frames)), ("moments", float(len(video.moments))))
    return replace(match, evidence=(*match.evidence, *extra))
