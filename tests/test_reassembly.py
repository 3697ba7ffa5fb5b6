"""Reassembly of chunked uploads: each protocol with synthetic chunk sequences, bounds, expiry."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import random
import threading
from urllib.parse import urlencode

import pytest
from PIL import Image

from schoolgate.endpoints.looks import next_look, worth_a_look
from schoolgate.endpoints.protocols import parse_chunk, parse_chunks
from schoolgate.endpoints.reassembly import (
    Chunk,
    ChunkError,
    SessionStatus,
    UploadSessions,
)
from schoolgate.media.cutshort import PNG_SIGNATURE
from tests.conftest import encode


@pytest.fixture(scope="module")
def media(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["astronaut"].resize((96, 96)), "JPEG")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def split(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(offset, data[offset : offset + size]) for offset in range(0, len(data), size)]


def x_append(media_id: str, index: int, data: bytes, boundary: str = "xb") -> tuple[str, bytes]:
    def field(name: str, value: str) -> str:
        return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'

    head = (
        field("command", "APPEND")
        + field("media_id", media_id)
        + field("segment_index", str(index))
        + f'--{boundary}\r\nContent-Disposition: form-data; name="media"; filename="blob"\r\n'
        + "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def test_x_init_append_finalize_out_of_order(media: bytes) -> None:
    sessions = UploadSessions()
    path = "/1.1/media/upload.json"
    init = parse_chunk(
        "x_chunked", "POST", path + f"?command=INIT&total_bytes={len(media)}", {}, b""
    )
    # INIT's size joins the session named in its reply (the addon reads media_id_string).
    assert init is not None
    assert (init.total, init.data, init.session_from_response) == (
        len(media),
        b"",
        "media_id_string",
    )
    sessions.add("10.0.0.5", "x", dataclasses.replace(init, session_id="710511363345354753"))
    segments = [media[i : i + 1000] for i in range(0, len(media), 1000)]
    order = list(range(len(segments)))
    random.Random(7).shuffle(order)
    for index in order:
        content_type, body = x_append("710511363345354753", index, segments[index])
        chunk = parse_chunk("x_chunked", "POST", path, {"Content-Type": content_type}, body)
        assert chunk is not None
        state = sessions.add("10.0.0.5", "x", chunk)
        assert state.status is SessionStatus.INCOMPLETE
    # A retried segment with the same bytes is harmless.
    content_type, body = x_append("710511363345354753", order[0], segments[order[0]])
    retry = parse_chunk("x_chunked", "POST", path, {"content-type": content_type}, body)
    assert retry is not None
    assert not sessions.add("10.0.0.5", "x", retry).failed
    final = parse_chunk(
        "x_chunked", "POST", path + "?command=FINALIZE&media_id=710511363345354753", {}, b""
    )
    assert final is not None
    state = sessions.add("10.0.0.5", "x", final)
    assert state.complete
    assert sessions.assemble("10.0.0.5", "x", "710511363345354753") == media


def test_x_finalize_with_a_missing_segment_ends_it_with_parts_unseen(media: bytes) -> None:
    """The server commits at FINALIZE: segments it got that we never saw (sent under another
    key) would make a file nobody judged whole, so the FINALIZE is refused (issue 16)."""
    sessions = UploadSessions()
    sessions.add("c", "x", Chunk("m", media[:10], index=0))
    sessions.add("c", "x", Chunk("m", media[20:30], index=2))
    state = sessions.add("c", "x", Chunk("m", final=True))
    assert state.status is SessionStatus.UNSEEN_PARTS
    assert state.failed
    with pytest.raises(ChunkError):
        sessions.assemble("c", "x", "m")
    # A FINALIZE for an upload never seen at all, and a last chunk with nothing before it.
    assert sessions.add("c", "x", Chunk("other", final=True)).failed
    tail = Chunk("u", media[100:], offset=100, total=len(media))
    assert sessions.add("c", "x", tail).status is SessionStatus.UNSEEN_PARTS


def test_x_base64_media_data_in_a_form(media: bytes) -> None:
    body = urlencode(
        {
            "command": "APPEND",
            "media_id": "9",
            "segment_index": "0",
            "media_data": base64.b64encode(media).decode(),
        }
    ).encode()
    chunk = parse_chunk(
        "x_chunked",
        "POST",
        "/1.1/media/upload.json",
        {"Content-Type": "application/x-www-form-urlencoded"},
        body,
    )
    assert chunk == Chunk("9", media, index=0)


@pytest.mark.parametrize(
    ("query", "reason"),
    [("?command=APPEND&segment_index=0", "media_id"), ("?command=BOGUS&media_id=1", "unknown")],
)
def test_x_bad_requests(query: str, reason: str) -> None:
    with pytest.raises(ChunkError, match=reason):
        parse_chunk("x_chunked", "POST", "/1.1/media/upload.json" + query, {}, b"")


def test_x_conflicting_segment_flags_the_session() -> None:
    sessions = UploadSessions()
    sessions.add("c", "x", Chunk("m", b"aaaa", index=0))
    state = sessions.add("c", "x", Chunk("m", b"bbbb", index=0))
    assert state.status is SessionStatus.CONFLICTING_CHUNKS
    assert sessions.total_bytes == 0
    # The verdict sticks for later chunks of the same session.
    assert sessions.add("c", "x", Chunk("m", final=True)).status is SessionStatus.CONFLICTING_CHUNKS


def test_google_resumable_content_range_out_of_order_with_overlap(media: bytes) -> None:
    sessions = UploadSessions()
    total = len(media)
    path = "/upload/drive/v3/files?uploadType=resumable&upload_id=ADPyc"
    pieces = split(media, 700)
    last_offset, last_data = pieces[-1]
    states = []
    # Out of order, with an overlapping resend spanning two chunks, the final chunk last.
    sends = [*reversed(pieces[:-1]), (300, media[300:1500])]
    for offset, data in [*sends, (last_offset, last_data)]:
        header = f"bytes {offset}-{offset + len(data) - 1}/{total}"
        chunk = parse_chunk("google_resumable", "PUT", path, {"Content-Range": header}, data)
        assert chunk is not None
        assert chunk.session_id == "ADPyc"
        states.append(sessions.add("10.1.1.1", "google_drive", chunk))
    assert [s.complete for s in states] == [False] * (len(states) - 1) + [True]
    assert sessions.assemble("10.1.1.1", "google_drive", "ADPyc") == media


def test_google_resumable_unknown_total_until_last_chunk(media: bytes) -> None:
    sessions = UploadSessions()
    path = "/upload/youtube/v3/videos?upload_id=Y"
    first = parse_chunk(
        "google_resumable", "PUT", path, {"Content-Range": "bytes 0-999/*"}, media[:1000]
    )
    assert first is not None
    assert first.total is None
    assert not sessions.add("c", "youtube", first).complete
    end = len(media) - 1
    rest = parse_chunk(
        "google_resumable",
        "PUT",
        path,
        {"Content-Range": f"bytes 1000-{end}/{len(media)}"},
        media[1000:],
    )
    assert rest is not None
    assert rest.final
    assert sessions.add("c", "youtube", rest).complete


def test_google_status_query_and_initiation_carry_no_data() -> None:
    query = parse_chunk(
        "google_resumable",
        "PUT",
        "/upload/drive/v3/files?upload_id=Q",
        {"Content-Range": "bytes */5000"},
        b"",
    )
    assert query == Chunk("Q", total=5000)
    assert (
        parse_chunk(
            "google_resumable",
            "POST",
            "/upload/drive/v3/files?uploadType=resumable",
            {"X-Upload-Content-Length": "5000"},
            b"{}",
        )
        is None
    )


def test_google_single_put_is_complete(media: bytes) -> None:
    chunk = parse_chunk("google_resumable", "PUT", "/upload/drive/v3/files?upload_id=S", {}, media)
    assert chunk is not None
    assert UploadSessions().add("c", "google_drive", chunk).complete


def test_google_x_goog_upload_commands(media: bytes) -> None:
    sessions = UploadSessions()
    path = "/_/upload/uploadmedia/interactive?upload_id=G&upload_protocol=resumable"
    start = parse_chunk(
        "google_resumable",
        "POST",
        path,
        {"X-Goog-Upload-Command": "start", "X-Goog-Upload-Header-Content-Length": str(len(media))},
        b"",
    )
    assert start == Chunk("G", total=len(media))
    sessions.add("c", "google_drive", start)
    half = len(media) // 2
    second = parse_chunk(
        "google_resumable",
        "POST",
        path,
        {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": str(half)},
        media[half:],
    )
    first = parse_chunk(
        "google_resumable",
        "POST",
        path,
        {"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"},
        media[:half],
    )
    assert second is not None
    assert first is not None
    assert not sessions.add("c", "google_drive", first).complete
    assert sessions.add("c", "google_drive", second).complete
    assert sessions.assemble("c", "google_drive", "G") == media


@pytest.mark.parametrize("header", ["bytes 5-1/10", "bytes x-y/10", "chars 0-1/2", "bytes 0-3/10"])
def test_bad_content_range(header: str) -> None:
    with pytest.raises(ChunkError):
        parse_chunk("content_range", "PUT", "/up/abc", {"Content-Range": header}, b"12")


def test_instagram_rupload_offsets(media: bytes) -> None:
    sessions = UploadSessions()
    name = "1712345678_0_123456"
    pieces = split(media, 1024)
    last = pieces.pop()
    random.Random(3).shuffle(pieces)  # any order, the last piece last
    pieces.append(last)
    states = []
    for offset, data in pieces:
        headers = {"X-Entity-Name": name, "X-Entity-Length": str(len(media)), "Offset": str(offset)}
        chunk = parse_chunk("instagram_rupload", "POST", f"/rupload_igphoto/{name}", headers, data)
        assert chunk is not None
        states.append(sessions.add("c", "instagram", chunk))
    assert states[-1].complete
    assert not any(s.complete for s in states[:-1])
    assert sessions.assemble("c", "instagram", name) == media
    assert parse_chunk("instagram_rupload", "GET", f"/rupload_igphoto/{name}", {}, b"") is None


def test_overlap_that_disagrees_is_conflicting(media: bytes) -> None:
    sessions = UploadSessions()
    sessions.add("c", "i", Chunk("s", media[:100], offset=0, total=len(media)))
    tampered = bytearray(media[50:150])
    tampered[10] ^= 0xFF
    state = sessions.add("c", "i", Chunk("s", bytes(tampered), offset=50))
    assert state.status is SessionStatus.CONFLICTING_CHUNKS
    assert state.failed


def test_total_that_changes_or_data_past_total_is_conflicting() -> None:
    sessions = UploadSessions()
    sessions.add("c", "a", Chunk("s", b"abc", offset=0, total=10))
    assert sessions.add("c", "a", Chunk("s", b"d", offset=3, total=11)).failed
    assert sessions.add("c", "a", Chunk("t", b"abcdef", offset=8, total=10)).failed


def test_onedrive_content_range_session(media: bytes) -> None:
    sessions = UploadSessions()
    path = "/up/fe6987415ace7X4e1eF866337"
    for offset, data in split(media, 327680 // 64):
        header = f"bytes {offset}-{offset + len(data) - 1}/{len(media)}"
        chunk = parse_chunk("content_range", "PUT", path, {"content-range": header}, data)
        assert chunk is not None
        state = sessions.add("c", "onedrive", chunk)
    assert state.complete
    assert sessions.assemble("c", "onedrive", path) == media


def test_dropbox_upload_session(media: bytes) -> None:
    sessions = UploadSessions()
    start = parse_chunk(
        "dropbox_session",
        "POST",
        "/2/files/upload_session/start",
        {"Dropbox-API-Arg": '{"close": false}'},
        media[:1000],
    )
    assert start is not None
    assert start.session_from_response == "session_id"
    # The caller keys the start chunk once the response hands out the session id.
    sessions.add("c", "dropbox", Chunk("sid1", start.data, offset=0))
    arg = json.dumps({"cursor": {"session_id": "sid1", "offset": 1000}, "close": False})
    append = parse_chunk(
        "dropbox_session",
        "POST",
        "/2/files/upload_session/append_v2",
        {"Dropbox-API-Arg": arg},
        media[1000:2000],
    )
    assert append is not None
    assert not sessions.add("c", "dropbox", append).complete
    arg = json.dumps({"cursor": {"session_id": "sid1", "offset": 2000}, "commit": {"path": "/a"}})
    finish = parse_chunk(
        "dropbox_session",
        "POST",
        "/2/files/upload_session/finish",
        {"Dropbox-API-Arg": arg},
        media[2000:],
    )
    assert finish is not None
    assert sessions.add("c", "dropbox", finish).complete
    assert sessions.assemble("c", "dropbox", "sid1") == media
    with pytest.raises(ChunkError):
        parse_chunk(
            "dropbox_session",
            "POST",
            "/2/files/upload_session/append_v2",
            {"Dropbox-API-Arg": "{not json"},
            b"",
        )


def test_sessions_are_keyed_by_client_and_app() -> None:
    sessions = UploadSessions()
    sessions.add("a", "x", Chunk("m", b"1111", index=0))
    # Another client reusing the id cannot conflict with or complete the first client's upload.
    assert not sessions.add("b", "x", Chunk("m", b"2222", index=0)).failed
    assert sessions.add("b", "x", Chunk("m", final=True)).complete
    assert sessions.state("a", "x", "m") is not None
    assert sessions.assemble("b", "x", "m") == b"2222"


def test_bounds_per_session_and_overall() -> None:
    sessions = UploadSessions(max_session_bytes=10, max_total_bytes=15)
    assert sessions.add("c", "a", Chunk("s", b"x" * 8, offset=0)).status is SessionStatus.INCOMPLETE
    state = sessions.add("c", "a", Chunk("s", b"x" * 8, offset=8))
    assert state.status is SessionStatus.OVERSIZE
    assert sessions.total_bytes == 0
    # A far offset cannot reserve a huge session either.
    assert sessions.add("c", "a", Chunk("f", b"x", offset=10**12)).status is SessionStatus.OVERSIZE
    sessions.add("c", "a", Chunk("u", b"y" * 9, offset=0))
    assert sessions.add("c", "a", Chunk("v", b"z" * 9, offset=0)).status is SessionStatus.STORE_FULL
    assert sessions.total_bytes == 9
    few = UploadSessions(max_sessions=1)
    few.add("c", "a", Chunk("one", b"1", offset=0))
    assert few.add("c", "a", Chunk("two", b"2", offset=0)).status is SessionStatus.STORE_FULL


def test_ttl_expiry_and_discard() -> None:
    clock = Clock()
    sessions = UploadSessions(ttl_s=60, clock=clock)
    sessions.add("c", "a", Chunk("s", b"abc", offset=0))
    clock.now += 59
    sessions.add("c", "a", Chunk("s", b"def", offset=3))  # activity extends the session
    clock.now += 59
    assert sessions.state("c", "a", "s") is not None
    clock.now += 61
    assert sessions.purge() == 1
    assert sessions.state("c", "a", "s") is None
    assert sessions.total_bytes == 0
    sessions.add("c", "a", Chunk("t", b"abc", offset=0))
    sessions.discard("c", "a", "t")
    assert len(sessions) == 0
    assert sessions.total_bytes == 0


def test_invalid_chunks() -> None:
    sessions = UploadSessions()
    with pytest.raises(ChunkError):
        sessions.add("c", "a", Chunk("s", b"x", offset=0, index=0))
    with pytest.raises(ChunkError):
        sessions.add("c", "a", Chunk("s", b"x", offset=-1))
    sessions.add("c", "a", Chunk("s", b"x", offset=0))
    assert sessions.add("c", "a", Chunk("s", b"y", index=1)).failed  # mixing modes
    with pytest.raises(ChunkError):
        parse_chunk("nope", "POST", "/", {}, b"")


def test_concurrent_chunks_from_threads() -> None:
    data = bytes(random.Random(1).randbytes(64 * 1024))
    sessions = UploadSessions()
    pieces = split(data, 1024)

    def worker(part: list[tuple[int, bytes]]) -> None:
        for offset, block in part:
            sessions.add("c", "a", Chunk("s", block, offset=offset, total=len(data)))

    threads = [threading.Thread(target=worker, args=(pieces[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    state = sessions.state("c", "a", "s")
    assert state is not None
    assert state.complete
    assert sessions.assemble("c", "a", "s") == data
    assert sessions.total_bytes == len(data)


def test_a_failed_session_is_tombstoned_not_forgotten(media: bytes) -> None:
    """Poison and restart: one conflicting chunk, then the real chunks of the same session."""
    clock = [0.0]
    sessions = UploadSessions(ttl_s=60, clock=lambda: clock[0])
    sessions.add("c", "app", Chunk("s", media[:100], offset=0, total=len(media)))
    poisoned = sessions.add("c", "app", Chunk("s", b"x" * 100, offset=0, total=len(media)))
    assert poisoned.status is SessionStatus.CONFLICTING_CHUNKS
    sessions.fail("c", "app", "s", poisoned.status)
    assert sessions.total_bytes == 0  # the data is gone; only the tombstone is left
    rest = Chunk("s", media[100:], offset=100, total=len(media))
    assert sessions.add("c", "app", rest).status is SessionStatus.CONFLICTING_CHUNKS
    clock[0] = 59  # each later chunk keeps the tombstone alive
    assert sessions.add("c", "app", rest).status is SessionStatus.CONFLICTING_CHUNKS
    clock[0] = 59 + 60
    middle = Chunk("s", media[100:200], offset=100, total=len(media))
    assert sessions.add("c", "app", middle).status is SessionStatus.INCOMPLETE  # expired: new
    # Another client's session of the same id is its own.
    assert sessions.add("d", "app", middle).status is SessionStatus.INCOMPLETE


def test_tombstones_are_bounded() -> None:
    sessions = UploadSessions(max_sessions=3)
    for number in range(10):
        sessions.fail("c", "app", f"s{number}", SessionStatus.OVERSIZE)
    assert sessions.add("c", "app", Chunk("s0", b"a", offset=0)).status is SessionStatus.INCOMPLETE
    assert sessions.add("c", "app", Chunk("s9", b"a", offset=0)).status is SessionStatus.OVERSIZE


def _assemble(steps: list[Chunk | None]) -> tuple[SessionStatus, bytes | None]:
    """Feed parsed steps to one device's sessions; the last state and the media if complete."""
    sessions = UploadSessions()
    status, media = SessionStatus.INCOMPLETE, None
    for chunk in steps:
        if chunk is None:
            continue
        state = sessions.add("dev", "app", chunk)
        status = state.status
        if state.complete:
            media = sessions.assemble("dev", "app", chunk.session_id)
    return status, media


def multipart_form(fields: dict[str, str], file_field: str, data: bytes) -> tuple[str, bytes]:
    boundary = "fb0undary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    head = "".join(parts) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="c"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def test_x_api_v2_dedicated_endpoints_with_a_two_byte_first_segment(media: bytes) -> None:
    """/2/media/upload/{id}/append and /finalize (the adversarial pass sent a 2-byte first
    segment; each request alone looked like nothing)."""
    steps: list[Chunk | None] = [
        parse_chunk("x_chunked", "POST", "/2/media/upload/initialize", {}, b'{"total_bytes": 9}')
    ]
    for index, piece in enumerate((media[:2], media[2:])):
        form = {"segment_index": str(index)}
        content_type, body = multipart_form(form, "media", piece)
        steps.append(
            parse_chunk(
                "x_chunked",
                "POST",
                "/2/media/upload/0777/append",
                {"content-type": content_type},
                body,
            )
        )
    assert _assemble(steps)[1] is None  # not final yet
    steps.append(parse_chunk("x_chunked", "POST", "/2/media/upload/777/finalize", {}, b""))
    assert _assemble(steps) == (SessionStatus.COMPLETE, media)


def test_x_append_as_json_with_base64_media(media: bytes) -> None:
    steps = [
        parse_chunk(
            "x_chunked",
            "POST",
            "/2/media/upload",
            {"Content-Type": "application/json"},
            json.dumps(
                {
                    "command": "APPEND",
                    "media_id": "9",
                    "segment_index": index,
                    "media": base64.b64encode(piece).decode(),
                }
            ).encode(),
        )
        for index, piece in enumerate((media[:5], media[5:]))
    ]
    steps.append(
        parse_chunk("x_chunked", "POST", "/2/media/upload?command=FINALIZE&media_id=9", {}, b"")
    )
    assert _assemble(steps) == (SessionStatus.COMPLETE, media)


def test_facebook_graph_resumable_video(media: bytes) -> None:
    path = "/v19.0/me/videos"
    form = "application/x-www-form-urlencoded"
    start = parse_chunk("facebook_resumable", "POST", path, {"content-type": form},
                        f"upload_phase=start&file_size={len(media)}".encode())  # fmt: skip
    assert start is None  # the session id arrives in the reply
    steps: list[Chunk | None] = []
    for offset, piece in ((0, media[:2]), (2, media[2:])):
        fields = {
            "upload_phase": "transfer",
            "upload_session_id": "51",
            "start_offset": str(offset),
        }
        content_type, body = multipart_form(fields, "video_file_chunk", piece)
        steps.append(
            parse_chunk("facebook_resumable", "POST", path, {"content-type": content_type}, body)
        )
    steps.append(
        parse_chunk(
            "facebook_resumable",
            "POST",
            path,
            {"content-type": form},
            b"upload_phase=finish&upload_session_id=51",
        )
    )
    assert _assemble(steps) == (SessionStatus.COMPLETE, media)
    # A simple (one-request) video upload is no protocol step: it is judged as it stands.
    content_type, body = multipart_form({"title": "x"}, "source", media)
    assert (
        parse_chunk("facebook_resumable", "POST", path, {"content-type": content_type}, body)
        is None
    )
    with pytest.raises(ChunkError, match="upload_session_id"):
        parse_chunk(
            "facebook_resumable", "POST", path, {"content-type": form}, b"upload_phase=transfer"
        )


def test_s3_style_parts_complete_on_the_final_post(media: bytes) -> None:
    third = len(media) // 3
    pieces = [media[:2], media[2:third], media[third:]]
    order = [2, 0, 1]  # parts may arrive in any order
    steps = [
        parse_chunk(
            "s3_parts", "PUT", f"/upload/v1/obj?partNumber={k + 1}&uploadID=u2", {}, pieces[k]
        )
        for k in order
    ]
    assert _assemble(steps)[1] is None  # no part is the last until the upload is completed
    steps.append(
        parse_chunk("s3_parts", "POST", "/upload/v1/obj?uploadId=u2&phase=finish", {}, b"")
    )
    assert _assemble(steps) == (SessionStatus.COMPLETE, media)
    # A missing part: the completion is refused, not forwarded as complete.
    gappy = [steps[0], steps[2], steps[3]]
    assert _assemble(gappy)[0] is SessionStatus.UNSEEN_PARTS
    # No upload id: a single-request upload, judged as it stands.
    assert parse_chunk("s3_parts", "PUT", "/upload/v1/obj", {}, media) is None
    with pytest.raises(ChunkError, match="partNumber"):
        parse_chunk("s3_parts", "PUT", "/upload/v1/obj?partNumber=0&uploadId=u2", {}, b"x")


def test_dropbox_batch_finish_commits_each_session() -> None:
    body = json.dumps(
        {"entries": [{"cursor": {"session_id": s, "offset": n}} for s, n in (("a", 5), ("b", 9))]}
    ).encode()
    path = "/2/files/upload_session/finish_batch_v2"
    chunks = parse_chunks("dropbox_session", "POST", path, {}, body)
    assert [(c.session_id, c.total, c.final) for c in chunks] == [("a", 5, True), ("b", 9, True)]
    check = "/2/files/upload_session/finish_batch/check"
    assert parse_chunks("dropbox_session", "POST", check, {}, b"{}") == []
    for bad in (b"[]", b'{"entries": []}', b'{"entries": [{"cursor": {"offset": 1}}]}', b"{"):
        with pytest.raises(ChunkError):
            parse_chunks("dropbox_session", "POST", path, {}, bad)
    # One chunk for every other request, through the same entry point.
    single = parse_chunks(
        "dropbox_session",
        "POST",
        "/2/files/upload_session/append_v2?arg="
        + json.dumps({"cursor": {"session_id": "a", "offset": 0}}),
        {},
        b"xyz",
    )
    assert [(c.session_id, c.offset, c.data) for c in single] == [("a", 0, b"xyz")]


def test_an_upload_of_undeclared_size_begun_elsewhere_is_refused(media: bytes) -> None:
    """a48 F2: its first bytes seen here start past 0 and nothing will say where it ends."""
    sessions = UploadSessions()
    state = sessions.add("c", "vimeo", Chunk("/files/x", media[16:], offset=16))
    assert state.status is SessionStatus.UNSEEN_PARTS
    # Where the size is declared, the chunk reaching it ends the upload as before.
    declared = sessions.add("c", "drive", Chunk("d", media[16:], offset=16, total=len(media)))
    assert declared.status is SessionStatus.UNSEEN_PARTS
    later = sessions.add("c", "drive", Chunk("e", media[16:32], offset=16, total=len(media)))
    assert later.status is SessionStatus.INCOMPLETE  # out of order, its start may follow


def _looks(sessions: UploadSessions, session_id: str, data: bytes, step: int,
           total: int | None) -> list[int]:  # fmt: skip
    """The prefix lengths offered to look at as `data` arrives `step` bytes at a time."""
    looked = []
    for start in range(0, len(data), step):
        chunk = Chunk(session_id, data[start : start + step], offset=start, total=total)
        sessions.add("c", "a", chunk)
        if (found := sessions.partial("c", "a", session_id)) is not None:
            assert found[1] == total
            looked.append(len(found[0]))
    return looked


def test_a_first_part_is_offered_to_look_at_a_few_times_per_upload(media: bytes) -> None:
    """a48 F3, a58 F3: a first part that is not a JPEG or PNG (a video's) from 16 KiB, each half
    as long again, then at each quarter's growth once it holds half the declared size; without
    a declared size, each half as long again all along."""
    sessions = UploadSessions()
    total = 100_000
    video = b"\x00\x00\x00\x18ftypmp42" + (media * (total // len(media) + 1))[: total - 12]
    looked = _looks(sessions, "s", video[:90_000], 10_000, total)
    assert looked == [20_000, 30_000, 50_000, 70_000, 90_000]
    # Nearly all of it (63/64) is looked at once more, however little it grew (a58 F3: a
    # video's index in its last bytes), and not again at the same size.
    sessions.add("c", "a", Chunk("s", video[90_000:99_999], offset=90_000, total=total))
    assert sessions.partial("c", "a", "s") == (video[:99_999], total)
    assert sessions.partial("c", "a", "s") is None
    sizes = _looks(sessions, "u", video[:60_000], 4_000, None)
    assert sizes == [20_000, 32_000, 48_000]  # from 16 KiB, each half as long again


def test_a_still_pictures_first_part_is_looked_at_from_an_eighth(media: bytes) -> None:
    """a68 F2, a69 F4: looked at from half, resumable uploads of 256 KiB chunks left up to 68%
    of a banked JPEG with the service. A baseline JPEG shows enough of its rows from a fifth to
    a half, a progressive one the whole picture from a tenth: a JPEG's or PNG's first part is
    looked at from an eighth of its declared size, then at every sixteenth."""
    total = 100_000
    jpeg = (media * (total // len(media) + 1))[:total]
    sessions = UploadSessions()
    looked = _looks(sessions, "s", jpeg[:99_000], 2_000, total)
    assert looked[:4] == [14_000, 22_000, 30_000, 38_000]  # the chunks reaching 1/8, +1/16
    steps = [b - a for a, b in itertools.pairwise(looked[:-1])]
    assert all(total // 16 <= step <= total // 16 + 2_000 for step in steps), looked
    assert looked[-1] == 99_000  # nearly all (63/64) of it, looked at once more
    assert len(looked) <= 16
    sessions.add("c", "a", Chunk("s", jpeg[99_000:99_999], offset=99_000, total=total))
    assert sessions.partial("c", "a", "s") == (jpeg[:99_999], total)  # nearly all, once more
    png = PNG_SIGNATURE + jpeg[len(PNG_SIGNATURE) :]
    assert _looks(UploadSessions(), "p", png[:30_000], 10_000, total) == [20_000, 30_000]
    # The first request of a session that carries data (a Dropbox start) is looked at alike.
    assert worth_a_look(12_500, total, still=True)
    assert not worth_a_look(12_499, total, still=True)
    assert worth_a_look(16 * 1024, None, still=True)
    assert not worth_a_look(16 * 1024 - 1, None)


@pytest.mark.parametrize("declared", [8, 100, 10_000])
def test_a_declared_size_never_puts_the_looks_further_apart(media: bytes, declared: int) -> None:
    """a70 F1, F6: looks from an eighth of the declared size let an upload that declared 8.5 or
    100 times its file's size, or carried bytes after its picture, send every chunk of a banked
    picture before the first look. Whatever the size says, a first part is looked at from
    16 KiB, each half as long again."""
    file = 200_000
    data = (media * (file // len(media) + 1))[:file]
    looked = _looks(UploadSessions(), "s", data, 4_000, file * declared)
    assert looked[0] <= 16 * 1024 + 4_000
    assert all(b <= a * 3 // 2 + 4_000 for a, b in itertools.pairwise(looked)), looked
    assert looked[-1] * 3 // 2 + 4_000 >= file  # the last look is no further from the end
    assert next_look(0, file * declared, True) == next_look(0, None, True)


def test_the_looks_of_an_upload_are_few(media: bytes) -> None:
    """Each look decodes the whole first part: a 4 MB photo or a 40 MB video, in chunks however
    small, is looked at at most two dozen times (their sizes grow geometrically, so the looks
    cost a few times the last)."""
    for total, still in ((4_000_000, True), (40_000_000, False)):
        length, looks = 0, 0
        while length < total:
            length = max(next_look(length, total, still), length + 1)
            looks += length < total
        assert looks <= 24, (total, looks)


def test_numbered_segments_from_the_first_are_a_first_part(media: bytes) -> None:
    """a58 F3: X's INIT + APPENDs without FINALIZE leave the service holding every byte; the
    segments from 0 on, while none is missing, are looked at like a byte range."""
    sessions = UploadSessions()
    total = 40_000
    data = (media * (total // len(media) + 1))[:total]
    pieces = [data[i : i + 10_000] for i in range(0, total, 10_000)]
    sessions.add("c", "x", Chunk("m", pieces[1], index=1, total=total))
    assert sessions.partial("c", "x", "m") is None  # its start is not here
    sessions.add("c", "x", Chunk("m", pieces[0], index=0, total=total))
    assert sessions.partial("c", "x", "m") == (data[:20_000], total)
    sessions.add("c", "x", Chunk("m", pieces[3], index=3, total=total))
    assert sessions.partial("c", "x", "m") is None  # segment 2 missing: still 20,000 bytes
    sessions.add("c", "x", Chunk("m", pieces[2], index=2, total=total))
    assert sessions.partial("c", "x", "m") == (data, total)  # every byte, no FINALIZE yet
