"""Reviewed exemptions: an exact file taken out of one bank's or one model's verdict, no more."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.banks.exemptions import BANK, MODEL, Exemptions
from schoolgate.banks.model import BankError, SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.classify.classifier import Classifier
from schoolgate.config import Config, parse_config
from schoolgate.media.hashing import exact_hashes, pdq_hash
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.conftest import encode
from tests.support.onnx_models import make_pattern_model, pattern_image, pattern_model_spec

STUDENT = InspectionContext(client_ip="192.0.2.20", app="testapp")


def _config() -> Config:
    text = "banks:\n  reload_interval_s: 0.1\nclassifier:\n  models: []\n"
    return parse_config(text, "test.yaml")


@pytest.fixture
def inspector(data_dir: Path) -> Iterator[Inspector]:
    inspector = Inspector.from_config(_config())
    yield inspector
    inspector.close()


def _reload(inspector: Inspector) -> None:
    inspector._matchers._checked_at = 0.0  # skip the reload interval for the test


def _bank_pdq(store: BankStore, bank: str, image: Image.Image) -> None:
    store.ensure_bank(bank)
    pdq = pdq_hash(image)
    store.add_signals(bank, [SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)], "test")


def _exempted_records(inspector: Inspector) -> list[list[str]]:
    assert inspector.audit is not None
    lines = inspector.audit.path.read_text("utf-8").splitlines()
    return [json.loads(line).get("exempted") for line in lines if '"decision"' in line]


def test_an_exempted_file_is_allowed_and_audited_while_its_edits_still_match(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    photo = benign_photos["coffee"]
    innocent = encode(photo, "JPEG", quality=90)
    with BankStore(inspector.config.banks.path) as store:
        _bank_pdq(store, "incident-7", photo)
        _reload(inspector)
        assert inspector.evaluate(innocent, STUDENT).blocked
        Exemptions(store).add(
            exact_hashes(innocent).sha256,
            BANK,
            "incident-7",
            added_by="dsl",
            reason="false positive: a different picture",
            incident="abc123",
        )
    _reload(inspector)
    verdict = inspector.evaluate(innocent, STUDENT)
    inspector.record(verdict)
    assert not verdict.blocked
    assert verdict.findings.exempted == ("bank:incident-7",)
    assert _exempted_records(inspector)[-1] == ["bank:incident-7"]
    # Narrow on purpose: another encoding of the picture is another file, judged afresh.
    assert inspector.evaluate(encode(photo, "JPEG", quality=70), STUDENT).blocked


def test_an_exemption_for_one_bank_leaves_the_other_banks_counting(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    photo = benign_photos["rocket"]
    data = encode(photo, "PNG")
    with BankStore(inspector.config.banks.path) as store:
        _bank_pdq(store, "local", photo)
        _bank_pdq(store, "partner", photo)
        Exemptions(store).add(exact_hashes(data).sha256, BANK, "local", added_by="d", reason="r")
    _reload(inspector)
    verdict = inspector.evaluate(data, STUDENT)
    assert verdict.blocked
    assert {m.bank for m in verdict.matches} == {"partner"}
    assert verdict.findings.exempted == ("bank:local",)


def test_a_model_exemption_takes_the_flag_out_for_that_file_only(
    data_dir: Path, tmp_path: Path
) -> None:
    config = _config()
    classifier = Classifier([pattern_model_spec(make_pattern_model(tmp_path / "p.onnx"))])
    store = BankStore(config.banks.path)
    inspector = Inspector(config, store, classifier, audit=None)
    try:
        flagged = encode(pattern_image(), "PNG")
        other = encode(pattern_image((80, 80)), "PNG")
        assert inspector.evaluate(flagged, STUDENT).blocked
        Exemptions(store).add(exact_hashes(flagged).sha256, MODEL, "pattern", added_by="d",
                              reason="reviewed")  # fmt: skip
        _reload(inspector)
        verdict = inspector.evaluate(flagged, STUDENT)
        assert not verdict.blocked
        assert verdict.findings.exempted == ("model:pattern",)
        assert verdict.findings.scores[0].scores  # the scores are still audited
        assert inspector.evaluate(other, STUDENT).blocked
    finally:
        inspector.close()


def test_exemptions_are_listed_replaced_and_removed(data_dir: Path) -> None:
    with BankStore(_config().banks.path) as store:
        exemptions = Exemptions(store)
        sha = "AB" * 32
        exemptions.add(sha, BANK, "b", added_by="first", reason="one")
        exemptions.add(sha, BANK, "b", added_by="second", reason="two", incident="i1")
        (only,) = exemptions.list()
        assert (only.sha256, only.added_by, only.incident, only.label) == (
            sha.lower(), "second", "i1", "bank:b")  # fmt: skip
        assert exemptions.snapshot().of(sha.lower()) == {"bank:b"}
        assert exemptions.remove(sha, BANK, "b")
        assert not exemptions.remove(sha, BANK, "b")
        assert len(exemptions.snapshot()) == 0


@pytest.mark.parametrize(
    ("sha", "kind", "source", "reason", "problem"),
    [
        ("12" * 31, BANK, "b", "r", "not a SHA-256"),
        ("12" * 32, "hash", "b", "r", "unknown exemption kind"),
        ("12" * 32, BANK, " ", "r", "names the bank or model"),
        ("12" * 32, BANK, "b", " ", "who decided it and why"),
    ],
)
def test_a_bad_exemption_is_refused_with_a_clear_error(
    data_dir: Path, sha: str, kind: str, source: str, reason: str, problem: str
) -> None:
    with BankStore(_config().banks.path) as store, pytest.raises(BankError, match=problem):
        Exemptions(store).add(sha, kind, source, added_by="d", reason=reason)
