"""The HTML pages of the viewer (plain HTML/JS/CSS, no build step).

Every page except ``/login`` needs a session; without one the browser is sent to the
login page. Pages hold no data: their scripts fetch it from the authenticated API. The
pages are Jinja2 templates that extend ``templates/base.html`` (the head, the top bar and
its navigation); they take no request data, so each is rendered once and kept.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mammolens.serve.deps import MaybeSignedIn

router = APIRouter(include_in_schema=False)
_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: page -> (template, active navigation entry)
PAGES = {
    "login": ("login.html", None),
    "worklist": ("worklist.html", "worklist"),
    "viewer": ("viewer.html", None),
    "reader": ("reader.html", "reader"),
    "admin": ("admin.html", "admin"),
}


@cache
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def render_page(name: str) -> str:
    """The HTML of page ``name`` (a key of :data:`PAGES`)."""
    template, active = PAGES[name]
    return _env().get_template(template).render(active=active)


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(render_page(name))


def _guard(user, page: str, *, admin: bool = False) -> Response:
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if admin and not user.is_admin:
        return RedirectResponse("/worklist", status_code=303)
    return _page(page)


@router.get("/login")
def login_page() -> HTMLResponse:
    return _page("login")


@router.get("/")
def root(user: MaybeSignedIn) -> Response:
    return RedirectResponse("/worklist" if user else "/login", status_code=303)


@router.get("/worklist")
def worklist_page(user: MaybeSignedIn) -> Response:
    return _guard(user, "worklist")


@router.get("/viewer/{study_id}")
def viewer_page(study_id: int, user: MaybeSignedIn) -> Response:
    return _guard(user, "viewer")


@router.get("/reader")
def reader_page(user: MaybeSignedIn) -> Response:
    return _guard(user, "reader")


@router.get("/reader/{case_id}")
def reader_case_page(case_id: int, user: MaybeSignedIn) -> Response:
    return _guard(user, "viewer")


@router.get("/admin")
def admin_page(user: MaybeSignedIn) -> Response:
    return _guard(user, "admin", admin=True)
