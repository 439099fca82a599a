"""``/api/auth``: log in (session cookie or bearer token), log out, who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from mammolens.serve.auth import SESSION_COOKIE, authenticate, open_session, revoke_session
from mammolens.serve.deps import CurrentUser, current_user, service

router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    #: ``true``: return a bearer token instead of setting the session cookie
    bearer: bool = False


@router.post("/login")
def login(body: LoginBody, request: Request, response: Response) -> dict:
    svc = service(request)
    if not svc.throttle.begin(body.username):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed logins; try again later")
    try:
        with svc.db.session() as s:
            user = authenticate(s, body.username, body.password)
            if user is None:
                svc.throttle.failed(body.username)
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
            sid = open_session(s, user, svc.signer.max_age_s)
            token, csrf = svc.signer.issue(user, sid)
            out = {"username": user.username, "role": user.role}
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


@router.post("/logout")
def logout(request: Request, response: Response, user: CurrentUser = Depends(current_user)) -> dict:
    """End the session on the server (its token and cookie stop working) and clear the cookie."""
    with service(request).db.session() as s:
        revoke_session(s, user.sid)
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict", httponly=True)
    return {"ok": True}


@router.get("/me")
def me(user: CurrentUser = Depends(current_user)) -> dict:
    """The signed-in user and the CSRF token the page must send with changes."""
    return {"id": user.id, "username": user.username, "role": user.role, "csrf_token": user.csrf}
