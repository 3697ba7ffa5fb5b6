"""Video hashing and matching: a 30 s 720p H.264 clip hashed as the proxy and as banking do, and
one upload matched against banks of 1,000 and 10,000 videos.

The clip is synthetic and benign (tests/video_fixtures: soft colour fields, moving shapes,
caption, noise), encoded like phone video (H.264 high profile with B-frames, 30 fps, a key frame
every second) and cached under build/. Baselines in the same run: decoding every frame without
hashing, and hashing every sampled frame at full resolution instead of 512 px.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pdqhash

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.matching.video import VideoMatcher
from schoolgate.media.decode import VideoLimits
from schoolgate.media.video import VideoHasher, VideoHashes
from tests.support import video_edits as ve
from tests.support import video_fixtures as vf

Figure = dict[str, Any]

CACHE = Path(__file__).resolve().parent.parent / "build" / "bench-video-720p-30s.mp4"
SECONDS, FPS, SIZE = 30, 30, (1280, 720)
FRAMES_PER_BANKED_VIDEO = 60  # a one-minute clip at 1 frame per second
RUNS = 3
MATCH_QUERIES = 20


def _clip() -> bytes:
    if CACHE.is_file():
        return CACHE.read_bytes()
    clip = vf.scene_frames(seed=7, seconds=SECONDS, fps=FPS, size=SIZE, scene_seconds=3.0)
    data = vf.encode(
        clip.frames,
        FPS,
        "libx264",
        crf=23,
        gop=FPS,
        options={"preset": "veryfast", "profile": "high"},
    )
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_bytes(data)
    return data


def _median_s(fn: Callable[[], object], runs: int = RUNS) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), min(samples)


def _decode_only(data: bytes) -> int:
    import io

    import av

    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = 2
        return sum(1 for _ in container.decode(stream))


def _full_resolution_distance(data: bytes, banked: VideoHashes) -> tuple[float, int]:
    """Mean / max bits between 512 px hashes and full-resolution hashes of the same frames."""
    import io

    import av

    wanted = {f.frame for f in banked.features}
    by_frame = {f.frame: f.hex for f in banked.features}
    distances = []
    with av.open(io.BytesIO(data), "r") as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                bits, _ = pdqhash.compute(frame.to_ndarray(format="rgb24"))
                full = bytes(np.packbits(bits.astype(np.uint8))).hex()
                distances.append((int(full, 16) ^ int(by_frame[index], 16)).bit_count())
    return statistics.fmean(distances), max(distances)


def _bank(path: Path, videos: int, clip: VideoHashes) -> VideoMatcher:
    rng = random.Random(videos)
    with BankStore(path) as store:
        store.create_bank("bench")

        def signals() -> Any:
            for video in range(videos - 1):
                for frame in range(FRAMES_PER_BANKED_VIDEO):
                    yield SignalInput(
                        SignalType.VPDQ, rng.randbytes(32).hex(), 90, "", f"v{video}",
                        frame, float(frame),
                    )  # fmt: skip
            for f in clip.features:
                yield SignalInput(
                    SignalType.VPDQ, f.hex, f.quality, "", "incident", f.frame, f.timestamp
                )

        store.add_signals("bench", signals(), source="bench")
        return VideoMatcher.from_store(store)


def run() -> list[Figure]:
    os.environ.setdefault("SVT_LOG", "1")
    data = _clip()
    limits = VideoLimits(time_budget_s=600)
    proxy = VideoHasher(limits, fast=True, variants=True, samples_per_hash=4, keep=16)
    banking = VideoHasher(limits)
    figures: list[Figure] = []

    cpu_started = time.process_time()
    proxy_s, proxy_min = _median_s(lambda: proxy.hash(data))
    proxy_cpu = (time.process_time() - cpu_started) / RUNS
    figures.append(
        {
            "name": "video.hash_30s_720p_h264.proxy",
            "value": round(proxy_s, 2),
            "unit": "s",
            "target": "< 3 s",
            "met": proxy_s < 3.0,
            "note": f"median of {RUNS} (min {proxy_min:.2f} s): B-frames skipped, 4 samples/s,"
            " bar/rotation variants, 16 frames kept for the classifier",
        }
    )
    figures.append(
        {
            "name": "video.hash_30s_720p_h264.proxy_cpu",
            "value": round(proxy_cpu, 2),
            "unit": "CPU s",
            "note": "process CPU time per hash (all threads): the wall time on 2 idle cores is"
            " about this / 1.5-2; the wall figure above includes other work on a shared box",
        }
    )
    # What the engine adds for the image bank and the frame variants (StillQuery per frame).
    stills = VideoHasher(limits, fast=True, variants=True, samples_per_hash=4, keep=16, stills=True)
    cpu_started = time.process_time()
    stills_s, _ = _median_s(lambda: stills.hash(data))
    stills_cpu = (time.process_time() - cpu_started) / RUNS
    figures.append(
        {
            "name": "video.hash_30s_720p_h264.proxy_with_stills_cpu",
            "value": round(stills_cpu, 2),
            "unit": "CPU s",
            "note": f"as the engine hashes an upload now: + per-frame dihedral PDQ of the frame and"
            f" its content boxes (image bank; content-box and mirror vPDQ variants); wall "
            f"{stills_s:.2f} s; without: {proxy_cpu:.2f} CPU s",
        }
    )
    figures.extend(_edit_recall())
    banking_s, _ = _median_s(lambda: banking.hash(data))
    figures.append(
        {
            "name": "video.hash_30s_720p_h264.banking",
            "value": round(banking_s, 2),
            "unit": "s",
            "note": "every frame decoded, 1 sample/s (hashes add, compute --format vpdq)",
        }
    )
    decode_s, _ = _median_s(lambda: _decode_only(data))
    figures.append(
        {
            "name": "video.hash_30s_720p_h264.baseline_decode_every_frame",
            "value": round(decode_s, 2),
            "unit": "s",
            "note": "decoding alone, all 900 frames, no hashing",
        }
    )
    banked = banking.hash(data)
    mean_bits, max_bits = _full_resolution_distance(data, banked)
    figures.append(
        {
            "name": "video.pdq_512px_vs_full_resolution_bits",
            "value": round(mean_bits, 1),
            "unit": "bits (mean)",
            "note": f"max {max_bits}; the reference vpdq hashes full-resolution frames",
        }
    )

    query = proxy.hash(data).features
    for videos in (1_000, 10_000):
        path = CACHE.parent / f"bench-video-bank-{videos}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        started = time.perf_counter()
        matcher = _bank(path, videos, banked)
        build_s = time.perf_counter() - started
        assert [m.value for m in matcher.match(query)] == ["incident"]
        samples = []
        for _ in range(MATCH_QUERIES):
            t0 = time.perf_counter()
            matcher.match(query)
            samples.append((time.perf_counter() - t0) * 1000)
        ordered = sorted(samples)
        figures.append(
            {
                "name": f"video.match_ms.bank_{videos}_videos",
                "value": round(statistics.median(samples), 1),
                "unit": "ms (p50)",
                "note": f"p95 {ordered[round(0.95 * (len(ordered) - 1))]:.1f} ms; "
                f"{matcher.frames:,} bank frames; query {len(query)} frames (30 s at 4/s); "
                f"import + index build {build_s:.1f} s",
            }
        )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return figures


EDIT_CLIPS = (11, 12, 13, 14, 15, 16)  # banked; seeds 31.. are the unrelated uploads
VPDQ_EDITS: dict[str, vf.Transform] = {
    "screen_recording": ve.screen_recording(),
    "screen_recording_grey_offset": ve.screen_recording(37, (18, 18, 18)),
    "mirrored": ve.mirrored,
    "mirrored_screen_recording": lambda c: ve.screen_recording()(ve.mirrored(c)),
    "trimmed_1.3_1.7": vf.trimmed(1.3, 1.7),
}
ROBUST_EDITS: dict[str, vf.Transform] = {
    "caption": ve.captioned(),
    "screen_recording_caption": lambda c: ve.screen_recording()(ve.captioned()(c)),
    "trimmed_caption": lambda c: ve.captioned()(vf.trimmed(1.5, 0.5)(c)),
}


def _edit_recall() -> list[Figure]:
    """Share of edited copies of banked synthetic clips that match (vPDQ with the frame variants
    for re-framing, mirroring and trimming; the robust tier's key frames for captions), and
    unrelated clips given the same edits that match anything."""
    from schoolgate.matching.key_frames import KeyFrameEvidence
    from schoolgate.matching.robust import IndexLimits, RobustEntry, RobustIndex, RobustThresholds
    from schoolgate.matching.robust_tier import to_bank_match
    from schoolgate.media.features import extract_features
    from schoolgate.media.signals import bank_feature_views, query_feature_views

    limits = VideoLimits(time_budget_s=600)
    banking = VideoHasher(limits, key_frames=8)
    proxy = VideoHasher(
        limits, fast=True, variants=True, samples_per_hash=4, stills=True, key_frames=8
    )
    path = CACHE.parent / "bench-video-edits.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = BankStore(path)
    store.ensure_bank("incident")
    entries: list[RobustEntry] = []
    soft = {seed: vf.scene_frames(seed=seed, seconds=8) for seed in EDIT_CLIPS}
    textured = {seed: ve.panning_frames(seed=seed) for seed in EDIT_CLIPS}
    for seed in EDIT_CLIPS:
        for kind, clip in (("soft", soft[seed]), ("textured", textured[seed])):
            hashes = banking.hash(vf.encode(clip.frames, clip.fps))
            content_id = f"{kind}-{seed}"
            store.add_signals(
                "incident",
                [
                    SignalInput(SignalType.VPDQ, f.hex, f.quality, content_id=content_id,
                                frame=f.frame, timestamp=f.timestamp)
                    for f in hashes.features
                ],
                source="bench",
            )  # fmt: skip
            for frame in hashes.key_frames:
                for name, features in bank_feature_views(frame.image()):
                    view = f"frame{frame.frame}:{name}"  # as `hashes add` names it
                    entries.append(RobustEntry.of_view("incident", content_id, "", view, features))
    matcher = VideoMatcher.from_store(store)
    store.close()
    index = RobustIndex(entries, {}, RobustThresholds(), IndexLimits())

    def vpdq_hit(clip: vf.Clip) -> set[str]:
        return {m.value for m in matcher.match(proxy.hash(vf.encode(clip.frames, 15)).features)}

    def robust_hit(clip: vf.Clip) -> set[str]:
        """As the engine judges key frames (`KeyFrameEvidence`): one view's hits per frame."""
        query = proxy.hash(vf.encode(clip.frames, 15))
        evidence = KeyFrameEvidence(
            len(query.key_frames), partial(matcher.frames_shown, query.features)
        )
        for frame in query.key_frames:
            for view in query_feature_views(frame.image()):
                hits = index.match(extract_features(view))
                if hits:
                    found = evidence.add(frame, [to_bank_match(hit) for hit in hits])
                    if found:
                        return {str(found[0].value)}
                    break
        return set()

    figures: list[Figure] = []
    edits = {**VPDQ_EDITS, **ROBUST_EDITS}
    for kind, clips in (("soft", soft), ("textured", textured)):
        for name, edit in edits.items():
            by_vpdq = by_robust = either = 0
            for seed, clip in clips.items():
                copy = edit(clip)
                vpdq = vpdq_hit(copy) == {f"{kind}-{seed}"}
                robust = robust_hit(copy) == {f"{kind}-{seed}"}
                by_vpdq += vpdq
                by_robust += robust
                either += vpdq or robust
            figures.append(
                {
                    "name": f"video.edit_recall.{kind}.{name}",
                    "value": round(100 * either / len(clips), 1),
                    "unit": "%",
                    "note": f"{either}/{len(clips)} copies match their banked clip (vPDQ with "
                    f"frame variants: {by_vpdq}; robust tier on 8 key frames: {by_robust})",
                }
            )
    false = total = 0
    for seed in (31, 32, 33):
        for clip in (vf.scene_frames(seed=seed, seconds=8), ve.panning_frames(seed=seed)):
            for edit in (*VPDQ_EDITS.values(), *ROBUST_EDITS.values()):
                copy = edit(clip)
                total += 1
                false += bool(vpdq_hit(copy) or robust_hit(copy))
    figures.append(
        {
            "name": "video.edit_recall.unrelated_matched",
            "value": false,
            "unit": f"of {total}",
            "note": "unrelated clips (3 soft, 3 textured) under every edit above that matched "
            "any banked clip (vPDQ or key frames)",
        }
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return figures
