"""The report opens in headless Chromium (offline) and its figures render."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mammolens.evaluate import evaluate

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "google-chrome")


def _chromium() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        p = shutil.which(c) if not c.startswith("/") else (c if Path(c).exists() else None)
        if p:
            return p
    return None


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path: Path, make_eval_cohort) -> None:
    exe = _chromium()
    if exe is None:
        if os.environ.get("MAMMOLENS_REQUIRE_SERVICES", "") not in ("", "0", "false"):
            pytest.fail("chromium is required (MAMMOLENS_REQUIRE_SERVICES=1): apt-get install -y chromium")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    f = make_eval_cohort(tmp_path / "c", n_patients=40, seed=2)
    res = evaluate(f["predictions"], f["manifest"], tmp_path / "out", compare=f["baseline"], svg=False)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={shot}", "--window-size=1280,4000", res.report_path.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert shot.exists(), proc.stderr[-2000:]
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert im.shape[:2] == (4000, 1280)
    # not blank: many distinct colours, and the ROC figures' blue curves are present
    assert len(np.unique(im.reshape(-1, 3)[::7], axis=0)) > 500
    blue = (im[..., 2] > 140) & (im[..., 0] < 80) & (im[..., 1] < 140)
    assert blue.sum() > 2000
    assert im.std() > 20
