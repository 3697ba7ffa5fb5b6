"""Mail sent through an API carries pictures as MIME attachments: Gmail's `messages.send`
(`uploadType=media` with the message itself, or JSON `{"raw": base64url}`) and Graph's
`sendMail` (the message in base64). Adversarial pass a46 F1: an attachment written
quoted-printable passed on both gateways, where base64 was blocked. The messages here are
written by Python's own `email` package, not by the code under test."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from PIL import Image

from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractLimits

LIMITS = ExtractLimits()


def jpeg(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90)
    return out.getvalue()


def mail(attachment: bytes, encoding: str, forwarded: bool = False) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.org", "b@example.org", "hi"
    message.set_content("see attached")
    message.add_attachment(attachment, "image", "jpeg", filename="a.jpg", cte=encoding)
    if not forwarded:
        return message.as_bytes()
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "b@example.org", "c@example.org", "Fwd: hi"
    outer.set_content("forwarding")
    outer.add_attachment(message)
    return outer.as_bytes()


CARRIERS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "gmail uploadType=media": (lambda m: m, "message/rfc822"),
    "gmail json raw": (
        lambda m: json.dumps({"raw": base64.urlsafe_b64encode(m).decode()}).encode(),
        "application/json",
    ),
    "graph sendMail": (lambda m: base64.b64encode(m), "text/plain"),
}


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
@pytest.mark.parametrize("encoding", ["quoted-printable", "base64"])
@pytest.mark.parametrize("forwarded", [False, True])
def test_a_picture_attached_to_a_mail_is_found_whole(
    benign_photos: dict[str, Image.Image], carrier: str, encoding: str, forwarded: bool
) -> None:
    picture = jpeg(benign_photos["chelsea"])
    wrap, declared = CARRIERS[carrier]
    items = extract_items(wrap(mail(picture, encoding, forwarded)), declared, LIMITS)
    assert picture in [item.data for item in items]


@pytest.mark.parametrize(
    "text",
    [
        b"Subject: the trip\n\nWe leave at nine. Bring a coat.\n",
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: text/plain\n\nhello there\n",
        b"Note: not a mail\nat all",
    ],
)
def test_text_and_plain_mail_give_no_items(text: bytes) -> None:
    assert extract_items(text, "text/plain", LIMITS) == []
