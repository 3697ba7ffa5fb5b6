"""The `banks:` configuration section: where the banks live and how they are matched (PDQ
distance and quality, the vPDQ rule, which tiers a bank runs, the robust tier's thresholds)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from schoolgate.config_reader import Node, path_under
from schoolgate.matching.matcher import DEFAULT_MIN_QUALITY, DEFAULT_PDQ_MAX_DISTANCE
from schoolgate.matching.video import VideoMatchSettings
from schoolgate.trust.settings import AnySubscription, Subscription, parse_subscriptions

# Matching tiers a bank can run. Exact digests always run; "pdq" is the perceptual hash index;
# "robust" is local features with geometric verification (schoolgate.robust), for banks whose
# items were added from local files (`schoolgate hashes add`), which store feature sets.
TIERS = ("pdq", "robust")


DEFAULT_TIERS: dict[str, tuple[str, ...]] = {"*": TIERS}


@dataclass(frozen=True)
class RobustRule:
    """When the robust tier calls two images the same: enough inliers, spread wide enough."""

    min_inliers: int = 20
    min_spread: float = 0.3  # share of the banked image's 4x4 grid cells holding inliers


@dataclass(frozen=True)
class RobustConfig:
    """The robust tier's thresholds and its bounds on memory and time."""

    rule: RobustRule = RobustRule()
    per_bank: dict[str, RobustRule] = field(default_factory=dict)
    max_items: int = 2000  # banked items whose feature sets are loaded (newest first)
    max_candidates: int = 8  # banked views verified per query, at most
    bank_mirrored: bool = True  # also bank the mirrored view, so mirrored edits match
    # Also bank the picture squashed to half along four axes, so copies squashed (and turned,
    # or squashed along a slant) match: 4 more feature sets per item. Off by default: the
    # content check is weaker on a squashed view, and adversarial pass a21 got another subject
    # before a banked background blocked through it.
    bank_squashed: bool = False
    # Videos: `hashes add` banks the feature sets of this many key frames spread over the clip,
    # and an upload's frames (up to this many, at one stride: every second, every other...)
    # are looked up when no hash matched. A frame verified against a banked key frame blocks,
    # as a robust image match does.
    video_key_frames: int = 8
    video_query_frames: int = 16
    # A PDQ match farther than this from a banked hash of an item with feature sets is checked
    # against that item's features, and dropped where they show another picture in the same
    # surround (RobustTier.confirm). Within it, PDQ alone decides.
    pdq_confirm_bits: int = 8

    def rule_for(self, bank: str) -> RobustRule:
        return self.per_bank.get(bank, self.rule)


@dataclass(frozen=True)
class BanksConfig:
    path: Path
    pdq_max_distance: int = DEFAULT_PDQ_MAX_DISTANCE
    pdq_min_quality: int = DEFAULT_MIN_QUALITY
    match_dihedral: bool = True  # also match mirrored and rotated copies (8 PDQ variants)
    # Also match colour-inverted copies: a negative's PDQ hash is the bitwise complement.
    match_inverted: bool = True
    # Also match a copy with one or two colour channels inverted (false colours, a42 F5): each
    # channel, and its negative, as a grey picture.
    match_channels: bool = True
    per_bank_distance: dict[str, int] = field(default_factory=dict)
    reload_interval_s: float = 5.0
    video: VideoMatchSettings = field(default_factory=VideoMatchSettings)  # the vPDQ rule
    # Bank-name glob -> tiers, first matching pattern wins; banks no pattern names run "pdq".
    tiers: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    robust: RobustConfig = RobustConfig()
    subscriptions: tuple[
        AnySubscription, ...
    ] = ()  # trust publications followed (schoolgate.trust)

    def tiers_for(self, bank: str) -> tuple[str, ...]:
        for pattern, tiers in self.tiers.items():
            if fnmatch.fnmatchcase(bank, pattern):
                return tiers
        return ("pdq",)

    def runs(self, bank: str, tier: str) -> bool:
        return tier in self.tiers_for(bank)

    @property
    def prefixes(self) -> dict[str, str]:
        """Subscription name -> the prefix it gives its banks' names, where it has one."""
        return {s.name: s.prefix for s in self.subscriptions
                if isinstance(s, Subscription) and s.prefix}  # fmt: skip

    def prefix_notes(self, bank_names: Iterable[str]) -> list[str]:
        """Settings written for a trust bank's published name that miss it under the name a
        subscription's `prefix:` gives it here (a43 F8: the robust tier was turned off for a
        trust bank so, and its edited copies passed)."""
        notes: list[str] = []
        prefixes = self.prefixes
        for bank in bank_names:
            for subscription, prefix in prefixes.items():
                if not bank.startswith(prefix):
                    continue
                published = bank.removeprefix(prefix)
                where = f"the trust bank {published!r} is {bank!r} here ({subscription}'s prefix)"
                wanted, got = self._pattern_for(published), self._pattern_for(bank)
                if wanted != got and wanted is not None:
                    runs, meant = "/".join(self.tiers_for(bank)), "/".join(self.tiers[wanted])
                    notes.append(f"banks.tiers {wanted!r}: {where}, so it runs {runs}, not "
                                 f"{meant}; name {prefix + wanted!r}")  # fmt: skip
                for setting, keys in (("banks.per_bank_distance", self.per_bank_distance),
                                      ("banks.robust.per_bank", self.robust.per_bank)):  # fmt: skip
                    if published in keys and bank not in keys:
                        notes.append(f"{setting} {published!r}: {where}; name {bank!r}")
        return notes

    def _pattern_for(self, bank: str) -> str | None:
        return next((p for p in self.tiers if fnmatch.fnmatchcase(bank, p)), None)


def _video_matching(node: Node, pdq_max_distance: int, pdq_min_quality: int) -> VideoMatchSettings:
    node.mapping(
        allowed={
            "max_distance",
            "min_quality",
            "query_match_percent",
            "bank_match_percent",
            "query_samples_per_hash",
        }
    )
    d = VideoMatchSettings()
    return VideoMatchSettings(
        max_distance=node.child("max_distance").integer(pdq_max_distance, minimum=0, maximum=128),
        min_quality=node.child("min_quality").integer(pdq_min_quality, minimum=0, maximum=100),
        query_match_percent=node.child("query_match_percent").number(
            d.query_match_percent, minimum=0, maximum=100
        ),
        bank_match_percent=node.child("bank_match_percent").number(
            d.bank_match_percent, minimum=0, maximum=100
        ),
        query_samples_per_hash=node.child("query_samples_per_hash").integer(
            d.query_samples_per_hash, minimum=1, maximum=30
        ),
    )


def parse_banks(node: Node, data_dir: Path) -> BanksConfig:
    node.mapping(
        allowed={
            "path",
            "pdq_max_distance",
            "pdq_min_quality",
            "match_dihedral",
            "match_inverted",
            "match_channels",
            "per_bank_distance",
            "reload_interval_s",
            "video",
            "tiers",
            "robust",
            "subscriptions",
        }
    )
    per_bank = {
        name: child.integer(0, minimum=0, maximum=128)
        for name, child in node.child("per_bank_distance").items()
    }
    defaults = BanksConfig(path=Path())
    pdq_max_distance = node.child("pdq_max_distance").integer(
        defaults.pdq_max_distance, minimum=0, maximum=128
    )
    pdq_min_quality = node.child("pdq_min_quality").integer(
        defaults.pdq_min_quality, minimum=0, maximum=100
    )
    return BanksConfig(
        path=path_under(data_dir, node.child("path"), "banks.sqlite"),
        pdq_max_distance=pdq_max_distance,
        pdq_min_quality=pdq_min_quality,
        match_dihedral=node.child("match_dihedral").flag(defaults.match_dihedral),
        match_inverted=node.child("match_inverted").flag(defaults.match_inverted),
        match_channels=node.child("match_channels").flag(defaults.match_channels),
        per_bank_distance=per_bank,
        reload_interval_s=node.child("reload_interval_s").number(
            defaults.reload_interval_s, minimum=0.1
        ),
        video=_video_matching(node.child("video"), pdq_max_distance, pdq_min_quality),
        tiers=_tiers(node.child("tiers")),
        robust=_robust(node.child("robust")),
        subscriptions=parse_subscriptions(node.child("subscriptions")),
    )


def _tiers(node: Node) -> dict[str, tuple[str, ...]]:
    if node.missing:
        return dict(DEFAULT_TIERS)
    tiers: dict[str, tuple[str, ...]] = {}
    for pattern, child in node.items():
        names = tuple(item.choice(TIERS) for item in child.elements())
        tiers[pattern] = tuple(dict.fromkeys(names))
    return tiers


def _robust_rule(node: Node, default: RobustRule) -> RobustRule:
    node.mapping(allowed={"min_inliers", "min_spread"})
    return RobustRule(
        # Fewer than 8 inliers is within reach of chance agreement between unrelated photos.
        min_inliers=node.child("min_inliers").integer(default.min_inliers, minimum=8),
        min_spread=node.child("min_spread").number(default.min_spread, minimum=0.0, maximum=1.0),
    )


def _robust(node: Node) -> RobustConfig:
    node.mapping(
        allowed={
            "min_inliers",
            "min_spread",
            "per_bank",
            "max_items",
            "max_candidates",
            "bank_mirrored",
            "bank_squashed",
            "video_key_frames",
            "video_query_frames",
            "pdq_confirm_bits",
        }
    )
    defaults = RobustConfig()
    rule = RobustRule(
        min_inliers=node.child("min_inliers").integer(defaults.rule.min_inliers, minimum=8),
        min_spread=node.child("min_spread").number(
            defaults.rule.min_spread, minimum=0.0, maximum=1.0
        ),
    )
    per_bank = {name: _robust_rule(child, rule) for name, child in node.child("per_bank").items()}
    return RobustConfig(
        rule=rule,
        per_bank=per_bank,
        max_items=node.child("max_items").integer(defaults.max_items, minimum=1, maximum=100_000),
        max_candidates=node.child("max_candidates").integer(
            defaults.max_candidates, minimum=1, maximum=64
        ),
        bank_mirrored=node.child("bank_mirrored").flag(defaults.bank_mirrored),
        bank_squashed=node.child("bank_squashed").flag(defaults.bank_squashed),
        video_key_frames=node.child("video_key_frames").integer(
            defaults.video_key_frames, minimum=0, maximum=64
        ),
        video_query_frames=node.child("video_query_frames").integer(
            defaults.video_query_frames, minimum=0, maximum=64
        ),
        pdq_confirm_bits=node.child("pdq_confirm_bits").integer(
            defaults.pdq_confirm_bits, minimum=0, maximum=256
        ),
    )
