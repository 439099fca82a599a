"""``/api/auth``: log in (session cookie or bearer token), log out, who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from mammolens.serve.auth import SESSION_COOKIE, authenticate
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
    if svc.throttle.blocked(body.username):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed logins; try again later")
    with svc.db.session() as s:
        user = authenticate(s, body.username, body.password)
        if user is None:
            svc.throttle.failed(body.username)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
        token, csrf = svc.signer.issue(user)
        out = {"username": user.username, "role": user.role}
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
def logout(response: Response, _user: CurrentUser = Depends(current_user)) -> dict:
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict", httponly=True)
    return {"ok": True}


@router.get("/me")
def me(user: CurrentUser = Depends(current_user)) -> dict:
    """The signed-in user and the CSRF token the page must send with changes."""
    return {"id": user.id, "username": user.username, "role": user.role, "csrf_token": user.csrf}
