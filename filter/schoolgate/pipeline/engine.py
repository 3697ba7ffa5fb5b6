"""The inspection pipeline: bytes in, verdict out. Used by `schoolgate scan` and by the proxy.

sniff → exact hashes → bounded decode → PDQ (+ dihedral variants) → bank match → classifier →
policy. `evaluate` is pure and thread-safe (the proxy calls it from a worker pool); `record` writes
the decision down and is called where the decision is enforced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial

from PIL import Image, ImageOps

from schoolgate.alerts.service import AlertService
from schoolgate.banks.exemptions import ExemptionSet
from schoolgate.banks.store import BankStore
from schoolgate.classify.classifier import Classifier
from schoolgate.classify.spec import ClassifierResult, ModelLoadError
from schoolgate.classify.video import FrameVote
from schoolgate.config import Config
from schoolgate.errors import MediaRefused
from schoolgate.matching.key_frames import KeyFrameEvidence
from schoolgate.matching.matcher import BankMatch, FrameMatch, Matcher
from schoolgate.matching.robust_tier import RobustTier
from schoolgate.matching.snapshot import StoreSnapshot
from schoolgate.matching.video import VideoMatcher, video_matchers
from schoolgate.media.cutshort import shown_rows
from schoolgate.media.hashing import PdqHash, pdq_hash, stretched_pdq
from schoolgate.media.normalise import analysis_views
from schoolgate.media.recolour import COLOUR_UNDOS
from schoolgate.media.signals import decode_for_analysis, matching_video_hasher, screens, view_pdq
from schoolgate.media.sniff import MediaKind, claims_media, sniff, unanalysed_format
from schoolgate.media.video import VideoHashes, VpdqFeature
from schoolgate.media.video_sources import count_video_streams
from schoolgate.pipeline.audit import AuditLog
from schoolgate.pipeline.policy import Policy
from schoolgate.pipeline.unjudged import exact_findings, unjudged_findings
from schoolgate.pipeline.verdict import Findings, InspectionContext, Verdict

__all__ = ["InspectionContext", "Inspector", "Verdict"]

log = logging.getLogger(__name__)

# Video streams judged per file; more is refused (no camera or app writes more than a few).
MAX_VIDEO_STREAMS = 4
_CHANNEL_SIDE = 128  # the colour channels are hashed this small: 7 ms, not 40 (_channel_matches)


class Inspector:
    """Everything needed to judge media: banks, classifier models, policy and the audit log."""

    def __init__(
        self,
        config: Config,
        store: BankStore,
        classifier: Classifier | None,
        audit: AuditLog | None,
        model_errors: list[ModelLoadError] | None = None,
        alerts: AlertService | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.classifier = classifier
        self.audit = audit
        self.alerts = alerts
        self.model_errors = model_errors or []
        self.policy = Policy(config.policy)
        banks = config.banks
        self._matchers = StoreSnapshot(
            store,
            lambda: Matcher.from_store(store, pdq_max_distance=banks.pdq_max_distance,
                                       per_bank_distance=banks.per_bank_distance),
            banks.reload_interval_s,
        )  # fmt: skip
        self._video_matchers = video_matchers(store, banks.video, banks.reload_interval_s)
        self._robust = RobustTier(store, config.banks)

    @property
    def robust(self) -> RobustTier:
        return self._robust

    @classmethod
    def from_config(
        cls, config: Config, *, with_audit: bool = True, with_alerts: bool | None = None
    ) -> Inspector:
        """Open the banks, load the enabled models (tolerating failures), the audit log and the
        alert outbox (`with_alerts` defaults to `with_audit`: a what-if `scan` records nothing).

        A model that fails to load is reported, not fatal: hash matching still protects pupils.
        The alert sender is built but not started (the proxy starts it).
        """
        config.banks.path.parent.mkdir(parents=True, exist_ok=True)
        store = BankStore(config.banks.path)
        specs = [m for m in config.classifier.models if m.enabled]
        classifier, errors = Classifier.tolerant(
            specs, intra_op_threads=config.classifier.intra_op_threads
        )
        for error in errors:
            log.error("classifier model not loaded: %s", error)
        audit = AuditLog(config.audit) if with_audit else None
        wants_alerts = with_audit if with_alerts is None else with_alerts
        alerts = AlertService.open(config) if wants_alerts else None
        inspector = cls(config, store, classifier if specs else None, audit, errors, alerts)
        for error in errors:
            inspector._audit_event("model_load_failed", error=str(error))
        return inspector

    @property
    def matcher(self) -> Matcher:
        return self._matchers.get()

    @property
    def video_matcher(self) -> VideoMatcher:
        return self._video_matchers.get()

    def evaluate(self, data: bytes, ctx: InspectionContext) -> Verdict:
        """Judge one item. Never raises for bad input: failures become fail-policy verdicts."""
        started = time.perf_counter()
        ctx = ctx if ctx.size is not None else replace(ctx, size=len(data))
        try:
            findings = self._findings(data, ctx, classify=self.policy.wants_classifier(ctx))
            findings = without_exempted(findings, self.matcher.exemptions)
            findings = with_provenance(findings, self.matcher.provenance)
        except Exception as exc:  # an unexpected bug must not turn into an allowed bypass
            log.exception("inspection failed")
            findings = Findings(size=len(data), failure="error", failure_detail=type(exc).__name__)
        findings = replace(findings, elapsed_ms=(time.perf_counter() - started) * 1000)
        return self.policy.decide(ctx, findings)

    def evaluate_unavailable(
        self,
        ctx: InspectionContext,
        failure: str,
        detail: str,
        action: str | None = None,
        data: bytes | None = None,
    ) -> Verdict:
        """A verdict for something that could not be inspected (oversize, timeout, overload, ...).

        `action` ("block" | "allow") overrides the group's fail policy; the proxy passes the
        endpoint catalog's action for apps that cannot be inspected ("not_inspectable"). `data`,
        where at hand, gets its exact findings (pipeline.unjudged).
        """
        findings = unjudged_findings(ctx.size, failure, detail, action, data, self.matcher)
        return self.policy.decide(ctx, findings)

    def record(self, verdict: Verdict) -> None:
        """Write the decision to the audit log, then its alert (if any) durably to the outbox
        (metrics hook in here too). A failing outbox is logged and counted, never raised."""
        if self.audit is not None:
            self.audit.record(verdict)
        if self.alerts is not None:
            self.alerts.record(verdict)

    def close(self) -> None:
        if self.alerts is not None:
            self.alerts.close()
        if self.audit is not None:
            self.audit.close()
        self.store.close()

    def _findings(self, data: bytes, ctx: InspectionContext, classify: bool) -> Findings:
        media_type = sniff(data)
        matcher = self.matcher
        exact = exact_findings(data, matcher)
        hashes, matches = dict(exact.hashes), list(exact.matches)
        base = replace(exact, media_type=media_type.value, matches=())

        if media_type.kind is MediaKind.VIDEO:
            if matches:  # the banked file itself: decoding it could not change the verdict
                return replace(base, matches=tuple(matches))
            return _VideoAnalysis(self, classify).findings(data, base)
        if (
            media_type.kind is MediaKind.UNKNOWN
            and data
            and not matches
            and (claims_media(ctx.declared_type, ctx.filename) or unanalysed_format(data))
        ):
            # Sent as a picture or a video, in a format we do not read (JPEG XL, an odd codec
            # container): the group's fail policy decides, never a silent allow.
            said = unanalysed_format(data) or ctx.declared_type or ctx.filename
            detail = f"sent as {said!r}, not a format analysed here"
            return replace(base, failure="not_analysed", failure_detail=detail[:200])
        if media_type.kind is not MediaKind.IMAGE:
            return replace(base, matches=tuple(matches))

        try:
            decoded = decode_for_analysis(data, self.config.limits)
        except MediaRefused as refused:
            cut = refused.reason == "truncated" and not matches
            if cut and (rows := shown_rows(data, self.config.limits.max_pixels)) is not None:
                # Cut short, it is still refused, but viewers show the rows it holds: a banked
                # picture among them is a match, so the DSL hears of it (a46 O1: 80% of one
                # was refused silently; a51: a PNG's first 7 of 8 parts).
                shown = self._findings(rows, ctx, classify=False)
                matches = [replace(m, evidence=(*m.evidence, ("cut_short", 1.0)))
                           for m in shown.matches]  # fmt: skip
            return replace(
                base, matches=tuple(matches), failure="refused", failure_detail=str(refused)
            )

        banks = self.config.banks
        # The whole image, then the picture inside a screenshot's or padded copy's uniform bands.
        variants: list[PdqHash] = []
        views = analysis_views(decoded.image)
        for number, view_hashes in enumerate(view_pdq(views, dihedral=banks.match_dihedral)):
            variants.extend(view_hashes)
            if number:
                hashes[f"pdq_content{number if number > 1 else ''}"] = view_hashes[0].hex
        hashes["pdq"] = variants[0].hex
        hashes["pdq_quality"] = variants[0].quality
        tiles = screens(decoded.image)  # the screens of a long screenshot, looked at once
        variants.extend(tile[0] for tile in view_pdq(tiles, dihedral=False))
        if variants[0].quality < banks.pdq_min_quality:  # washed out: its contrast restored
            variants.extend(stretched_pdq(views[0], dihedral=banks.match_dihedral))
        pdq_matches = matcher.match_pdq(variants, min_quality=banks.pdq_min_quality)
        judged_as, judged_views, judged_tiles = decoded.image, views, tiles
        if banks.match_inverted and not pdq_matches:
            # A negative of a banked picture (one tap in any editor) hashes to the complement;
            # its features are the negative's, so the negative of the copy is what they judge.
            negatives = [variant.inverted() for variant in variants]
            pdq_matches = [
                replace(match, evidence=(("inverted", 1.0),))
                for match in matcher.match_pdq(negatives, min_quality=banks.pdq_min_quality)
            ]
            if pdq_matches:
                judged_as = ImageOps.invert(decoded.image.convert("RGB"))
                judged_views, judged_tiles = [judged_as], screens(judged_as)
        claimed = [m for m in pdq_matches if banks.runs(m.bank, "pdq")]
        refuted = self._refuted(claimed, judged_as, judged_views, judged_tiles,
                                mirrored=banks.match_dihedral)  # fmt: skip
        if banks.match_channels and len(refuted) == len(claimed):
            # Nothing stands: a copy in false colours is looked up recoloured (a44 F1: a near
            # miss of its negative kept this from being tried).
            # A banked hash whose features refuted it already is taken recoloured only when it
            # is near-exact (a negative's near miss stood before an exact undo; a44), else a
            # false colour variant of the same surround would get a second chance.
            listed = {(m.bank, m.value) for m in refuted}
            near = banks.robust.pdq_confirm_bits
            colour_matches, recoloured = self._channel_matches(decoded.image)
            recolour_claimed = [m for m in colour_matches if banks.runs(m.bank, "pdq") and (
                (m.bank, m.value) not in listed or m.distance <= near)]  # fmt: skip
            claimed += recolour_claimed
            refuted += self._refuted(recolour_claimed, recoloured, [recoloured], recoloured=True)
        matches.extend(m for m in claimed if m not in refuted)
        exempt = matcher.exemptions.of(str(hashes["sha256"]))
        if not [m for m in matches if f"bank:{m.bank}" not in exempt]:
            # Only when nothing cheaper matched: one match decides, and most media matches none.
            # A match this file is exempted from does not count: the other banks are asked.
            matches.extend(self._robust.match(decoded.image, views, tiles, decoded.finer,
                                              decoded.media_type.lossy))  # fmt: skip

        if decoded.frame_count > 1:
            # An animation (often a GIF of a clip) is also judged as a video: its frames are
            # matched against banked videos and classified k-of-n, not just its first frame.
            found = replace(base, hashes=hashes, matches=tuple(matches), refuted=refuted)
            return _VideoAnalysis(self, classify).findings(data, found)

        scores: tuple[ClassifierResult, ...] = ()
        skip = matches and self.config.classifier.skip_when_matched
        if self.classifier is not None and classify and not skip:
            scores = tuple(self.classifier.classify(decoded.image))
        findings = replace(
            base, hashes=hashes, matches=tuple(matches), scores=scores, refuted=refuted
        )
        failed = [r for r in scores if r.error]
        if failed:
            # A model that failed or ran out of time must not read as "clean": the group's fail
            # policy decides, and the reason names the model.
            detail = "; ".join(f"{r.model}: {r.error}" for r in failed)
            findings = replace(findings, failure="classifier_error", failure_detail=detail)
        return findings

    def _channel_matches(self, image: Image.Image) -> tuple[list[BankMatch], Image.Image]:
        """A copy in false colours (one or two channels inverted, the channels swapped) keeps
        the picture and scrambles its brightness, which PDQ reads (a42 F5, a44 F1). Looked up
        upright, at the usual distance: each channel alone and its negative, and the colours
        with each combination of channels inverted and in each other order, which undo such
        an edit exactly. Also returned: the variant that matched nearest, at full size, which
        is what the banked item's features confirm or refute (the false-colour copy's own
        brightness aligns with nothing: a44 F1 was refuted so)."""
        small = image.convert("RGB")
        small.thumbnail((_CHANNEL_SIDE, _CHANNEL_SIDE))  # PDQ reads 64 x 64 in the end
        minimum = self.config.banks.pdq_min_quality
        found: list[tuple[int, BankMatch, Callable[[Image.Image], Image.Image]]] = []
        for undo in COLOUR_UNDOS:
            for match in self.matcher.match_pdq([pdq_hash(undo(small))], min_quality=minimum):
                found.append((match.distance, replace(match, evidence=(("channel", 1.0),)), undo))
        if not found:
            return [], image
        found.sort(key=lambda entry: entry[0])
        recoloured = found[0][2](image.convert("RGB"))
        # The nearest view hashed again at full size: 128 pixels read smooth pictures coarsely.
        exact = self.matcher.match_pdq([pdq_hash(recoloured)], min_quality=minimum)
        matches: list[BankMatch] = [replace(m, evidence=(("channel", 1.0),)) for m in exact]
        for _, match, _ in found:
            if all((m.bank, m.value) != (match.bank, match.value) for m in matches):
                matches.append(match)
        return matches, recoloured

    def _refuted(self, matches: list[BankMatch], image: Image.Image, views: list[Image.Image],
                 tiles: list[Image.Image] | None = None, mirrored: bool = False,
                 recoloured: bool = False) -> tuple[BankMatch, ...]:  # fmt: skip
        """The PDQ matches beyond `pdq_confirm_bits` (any, of a picture found in a screen:
        RobustTier.judges_a_picture) that the banked item's own local features refute: aligned,
        and another picture in the same surround (a fixed background behind another subject).
        They do not count; the audit record lists them. `tiles`: the screens of `image`, where
        already computed; `mirrored`, `recoloured`: as for RobustTier.refuted."""
        near = self.config.banks.robust.pdq_confirm_bits
        distant = [m for m in matches if m.distance > near or self._robust.judges_a_picture(m)]
        if not distant:
            return ()
        refuted = tuple(self._robust.refuted(image, distant, views, tiles, mirrored, recoloured))
        for match in refuted:
            log.info(
                "PDQ match at %d bits in bank %s refuted by its feature sets: the same surround "
                "around another picture",
                match.distance,
                match.bank,
            )
        return refuted

    def _audit_event(self, event: str, **fields: object) -> None:
        if self.audit is not None:
            self.audit.event(event, **fields)


class _VideoAnalysis:
    """vPDQ frame hashes, banked-video matches and k-of-n classification of one video."""

    def __init__(self, inspector: Inspector, classify: bool) -> None:
        self.inspector = inspector
        config = inspector.config
        self.classify = classify and inspector.classifier is not None
        self.vote: FrameVote = config.classifier.video
        # Frames for the robust tier only when some bank holds local feature sets.
        robust_frames = config.banks.robust.video_query_frames if len(inspector.robust) else 0
        self.hasher = matching_video_hasher(
            config, keep=self.vote.frames if self.classify else 0, key_frames=robust_frames
        )

    def findings(self, data: bytes, base: Findings) -> Findings:
        """Every video stream of the file, each judged: a player may show any of them (the
        banked clip as a second track marked default)."""
        first, streams = self._stream(data, base, 0)
        if streams <= 1:
            return first
        if streams > MAX_VIDEO_STREAMS:
            detail = f"{streams} video streams, more than the {MAX_VIDEO_STREAMS} judged"
            return replace(first, failure="refused", failure_detail=detail)
        every = [first, *(self._stream(data, base, n)[0] for n in range(1, streams))]
        matches = tuple(dict.fromkeys(m for found in every for m in found.matches))
        scores = tuple(score for found in every for score in found.scores)
        failed = next((found for found in every if found.failure is not None), None)
        hashes: dict[str, str | int] = {}
        for found in reversed(every):  # the first stream's summary wins where both have one
            hashes.update(found.hashes)
        merged = replace(
            first,
            matches=matches,
            scores=scores,
            hashes={**hashes, "video_streams": streams},
        )
        if failed is not None:
            merged = replace(merged, failure=failed.failure, failure_detail=failed.failure_detail)
        return merged

    def _stream(self, data: bytes, base: Findings, stream: int) -> tuple[Findings, int]:
        """Findings for one video stream, and how many the file holds."""
        inspector = self.inspector
        try:  # a video cut short: what arrived is matched (an upload's first part), then refused
            video = self.hasher.hash(data, stream=stream, cut_short=True)
        except MediaRefused as refused:
            if refused.reason == "no_picture":
                # Audio only (a voice note): no picture to judge, and none to hide one in.
                return replace(base, hashes={**base.hashes, "audio_only": 1}), 1
            # A codec this build does not decode is not analysed; anything else is a refusal.
            failure = "not_analysed" if refused.reason == "unsupported_codec" else "refused"
            if refused.reason == "time_budget":
                failure = "timeout"
            detail = f"{refused.reason}: {refused}"
            streams = 1
            if stream == 0 and refused.reason == "unsupported_codec":
                media_type = sniff(data)
                streams = count_video_streams(data, media_type, self.inspector.config.limits.video)
            return replace(base, failure=failure, failure_detail=detail), streams
        hashes = {**base.hashes, **_video_summary(video)}
        matches = (
            *base.matches,
            *self._image_matches(video, base.matches),
            *inspector.video_matcher.match(video.features),
        )
        if not matches and inspector.config.banks.match_inverted:
            # A colour-inverted copy (one filter in any editor) hashes to the complements.
            matches = tuple(
                replace(match, evidence=(("inverted", 1.0),))
                for match in inspector.video_matcher.match(_inverted(video.features))
            )
        if not matches:
            # Only when no hash matched, as for images: a few frames spread over the upload,
            # looked up in the robust tier (banked images and banked videos' key frames).
            matches = tuple(self._robust_matches(video))
        findings = replace(base, hashes=hashes, matches=matches)
        skip = matches and inspector.config.classifier.skip_when_matched
        if self.classify and not skip and video.kept:
            findings = replace(findings, scores=tuple(self._scores(video)))
            failed = [r for r in findings.scores if r.error]
            if failed:
                detail = "; ".join(f"{r.model}: {r.error}" for r in failed)
                findings = replace(findings, failure="classifier_error", failure_detail=detail)
        stopped = video.refused
        if stopped is not None:
            # Decoding stopped part-way: what was hashed has been matched (a match still
            # blocks), and the fail policy decides about the part that was not.
            findings = replace(
                findings,
                failure="timeout" if stopped.reason == "time_budget" else "refused",
                failure_detail=f"{stopped.reason}: {stopped} "
                f"(after {len(video.features)} sampled frames)",
            )
        return findings, video.video_streams

    def _image_matches(self, video: VideoHashes, known: tuple[BankMatch, ...]) -> list[FrameMatch]:
        """Every sampled frame against the IMAGE bank, as a still upload would be (PDQ of the
        frame and its content boxes, dihedral variants): a banked photo shown for a moment in
        an animation or a slideshow clip. Each banked hash is reported once, at the first frame
        that matched it."""
        banks = self.inspector.config.banks
        matcher = self.inspector.matcher
        seen = {(m.bank, str(m.signal_type), m.value) for m in known}
        found: list[FrameMatch] = []
        for still in video.stills:
            queries = still.hashes if banks.match_dihedral else still.hashes[::8]
            for match in matcher.match_pdq(queries, min_quality=banks.pdq_min_quality):
                key = (match.bank, str(match.signal_type), match.value)
                if key in seen or not banks.runs(match.bank, "pdq"):
                    continue
                seen.add(key)
                found.append(FrameMatch.at(match, still.frame, still.timestamp))
        return found

    def _robust_matches(self, video: VideoHashes) -> list[FrameMatch]:
        """What the robust tier finds in the upload's key frames (at most
        `banks.robust.video_query_frames` lookups, each bounded like an image's): a banked
        picture by one frame, a banked video by more than one moment of it (key_frames)."""
        matcher = self.inspector.video_matcher
        evidence = KeyFrameEvidence(
            len(video.key_frames), partial(matcher.frames_shown, video.features), video.duration_s
        )
        for frame in video.key_frames:
            matches = self.inspector.robust.match(frame.image(), finer=frame.finer_image,
                                                  noisy=True)  # fmt: skip
            found = evidence.add(frame, matches)
            if found:
                return found
        return []

    def _scores(self, video: VideoHashes) -> list[ClassifierResult]:
        classifier = self.inspector.classifier
        assert classifier is not None
        per_frame = [classifier.classify(frame.image()) for frame in video.kept]
        return self.vote.combine(per_frame)


def without_exempted(findings: Findings, exemptions: ExemptionSet) -> Findings:
    """The findings less the bank matches and classifier flags that this exact file is exempted
    from (reviewed false positives); the audit record names the sources taken out."""
    exempt = exemptions.of(str(findings.hashes.get("sha256", "")))
    if not exempt:
        return findings
    matched = {f"bank:{m.bank}" for m in findings.matches}
    flagged = {f"model:{r.model}" for r in findings.scores if r.flagged}
    return replace(
        findings,
        matches=tuple(m for m in findings.matches if f"bank:{m.bank}" not in exempt),
        scores=tuple(
            replace(r, flagged=()) if f"model:{r.model}" in exempt else r for r in findings.scores
        ),
        exempted=tuple(sorted(exempt & (matched | flagged))),
    )


def with_provenance(findings: Findings, provenance: Mapping[str, str]) -> Findings:
    """Each match of a shared bank names where the bank came from (school, when, why), so the
    audit record and the DSL's alert say it."""
    if not provenance or not any(m.bank in provenance for m in findings.matches):
        return findings
    return replace(findings, matches=tuple(
        replace(m, provenance=provenance[m.bank]) if m.bank in provenance else m
        for m in findings.matches
    ))  # fmt: skip


def _video_summary(video: VideoHashes) -> dict[str, str | int]:
    """What the audit record keeps of a video's analysis (the frame hashes stay out of it)."""
    summary: dict[str, str | int] = {
        "video_codec": video.codec or "",
        "video_frames_hashed": len(video.features),
        "video_frames_decoded": video.decoded_frames,
    }
    if video.duration_s is not None:
        summary["video_duration_ms"] = round(video.duration_s * 1000)
    return summary


def _inverted(features: tuple[VpdqFeature, ...]) -> tuple[VpdqFeature, ...]:
    """The sampled frames' hashes as a colour-inverted copy of the video would give them."""
    every = (1 << 256) - 1
    return tuple(
        replace(
            feature,
            hex=f"{int(feature.hex, 16) ^ every:064x}",
            variants=tuple(f"{int(v, 16) ^ every:064x}" for v in feature.variants),
        )
        for feature in features
    )
