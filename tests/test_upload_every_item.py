"""Several banked pictures in one upload: each is judged, audited and alerted on its own
(adversarial pass a38 A21 asked whether a pupil who zips this school's incident picture with a
trust one chooses which of them the DSL hears about; the receivers' logs showed one alert per
picture, and this keeps it so)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.test import taddons
from PIL import Image

from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.addons.uploads import UploadInspector
from schoolgate.alerts.outbox import AlertOutbox
from schoolgate.config import load_config
from tests.conftest import encode
from tests.support.proxy_harness import (
    MEDIA_HOST,
    bank_photo,
    make_upstream_pki,
    write_config,
)
from tests.test_addons_inprocess import audit_decisions, run_upload, upload_flow


@pytest.fixture
def ref(
    data_dir: Path, tmp_path: Path, benign_photos: dict[str, Image.Image]
) -> Iterator[RuntimeRef]:
    """Two banks, as at a subscribed school: its own incident bank and the trust's."""
    bank_photo(data_dir, benign_photos["chelsea"], bank="incidents")
    bank_photo(data_dir, benign_photos["astronaut"], bank="trust-incidents")
    config = write_config(
        tmp_path, 8080, make_upstream_pki(tmp_path / "pki"), proxy={"max_held_body_bytes": 4 << 20}
    )
    runtime = Runtime.from_config(load_config(config))
    try:
        yield RuntimeRef(runtime)
    finally:
        runtime.close()


def _photos(benign_photos: dict[str, Image.Image]) -> dict[str, bytes]:
    return {name: encode(benign_photos[name], "JPEG", quality=90)
            for name in ("rocket", "chelsea", "astronaut")}  # fmt: skip


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("order", [("rocket", "chelsea", "astronaut"), ("astronaut", "chelsea")])
def test_every_banked_picture_in_a_zip_is_audited_and_alerted(
    ref: RuntimeRef,
    data_dir: Path,
    benign_photos: dict[str, Image.Image],
    order: tuple[str, ...],
) -> None:
    photos = _photos(benign_photos)
    body = _zip([(f"p{n}.jpg", photos[name]) for n, name in enumerate(order)])
    addon = UploadInspector(ref)
    with taddons.context(addon):
        flow = upload_flow(MEDIA_HOST, "/upload/raw/album.zip", body)
        run_upload(addon, flow)
    assert flow.response is not None
    assert flow.response.status_code == 403
    blocked = {
        r["client"]["locator"]: {m["bank"] for m in r["matches"]}
        for r in audit_decisions(data_dir)
        if r["decision"] == "block"
    }
    where = {name: f"body/zip:p{n}.jpg" for n, name in enumerate(order)}
    assert blocked == {where["chelsea"]: {"incidents"}, where["astronaut"]: {"trust-incidents"}}
    with AlertOutbox(ref.get().config.alerts.outbox) as outbox:
        alerted = {a.details.locator: {m.bank for m in a.details.matches} for a in outbox.list()}
    assert alerted == blocked


def test_every_banked_part_of_a_multipart_upload_is_alerted(
    ref: RuntimeRef, benign_photos: dict[str, Image.Image]
) -> None:
    photos = _photos(benign_photos)
    boundary = "----a38-A21b"
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"'
            f"\r\nContent-Type: image/jpeg\r\n\r\n".encode()
            + photos[photo]
            + b"\r\n"
            for name, photo in (("a", "chelsea"), ("b", "astronaut"))
        )
        + f"--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    addon = UploadInspector(ref)
    with taddons.context(addon):
        flow = upload_flow(MEDIA_HOST, "/upload/multipart", body, method="POST",
                           content_type=content_type)  # fmt: skip
        run_upload(addon, flow)
    assert flow.response is not None
    assert flow.response.status_code == 403
    with AlertOutbox(ref.get().config.alerts.outbox) as outbox:
        banks = sorted(m.bank for a in outbox.list() for m in a.details.matches[:1])
    assert banks == ["incidents", "trust-incidents"]
