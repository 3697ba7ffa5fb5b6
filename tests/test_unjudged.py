"""An item no worker could judge (overload, a timeout) still gets its exact findings: its digests
go into the audit, and a banked file itself is a match (adversarial pass a60 F3: a banked photo
in a pupil's burst of videos was refused as `overload`, audited with no hashes and never
alerted; a group with `overload: allow` would have let it through)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from schoolgate.addons.pool import InspectTimeout, Overloaded
from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.pipeline.verdict import InspectionContext
from tests.support.imagery import encode, skimage_photo
from tests.test_addons_inprocess import catalog_upload_addon

CTX = InspectionContext(client_ip="192.0.2.44", app="discord", host="discord.com")


REFUSALS = [Overloaded("no worker was free within 60 s"), InspectTimeout("took over 15 s")]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_banked_file_no_worker_could_judge_is_still_a_match(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    banked = encode(skimage_photo("astronaut"), "JPEG", quality=90)
    other = encode(skimage_photo("coffee"), "JPEG", quality=90)
    with BankStore(data_dir / "banks.sqlite") as store:
        store.ensure_bank("incident-exact")
        digest = hashlib.sha256(banked).hexdigest()
        store.add_signals("incident-exact", [SignalInput(SignalType.SHA256, digest)], source="test")
    with catalog_upload_addon(data_dir, tmp_path, None) as inspector:
        runtime = inspector.ref.get()

        async def refuse(*args: object, **kwargs: object) -> None:
            raise refusal

        monkeypatch.setattr(runtime.pool, "run", refuse)
        matched = asyncio.run(runtime.judge(banked, CTX))
        unjudged = asyncio.run(runtime.judge(other, CTX))
    failure = "overload" if isinstance(refusal, Overloaded) else "timeout"
    assert matched.blocked
    assert [m.bank for m in matched.findings.matches] == ["incident-exact"]
    assert matched.findings.failure == failure
    assert matched.findings.hashes["sha256"] == digest
    assert any(reason.startswith("bank incident-exact: sha256 match") for reason in matched.reasons)
    # Another file is refused by the fail policy, its digests recorded for the DSL.
    assert unjudged.blocked
    assert unjudged.findings.matches == ()
    assert unjudged.findings.failure == failure
    assert unjudged.findings.hashes["sha256"] == hashlib.sha256(other).hexdigest()
    assert unjudged.findings.size == len(other)


def test_videos_are_judged_in_the_pools_heavy_slots(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Videos run a few at a time (as many as the cores their decoders need: a60 F4)."""
    from tests.support import video_fixtures as vf

    clip = vf.encode(vf.scene_frames(seed=71, seconds=1).frames, 10)
    photo = encode(skimage_photo("coffee"), "JPEG", quality=90)
    asked: list[bool] = []
    with catalog_upload_addon(data_dir, tmp_path, None) as inspector:
        runtime = inspector.ref.get()
        assert runtime.pool.heavy_slots >= 1
        real_run = runtime.pool.run

        async def run(
            fn: Callable[..., object], *args: object, key: str = "", heavy: bool = False
        ) -> object:
            asked.append(heavy)
            return await real_run(fn, *args, key=key, heavy=heavy)

        monkeypatch.setattr(runtime.pool, "run", run)
        asyncio.run(runtime.judge(clip, CTX))
        asyncio.run(runtime.judge(photo, CTX))
    assert asked == [True, False]
