"""Multi-request uploads: turn chunks of resumable/chunked protocols back into whole media.

`schoolgate.endpoints.protocols.parse_chunk` reads one request of a catalog protocol (X
INIT/APPEND/FINALIZE, Google resumable, Instagram rupload, Content-Range upload sessions, Dropbox
upload sessions) into a `Chunk`; `UploadSessions` accumulates chunks per (client, app, session id),
out of order and overlapping, and says when the media is complete, so the caller can hold the final
request until the whole media is judged. Overlaps must agree byte for byte; a session whose chunks
disagree is flagged "conflicting_chunks" and the caller applies the fail policy. Pure logic,
injectable clock, thread-safe."""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from schoolgate.endpoints.looks import look_due
from schoolgate.errors import SchoolgateError

_MiB: Final = 1 << 20


_MAX_SEGMENT_INDEX: Final = 100_000


class ChunkError(SchoolgateError):
    """A request of a chunked protocol that cannot be understood. `reason` is "bad_chunk"."""

    def __init__(self, message: str) -> None:
        self.reason = "bad_chunk"
        super().__init__(message)


# `Chunk.session_from_response` for a protocol whose reply names the session's URL in its
# Location header (tus) rather than in a JSON field.
LOCATION: Final = "Location"


@dataclass(frozen=True)
class Chunk:
    """One request's contribution to an upload session.

    Exactly one of `offset` (byte offset) or `index` (X segment_index) places `data`; both are
    None for requests that carry no data (e.g. X FINALIZE, a Google "start" or "query").
    `total` is the whole media size when the request says; `final` marks the request that ends
    the upload. `session_from_response` names the JSON field of the response that holds the
    session id when the request cannot know it yet (Dropbox upload_session/start), or is
    LOCATION (tus: the path of the reply's Location): the caller adds the chunk under that id
    once the response arrives.
    """

    session_id: str
    data: bytes = b""
    offset: int | None = None
    index: int | None = None
    total: int | None = None
    final: bool = False
    session_from_response: str | None = None
    # One part of a file that a later request joins from several uploads (a tus upload made
    # with `Upload-Concat: partial`): complete, it is kept for the join, not judged as a file.
    part: bool = False
    # That later request (tus `Upload-Concat: final;...`): the ids of the parts it joins, in
    # order. Each must have been seen whole here (`UploadSessions.parts`).
    joins: tuple[str, ...] = ()


class SessionStatus(StrEnum):
    """Where an upload session stands."""

    INCOMPLETE = "incomplete"
    COMPLETE = "complete"
    CONFLICTING_CHUNKS = "conflicting_chunks"
    OVERSIZE = "oversize"
    STORE_FULL = "store_full"
    # The upload ended (its last chunk, or its FINALIZE, arrived) with parts this gateway never
    # saw: a client that spreads one upload over several keys (a varied query parameter, a
    # second address) would otherwise get the server to commit a file nobody judged whole.
    UNSEEN_PARTS = "unseen_parts"
    # Its first part already showed a banked picture (`UploadSessions.partial`): the rest of it
    # is refused chunk by chunk.
    BANKED_PART = "banked_part"


@dataclass(frozen=True)
class SessionState:
    """A snapshot of a session after a chunk was added."""

    status: SessionStatus
    received_bytes: int
    total: int | None
    part: bool = False  # a part kept for a join (Chunk.part), not a file of its own

    @property
    def complete(self) -> bool:
        """Whether the whole media is here and can be assembled and judged."""
        return self.status is SessionStatus.COMPLETE

    @property
    def failed(self) -> bool:
        """Whether the session was refused (the caller applies the fail policy)."""
        return self.status not in (SessionStatus.INCOMPLETE, SessionStatus.COMPLETE)


type SessionKey = tuple[str, str, str]


class _Session:
    """Chunks of one upload: byte ranges (offset mode) or numbered segments (index mode)."""

    def __init__(self, now: float) -> None:
        self.starts: list[int] = []  # sorted starts of disjoint, non-adjacent byte ranges
        self.ranges: dict[int, bytes] = {}
        self.segments: dict[int, bytes] = {}
        self.mode: str | None = None
        self.total: int | None = None
        self.final = False
        self.status = SessionStatus.INCOMPLETE
        self.size = 0
        self.touched = now
        self.judged = 0  # the longest prefix judged before the upload ended (`interim`)
        self.looked = 0  # the longest prefix looked at for a banked picture (`partial`)
        self.looked_before = 0  # the one looked at before it
        self.part = False

    def state(self) -> SessionState:
        return SessionState(self.status, self.size, self.total, self.part)

    def fail(self, status: SessionStatus) -> None:
        """Drop the data but keep the verdict until the session expires."""
        self.status = status
        self.starts, self.ranges, self.segments, self.size = [], {}, {}, 0

    def add_range(self, offset: int, data: bytes) -> bool:
        """Merge bytes at `offset`; False if they disagree with bytes already held."""
        start, end = offset, offset + len(data)
        merged = data
        position = bisect.bisect_right(self.starts, start) - 1
        position = max(position, 0)
        while position < len(self.starts):
            other_start = self.starts[position]
            other = self.ranges[other_start]
            other_end = other_start + len(other)
            if other_start > end:
                break
            if other_end < start:
                position += 1
                continue
            # Overlapping or adjacent: the shared bytes must agree.
            low, high = max(start, other_start), min(end, other_end)
            if (
                high > low
                and other[low - other_start : high - other_start]
                != merged[low - start : high - start]
            ):
                return False
            if other_start < start:
                merged = other[: start - other_start] + merged
                start = other_start
            if other_end > end:
                merged = merged + other[end - other_start :]
                end = other_end
            del self.ranges[other_start]
            self.starts.pop(position)
        bisect.insort(self.starts, start)
        self.ranges[start] = merged
        self.size = sum(len(block) for block in self.ranges.values())
        return True

    def is_complete(self) -> bool:
        if self.mode == "index":
            count = len(self.segments)
            return (
                self.final
                and count > 0
                and max(self.segments) == count - 1
                and (self.total is None or self.total == self.size)
            )
        if self.mode == "offset":
            whole = self.starts == [0] and len(self.ranges[0]) == self.size
            if self.total is not None:
                return whole and self.size == self.total
            return whole and self.final
        return False

    def prefix(self) -> bytes:
        """The bytes held from the upload's start: the first byte range, or the segments from
        the first on until one is missing (empty when the start is not held)."""
        if self.mode == "offset":
            return self.ranges[0] if self.starts and self.starts[0] == 0 else b""
        if self.mode == "index":
            return b"".join(self.segments[i] for i in range(self.reach()))
        return b""

    def reach(self) -> int:
        """How far the upload is held from its start: bytes (offset mode) or segments."""
        if self.mode == "index":
            return sum(1 for _ in itertools.takewhile(self.segments.__contains__,
                                                      itertools.count()))  # fmt: skip
        return len(self.ranges.get(0, b""))

    def assemble(self) -> bytes:
        if self.mode == "index":
            return b"".join(self.segments[i] for i in range(len(self.segments)))
        return self.ranges[0]


class UploadSessions:
    """Chunks of multi-request uploads, keyed by (client, app, session id).

    Bounded: `max_session_bytes` per session ("oversize"), `max_total_bytes` and
    `max_sessions` overall ("store_full" for the session that would exceed them), and
    `ttl_s` after a session's last chunk.

    A session that failed is tombstoned (`fail`): its data is dropped, but every later chunk of
    it gets the same failure until `ttl_s` after the last one. Forgetting it instead would let a
    client poison its own session with one conflicting chunk and then send the real last chunk,
    which would start a fresh, incomplete session and be forwarded unjudged.
    """

    def __init__(
        self,
        *,
        max_session_bytes: int = 256 * _MiB,
        max_total_bytes: int = 1024 * _MiB,
        max_sessions: int = 10_000,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_session_bytes, max_total_bytes, max_sessions) <= 0 or ttl_s <= 0:
            raise ValueError("UploadSessions limits must be positive")
        self._max_session = max_session_bytes
        self._max_total = max_total_bytes
        self._max_sessions = max_sessions
        self._ttl = ttl_s
        self._clock = clock
        self._sessions: dict[SessionKey, _Session] = {}
        self._tombstones: OrderedDict[SessionKey, tuple[SessionStatus, float]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def add(self, client: str, app: str, chunk: Chunk) -> SessionState:
        """Add one chunk and report the session's state."""
        if chunk.offset is not None and chunk.index is not None:
            raise ChunkError("a chunk has either an offset or a segment index, not both")
        if (chunk.offset is not None and chunk.offset < 0) or (
            chunk.index is not None and not 0 <= chunk.index <= _MAX_SEGMENT_INDEX
        ):
            raise ChunkError("negative offset or segment index out of range")
        key = (client, app, chunk.session_id)
        with self._lock:
            now = self._clock()
            self._expire(now)
            tombstone = self._tombstones.get(key)
            if tombstone is not None:
                self._tombstones[key] = (tombstone[0], now)
                self._tombstones.move_to_end(key)
                return SessionState(tombstone[0], 0, chunk.total)
            session = self._sessions.get(key)
            if session is None:
                if len(self._sessions) >= self._max_sessions:
                    return SessionState(SessionStatus.STORE_FULL, 0, chunk.total)
                session = self._sessions[key] = _Session(now)
            session.touched = now
            if session.status in (SessionStatus.INCOMPLETE, SessionStatus.COMPLETE):
                before = session.size
                self._apply(session, chunk)
                self._total += session.size - before
            return session.state()

    def _apply(self, session: _Session, chunk: Chunk) -> None:
        if chunk.total is not None:
            if session.total is not None and session.total != chunk.total:
                session.fail(SessionStatus.CONFLICTING_CHUNKS)
                return
            session.total = chunk.total
        session.final = session.final or chunk.final
        session.part = session.part or chunk.part
        placed = chunk.offset is not None or chunk.index is not None
        mode = "offset" if chunk.offset is not None else "index"
        if placed and session.mode not in (None, mode):
            session.fail(SessionStatus.CONFLICTING_CHUNKS)
            return
        if placed and chunk.data:
            begun_elsewhere = _begun_elsewhere(session, chunk)
            session.mode = mode
            if not self._fits(session, chunk):
                return
            if begun_elsewhere:
                # The first bytes seen of an upload that never says its size start past its
                # beginning: that was sent from elsewhere (the phone's own data), and no
                # request here will say when it ends (a tus PATCH, a Dropbox append): a48 F2.
                session.fail(SessionStatus.UNSEEN_PARTS)
                return
            if chunk.index is not None:
                held = session.segments.get(chunk.index)
                if held is not None and held != chunk.data:
                    session.fail(SessionStatus.CONFLICTING_CHUNKS)
                    return
                if held is None:
                    session.segments[chunk.index] = chunk.data
                    session.size += len(chunk.data)
            elif chunk.offset is not None and not session.add_range(chunk.offset, chunk.data):
                session.fail(SessionStatus.CONFLICTING_CHUNKS)
                return
        if session.mode == "offset" and session.total is not None and session.starts:
            last = session.starts[-1]
            if last + len(session.ranges[last]) > session.total:
                session.fail(SessionStatus.CONFLICTING_CHUNKS)
                return
        if session.is_complete():
            session.status = SessionStatus.COMPLETE
        elif chunk.final or _reaches_total(chunk):
            session.fail(SessionStatus.UNSEEN_PARTS)

    def _fits(self, session: _Session, chunk: Chunk) -> bool:
        # Upper bound of the growth (overlaps may add less): refuse before copying anything.
        grown = session.size + len(chunk.data)
        if grown > self._max_session or (chunk.offset or 0) + len(chunk.data) > self._max_session:
            session.fail(SessionStatus.OVERSIZE)
            return False
        if self._total + len(chunk.data) > self._max_total:
            session.fail(SessionStatus.STORE_FULL)
            return False
        return True

    def state(self, client: str, app: str, session_id: str) -> SessionState | None:
        """The state of a live session, or None."""
        with self._lock:
            self._expire(self._clock())
            session = self._sessions.get((client, app, session_id))
            return session.state() if session else None

    def waits_for_start(self, client: str, app: str, chunk: Chunk) -> bool:
        """Whether bytes before `chunk` are not here: it lands past what is held from its
        upload's start (past 0 where nothing is held). Its caller waits a little for them, as
        a client sending chunks side by side sends them soon, then refuses it: an upload begun
        on the phone's own data and continued at school left all but its first 2 KiB with the
        service, X's segments sent last to first all but the first (a70 F2, F5)."""
        start = chunk.offset if chunk.offset is not None else chunk.index
        if not start or not chunk.data:
            return False
        key = (client, app, chunk.session_id)
        with self._lock:
            session = self._sessions.get(key)
            if key in self._tombstones or (session is not None and session.status
                                            is not SessionStatus.INCOMPLETE):  # fmt: skip
                return False  # `add` answers it
            if session is None:
                # Of an upload that never says its size, `add` refuses it at once (a48 F2).
                return chunk.total is not None or chunk.final or chunk.index is not None
            if session.mode not in (None, "offset" if chunk.offset is not None else "index"):
                return False  # `add` refuses it as conflicting
            return start > session.reach()

    def _unfinished_from_start(self, client: str, app: str, session_id: str) -> _Session | None:
        """A live, unfinished session holding bytes from its start (lock held)."""
        session = self._sessions.get((client, app, session_id))
        if session is None or session.status is not SessionStatus.INCOMPLETE:
            return None
        return session if session.prefix() else None

    def interim(
        self, client: str, app: str, session_id: str, whole: Callable[[bytes], bool]
    ) -> bytes | None:
        """The bytes from offset 0 of an unfinished upload whose size was not given, when they
        already hold a `whole` picture and have not been judged at a size within a quarter of
        this one. A Google upload of unknown size (`bytes a-b/*`) is only ended by a request
        without data, and every byte of the picture reached the service before it: the chunk
        that completes a banked picture must be judged and blocked (adversarial pass a40 F3)."""
        with self._lock:
            session = self._unfinished_from_start(client, app, session_id)
            if session is None or session.total is not None or session.mode != "offset":
                return None
            prefix = session.prefix()
            if len(prefix) * 4 < session.judged * 5 or not whole(prefix):
                return None
            session.judged = len(prefix)
            return prefix

    def partial(self, client: str, app: str, session_id: str) -> tuple[bytes, int | None] | None:
        """The bytes from the start of an unfinished upload, and its declared size, to look for
        a banked picture or video in, as they grow (`next_look`), and once more when they are
        nearly all of it. A service that holds 90% of a banked picture shows it (the last rows
        grey), and the last chunk may come from elsewhere (adversarial pass a48 F3); a video's
        index may sit in its last bytes (an MP4's moov), and an upload that never sends its
        closing request (X's FINALIZE) holds every byte (a58 F3). Looked at from half, a
        resumable upload's refused chunk left up to 68% of a banked JPEG with the service (a68
        F2, a69 F4). The caller blocks only on a match: a prefix is not a whole picture, and
        refusing it as one would stop every chunked upload."""
        with self._lock:
            session = self._unfinished_from_start(client, app, session_id)
            if session is None:
                return None
            prefix, total = session.prefix(), session.total
            if not look_due(prefix, total, session.looked):
                return None
            session.looked_before, session.looked = session.looked, len(prefix)
            return prefix, total

    def looked_before(self, client: str, app: str, session_id: str) -> int:
        """How long the first part was at the look before the latest (`partial`; 0: none)."""
        with self._lock:
            session = self._sessions.get((client, app, session_id))
            return session.looked_before if session else 0

    def assemble(self, client: str, app: str, session_id: str) -> bytes:
        """The whole media of a complete session (the session stays until `discard`)."""
        with self._lock:
            session = self._sessions.get((client, app, session_id))
            if session is None or session.status is not SessionStatus.COMPLETE:
                raise ChunkError(f"upload session {session_id!r} is not complete")
            return session.assemble()

    def fail(self, client: str, app: str, session_id: str, status: SessionStatus) -> None:
        """Drop a failed session's data and tombstone it: its later chunks fail the same way."""
        key = (client, app, session_id)
        with self._lock:
            session = self._sessions.pop(key, None)
            if session is not None:
                self._total -= session.size
            self._tombstones[key] = (status, self._clock())
            self._tombstones.move_to_end(key)
            while len(self._tombstones) > self._max_sessions:
                self._tombstones.popitem(last=False)

    def parts(self, client: str, app: str, session_ids: tuple[str, ...]) -> bytes | None:
        """The file a join makes of complete parts kept here, in order, the parts forgotten;
        None when any of them was not seen whole here (sent from elsewhere: a49 F6)."""
        with self._lock:
            keys = [(client, app, session_id) for session_id in session_ids]
            found = [self._sessions.get(key) for key in keys]
            if not all(s is not None and s.part and s.status is SessionStatus.COMPLETE
                       for s in found):  # fmt: skip
                return None
            joined = b"".join(s.assemble() for s in found if s is not None)
            for key in dict.fromkeys(keys):
                self._total -= self._sessions.pop(key).size
            return joined

    def discard(self, client: str, app: str, session_id: str) -> None:
        """Forget a session (after judging it, or when the client cancels)."""
        with self._lock:
            session = self._sessions.pop((client, app, session_id), None)
            if session is not None:
                self._total -= session.size

    def purge(self) -> int:
        """Drop expired sessions; returns how many."""
        with self._lock:
            return self._expire(self._clock())

    @property
    def total_bytes(self) -> int:
        """Bytes held across all sessions."""
        with self._lock:
            return self._total

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expire(self, now: float) -> int:
        stale = [key for key, s in self._sessions.items() if now - s.touched >= self._ttl]
        for key in stale:
            self._total -= self._sessions.pop(key).size
        while self._tombstones:
            key, (_, touched) = next(iter(self._tombstones.items()))
            if now - touched < self._ttl:
                break
            del self._tombstones[key]
        return len(stale)


def _begun_elsewhere(session: _Session, chunk: Chunk) -> bool:
    """Whether a session's first data lands past offset 0 with no size declared anywhere."""
    return (bool(chunk.offset) and session.mode is None and session.total is None
            and not chunk.final)  # fmt: skip


def _reaches_total(chunk: Chunk) -> bool:
    """Whether a placed chunk ends where the upload says it ends (its last bytes)."""
    if chunk.offset is None or chunk.total is None or not chunk.data:
        return False
    return chunk.offset + len(chunk.data) >= chunk.total
