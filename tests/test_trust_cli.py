"""`schoolgate banks keygen | publish | sync | subscriptions` as a trust's IT runs them: the
central box publishes a banked picture's hashes, a gateway subscribed to it blocks the picture."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import encode
from tests.test_cli_scan import NO_MODELS, schoolgate


def test_a_picture_banked_centrally_is_blocked_on_a_subscribed_gateway(
    tmp_path: Path, data_dir: Path, benign_photos: dict[str, Image.Image]
) -> None:
    picture = tmp_path / "incident.jpg"
    picture.write_bytes(encode(benign_photos["coffee"], "JPEG", quality=90))
    central = tmp_path / "central.yaml"
    central.write_text(NO_MODELS + f"banks:\n  path: {tmp_path / 'central.sqlite'}\n")
    made = schoolgate("banks", "keygen", str(tmp_path / "keys"))
    assert made.returncode == 0, made.stderr
    public_key = made.stdout.split("public_key: ")[1].strip()
    assert (tmp_path / "keys" / "publisher.key").stat().st_mode & 0o777 == 0o600
    again = schoolgate("banks", "keygen", str(tmp_path / "keys"))
    assert again.returncode == 2
    assert "would orphan" in again.stderr

    added = schoolgate("hashes", "add", str(picture), "--bank", "trust-incidents", config=central)
    assert added.returncode == 0, added.stderr
    out = tmp_path / "www"
    published = schoolgate("banks", "publish", "trust-incidents", "--key",
                           str(tmp_path / "keys" / "publisher.key"), "--out", str(out),
                           "--publisher", "Test Trust", "--note", "incident 42",
                           "--channel", "trust", config=central)  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert "published version" in published.stdout

    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(
        NO_MODELS + f"banks:\n  path: {tmp_path / 'gateway.sqlite'}\n  subscriptions:\n"
        f"    - name: trust\n      url: file://{out}/\n      public_key: {public_key}\n"
        "      channel: trust\n"
    )
    assert schoolgate("scan", str(picture), config=gateway).returncode == 0  # not yet
    synced = schoolgate("banks", "sync", config=gateway)
    assert synced.returncode == 0, synced.stderr
    assert "trust: updated" in synced.stdout
    scanned = schoolgate("scan", "--json", str(picture), config=gateway)
    assert scanned.returncode == 1  # blocked
    matches = json.loads(scanned.stdout)["matches"]
    assert matches
    # every match says where the shared bank came from: publisher, day, why
    assert {m["provenance"] for m in matches} == {f"Test Trust, {date.today()}: incident 42"}
    state = json.loads(schoolgate("banks", "subscriptions", "--json", config=gateway).stdout)
    assert state["banks"] == ["trust-incidents"]
    assert state["refusals"] == {}
    assert state["channel"] == "trust"

    # a publication signed by another key, at the same address: refused, the banks stay
    other = tmp_path / "other.yaml"
    other.write_text(gateway.read_text().replace(public_key, public_key[:-6] + "AAAAA="))
    refused = schoolgate("banks", "sync", config=other)
    assert refused.returncode == 2
    assert "refused" in refused.stdout
    assert schoolgate("scan", str(picture), config=gateway).returncode == 1


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("url: http://trust.example/\n      public_key: KEY\n      channel: t", "https://"),
        (
            "url: https://trust.example/\n      public_key: nokey\n      channel: t",
            "not a publisher key",
        ),
        ("url: https://trust.example/\n      public_key: KEY", "banks.subscriptions[0].channel"),
        ("url: https://trust.example/", "banks.subscriptions[0].public_key"),
    ],
)
def test_a_broken_subscription_is_a_clear_configuration_error(
    tmp_path: Path, data_dir: Path, entry: str, problem: str
) -> None:
    key = "ed25519:" + "A" * 43 + "="
    config = tmp_path / "gateway.yaml"
    config.write_text(f"banks:\n  subscriptions:\n    - name: trust\n      "
                      f"{entry.replace('KEY', key)}\n")  # fmt: skip
    checked = schoolgate("check-config", str(config), config=config)
    assert checked.returncode == 2
    assert problem in checked.stderr
