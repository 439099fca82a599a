"""The HTML pages: one base template holds the head and the navigation; each page extends
it, loads the shared script and its own, and has every element its script looks up."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mammolens.serve.routes.pages import PAGES, render_page

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "mammolens" / "serve" / "templates"
STATIC = TEMPLATES.parent / "static"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict]]:
    p = _Tags()
    p.feed(html)
    return p.tags


def test_only_the_base_template_has_a_head_and_a_top_bar():
    pages = sorted(p.name for p in TEMPLATES.glob("*.html") if p.name != "base.html")
    assert {t for t, _ in PAGES.values()} == set(pages)
    for name in pages:
        text = (TEMPLATES / name).read_text(encoding="utf-8")
        assert text.startswith('{% extends "base.html" %}'), name
        for piece in ("<head", "<html", "<body", 'class="topbar"', "common.js", "app.css"):
            assert piece not in text, (name, piece)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_renders_from_the_base(name: str):
    html = render_page(name)
    assert "{%" not in html and "{{" not in html and "{#" not in html
    tags = _tags(html)
    assert [t for t, _ in tags].count("head") == 1 and [t for t, _ in tags].count("body") == 1
    scripts = [a["src"] for t, a in tags if t == "script"]
    assert scripts == ["/static/common.js", f"/static/{name}.js"]
    assert (STATIC / Path(scripts[1]).name).is_file()
    assert [a["href"] for t, a in tags if t == "link" and a.get("rel") == "stylesheet"] == ["/static/app.css"]
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert title.startswith("mammolens — ")
    nav = [a for t, a in tags if t == "a" and a.get("id", "").startswith("nav-")]
    if name == "login":
        assert nav == [] and 'id="logout"' not in html
        return
    assert [a["href"] for a in nav] == ["/worklist", "/reader", "/admin"]
    active = [a["href"] for a in nav if a.get("class") == "active"]
    assert active == ({"worklist": ["/worklist"], "reader": ["/reader"], "admin": ["/admin"]}.get(name, []))
    # the admin link shows for admins only (common.js unhides it), except on the admin page
    admin_link = nav[2]
    assert ("hidden" in admin_link) == (name != "admin")
    for needed in ("whoami", "logout"):
        assert f'id="{needed}"' in html


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_element_a_page_script_looks_up_is_there(name: str):
    html = render_page(name)
    ids = {a["id"] for _t, a in _tags(html) if "id" in a}
    script = (STATIC / f"{name}.js").read_text(encoding="utf-8")
    wanted = set(re.findall(r'getElementById\("([\w-]+)"\)', script))
    wanted |= set(re.findall(r'\$\("#([\w-]+)"\)', script))
    wanted |= set(re.findall(r'querySelector(?:All)?\("#([\w-]+)', script))
    assert wanted, f"{name}.js looks nothing up?"
    assert wanted <= ids, sorted(wanted - ids)


def test_pages_are_served_and_guarded(service_app):
    _app, api, _ = service_app
    c = api.client
    assert c.get("/login").text == render_page("login")
    assert c.get("/admin", follow_redirects=False).headers["location"] == "/login"
    r1 = api.login("r1")
    assert c.get("/worklist", headers=r1).text == render_page("worklist")
    assert c.get("/viewer/1", headers=r1).text == render_page("viewer")
    assert c.get("/reader/3", headers=r1).text == render_page("viewer")
    assert c.get("/admin", headers=r1, follow_redirects=False).headers["location"] == "/worklist"
    assert c.get("/admin", headers=api.login("admin")).text == render_page("admin")
