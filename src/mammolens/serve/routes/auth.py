"""``/api/auth``: log in (session cookie or bearer token), log out, who am I."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from mammolens.serve.auth import SESSION_COOKIE, authenticate, open_session, revoke_session
from mammolens.serve.deps import DbSession, ServiceDep, SignedIn
from mammolens.serve.schemas import LoginBody, LoginResult, Me, Ok

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/login", response_model=LoginResult, response_model_exclude_unset=True)
def login(body: LoginBody, response: Response, svc: ServiceDep, s: DbSession) -> dict:
    """Sign in. Sets the ``mammolens_session`` cookie and returns the CSRF token, or with
    ``"bearer": true`` returns a bearer token. 401 for a wrong name or password; 429
    after repeated failures for the same user name."""
    if not svc.throttle.begin(body.username):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed logins; try again later")
    try:
        user = authenticate(s, body.username, body.password)
        if user is None:
            svc.throttle.failed(body.username)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
        sid = open_session(s, user, svc.signer.max_age_s)
        token, csrf = svc.signer.issue(user, sid)
        out = {"username": user.username, "role": user.role}
        s.commit()  # the session row exists before its token leaves the server
    except HTTPException:
        raise
    except BaseException:
        svc.throttle.abandoned(body.username)
        raise
    svc.throttle.succeeded(body.username)
    if body.bearer:
        return out | {"token": token, "token_type": "bearer", "expires_in": svc.signer.max_age_s}
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=svc.signer.max_age_s,
        httponly=True,
        samesite="strict",
        secure=svc.settings.cookie_secure,
        path="/",
    )
    return out | {"csrf_token": csrf}


@router.post("/logout", response_model=Ok)
def logout(response: Response, user: SignedIn, s: DbSession) -> dict:
    """End the session on the server (its token and cookie stop working) and clear the cookie."""
    revoke_session(s, user.sid)
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict", httponly=True)
    return {"ok": True}


@router.get("/me", response_model=Me)
def me(user: SignedIn) -> dict:
    """The signed-in user and the CSRF token the page must send with changes."""
    return {"id": user.id, "username": user.username, "role": user.role, "csrf_token": user.csrf}
