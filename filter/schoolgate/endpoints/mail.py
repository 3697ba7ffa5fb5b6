"""Mail messages sent through an API (Gmail's `messages.send`, Graph's `sendMail`): an RFC 822
message whose MIME body holds the attachments, base64 or quoted-printable (adversarial pass a46
F1: a picture attached quoted-printable passed)."""

from __future__ import annotations

import re
from typing import Final

from schoolgate.endpoints.extract import transfer_decoded

# An RFC 822 message (a mail as the Gmail and Graph APIs take it): header lines, folded lines,
# a blank line; MIME says what the body is.
_MAIL_HEADERS: Final = re.compile(
    rb"\A(?:[!-9;-~]{1,76}:[^\r\n]{0,4096}\r?\n(?:[ \t][^\r\n]{0,4096}\r?\n){0,50}){1,200}\r?\n"
)


def mail_message(data: bytes) -> tuple[str, bytes] | None:
    """(the Content-Type, the body with its transfer encoding undone) of a MIME mail message;
    None for anything else."""
    found = _MAIL_HEADERS.match(data)
    if found is None:
        return None
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", found[0]).decode("latin-1")
    fields: dict[str, str] = {}
    for line in unfolded.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    if "content-type" not in fields and "mime-version" not in fields:
        return None
    body = transfer_decoded(
        data[found.end() :], fields.get("content-transfer-encoding", ""), "mail"
    )
    return fields.get("content-type", "text/plain"), body
