"""Banking one media file: its hashes, and its local feature sets for the robust tier, into a
bank; the file itself is never kept. `schoolgate hashes add` and the DSL's console both bank
through here, so a file banked either way matches the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from schoolgate.banks.exemptions import BANK, Exemptions
from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import Config
from schoolgate.errors import SchoolgateError
from schoolgate.media.content_grid import GRID, photo_region
from schoolgate.media.features import (
    FEATURE_KIND,
    PANEL_VIEW,
    PHOTO_JUDGE_VIEW,
    LocalFeatures,
    framed_judge_of,
)
from schoolgate.media.framed_pictures import screen_shaped
from schoolgate.media.normalise import content_box
from schoolgate.media.signals import ItemSignals, bank_feature_views, item_signals


class MediaNotBanked(SchoolgateError):
    """The media was refused (malformed, a bomb, over a limit): nothing was added."""


@dataclass(frozen=True)
class Banked:
    item: ItemSignals
    signals: list[SignalInput]
    added: int  # new hash rows
    features: int  # new local feature sets
    withdrew_exemption: bool = False  # the file had been exempted for this bank


def bank_media(
    store: BankStore,
    bank: str,
    data: bytes,
    config: Config,
    *,
    note: str = "",
    source: str = "",
    features: bool = True,
) -> Banked:
    """Hash `data` in memory and add it to `bank` (which must exist)."""
    robust = features and config.banks.runs(bank, "robust")
    item = item_signals(
        data,
        config,
        key_frames=config.banks.robust.video_key_frames if robust else 0,
        features=robust,
    )
    if item.refused is not None:
        raise MediaNotBanked(f"the media was refused ({item.refused})")
    signals = bank_signals(item, note)
    # Local feature sets (derived data; the picture cannot be rebuilt from them): the image's
    # views, and a video's key frames so its captioned copies meet the robust tier.
    views = [(name, found.to_bytes()) for name, found in item.features]
    settings = config.banks.robust
    for frame in item.key_frames:
        frame_views = bank_feature_views(
            frame.image(),
            mirrored=settings.bank_mirrored,
            squashes=settings.bank_squashed,
            negative=config.banks.match_inverted,
            still=False,
        )
        views += [(f"frame{frame.frame}:{name}", found.to_bytes()) for name, found in frame_views]
    added_features = 0
    if views:
        added_features = store.add_features(
            bank, item.exact.sha256, FEATURE_KIND, views, note=note, source=source
        )
    added = store.add_signals(bank, signals, source=source)
    # Banking a file says it must be blocked: an exemption of it for this bank (a reviewed false
    # positive that turned out not to be one) would silently keep it flowing (adversarial pass
    # a12), so banking withdraws it.
    withdrawn = Exemptions(store).remove(item.exact.sha256, BANK, bank)
    return Banked(item, signals, added, added_features, withdrawn)


def describe_banked(item: ItemSignals) -> list[str]:
    """What the robust tier judges an item by, for the DSL who banked it: the whole picture, a
    picture region inside an interface or frame, or (a warning) mostly interface or text; its
    squashed views; and the band banked as its picture where that is a small part of it."""
    found = dict(item.features)
    whole = found.get("whole")
    lines: list[str] = []
    if whole is not None and whole.grid is not None:
        photo, cells = whole.grid.photo_cells, GRID * GRID
        region = photo_region(whole.grid)
        framed = _framed_box(found)
        if framed is not None:
            left, top, right, bottom = framed
            width = (right - left) * 100 // whole.width
            height = (bottom - top) * 100 // whole.height
            lines.append(
                f"picture over a busy wallpaper {width}% x {height}% of the image (a chat's "
                "picture in its bubble, or pasted on with straight edges), banked on its own as "
                "well; the background around it is not evidence: a match must show this picture"
            )
        elif region is None:
            lines.append(
                f"warning: mostly interface, text or drawing ({photo} of {cells} areas "
                "photographic): edited copies match only where they keep most of this whole "
                "layout, and other pictures made from the same template (another letter on one "
                "letterhead, another chart of one style) can match it. Bank the original "
                "picture instead if you are given it"
            )
            if PHOTO_JUDGE_VIEW in found:
                lines.append(
                    f"its small photo ({photo} of {cells} areas) is banked on its own as well, "
                    "and compared at its own scale: the same screen around another photo does "
                    "not match"
                )
        elif "picture" in found or "mirror-picture" in found:
            # (A screen's picture inside plain bands is its content view: only its mirror is
            # banked apart.)
            left, top, right, bottom = region
            width, height = (right - left) * 100 // GRID, (bottom - top) * 100 // GRID
            lines.append(
                f"picture region {width}% x {height}% of the image ({photo} of {cells} areas "
                "photographic), banked on its own as well; the interface or frame around it "
                "is not evidence"
            )
        else:
            lines.append(f"judged as a whole picture ({photo} of {cells} areas photographic)")
            image = item.image
            if image is not None and screen_shaped(image):
                lines.append(
                    "note: if this is a screenshot, everything in it is evidence, a photo "
                    "wallpaper too: the same phone's other screens can match it. To block a "
                    "picture shown in it, bank that picture (crop it from the screenshot)"
                )
        # (Only where its pictures were banked as panels: a chat's framed picture is not.)
        panels = len([name for name in found if name.startswith(PANEL_VIEW)])
        if panels >= 2:
            lines.append(
                f"a collage of {panels} pictures: a copy must show at least two of them, and "
                "each as banked; one of them alone (a meme's reaction photo) is not matched. "
                "To block one picture on its own, bank that picture"
            )
    squashes = [name.removeprefix("squashed-") for name in found if name.startswith("squashed-")]
    if squashes:
        lines.append(
            f"its picture also banked squashed to half along {len(squashes)} axes "
            f"({', '.join(squashes)} degrees), so squashed or stretched copies match"
        )
    box = content_box(item.image) if item.image is not None and item.content_pdq else None
    if box is not None and item.image is not None:
        share = box.width * box.height / (item.image.width * item.image.height)
        if share < _SMALL_BOX_SHARE:
            lines.append(
                f"note: the part inside its plain bands, {box.width}x{box.height} "
                f"({share:.0%} of the image), is hashed on its own too: other images that show "
                "that part will match it"
            )
    return lines


_SMALL_BOX_SHARE = 0.15


def _framed_box(views: dict[str, LocalFeatures]) -> tuple[int, int, int, int] | None:
    """The box, in the whole view's frame, of the framed picture that judges it, if any."""
    for name in views:
        framed = framed_judge_of(name)
        if framed is not None and framed[0] == "whole":
            return framed[1]
    return None


def bank_signals(item: ItemSignals, note: str) -> list[SignalInput]:
    """An item's bank rows, grouped under its SHA-256 so they can be listed or removed together:
    exact hashes, the whole image's PDQ, a video's (or animation's) vPDQ frames, then the PDQ of
    the picture inside its uniform bands (so an item banked as a screenshot also matches the
    photo it shows)."""
    content_id = item.exact.sha256
    signals = [
        SignalInput(SignalType(kind), getattr(item.exact, kind), note=note, content_id=content_id)
        for kind in ("sha256", "md5", "sha1")
    ]
    if item.pdq is not None:
        signals.append(
            SignalInput(
                SignalType.PDQ,
                item.pdq.hex,
                quality=item.pdq.quality,
                note=note,
                content_id=content_id,
            )
        )
    for feature in item.video.features if item.video is not None else ():
        # Through the vPDQ text line, so the stored timestamp is the one exports write.
        frame, quality, value, timestamp = feature.line().split(",")
        signals.append(
            SignalInput(
                SignalType.VPDQ,
                value,
                quality=int(quality),
                note=note,
                content_id=content_id,
                frame=int(frame),
                timestamp=float(timestamp),
            )
        )
    signals += [
        SignalInput(SignalType.PDQ, h.hex, quality=h.quality, note=note, content_id=content_id)
        for h in item.content_pdq
    ]
    return signals
