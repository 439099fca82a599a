"""Accounts, password hashing and sessions.

* Passwords are hashed with Argon2id (argon2-cffi, RFC 9106 parameters).
* A session is a row of ``auth_sessions`` plus a token signed with the server secret
  (itsdangerous, HMAC-SHA256 with a timestamp): ``{uid, v (the user's token_version),
  csrf, sid (the row's id)}``. A token is accepted only while its row is neither revoked
  nor expired, so logging out ends the session on the server: a copied token or cookie
  stops working too. It is sent either as the
  ``mammolens_session`` cookie (HttpOnly, SameSite=Strict) set by ``POST /api/auth/login``,
  or as ``Authorization: Bearer <token>`` by API clients.
* CSRF: a state-changing request (POST/PUT/PATCH/DELETE) authenticated by the cookie must
  carry the token's ``csrf`` value in the ``X-CSRF-Token`` header (double submit bound to
  the signed session); bearer requests need no CSRF header, as browsers never add them.
* Failed logins are throttled per user name (:class:`LoginThrottle`); attempts in flight
  count, so a burst of concurrent guesses cannot all pass the check before any failure
  is recorded.
* The secret comes from ``MAMMOLENS_SECRET_KEY``; without it an ephemeral random key is
  generated (sessions then end with the process) and a warning is logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from mammolens.errors import ConfigError
from mammolens.serve import queries
from mammolens.serve.models import ROLES, AuthSession, User, utcnow

log = logging.getLogger("mammolens.serve")

SESSION_COOKIE = "mammolens_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_MAX_AGE_S = 12 * 3600
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD = 8

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """Argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def secret_key_from_env() -> str:
    """``MAMMOLENS_SECRET_KEY`` or an ephemeral random key (with a warning)."""
    key = os.environ.get("MAMMOLENS_SECRET_KEY", "")
    if key:
        if len(key) < 16:
            raise ConfigError("MAMMOLENS_SECRET_KEY is too short (use at least 16 characters)")
        return key
    log.warning(
        "MAMMOLENS_SECRET_KEY is not set: using an ephemeral key; sessions end when the server stops"
    )
    return secrets.token_urlsafe(32)


def validate_username(username: str) -> str:
    if not USERNAME_RE.match(username or ""):
        raise ConfigError("user names are 1-64 characters: letters, digits, '_', '.', '-'")
    return username


def validate_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise ConfigError(f"passwords need at least {MIN_PASSWORD} characters")
    return password


def create_user(session: Session, username: str, password: str, *, role: str = "reader") -> User:
    """Create an account (``role`` reader|admin); raises ``ConfigError`` on bad input or a taken name."""
    validate_username(username)
    validate_password(password)
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if queries.user_by_name(session, username) is not None:
        raise ConfigError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    validate_password(password)
    user.password_hash = hash_password(password)
    user.token_version += 1


@dataclass(frozen=True)
class SessionInfo:
    """The verified content of a session token."""

    user_id: int
    version: int
    csrf: str
    sid: str


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user of a request (what the routes and the blinding rule see)."""

    id: int
    username: str
    role: str
    csrf: str
    via_cookie: bool
    sid: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenSigner:
    """Signs and verifies session tokens with the server secret."""

    def __init__(self, secret: str, *, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self._s = URLSafeTimedSerializer(secret, salt="mammolens-session")
        self.max_age_s = max_age_s

    def issue(self, user: User, sid: str) -> tuple[str, str]:
        """A new token for ``user``'s session ``sid`` and its CSRF value."""
        csrf = secrets.token_urlsafe(24)
        return self._s.dumps({"uid": user.id, "v": user.token_version, "csrf": csrf, "sid": sid}), csrf

    def verify(self, token: str) -> SessionInfo | None:
        try:
            data = self._s.loads(token, max_age=self.max_age_s)
        except (BadSignature, SignatureExpired):
            return None
        try:
            return SessionInfo(int(data["uid"]), int(data["v"]), str(data["csrf"]), str(data["sid"]))
        except (KeyError, TypeError, ValueError):
            return None


def open_session(session: Session, user: User, max_age_s: int) -> str:
    """Record a new server-side session of ``user``; returns its id (for the token).

    Sessions that ended more than a day ago are removed on the way, so the table stays
    the size of the active sessions.
    """
    now = utcnow()
    queries.purge_ended_sessions(session, now - timedelta(days=1))
    sid = secrets.token_urlsafe(24)
    session.add(AuthSession(id=sid, user_id=user.id, created_at=now, expires_at=now + timedelta(seconds=max_age_s)))
    session.flush()
    return sid


def revoke_session(session: Session, sid: str) -> None:
    """End the session ``sid`` on the server (logout)."""
    row = session.get(AuthSession, sid)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


class LoginThrottle:
    """At most ``limit`` failed logins per user name in ``window_s`` seconds.

    A login first reserves an attempt (:meth:`begin`), which counts against the limit at once
    (before the slow password check), then ends it with :meth:`failed` or
    :meth:`succeeded`. So ``limit`` concurrent wrong passwords are checked, and every
    further concurrent one is refused without a check, where a check-then-record
    throttle would let the whole burst through.
    """

    def __init__(self, *, limit: int = 10, window_s: float = 300.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._fails: dict[str, list[float]] = {}
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def _recent(self, username: str, now: float) -> list[float]:
        recent = [t for t in self._fails.get(username, []) if now - t < self.window_s]
        if recent:
            self._fails[username] = recent
        else:
            self._fails.pop(username, None)
        return recent

    def blocked(self, username: str) -> bool:
        """Whether ``username`` is locked out right now (failures, attempts in flight)."""
        with self._lock:
            return len(self._recent(username, time.monotonic())) + self._pending.get(username, 0) >= self.limit

    def begin(self, username: str) -> bool:
        """Reserve an attempt: ``False`` (refuse with 429) when the user is locked out."""
        with self._lock:
            n = len(self._recent(username, time.monotonic())) + self._pending.get(username, 0)
            if n >= self.limit:
                return False
            self._pending[username] = self._pending.get(username, 0) + 1
            return True

    def _end(self, username: str) -> None:
        n = self._pending.get(username, 0) - 1
        if n > 0:
            self._pending[username] = n
        else:
            self._pending.pop(username, None)

    def failed(self, username: str) -> None:
        """End a reserved attempt as a failure (it stays counted for ``window_s``)."""
        with self._lock:
            self._end(username)
            self._fails.setdefault(username, []).append(time.monotonic())

    def succeeded(self, username: str) -> None:
        """End a reserved attempt as a success: the failure history is cleared."""
        with self._lock:
            self._end(username)
            self._fails.pop(username, None)

    def abandoned(self, username: str) -> None:
        """End a reserved attempt that never reached a verdict (an error)."""
        with self._lock:
            self._end(username)


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = queries.user_by_name(session, username)
    if user is None:
        _hasher.hash(password)  # same cost whether or not the user exists
        return None
    if not user.active or not verify_password(user.password_hash, password):
        return None
    return user
