"""Multi-request upload protocols: one request in, one `Chunk` out (or None when the request
carries no chunk): X INIT/APPEND/FINALIZE (v1.1 and v2), Google resumable and X-Goog-Upload,
Instagram rupload, plain Content-Range, Dropbox upload sessions, Facebook Graph resumable video,
S3-style multipart parts and tus."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from schoolgate.endpoints.extract import ExtractionError, ExtractLimits, parse_multipart
from schoolgate.endpoints.reassembly import LOCATION, Chunk, ChunkError


def _lower(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name.lower(): value for name, value in items}


def _int(value: str | None, what: str) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 18:
        raise ChunkError(f"{what} is not a non-negative integer: {value[:40]!r}")
    return int(text)


def parse_chunk(
    protocol: str,
    method: str,
    path: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    limits: ExtractLimits | None = None,
) -> Chunk | None:
    """Read one request of a catalog `protocol` into a Chunk (None: no chunk in this request).

    `path` includes the query string; `body` is already content-decoded. Raises ChunkError for
    requests that claim the protocol but cannot be read.
    """
    lowered = _lower(headers)
    bare, _, query_text = path.partition("?")
    pairs = parse_qsl(query_text, keep_blank_values=True, max_num_fields=100)
    query = dict(pairs)
    if len({(key, value) for key, value in pairs}) > len(query):
        # Servers read the first of a repeated parameter (Go, Java) or the last (PHP, this
        # parser): `upload_id=A&upload_id=B` finalised session A there while this gateway
        # looked up B (adversarial pass a40 F3).
        repeated = sorted({key for key, _ in pairs if sum(k == key for k, _ in pairs) > 1})
        raise ChunkError(f"query parameter(s) {', '.join(repeated)[:80]} given twice, differently")
    if protocol == "x_chunked":
        return _x_chunk(bare, query, lowered, body, limits or ExtractLimits())
    if protocol == "facebook_resumable":
        return _facebook_chunk(query, lowered, body, limits or ExtractLimits())
    if protocol == "s3_parts":
        return _s3_part(method, query, body)
    if protocol == "google_resumable":
        return _google_chunk(method, bare, query, lowered, body)
    if protocol == "instagram_rupload":
        return _rupload_chunk(method, bare, lowered, body)
    if protocol == "content_range":
        return _content_range_chunk(method, path, lowered, body)
    if protocol == "dropbox_session":
        return _dropbox_chunk(bare, query, lowered, body)
    if protocol == "tus":
        return _tus_chunk(method, bare, lowered, body)
    if protocol == "sharepoint_chunks":
        return _sharepoint_chunk(bare, body)
    raise ChunkError(f"unknown upload protocol {protocol!r}")


def _request_fields(
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
    limits: ExtractLimits,
    binary: frozenset[str],
    base64_fields: frozenset[str],
) -> tuple[dict[str, str], bytes | None]:
    """A protocol step's short fields (query, multipart, urlencoded or JSON) and its media: the
    first part named in `binary` (raw bytes) or in `base64_fields` (base64 text)."""
    fields = dict(query)
    media: bytes | None = None
    content_type = headers.get("content-type", "").lower()
    if content_type.startswith("multipart/"):
        try:
            parts = parse_multipart(body, headers.get("content-type", ""), limits)
        except ExtractionError as error:
            raise ChunkError(f"upload step body: {error}") from error
        for part in parts:
            if part.name in binary and media is None:
                media = part.data
            elif part.name in base64_fields and media is None:
                media = _b64(part.data)
            elif part.name and len(part.data) <= 256:
                fields.setdefault(part.name, part.data.decode("utf-8", "replace"))
    elif "urlencoded" in content_type:
        form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=100))
        for name, value in form.items():
            if name in base64_fields | binary:
                if media is None:
                    media = _b64(value.replace(" ", "+").encode("latin-1"))
            else:
                fields[name] = value
    elif "json" in content_type and body.strip():
        try:
            document = json.loads(body)
        except ValueError as error:
            raise ChunkError("upload step body is not JSON") from error
        if not isinstance(document, dict):
            raise ChunkError("upload step body is not a JSON object")
        for name, value in document.items():
            if name in base64_fields | binary and isinstance(value, str):
                if media is None:
                    media = _b64(value.encode("latin-1", "replace"))
            elif type(value) in (str, int):  # not bool, which JSON ids never are
                fields[name] = str(value)
    return fields, media


# X API v2's dedicated endpoints name the step in the path: /2/media/upload/{id}/append.
_X_V2_STEP: Final = re.compile(r"^/2/media/upload/([^/]+)/(append|finalize|status)/?$", re.I)
_X_V2_INIT: Final = re.compile(r"^/2/media/upload/initialize/?$", re.I)


def _x_chunk(
    path: str, query: dict[str, str], headers: dict[str, str], body: bytes, limits: ExtractLimits
) -> Chunk | None:
    if _X_V2_INIT.match(path):
        return None  # the media id arrives in the response
    fields, media = _request_fields(
        query, headers, body, limits, frozenset({"media"}), frozenset({"media_data"})
    )
    step = _X_V2_STEP.match(path)
    if step is not None:
        fields["media_id"], fields["command"] = step[1], step[2]
    command = fields.get("command", "").strip().upper()
    # The server reads the id as a number: "0123", " 123" and "123" are one upload.
    media_id = fields.get("media_id", "").strip()
    media_id = media_id.lstrip("0") or media_id if media_id.isdigit() else media_id
    if command == "INIT":
        # The media_id arrives in the response; the size given here is where the upload ends,
        # so a last APPEND whose FINALIZE never comes is still looked at whole (a58 F3).
        total = (fields.get("total_bytes") or "").strip()
        if not total.isdigit() or len(total) > 18:
            return None
        return Chunk("", b"", total=int(total), session_from_response="media_id_string")
    if command in ("STATUS", ""):
        return None  # STATUS carries nothing
    if not media_id:
        raise ChunkError(f"X {command} without media_id")
    if command == "APPEND":
        index = _int(fields.get("segment_index"), "segment_index")
        if media is None or index is None:
            raise ChunkError("X APPEND without media or segment_index")
        return Chunk(media_id, media, index=index)
    if command == "FINALIZE":
        return Chunk(media_id, final=True)
    raise ChunkError(f"unknown X upload command {command!r}")


def _facebook_chunk(
    query: dict[str, str], headers: dict[str, str], body: bytes, limits: ExtractLimits
) -> Chunk | None:
    """Graph API resumable video upload: upload_phase=start (the session id comes back),
    transfer (upload_session_id, start_offset, video_file_chunk), finish."""
    fields, media = _request_fields(
        query, headers, body, limits, frozenset({"video_file_chunk"}), frozenset()
    )
    phase = fields.get("upload_phase", "").strip().lower()
    if phase in ("", "start", "cancel"):
        return None  # no phase: a simple upload, judged as it stands
    session_id = fields.get("upload_session_id", "").strip()
    if not session_id:
        raise ChunkError(f"Facebook upload_phase={phase} without upload_session_id")
    if phase == "transfer":
        offset = _int(fields.get("start_offset"), "start_offset")
        if media is None or offset is None:
            raise ChunkError("Facebook transfer without video_file_chunk or start_offset")
        return Chunk(session_id, media, offset=offset)
    if phase == "finish":
        return Chunk(session_id, final=True)
    raise ChunkError(f"unknown Facebook upload_phase {phase[:40]!r}")


def _s3_part(method: str, query: dict[str, str], body: bytes) -> Chunk | None:
    """S3-style multipart upload (TikTok's upload nodes spell it uploadID): parts numbered from
    1 by partNumber, then a POST with the upload id alone that completes the object."""
    lowered = {name.lower(): value for name, value in query.items()}
    upload_id = lowered.get("uploadid", "").strip()
    if not upload_id:
        return None  # not a multipart step: a single-request upload, judged as it stands
    verb = method.upper()
    if "partnumber" in lowered:
        number = _int(lowered["partnumber"], "partNumber")
        if number is None or not 1 <= number <= 10_000:
            raise ChunkError("partNumber is not between 1 and 10000")
        if verb not in ("PUT", "POST"):
            return None
        return Chunk(upload_id, body, index=number - 1)
    if verb == "POST":
        return Chunk(upload_id, final=True)  # complete (S3) / phase=finish (TikTok)
    return None  # list parts, abort


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error as error:
        raise ChunkError("media_data is not valid base64") from error


def _parse_content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) from `bytes a-b/n`, `bytes a-b/*` or `bytes */n`."""
    match = _CONTENT_RANGE.match(value)
    if match is None:
        raise ChunkError(f"unreadable Content-Range {value[:60]!r}")
    first = int(match[1]) if match[1] is not None else None
    last = int(match[2]) if match[2] is not None else None
    total = int(match[3]) if match[3] != "*" else None
    if first is not None and last is not None and last < first:
        raise ChunkError(f"Content-Range ends before it starts: {value[:60]!r}")
    return first, last, total


def _range_chunk(session_id: str, headers: dict[str, str], body: bytes) -> Chunk:
    if "content-range" not in headers:
        # A single request carrying the whole media.
        return Chunk(session_id, body, offset=0, total=len(body), final=True)
    first, last, total = _parse_content_range(headers["content-range"])
    if first is None or last is None:
        return Chunk(session_id, total=total)  # a status query ("bytes */n")
    if last - first + 1 != len(body):
        raise ChunkError("Content-Range does not match the body length")
    return Chunk(session_id, body, offset=first, total=total, final=total == last + 1)


def _google_chunk(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
) -> Chunk | None:
    session_id = query.get("upload_id") or path
    command = headers.get("x-goog-upload-command")
    if command is None:
        if "upload_id" not in query:
            return None  # the initiation request; the session URL comes in the response
        return _range_chunk(session_id, headers, body)
    commands = {part.strip().lower() for part in command.split(",")}
    total = _int(
        headers.get("x-goog-upload-header-content-length")
        or headers.get("x-upload-content-length"),
        "X-Goog-Upload-Header-Content-Length",
    )
    if "start" in commands or "query" in commands or "cancel" in commands:
        if "upload_id" not in query and "start" in commands:
            return None
        return Chunk(session_id, total=total)
    offset = _int(headers.get("x-goog-upload-offset"), "X-Goog-Upload-Offset")
    if "upload" in commands:
        return Chunk(
            session_id, body, offset=offset or 0, total=total, final="finalize" in commands
        )
    if "finalize" in commands:
        return Chunk(session_id, total=total, final=True)
    raise ChunkError(f"unknown X-Goog-Upload-Command {command[:40]!r}")


def _rupload_chunk(method: str, path: str, headers: dict[str, str], body: bytes) -> Chunk | None:
    if method.upper() != "POST":
        return None  # GET asks how much the server already has
    session_id = headers.get("x-entity-name") or path.rstrip("/").rsplit("/", 1)[-1]
    total = _int(headers.get("x-entity-length"), "X-Entity-Length")
    offset = _int(headers.get("offset"), "Offset") or 0
    return Chunk(session_id, body, offset=offset, total=total)


def _content_range_chunk(
    method: str, path: str, headers: dict[str, str], body: bytes
) -> Chunk | None:
    if method.upper() not in ("PUT", "POST", "PATCH"):
        return None
    return _range_chunk(path, headers, body)


def _tus_chunk(method: str, path: str, headers: dict[str, str], body: bytes) -> Chunk | None:
    """tus 1.0 (tus.io: Vimeo's upload protocol, and many storage services'): a POST creates an
    upload, its size in Upload-Length (or deferred), its first bytes maybe in the body (the
    creation-with-upload extension), its URL in the reply's Location; each PATCH, or a POST
    that says X-HTTP-Method-Override: PATCH, writes its body at Upload-Offset. Adversarial pass
    a44 F4: judged one request at a time, a 1-byte first PATCH hid the picture."""
    verb = method.upper()
    if verb == "POST" and headers.get("x-http-method-override"):
        verb = headers["x-http-method-override"].strip().upper()
    total = _int(headers.get("upload-length"), "Upload-Length")
    concat = headers.get("upload-concat", "").strip()
    if verb == "POST" and concat.lower().startswith("final"):
        # Joins partial uploads into one file on the server (the Concatenation extension):
        # a partial holding the picture's first bytes may have been sent from elsewhere.
        parts = tuple(urlsplit(url).path for url in concat.partition(";")[2].split())
        if not parts:
            raise ChunkError("tus Upload-Concat: final without the uploads it joins")
        return Chunk("", joins=parts)
    if verb == "POST":
        if total is None and "upload-defer-length" not in headers:
            return None  # not a creation: judged as it stands
        final = total is not None and len(body) >= total
        part = concat.lower().startswith("partial")
        return Chunk("", body, offset=0, total=total, final=final,
                     session_from_response=LOCATION, part=part)  # fmt: skip
    if verb != "PATCH":
        return None  # HEAD asks for the offset; GET, DELETE, OPTIONS carry nothing
    offset = _int(headers.get("upload-offset"), "Upload-Offset")
    if offset is None:
        raise ChunkError("tus PATCH without Upload-Offset")
    final = total is not None and offset + len(body) == total
    return Chunk(path, body, offset=offset, total=total, final=final)


# SharePoint REST's large-file upload: StartUpload, ContinueUpload and FinishUpload calls on
# the file's path, one upload id (a GUID) throughout, each body appended at fileOffset.
_SHAREPOINT_STEP: Final = re.compile(
    r"/(StartUpload|ContinueUpload|FinishUpload)\(uploadId=guid'([0-9a-f-]{36})'"
    r"(?:,\s*fileOffset=(\d{1,18}))?\)/?$",
    re.IGNORECASE,
)


def _sharepoint_chunk(path: str, body: bytes) -> Chunk | None:
    step = _SHAREPOINT_STEP.search(unquote(path))
    if step is None:
        return None  # another REST call: judged as it stands
    kind, upload, offset_text = step[1].lower(), step[2].lower(), step[3]
    offset = 0 if kind == "startupload" else int(offset_text or -1)
    if offset < 0:
        raise ChunkError(f"SharePoint {step[1]} without fileOffset")
    if kind == "finishupload":
        return Chunk(upload, body, offset=offset, total=offset + len(body), final=True)
    return Chunk(upload, body, offset=offset)


def parse_chunks(
    protocol: str,
    method: str,
    path: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    limits: ExtractLimits | None = None,
) -> list[Chunk]:
    """Every chunk one request carries: one (or none) for most protocols, one per entry of a
    Dropbox batch finish (`upload_session/finish_batch_v2` commits many sessions at once)."""
    bare = path.partition("?")[0].rstrip("/")
    if protocol == "dropbox_session" and bare.endswith(("/finish_batch", "/finish_batch_v2")):
        return _dropbox_batch(body)
    if protocol == "dropbox_session" and bare.endswith("/finish_batch/check"):
        return []  # asks how an earlier batch went
    chunk = parse_chunk(protocol, method, path, headers, body, limits)
    return [] if chunk is None else [chunk]


_MAX_BATCH: Final = 1000  # Dropbox's own limit on entries per batch


def _dropbox_batch(body: bytes) -> list[Chunk]:
    try:
        document = json.loads(body or b"{}")
    except ValueError as error:
        raise ChunkError("Dropbox batch finish is not JSON") from error
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries or len(entries) > _MAX_BATCH:
        raise ChunkError(f"Dropbox batch finish needs 1..{_MAX_BATCH} entries")
    chunks = []
    for entry in entries:
        cursor = entry.get("cursor") if isinstance(entry, dict) else None
        session_id = cursor.get("session_id") if isinstance(cursor, dict) else None
        offset = cursor.get("offset") if isinstance(cursor, dict) else None
        if not isinstance(session_id, str) or type(offset) is not int or offset < 0:
            raise ChunkError("Dropbox batch entry without cursor.session_id and offset")
        chunks.append(Chunk(session_id, total=offset, final=True))
    return chunks


def _dropbox_chunk(
    path: str, query: dict[str, str], headers: dict[str, str], body: bytes
) -> Chunk | None:
    # The arguments travel in the Dropbox-API-Arg header, or (documented for content endpoints,
    # for clients that cannot set headers) in the `arg` URL parameter.
    raw = headers.get("dropbox-api-arg") or query.get("arg")
    try:
        arg = json.loads(raw) if raw else {}
    except ValueError as error:
        raise ChunkError("Dropbox-API-Arg is not JSON") from error
    if not isinstance(arg, dict):
        raise ChunkError("Dropbox-API-Arg is not a JSON object")
    step = path.rstrip("/").rsplit("/", 1)[-1]
    if step == "start":
        return Chunk(
            "", body, offset=0, final=bool(arg.get("close")), session_from_response="session_id"
        )
    cursor = arg.get("cursor", arg)
    if not isinstance(cursor, dict) or not isinstance(cursor.get("session_id"), str):
        raise ChunkError("Dropbox upload session request without cursor.session_id")
    offset = cursor.get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ChunkError("Dropbox cursor.offset is not a non-negative integer")
    if step in ("append", "append_v2"):
        return Chunk(cursor["session_id"], body, offset=offset, final=bool(arg.get("close")))
    if step == "finish":
        return Chunk(
            cursor["session_id"], body, offset=offset, total=offset + len(body), final=True
        )
    raise ChunkError(f"unknown Dropbox upload session step {step!r}")


_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.I)
