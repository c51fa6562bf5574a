"""Who may see the status page: scripts by ``Authorization: Bearer <token>``, browsers by a
session cookie that the login form sets, and a CSRF token per session for every POST.

A session cookie is opaque and signed: ``<expires>.<nonce>.<signature>``, the signature an
HMAC-SHA256 under a key derived from the page's token, so the cookie never contains the token,
every process that shares the token accepts it (several uvicorn workers), and changing the token
ends every session. Every comparison is constant-time (:func:`hmac.compare_digest`).

>>> sessions = Sessions("s3cret-from-your-settings", lifetime=60)
>>> cookie = sessions.issue(now=1000.0)
>>> session = sessions.verify(cookie, now=1010.0)
>>> session is not None and sessions.csrf_matches(session, sessions.csrf(session))
True
>>> sessions.verify(cookie, now=1061.0) is None  # expired
True
>>> sessions.verify(cookie[:-2] + "xx", now=1010.0) is None  # signature does not match
True
>>> sessions.revoke(session, now=1010.0)
>>> sessions.verify(cookie, now=1010.0) is None  # logged out
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "Sessions", "bearer_of"]

COOKIE = "dddframe_status_session"
_MAX_COOKIE = 256


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in browser: its random nonce and when it expires (Unix seconds)."""

    nonce: str
    expires: int


def bearer_of(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, None for another scheme.

    >>> bearer_of("Bearer abc"), bearer_of("bearer  abc "), bearer_of("Basic abc"), bearer_of("")
    ('abc', 'abc', None, None)
    """
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


class Sessions:
    """Issues, checks and revokes the session cookies of one status page."""

    def __init__(self, token: str, *, lifetime: int) -> None:
        self._token = token.encode("utf-8")
        self._key = hmac.new(self._token, b"dddframe status page session v1", "sha256").digest()
        self.lifetime = lifetime
        self._revoked: dict[str, int] = {}

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the page's token (constant-time)."""
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._token)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, *, now: float | None = None) -> str:
        """A new session cookie value, valid for ``lifetime`` seconds."""
        expires = int(time.time() if now is None else now) + self.lifetime
        payload = f"{expires}.{secrets.token_urlsafe(24)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str, *, now: float | None = None) -> Session | None:
        """The session of a cookie value, None when forged, expired or logged out."""
        if not cookie or len(cookie) > _MAX_COOKIE or not cookie.isascii():
            return None
        expires_text, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (expires_text.isdigit() and nonce and signature):
            return None
        expected = self._sign(f"{expires_text}.{nonce}")
        if not hmac.compare_digest(signature.encode("ascii"), expected.encode("ascii")):
            return None
        expires = int(expires_text)
        if expires <= (time.time() if now is None else now) or nonce in self._revoked:
            return None
        return Session(nonce=nonce, expires=expires)

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session: every form of the page carries it."""
        return self._sign(f"csrf.{session.nonce}")

    def csrf_matches(self, session: Session, given: str) -> bool:
        """Whether a POST's CSRF token is this session's (constant-time)."""
        expected = self.csrf(session).encode("ascii")
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected)

    def revoke(self, session: Session, *, now: float | None = None) -> None:
        """Log a session out in this process (its cookie is deleted in the browser as well;
        another process serving the same page accepts it until it expires)."""
        current = int(time.time() if now is None else now)
        for nonce in [n for n, expires in self._revoked.items() if expires <= current]:
            del self._revoked[nonce]
        self._revoked[session.nonce] = session.expires
