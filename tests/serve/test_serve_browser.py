"""Browser test: a reader logs in, opens the worklist and a study, toggles the heatmap and
completes one reader-study case unaided then aided (headless Debian Chromium through
Playwright). Screenshots are saved under test-artifacts/serve/."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from serve_fixtures import PASSWORD, SECRET, skip_or_fail, upload, write_study

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "serve"


@pytest.fixture
def live_server(tmp_path: Path, tiny_run: Path):
    from mammolens.serve.app import ServeSettings, create_app
    from mammolens.serve.auth import create_user
    from mammolens.serve.threaded import running_server

    app = create_app(ServeSettings(model=tiny_run, data_dir=tmp_path / "data", secret_key=SECRET, operating_point=0.5))
    with app.state.svc.db.session() as s:
        create_user(s, "admin", PASSWORD, role="admin")
        create_user(s, "reader1", PASSWORD, role="reader")
    with running_server(app) as base:
        yield base


def _seed(base: str, tmp_path: Path) -> tuple[int, int]:
    """Two scored studies: one on the worklist, one in the reader study."""
    with httpx.Client(base_url=base, timeout=60) as c:
        tok = c.post("/api/auth/login", json={"username": "admin", "password": PASSWORD, "bearer": True}).json()["token"]
        h = {"Authorization": f"Bearer {tok}"}
        ids = []
        for k in range(2):
            _uid, paths = write_study(tmp_path / f"s{k}", patient=k + 1, seed=k, rows=320, cols=240)
            r = upload(c, h, paths)
            assert r.status_code == 202, r.text
            ids += r.json()["study_ids"]
        end = time.monotonic() + 300
        while time.monotonic() < end:
            if all(c.get(f"/api/studies/{i}", headers=h).json()["status"] == "scored" for i in ids):
                break
            time.sleep(0.3)
        c.patch(f"/api/studies/{ids[1]}", json={"truth": 1}, headers=h).raise_for_status()
        c.post("/api/admin/reader-study", json={"study_ids": [ids[1]], "seed": 1}, headers=h).raise_for_status()
    return ids[0], ids[1]


def _loaded(page, selector: str) -> bool:
    return page.eval_on_selector_all(selector, "els => els.length > 0 && els.every(e => e.complete && e.naturalWidth > 0)")


def test_reader_session_in_browser(live_server: str, tmp_path: Path):
    if not os.path.exists(CHROMIUM):
        skip_or_fail("Debian chromium not installed (/usr/bin/chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright python package not installed")
    base = live_server
    worklist_id, _case_study = _seed(base, tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # unauthenticated: sent to the login page
        page.goto(f"{base}/worklist")
        assert page.url.endswith("/login")
        page.fill("#username", "reader1")
        page.fill("#password", "wrong password")
        page.click("#login-button")
        page.wait_for_selector("#login-error:has-text('wrong')")
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_url(f"{base}/worklist")
        page.wait_for_selector("#worklist tbody tr")
        rows = page.locator("#worklist tbody tr")
        assert rows.count() == 1  # the reader-study case is not on the worklist
        assert "%" in rows.first.locator("td").first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "01-worklist.png"))

        page.click("a.open-study")
        page.wait_for_url(f"{base}/viewer/{worklist_id}")
        page.wait_for_function("() => [...document.querySelectorAll('.vp .mg')].every(e => e.complete && e.naturalWidth > 0)")
        page.wait_for_function("() => [...document.querySelectorAll('.vp .hm')].every(e => !e.hidden && e.complete && e.naturalWidth > 0)")
        assert page.locator("#ai-exam").inner_text().endswith("%") or "%" in page.locator("#ai-exam").inner_text()
        assert "%" in page.locator(".vp[data-slot='LMLO'] .img-score").inner_text()
        page.fill("#heatmap-opacity", "70")
        assert page.eval_on_selector(".vp[data-slot='RCC'] .hm", "e => e.style.opacity") == "0.7"
        page.screenshot(path=str(ARTIFACTS / "02-viewer-heatmap.png"))
        page.uncheck("#heatmap-toggle")
        assert page.eval_on_selector_all(".vp .hm", "els => els.every(e => e.hidden)")
        # window/level: the image is re-rendered with new window parameters
        before = page.eval_on_selector(".vp[data-slot='RCC'] .mg", "e => e.src")
        page.fill("#wl-width", "40")
        page.wait_for_function("b => document.querySelector(\".vp[data-slot='RCC'] .mg\").src !== b", arg=before)
        assert "ww=" in page.eval_on_selector(".vp[data-slot='RCC'] .mg", "e => e.src")
        page.click("#zoom-in")
        assert "scale(1.25)" in page.eval_on_selector(".vp[data-slot='RCC'] .stage", "e => e.style.transform")
        page.wait_for_function("() => [...document.querySelectorAll('.vp .mg')].every(e => e.complete && e.naturalWidth > 0)")
        page.screenshot(path=str(ARTIFACTS / "03-viewer-no-heatmap-wl-zoom.png"))
        assert page.locator("#reading-status").input_value() == "in_progress"

        # reader study: unaided, then aided
        page.goto(f"{base}/reader")
        page.wait_for_selector("#progress:has-text('0 of 1')")
        page.click("#continue")
        page.wait_for_selector("#read-panel:not([hidden])")
        page.wait_for_function("() => [...document.querySelectorAll('.vp .mg')].every(e => e.complete && e.naturalWidth > 0)")
        assert page.locator("#ai-hidden").is_visible()
        assert page.locator("#ai-exam").inner_text() == "hidden"
        assert page.eval_on_selector_all(".vp .hm", "els => els.every(e => e.hidden)")
        page.screenshot(path=str(ARTIFACTS / "04-case-unaided.png"))
        page.fill("#read-score", "30")
        page.select_option("#read-birads", "3")
        page.click("#read-submit")
        page.wait_for_selector("#start-aided:not([hidden])")
        page.click("#start-aided")
        page.wait_for_selector("#acceptable-box:not([hidden])")
        page.wait_for_function("() => [...document.querySelectorAll('.vp .hm')].some(e => !e.hidden && e.naturalWidth > 0)")
        assert "%" in page.locator("#ai-exam").inner_text()
        assert "locked" in page.locator("#unaided-summary").inner_text()
        page.fill("#read-score", "55")
        page.select_option("#read-birads", "4")
        page.check("#acceptable-yes")
        page.screenshot(path=str(ARTIFACTS / "05-case-aided.png"))
        page.click("#read-submit")
        page.wait_for_selector("#phase-text:has-text('complete')")
        page.goto(f"{base}/reader")
        page.wait_for_selector("#progress:has-text('1 of 1')")
        page.screenshot(path=str(ARTIFACTS / "06-reader-progress.png"))
        browser.close()
        assert errors == []

    with httpx.Client(base_url=base) as c:
        tok = c.post("/api/auth/login", json={"username": "admin", "password": PASSWORD, "bearer": True}).json()["token"]
        csv_text = c.get("/api/admin/reader-study/export", headers={"Authorization": f"Bearer {tok}"}).text
    lines = csv_text.strip().splitlines()
    assert lines[0] == "reader,case,modality,truth,score,birads,heatmap_acceptable"
    assert [line.split(",")[2:] for line in lines[1:]] == [["unaided", "1", "30.0", "3", ""], ["aided", "1", "55.0", "4", "1"]]
