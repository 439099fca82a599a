"""FastAPI dependencies: the service, the request's database session, the signed-in user,
roles and CSRF.

Routes declare what they need with the ``Annotated`` aliases below (FastAPI's
"dependencies" pattern) instead of reaching into ``request.app.state``::

    @router.get("/things/{id}", response_model=Thing)
    def get_thing(id: RowId, s: DbSession, user: SignedIn, svc: ServiceDep): ...

A route that declares :data:`DbSession` gets the request's session (FastAPI caches a
dependency per request). It is committed when the route returns, before the response is
sent (``scope="function"``), so a client that reads right after a change sees it; an
exception rolls it back. The user lookup uses a short session of its own, so routes that
take long without the database (uploads, PACS pulls, PNG rendering) hold no connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security, status
from fastapi.security import APIKeyCookie, HTTPBearer
from sqlalchemy.orm import Session

from mammolens.serve import queries
from mammolens.serve.auth import CSRF_HEADER, SESSION_COOKIE, CurrentUser, csrf_ok
from mammolens.serve.service import Service

__all__ = [
    "MAX_DB_INT", "RowId", "CurrentUser", "ServiceDep", "DbSession", "SnapshotSession",
    "SignedIn", "Admin", "MaybeSignedIn", "get_service", "db_session", "db_snapshot",
    "optional_user", "current_user", "require_admin",
]

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

#: the largest row id (and offset) the database columns hold: PostgreSQL ``INTEGER``.
#: Larger numbers are refused with 422 before they reach a query, where SQLite would
#: overflow its 64-bit integers and PostgreSQL its 32-bit ones (a 500 each).
MAX_DB_INT = 2**31 - 1

#: a row id in a URL path
RowId = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="row id")]


def get_service(request: Request) -> Service:
    """The app's :class:`~mammolens.serve.service.Service` (database, store, scorer, worker)."""
    return request.app.state.svc


ServiceDep = Annotated[Service, Depends(get_service)]


def db_session(svc: ServiceDep) -> Iterator[Session]:
    """The request's session: committed when the route returns, rolled back on an error."""
    with svc.db.session() as s:
        yield s


def db_snapshot(svc: ServiceDep) -> Iterator[Session]:
    """A read-only session whose queries all see one state of the database
    (:meth:`mammolens.serve.db.Database.snapshot`)."""
    with svc.db.snapshot() as s:
        yield s


DbSession = Annotated[Session, Depends(db_session, scope="function")]
SnapshotSession = Annotated[Session, Depends(db_snapshot, scope="function")]


# The two ways to authenticate, declared for the OpenAPI schema (``securitySchemes`` and
# each operation's ``security``); the token itself is read by :func:`_token` below, with
# the bearer header taking precedence over the cookie.
_BEARER = HTTPBearer(
    scheme_name="bearer", auto_error=False,
    description='API clients: the token of `POST /api/auth/login` with `"bearer": true`',
)
_COOKIE = APIKeyCookie(
    name=SESSION_COOKIE, scheme_name="session_cookie", auto_error=False,
    description="browsers: the session cookie of `POST /api/auth/login`; changes also need "
    "the `X-CSRF-Token` header (the login's `csrf_token`)",
)


def _token(request: Request) -> tuple[str | None, bool]:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None, False
    return request.cookies.get(SESSION_COOKIE), True


def optional_user(
    request: Request,
    svc: ServiceDep,
    _bearer: Annotated[object, Security(_BEARER)],
    _cookie: Annotated[object, Security(_COOKIE)],
) -> CurrentUser | None:
    """The signed-in user or ``None`` (no CSRF check: for pages and safe requests)."""
    token, via_cookie = _token(request)
    if not token:
        return None
    info = svc.signer.verify(token)
    if info is None:
        return None
    with svc.db.session() as s:
        user = queries.signed_in_user(s, info)
        if user is None:
            return None
        return CurrentUser(user.id, user.username, user.role, info.csrf, via_cookie, info.sid)


MaybeSignedIn = Annotated[CurrentUser | None, Depends(optional_user)]


def current_user(request: Request, user: MaybeSignedIn) -> CurrentUser:
    """The signed-in user; 401 without a valid session, 403 on a cookie request without CSRF."""
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


SignedIn = Annotated[CurrentUser, Depends(current_user)]


def require_admin(user: SignedIn) -> CurrentUser:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return user


Admin = Annotated[CurrentUser, Depends(require_admin)]
