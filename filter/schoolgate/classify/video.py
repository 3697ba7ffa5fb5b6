"""Classifier verdicts on video: score sampled frames, flag on k of n.

One frame scored above a threshold can be a glitch (a blurred transition, a skin-toned close-up)
and a clip can hide a few seconds of abuse among ordinary footage; so a label is flagged when at
least `min_flagged_frames` of the `frames` scored frames reach its threshold. A clip shorter than
that many sampled frames needs every one of them (k is capped at n), so short clips are not a way
around the rule. The score reported per label is the k-th highest frame score, which reaches the
threshold exactly when k frames do: the audit record shows the number the rule used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schoolgate.classify.spec import ClassifierResult


@dataclass(frozen=True)
class FrameVote:
    """How many frames to score and how many must reach a threshold."""

    frames: int = 16
    min_flagged_frames: int = 2

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"video classification needs at least 1 frame, got {self.frames}")
        if not 1 <= self.min_flagged_frames <= self.frames:
            raise ValueError(
                f"min_flagged_frames must be 1..frames ({self.frames}), got "
                f"{self.min_flagged_frames}"
            )

    def combine(self, per_frame: Sequence[Sequence[ClassifierResult]]) -> list[ClassifierResult]:
        """One result per model, in model order, from its results on each scored frame."""
        by_model: dict[str, list[ClassifierResult]] = {}
        for results in per_frame:
            for result in results:
                by_model.setdefault(result.model, []).append(result)
        return [self._combine(model, results) for model, results in by_model.items()]

    def _combine(self, model: str, results: list[ClassifierResult]) -> ClassifierResult:
        scored = [r for r in results if r.error is None]
        need = min(self.min_flagged_frames, max(len(scored), 1))
        labels = sorted({label for r in scored for label in r.scores})
        scores: dict[str, float] = {}
        for label in labels:
            ranked = sorted((r.scores.get(label, 0.0) for r in scored), reverse=True)
            scores[label] = ranked[need - 1] if len(ranked) >= need else 0.0
        flagged = tuple(
            label for label in labels if sum(1 for r in scored if label in r.flagged) >= need
        )
        errors = sorted({r.error for r in results if r.error})
        return ClassifierResult(
            model=model,
            scores=scores,
            flagged=flagged,
            elapsed_ms=sum(r.elapsed_ms for r in results),
            over_budget=any(r.over_budget for r in results),
            error="; ".join(errors) if errors else None,
        )
