"""The console's web plumbing: sign-in, sessions, roles, CSRF, rate limits and security headers.

Pages live in `console.app`; everything they share about who may see what is here, so that no
page can forget it:

- every page but the sign-in page needs a live session (idle timeout, maximum age), and a role;
- every POST needs the session's CSRF token (the sign-in form a double-submit token);
- sign-in attempts are limited per address, and an account locks after repeated bad passwords;
- responses are never cached, never framed, load nothing from elsewhere and run no inline script.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import wraps
from typing import Any, Final, ParamSpec, TypeVar

from flask import Response, abort, g, redirect, request, url_for

from schoolgate.console.store import ConsoleStore, Session

SESSION_COOKIE: Final = "__Host-schoolgate"
LOGIN_COOKIE: Final = "__Host-schoolgate-login"
# Per remote address: more sign-in attempts than this in the window are refused (429).
LOGIN_ATTEMPTS: Final = 20
LOGIN_WINDOW_S: Final = 300.0

P = ParamSpec("P")
R = TypeVar("R")

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class LoginThrottle:
    """At most LOGIN_ATTEMPTS sign-in attempts per address in LOGIN_WINDOW_S (one process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._attempts: dict[str, deque[float]] = {}

    def allow(self, address: str) -> bool:
        now = self._clock()
        with self._lock:
            recent = self._attempts.setdefault(address, deque())
            while recent and now - recent[0] > LOGIN_WINDOW_S:
                recent.popleft()
            if len(recent) >= LOGIN_ATTEMPTS:
                return False
            recent.append(now)
            if len(self._attempts) > 10_000:  # bounded: forget the quietest addresses
                for key in [k for k, v in self._attempts.items() if not v][:5_000]:
                    del self._attempts[key]
            return True


def current_session(store: ConsoleStore, idle_s: float, max_s: float) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return store.session(token, idle_s=idle_s, max_s=max_s)


def requires(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """A page for these roles: no session -> the sign-in page; another role -> 403; a POST
    without the session's CSRF token -> 400."""

    def decorate(view: Callable[P, R]) -> Callable[P, R | Response]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            session: Session | None = g.get("session")
            if session is None:
                return redirect(url_for("login", next=request.path))  # type: ignore[return-value]
            if session.role not in roles:
                abort(403)
            if request.method == "POST":
                check_csrf(session.csrf)
            return view(*args, **kwargs)

        return guarded

    return decorate


def check_csrf(expected: str) -> None:
    sent = request.form.get("csrf", "")
    if not sent or not hmac.compare_digest(sent, expected):
        abort(400, "The form is missing its security token or it has expired: reload the page.")


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    """__Host- cookies: HTTPS only, this host only, the whole site, no script access."""
    response.set_cookie(
        name, value, max_age=max_age, secure=True, httponly=True, samesite="Strict", path="/"
    )


def remote_address() -> str:
    return request.remote_addr or "unknown"


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def template_globals() -> dict[str, Any]:
    session: Session | None = g.get("session")
    return {"me": session, "csrf": session.csrf if session else ""}
