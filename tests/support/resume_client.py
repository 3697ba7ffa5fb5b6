"""A TLS 1.2 client that tries adversarial pass a27 R12, resumption across names: `python -m
tests.support.resume_client ADDRESS FIRST THEN [--move NETNS] [--tries N] [--wait-for PATH]`.

It makes a session naming FIRST (TLS 1.2, the server's certificate not checked: the test's
own), then, after moving into network namespace NETNS where given (the pupil's device, the
first connection having been made "at home"), opens N connections naming THEN that offer
the same session object, as an application that keeps its sessions does (with
--drop-on-error, none after a failed one, as browsers do). Each sends one POST
and prints `TRY n reused=True|False RESULT <status line>` or `TRY n RESULT ERROR <why>`.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import time

BODY = b"a picture's bytes"


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def _post(
    context: ssl.SSLContext, address: str, name: str, session: ssl.SSLSession | None
) -> tuple[str, ssl.SSLSession | None, bool]:
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name, session=session) as tls,
    ):
        request = (f"POST /upload HTTP/1.1\r\nHost: {name}\r\nContent-Length: {len(BODY)}"
                   "\r\nConnection: close\r\n\r\n").encode() + BODY  # fmt: skip
        tls.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
        status = answer.split(b"\r\n")[0].decode(errors="replace")
        return status, tls.session, bool(tls.session_reused)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("first")
    parser.add_argument("then")
    parser.add_argument("--move", default="")
    parser.add_argument("--tries", type=int, default=2)
    # What browsers and curl do after a fatal alert (adversarial report resume-clients): the
    # next connection offers no session. Without it, the session object is offered again.
    parser.add_argument("--drop-on-error", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0)  # seconds between tries
    parser.add_argument("--wait-for", default="")  # a file the test makes when the tries may go
    args = parser.parse_args()
    context = _context()
    status, session, _ = _post(context, args.address, args.first, None)
    print(f"FIRST RESULT {status}", flush=True)
    deadline = time.monotonic() + 60
    while args.wait_for and not os.path.exists(args.wait_for) and time.monotonic() < deadline:
        time.sleep(0.1)
    if args.move:
        with open(f"/run/netns/{args.move}") as namespace:
            os.setns(namespace.fileno(), os.CLONE_NEWNET)
    for n in range(1, args.tries + 1):
        time.sleep(args.pause if n > 1 else 0)
        try:
            status, _, reused = _post(context, args.address, args.then, session)
            print(f"TRY {n} reused={reused} RESULT {status}", flush=True)
        except (OSError, ssl.SSLError) as exc:
            print(f"TRY {n} RESULT ERROR {exc}", flush=True)
            if args.drop_on_error:
                session = None


if __name__ == "__main__":
    main()
