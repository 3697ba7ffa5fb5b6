"""The `limits:` configuration section: caps applied before any media is decoded."""

from __future__ import annotations

from schoolgate.config_reader import Node
from schoolgate.media.decode import MediaLimits, VideoLimits


def parse_limits(node: Node) -> MediaLimits:
    node.mapping(allowed={"max_bytes", "max_pixels", "max_frames", "video"})
    defaults = MediaLimits()
    return MediaLimits(
        max_bytes=node.child("max_bytes").integer(defaults.max_bytes, minimum=1),
        max_pixels=node.child("max_pixels").integer(defaults.max_pixels, minimum=1),
        max_frames=node.child("max_frames").integer(defaults.max_frames, minimum=1),
        video=_video_limits(node.child("video")),
    )


def _video_limits(node: Node) -> VideoLimits:
    node.mapping(
        allowed={
            "max_duration_s",
            "max_pixels",
            "max_side",
            "max_decoded_frames",
            "max_sampled_frames",
            "time_budget_s",
            "time_budget_per_minute_s",
            "seconds_per_hash",
            "decode_threads",
        }
    )
    d = VideoLimits()
    return VideoLimits(
        max_duration_s=node.child("max_duration_s").number(d.max_duration_s, minimum=1),
        max_pixels=node.child("max_pixels").integer(d.max_pixels, minimum=1),
        max_side=node.child("max_side").integer(d.max_side, minimum=16),
        max_decoded_frames=node.child("max_decoded_frames").integer(
            d.max_decoded_frames, minimum=1
        ),
        max_sampled_frames=node.child("max_sampled_frames").integer(
            d.max_sampled_frames, minimum=1
        ),
        time_budget_s=node.child("time_budget_s").number(d.time_budget_s, minimum=0.1),
        time_budget_per_minute_s=node.child("time_budget_per_minute_s").number(
            d.time_budget_per_minute_s, minimum=0, maximum=60
        ),
        seconds_per_hash=node.child("seconds_per_hash").number(
            d.seconds_per_hash, minimum=0.04, maximum=60
        ),
        decode_threads=node.child("decode_threads").integer(
            d.decode_threads, minimum=1, maximum=16
        ),
    )
