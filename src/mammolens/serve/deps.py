"""FastAPI dependencies: the service state, the signed-in user, roles and CSRF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Path, Request, status

from mammolens.serve.auth import CSRF_HEADER, SESSION_COOKIE, csrf_ok, session_active
from mammolens.serve.models import User

if TYPE_CHECKING:  # pragma: no cover
    from mammolens.serve.app import Service

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

#: the largest row id (and offset) the database columns hold: PostgreSQL ``INTEGER``.
#: Larger numbers are refused with 422 before they reach a query, where SQLite would
#: overflow its 64-bit integers and PostgreSQL its 32-bit ones (a 500 each).
MAX_DB_INT = 2**31 - 1

#: a row id in a URL path
RowId = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="row id")]


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    role: str
    csrf: str
    via_cookie: bool
    sid: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def service(request: Request) -> Service:
    return request.app.state.svc


def _token(request: Request) -> tuple[str | None, bool]:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None, False
    return request.cookies.get(SESSION_COOKIE), True


def optional_user(request: Request) -> CurrentUser | None:
    """The signed-in user or ``None`` (no CSRF check: for pages and safe requests)."""
    token, via_cookie = _token(request)
    if not token:
        return None
    svc = service(request)
    info = svc.signer.verify(token)
    if info is None:
        return None
    with svc.db.session() as s:
        user = s.get(User, info.user_id)
        if user is None or not user.active or user.token_version != info.version:
            return None
        if not session_active(s, info):  # logged out, expired or unknown session
            return None
        return CurrentUser(user.id, user.username, user.role, info.csrf, via_cookie, info.sid)


def current_user(request: Request) -> CurrentUser:
    """The signed-in user; 401 without a valid session, 403 on a cookie request without CSRF."""
    user = optional_user(request)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "authentication required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if user.via_cookie and request.method not in SAFE_METHODS:
        if not csrf_ok(user.csrf, request.headers.get(CSRF_HEADER)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or invalid CSRF token")
    return user


def require_admin(user: CurrentUser = Depends(current_user)) -> CurrentUser:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return user
