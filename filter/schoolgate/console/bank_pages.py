"""Banking an incident without anyone viewing it (console, `dsl` role).

Two ways in: a hash list received from the police, CEOP or a hash-sharing partner, or a file
that is hashed in memory on the appliance and discarded. An uploaded file is never written to
disk (the request keeps file parts in memory, bounded by the request size cap), never stored,
never rendered: the page shows only its hashes and what was banked. Every banking is in the
access log, with its provenance in the bank.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import IO, Any

from flask import Flask, Request, abort, g, render_template, request
from flask.typing import ResponseReturnValue

from schoolgate.banks.exemptions import Exemptions
from schoolgate.banks.formats import ImportFormat, read_signals
from schoolgate.banks.media import MediaNotBanked, bank_media, describe_banked
from schoolgate.banks.model import BankError, parse_signal_type, validate_bank_name
from schoolgate.console.web import remote_address, requires

HASH_LIST_FORMATS = {
    ImportFormat.TE_FILE.value: "ThreatExchange / HMA file (type and hash per line)",
    ImportFormat.SIGNAL_TABLE.value: "Signal table (CSV with signal_type and signal columns)",
    ImportFormat.HEX.value: "Plain list of hashes of one type",
    ImportFormat.VPDQ.value: "vPDQ frame hashes of one video",
}
MAX_LIST_LINES = 1_000_000


class InMemoryRequest(Request):
    """File parts stay in memory: Werkzeug would spool parts over 500 KB to a temporary file,
    and an incident's media must never touch the disk."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def add_bank_pages(app: Flask, console: Any) -> None:
    app.request_class = InMemoryRequest

    @app.route("/banks", methods=["GET", "POST"])
    @requires("dsl")
    def banks() -> ResponseReturnValue:
        result: dict[str, Any] | None = None
        error: str | None = None
        if request.method == "POST":
            try:
                match request.form.get("action"):
                    case "list":
                        result = _bank_list(console)
                    case "file":
                        result = _bank_file(console)
                    case "revoke":
                        result = _revoke(console)
                    case _:
                        abort(400, "Unknown action.")
            except (BankError, MediaNotBanked) as exc:
                error = str(exc)
        return render_template(
            "banks.html",
            stats=console.banks.stats(),
            result=result,
            error=error,
            formats=HASH_LIST_FORMATS,
            exemptions=Exemptions(console.banks).list(),
        )


def _target_bank(console: Any) -> tuple[str, str, str]:
    bank = request.form.get("bank", "").strip()
    validate_bank_name(bank)
    provenance = request.form.get("provenance", "").strip()[:200]
    if not provenance:
        raise BankError(
            "say where this came from (for example: CEOP reference 1234, or the "
            "DSL's incident number)"
        )
    console.banks.ensure_bank(bank, source=provenance)
    return bank, provenance, request.form.get("note", "").strip()[:200]


def _bank_file(console: Any) -> dict[str, Any]:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise BankError("choose the file to hash")
    bank, provenance, note = _target_bank(console)
    data = upload.stream.read()
    upload.stream.close()
    banked = bank_media(
        console.banks,
        bank,
        data,
        console.config,
        # Every match names who banked the file and that nobody could look at it: a file
        # handed in can be a harmless photo someone wants blocked (adversarial pass a15), and
        # the DSL working the next incident must see that one person's word put it there.
        note=f"{note or provenance} (a file banked unseen by {g.session.username} on "
        f"{datetime.now(UTC):%Y-%m-%d})",
        source=f"console:{g.session.username}: {provenance}",
    )
    del data  # hashed; nothing of the file is kept
    item = banked.item
    console.store.log_access(
        g.session.username,
        "banked a file (hashed, not kept)",
        f"{bank} sha256 {item.exact.sha256}",
        remote_address(),
    )
    hashes = {"SHA-256": item.exact.sha256, "MD5": item.exact.md5, "SHA-1": item.exact.sha1}
    if item.pdq is not None:
        hashes["PDQ"] = item.pdq.hex
    if item.video is not None:
        hashes["vPDQ frames"] = str(len(item.video.features))
    return {
        "kind": "file",
        "bank": bank,
        "added": banked.added,
        "features": banked.features,
        "hashes": hashes,
        "notes": describe_banked(item),
        "withdrew": banked.withdrew_exemption,
    }


def _bank_list(console: Any) -> dict[str, Any]:
    upload = request.files.get("list")
    text = (
        upload.stream.read().decode("utf-8-sig", "replace")
        if upload and upload.filename
        else (request.form.get("hashes", ""))
    )
    if not text.strip():
        raise BankError("paste the hash list or choose its file")
    fmt = request.form.get("format", "")
    if fmt not in HASH_LIST_FORMATS:
        abort(400, "Unknown list format.")
    type_name = request.form.get("signal_type", "").strip()
    signal_type = parse_signal_type(type_name) if type_name else None
    bank, provenance, note = _target_bank(console)
    lines = text.splitlines()[:MAX_LIST_LINES]
    signals = list(read_signals(lines, fmt, signal_type=signal_type, content_id=note or provenance))
    added = console.banks.add_signals(
        bank, signals, source=f"console:{g.session.username}: {provenance}"
    )
    console.store.log_access(
        g.session.username, f"imported a hash list ({len(signals)} rows)", bank, remote_address()
    )
    return {"kind": "list", "bank": bank, "read": len(signals), "added": added}


def _revoke(console: Any) -> dict[str, Any]:
    """Withdraw an exemption: the file counts for that bank or model again."""
    exemptions = Exemptions(console.banks)
    label, sha256 = request.form.get("label", ""), request.form.get("sha256", "")
    found = next((e for e in exemptions.list() if (e.label, e.sha256) == (label, sha256)), None)
    if found is None or not exemptions.remove(found.sha256, found.kind, found.source):
        raise BankError("no such exemption (already withdrawn?)")
    me = g.session.username
    what = f"SHA-256 {found.sha256} for {found.kind} {found.source}"
    if found.incident:
        console.store.act(found.incident, me, "exemption withdrawn", what)
    console.store.log_access(me, "withdrew an exemption", what, remote_address())
    return {"kind": "revoked", "bank": f"{found.kind} {found.source}"}
