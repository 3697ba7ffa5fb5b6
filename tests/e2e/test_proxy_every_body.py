"""Issue 16 through the real proxy: every body sent to an intercepted host is judged by what it
holds, whatever its route, method or shape, and a chat message is never blocked for its shape.

Ground truth is what the upstream received (never what the proxy says): a banked picture must
not arrive in any form, a benign body must arrive byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.conftest import encode
from tests.support.hostile_stack import (
    HostileStack,
    build_stack,
    raw_exchange,
    statuses,
    stop_stack,
)
from tests.support.proxy_harness import CDN_HOST, multipart_body
from tests.support.stack import needs_private_hosts

pytestmark = [pytest.mark.slow, needs_private_hosts]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[HostileStack]:
    running = build_stack(
        tmp_path_factory.mktemp("every"), benign_photos["chelsea"], benign_photos["astronaut"]
    )
    try:
        yield running
    finally:
        stop_stack(running)


def banned(stack: HostileStack, tag: str) -> bytes:
    """The banked picture re-encoded with a unique comment: no two cases share an exact hash."""
    return encode(stack.banned_photo, "JPEG", quality=90, comment=tag.encode())


def delivered(stack: HostileStack, body: bytes) -> bool:
    """Whether the upstream received exactly this body, on any path."""
    digest = hashlib.sha256(body).hexdigest()
    return any(r.sha256 == digest for r in stack.upstream.upstream.requests())


def send(stack: HostileStack, method: str, path: str, body: bytes, **headers: str) -> int:
    with stack.client() as client:
        response = client.request(method, stack.url(path), content=body, headers=headers)
    return response.status_code


# --- Routes the catalog does not list --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/api/channels/1/messages", {}),  # an unversioned API path
        ("PATCH", "/api/v9/webhooks/1/t/messages/2", {}),  # a documented PATCH with files
        ("PUT", "/drive/v2/files/abc", {}),  # another API version
        ("POST", "/anything", {"X-HTTP-Method-Override": "PUT"}),
        ("DELETE", "/upload/raw/a.jpg", {}),  # a method with a body nobody expects
        ("GET", "/upload/raw/a.jpg", {}),  # GET with a body
    ],
)
def test_a_banked_picture_on_an_unlisted_route_is_blocked(
    stack: HostileStack, method: str, path: str, headers: dict[str, str]
) -> None:
    photo = banned(stack, f"{method} {path}")
    body, content_type = multipart_body("files[0]", "a.jpg", photo, "image/jpeg")
    status = send(stack, method, path, body, **{"Content-Type": content_type, **headers})
    assert status == 403
    assert not delivered(stack, body)


def test_benign_api_calls_on_unlisted_routes_pass_untouched(stack: HostileStack) -> None:
    message = json.dumps({"content": "see you at lunch, bring the homework", "tts": False}).encode()
    photo = encode(stack.benign_photo, "JPEG", quality=85)
    form, content_type = multipart_body("files[0]", "cat.jpg", photo, "image/jpeg")
    assert send(stack, "POST", "/api/v9/channels/1/messages", message) == 200
    assert send(stack, "PATCH", "/settings", b"theme=dark&lang=en") == 200
    assert (
        send(stack, "POST", "/api/channels/1/messages", form, **{"Content-Type": content_type})
        == 200
    )
    assert delivered(stack, message)
    assert delivered(stack, form)


# --- Bodies that are not what their route expects -------------------------------------------------


def test_a_chat_message_on_a_multipart_route_is_not_blocked(stack: HostileStack) -> None:
    """Discord's web client posts JSON on the route its uploads use: it was refused as
    malformed multipart, so every chat message was blocked."""
    message = json.dumps({"content": "hello from the library", "nonce": "1234"}).encode()
    status = send(
        stack, "POST", "/upload/multipart", message, **{"Content-Type": "application/json"}
    )
    assert status == 200
    assert delivered(stack, message)


def test_a_decoy_before_the_first_boundary_hides_nothing(stack: HostileStack) -> None:
    """On `body: auto` routes a benign JPEG before the first boundary was judged as the whole
    body and the parts never opened; servers ignore the preamble."""
    photo = banned(stack, "decoy")
    decoy = encode(stack.benign_photo, "JPEG", quality=70)
    body, content_type = multipart_body("file", "a.jpg", photo, "image/jpeg")
    body = decoy + b"\r\n" + body
    assert send(stack, "POST", "/upload/auto", body, **{"Content-Type": content_type}) == 403
    assert not delivered(stack, body)


def test_x_simple_upload_on_the_chunked_route_is_judged(stack: HostileStack) -> None:
    """X's one-request upload: `media` with no `command`, on the route of its chunked protocol."""
    photo = banned(stack, "x simple")
    body, content_type = multipart_body("media", "blob", photo, "application/octet-stream")
    assert send(stack, "POST", "/upload/x", body, **{"Content-Type": content_type}) == 403
    assert not delivered(stack, body)
    encoded = b"media_data=" + base64.b64encode(photo).replace(b"+", b"%2B")
    form_type = "application/x-www-form-urlencoded"
    assert send(stack, "POST", "/upload/x", encoded, **{"Content-Type": form_type}) == 403


# --- Upload protocols ---------------------------------------------------------------------------


def dropbox(stack: HostileStack, step: str, arg: dict[str, object], body: bytes) -> tuple[int, str]:
    with stack.client() as client:
        response = client.post(
            stack.url(f"/2/files/upload_session/{step}"),
            content=body,
            headers={
                "Dropbox-API-Arg": json.dumps(arg),
                "Content-Type": "application/octet-stream",
            },
        )
    session = response.json().get("session_id", "") if response.status_code == 200 else ""
    return response.status_code, session


def test_dropbox_whole_file_in_start_is_judged_at_once(stack: HostileStack) -> None:
    """The service keeps what a start carries, and the finish may come from the phone's own
    data (a49 F7): a start holding the whole banked picture is refused itself. A start holding
    only its first bytes is forwarded, and the finish that completes it is judged whole (the
    session id comes in start's reply; once unused, an empty finish committed it unjudged)."""
    photo = banned(stack, "dropbox whole")
    assert dropbox(stack, "start", {"close": False}, photo)[0] == 403
    status, session = dropbox(stack, "start", {"close": False}, photo[:2000])
    assert (status, bool(session)) == (200, True)  # a first part alone is not the file
    cursor = {"cursor": {"session_id": session, "offset": 2000}, "commit": {"path": "/a.jpg"}}
    assert dropbox(stack, "finish", cursor, photo[2000:])[0] == 403  # the commit is refused


def test_two_dropbox_uploads_from_one_device_are_not_confused(stack: HostileStack) -> None:
    """Every start once shared one key, so a second upload conflicted with the first: blocked."""
    first = encode(stack.benign_photo, "JPEG", quality=81)
    second = encode(stack.benign_photo, "JPEG", quality=71)
    status_a, session_a = dropbox(stack, "start", {"close": False}, first[:2000])
    status_b, session_b = dropbox(stack, "start", {"close": False}, second[:2000])
    assert (status_a, status_b) == (200, 200)
    for session, data in ((session_a, first), (session_b, second)):
        arg = {"cursor": {"session_id": session, "offset": 2000}, "commit": {"path": "/b.jpg"}}
        assert dropbox(stack, "finish", arg, data[2000:])[0] == 200


def test_dropbox_batch_finish_judges_every_session_it_commits(stack: HostileStack) -> None:
    """upload_session/start with close=true, then one finish_batch_v2 for several files (the
    SDKs' way to upload many): the batch was refused as an unknown step, innocent or not
    (adversarial pass, issue 16). Each committed session is judged whole."""
    benign = encode(stack.benign_photo, "JPEG", quality=77)
    photo = banned(stack, "dropbox batch")
    assert dropbox(stack, "start", {"close": True}, photo)[0] == 403  # judged at once (a49 F7)
    sessions = []
    # The banked file's first bytes only, left open: the batch commits them as the whole file,
    # which is then judged (a cut-off picture: the fail policy refuses it).
    for data, close in ((benign, True), (photo[:2000], False)):
        status, session = dropbox(stack, "start", {"close": close}, data)
        assert (status, bool(session)) == (200, True)
        sessions.append((session, len(data)))

    def batch(*chosen: tuple[str, int]) -> int:
        entries = [
            {"cursor": {"session_id": sid, "offset": size}, "commit": {"path": f"/{sid}.jpg"}}
            for sid, size in chosen
        ]
        with stack.client() as client:
            response = client.post(
                stack.url("/2/files/upload_session/finish_batch_v2"), json={"entries": entries}
            )
        return response.status_code

    assert batch(sessions[0]) == 200  # the innocent photo alone is committed
    assert batch(*sessions) == 403  # a batch with the banked one is refused whole


def test_dropbox_arguments_in_the_url_are_read(stack: HostileStack) -> None:
    """Dropbox takes the arguments in an `arg` URL parameter as well as in the header."""
    photo = banned(stack, "dropbox arg")
    benign = encode(stack.benign_photo, "JPEG", quality=73)
    results: list[tuple[int, int | None]] = []
    for data in (benign, photo):
        with stack.client() as client:
            start = client.post(
                stack.url("/2/files/upload_session/start"),
                params={"arg": json.dumps({"close": False})},
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            if start.status_code != 200:
                results.append((start.status_code, None))
                continue
            session = start.json()["session_id"]
            cursor = {"cursor": {"session_id": session, "offset": len(data)}, "commit": {}}
            finish = client.post(
                stack.url("/2/files/upload_session/finish"),
                params={"arg": json.dumps(cursor)},
                content=b"",
                headers={"Content-Type": "application/octet-stream"},
            )
        results.append((start.status_code, finish.status_code))
    # The banked picture whole in the start is refused there (a49 F7).
    assert results == [(200, 200), (403, None)]


def test_an_upload_spread_over_two_session_keys_is_refused(stack: HostileStack) -> None:
    """The server ignores a query parameter the gateway keyed the session on: the last chunk,
    under a key the gateway has no start for, completes a file nobody judged whole."""
    photo = banned(stack, "two keys")
    half = len(photo) // 2
    total = len(photo)
    with stack.client() as client:
        one = client.post(
            stack.url("/upload/chunked/p?attempt=1"),
            content=photo[:half],
            headers={"Content-Range": f"bytes 0-{half - 1}/{total}"},
        )
        two = client.post(
            stack.url("/upload/chunked/p?attempt=2"),
            content=photo[half:],
            headers={"Content-Range": f"bytes {half}-{total - 1}/{total}"},
        )
    assert (one.status_code, two.status_code) == (200, 403)
    assert stack.decisions()[-1]["failure"] == "refused"


# --- Containers and wrappings ------------------------------------------------------------------


def zipped(name: str, data: bytes, *extra: tuple[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, text in extra:
            archive.writestr(member, text)
        archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "wrap",
    [
        "zip",
        "docx",
        "svg",
        "junk_prefix",
        "base64_junk_char",
        "pdf",
        "octet_label",
    ],
)
def test_a_banked_picture_inside_a_container_is_blocked(stack: HostileStack, wrap: str) -> None:
    photo = banned(stack, wrap)
    text = base64.b64encode(photo)
    bodies: dict[str, tuple[bytes, str]] = {
        "zip": (zipped("holiday/IMG_0001.JPG", photo), "application/zip"),
        "docx": (
            zipped("word/media/image1.jpeg", photo, ("word/document.xml", "<w:document/>")),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        "svg": (
            b'<svg xmlns="http://www.w3.org/2000/svg"><image href="data:image/jpeg;base64,'
            + text
            + b'"/></svg>',
            "image/svg+xml",
        ),
        "junk_prefix": (os.urandom(29) + photo, "application/octet-stream"),
        "base64_junk_char": (
            json.dumps({"media_data": (text[:50] + b"!" + text[50:]).decode()}).encode(),
            "application/json",
        ),
        "pdf": (
            b"%PDF-1.4\n1 0 obj\n<< /Filter /DCTDecode >>\nstream\n"
            + photo
            + b"\nendstream\n%%EOF",
            "application/pdf",
        ),
        "octet_label": (photo, "text/plain"),
    }
    body, content_type = bodies[wrap]
    assert send(stack, "PUT", f"/files/{wrap}", body, **{"Content-Type": content_type}) == 403
    assert not delivered(stack, body)


def test_homework_documents_pass(stack: HostileStack) -> None:
    """A document is never blocked for being a document; its benign pictures are judged."""
    benign = encode(stack.benign_photo, "JPEG", quality=80)
    docx = zipped(
        "word/media/image1.jpeg", benign, ("word/document.xml", "<w:document>essay</w:document>")
    )
    pdf = b"%PDF-1.7\n" + b"BT /F1 12 Tf (My essay) Tj ET\n" * 200 + b"%%EOF\n"
    for body, content_type in ((docx, "application/msword"), (pdf, "application/pdf")):
        assert send(stack, "PUT", "/files/homework", body, **{"Content-Type": content_type}) == 200
        assert delivered(stack, body)


def test_bytes_sent_as_a_picture_in_a_format_we_cannot_read_are_not_analysed(
    stack: HostileStack,
) -> None:
    """JPEG XL (no decoder here): not_analysed, which blocks for students by default."""
    jxl = b"\xff\x0a" + os.urandom(4000)
    assert send(stack, "PUT", "/upload/raw/photo.jxl", jxl, **{"Content-Type": "image/jxl"}) == 403
    assert not delivered(stack, jxl)
    failures = [r.get("failure") for r in stack.decisions() if r["client"].get("route")]
    assert "not_analysed" in failures


# --- Downloads --------------------------------------------------------------------------------


def test_two_ranges_do_not_fetch_a_banked_picture_in_halves(stack: HostileStack) -> None:
    photo = banned(stack, "ranges")
    benign = encode(stack.benign_photo, "JPEG", quality=80)
    stack.upstream.upstream.files["ranged.jpg"] = photo
    stack.upstream.upstream.files["benign-ranged.jpg"] = benign
    half = len(photo) // 2
    with stack.client() as client:
        first = client.get(
            stack.url("/files/ranged.jpg", CDN_HOST), headers={"Range": f"bytes=0-{half - 1}"}
        )
        second = client.get(
            stack.url("/files/ranged.jpg", CDN_HOST), headers={"Range": f"bytes={half}-"}
        )
        fine = client.get(
            stack.url("/files/benign-ranged.jpg", CDN_HOST), headers={"Range": "bytes=100-199"}
        )
    assert (first.status_code, second.status_code) == (403, 403)
    assert photo[:half] not in first.content
    assert photo[half:] not in second.content
    # A benign object still answers the range the client asked for.
    assert fine.status_code == 206
    assert fine.headers["content-range"] == f"bytes 100-199/{len(benign)}"
    assert fine.content == benign[100:200]


def test_a_host_header_naming_another_site_does_not_unhold_the_body(stack: HostileStack) -> None:
    """On a connection intercepted for a catalogued name, a Host naming some other site made the
    body stream through unjudged (fronting: the server behind the shared edge routes by Host)."""
    photo = banned(stack, "fronted")
    head = (
        f"PUT /upload/raw/fronted.jpg HTTP/1.1\r\nHost: unlisted.example\r\n"
        f"Content-Length: {len(photo)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with stack.tls_socket() as sock:  # intercepted as the catalogued host
        reply = raw_exchange(sock, head + photo)
    assert statuses(reply) == [403]
    assert not delivered(stack, photo)


def test_a_cdn_download_under_another_host_header_is_still_judged(stack: HostileStack) -> None:
    photo = banned(stack, "fronted download")
    stack.upstream.upstream.files["fronted.jpg"] = photo
    head = b"GET /files/fronted.jpg HTTP/1.1\r\nHost: unlisted.example\r\nConnection: close\r\n\r\n"
    with stack.tls_socket(host=CDN_HOST) as sock:  # intercepted as the CDN's name
        reply = raw_exchange(sock, head)
    assert statuses(reply) == [403]
    assert photo not in reply


def test_an_album_of_many_pictures_is_judged_picture_by_picture(stack: HostileStack) -> None:
    """A zipped album or a slide deck holds far more pictures than the worker pool's queue: they
    must queue behind each other, not overflow into `overload` (blocked)."""
    photos = [
        encode(stack.benign_photo.resize((48 + n % 16, 48)), "JPEG", quality=60 + n % 30)
        for n in range(120)
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for number, photo in enumerate(photos):
            archive.writestr(f"album/IMG_{number:04d}.JPG", photo)
    album = buffer.getvalue()
    assert (
        send(stack, "PUT", "/files/album.zip", album, **{"Content-Type": "application/zip"}) == 200
    )
    assert delivered(stack, album)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("album/IMG_9999.JPG", banned(stack, "album"))
    tainted = buffer.getvalue()
    assert (
        send(stack, "PUT", "/files/album2.zip", tainted, **{"Content-Type": "application/zip"})
        == 403
    )
    assert not delivered(stack, tainted)
