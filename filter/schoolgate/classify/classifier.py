"""The `Classifier`: every enabled model (schoolgate.classify.adapters) behind one thread-safe
call, each under its time budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from schoolgate.classify.adapters import load_adapter
from schoolgate.classify.onnx_runtime import ort
from schoolgate.classify.spec import ClassifierAdapter, ClassifierResult, ModelLoadError, ModelSpec


@dataclass
class _Slot:
    """A configured model: its adapter once loaded, or why it is not."""

    spec: ModelSpec
    adapter: ClassifierAdapter | None = None
    load_error: ModelLoadError | None = None


class Classifier:
    """All enabled models; thread-safe; one onnxruntime session per model, created once.

    Each model runs under its time budget: a watchdog sets onnxruntime's terminate flag when the
    budget is spent, so a slow item costs at most about the budget, and its result says so.
    """

    def __init__(self, specs: Sequence[ModelSpec], intra_op_threads: int = 1) -> None:
        errors = self._load(specs, intra_op_threads)
        if errors:
            raise errors[0]

    @classmethod
    def tolerant(
        cls, specs: Sequence[ModelSpec], intra_op_threads: int = 1
    ) -> tuple[Classifier, list[ModelLoadError]]:
        """Load what can be loaded; the rest report an error in every result."""
        classifier = cls.__new__(cls)
        errors = classifier._load(specs, intra_op_threads)
        return classifier, errors

    def _load(self, specs: Sequence[ModelSpec], intra_op_threads: int) -> list[ModelLoadError]:
        self._slots: list[_Slot] = []
        errors: list[ModelLoadError] = []
        seen: set[str] = set()
        for spec in specs:
            if not spec.enabled:
                continue
            slot = _Slot(spec)
            if spec.name in seen:
                slot.load_error = ModelLoadError(spec.name, spec.path, "duplicate model name")
            else:
                try:
                    slot.adapter = load_adapter(spec, intra_op_threads)
                except ModelLoadError as exc:
                    slot.load_error = exc
            seen.add(spec.name)
            if slot.load_error is not None:
                errors.append(slot.load_error)
            self._slots.append(slot)
        return errors

    def model_states(self) -> dict[str, bool]:
        """Enabled model name -> loaded."""
        states: dict[str, bool] = {}
        for slot in self._slots:
            states[slot.spec.name] = states.get(slot.spec.name, True) and slot.adapter is not None
        return states

    def classify(self, image: Image.Image) -> list[ClassifierResult]:
        """One result per enabled model, in configuration order. Never raises for a bad item."""
        return [self._classify_one(slot, image) for slot in self._slots]

    def _classify_one(self, slot: _Slot, image: Image.Image) -> ClassifierResult:
        spec = slot.spec
        if slot.adapter is None:
            reason = slot.load_error.reason if slot.load_error else "not loaded"
            return ClassifierResult(spec.name, {}, (), 0.0, False, f"model not loaded: {reason}")
        run_options = ort.RunOptions()
        # Run failures land in the result's `error`; onnxruntime need not also print them.
        run_options.log_severity_level = 4
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            run_options.terminate = True

        watchdog = threading.Timer(spec.time_budget_ms / 1000.0, stop)
        watchdog.daemon = True
        started = time.perf_counter()
        watchdog.start()
        try:
            scores = slot.adapter.scores(image, run_options)
            error = None
        except Exception as exc:  # a bad item must not take the proxy down
            scores = {}
            error = f"{type(exc).__name__}: {exc}"
        finally:
            watchdog.cancel()
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        over_budget = elapsed_ms > spec.time_budget_ms
        if error is not None and expired.is_set():
            error = f"stopped after its time budget of {spec.time_budget_ms:g} ms"
        flagged = tuple(
            label
            for label in slot.adapter.labels
            if label in spec.thresholds and scores.get(label, -1.0) >= spec.thresholds[label]
        )
        return ClassifierResult(spec.name, scores, flagged, elapsed_ms, over_budget, error)
