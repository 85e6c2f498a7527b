"""Who may talk to the review server: the shared-secret gate and the forms' CSRF tokens.

* :class:`TokenGate` (ASGI middleware) refuses every request that does not carry the
  server's token, as ``Authorization: Bearer <token>``, the ``gzmorph_token`` cookie or,
  once, ``?token=<token>`` in the address (answered with the cookie and a redirect to
  the same address without the token, so it does not stay in the history).
* CSRF: each browser gets a random session cookie; forms carry
  ``HMAC(secret, session)``.  A page of another site cannot read the token, so it
  cannot post answers in a reviewer's name.
* :class:`HostGuard` (ASGI middleware, always on) answers only requests whose ``Host``
  is a name the server is bound to or configured for, and refuses a state-changing
  request (POST...) whose ``Origin`` (or, without one, ``Referer``) names another
  host.  Without it, a web page could rebind its own name to 127.0.0.1 (DNS
  rebinding), read a form's CSRF token as a same-origin page and post answers.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse

__all__ = ["HostGuard", "host_name", "TokenGate", "csrf_token", "check_csrf", "TOKEN_COOKIE", "SESSION_COOKIE"]

TOKEN_COOKIE = "gzmorph_token"
SESSION_COOKIE = "gzmorph_session"


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def host_name(value: str | None) -> str | None:
    """The host name of a ``Host`` header (``name[:port]``, ``[v6]:port``), lower case; None if malformed."""
    if not value:
        return None
    try:
        name = urlsplit(f"//{value.strip()}").hostname
    except ValueError:
        return None
    return name.lower() if name else None


def _origin_host(value: str) -> str | None:
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return parts.hostname.lower() if parts.scheme in ("http", "https") and parts.hostname else None


class HostGuard:
    """ASGI middleware: only requests naming an allowed host; state changes only from its own pages."""

    def __init__(self, app, hosts) -> None:
        self.app = app
        self.hosts = {h.lower().strip("[]") for h in hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        problem = None
        if host_name(request.headers.get("host")) not in self.hosts:
            problem = f"403: unknown host {request.headers.get('host')!r} (allowed: {', '.join(sorted(self.hosts))})"
        elif request.method not in _SAFE_METHODS:
            # Browsers send Origin with every cross-site POST; "null" (sandboxed pages) counts as foreign.
            source = request.headers.get("origin") or request.headers.get("referer")
            if source is not None and _origin_host(source) not in self.hosts:
                problem = f"403: request from another site ({source!r}) refused"
        if problem is None:
            await self.app(scope, receive, send)
            return
        await PlainTextResponse(problem, status_code=403)(scope, receive, send)


class TokenGate:
    """ASGI middleware: only requests carrying ``token`` pass."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        if _same(bearer, self.token) or _same(request.cookies.get(TOKEN_COOKIE), self.token):
            await self.app(scope, receive, send)
            return
        if _same(request.query_params.get("token"), self.token):
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        else:
            response = PlainTextResponse("403: this review server needs its token (open the address with "
                                         "?token=... once)", status_code=403)
        await response(scope, receive, send)


def csrf_token(secret: str, session: str) -> str:
    """The CSRF token of a browser session."""
    return hmac.new(secret.encode(), session.encode(), hashlib.sha256).hexdigest()


def check_csrf(secret: str, session: str | None, given: str | None) -> bool:
    """Whether a form's token belongs to the posting browser's session."""
    return bool(session) and _same(given, csrf_token(secret, session))
