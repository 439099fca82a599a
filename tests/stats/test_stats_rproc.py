"""Opt-in oracle: R's pROC run side by side on random data (``pytest -m rproc``).

Skipped when Rscript or pROC are missing (``apt-get install r-base-core r-cran-proc``).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from mammolens.stats import auc_ci, delong_test, operating_point, partial_auc

pytestmark = [pytest.mark.rproc, pytest.mark.slow]  # opt-in: pytest -m rproc

R_SCRIPT = r"""
suppressMessages(library(pROC))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
out <- list()
for (i in seq_len(max(d$rep))) {
  x <- d[d$rep == i, ]
  r1 <- roc(x$y, x$a, levels = c(0, 1), direction = "<", quiet = TRUE)
  r2 <- roc(x$y, x$b, levels = c(0, 1), direction = "<", quiet = TRUE)
  ci <- as.numeric(ci.auc(r1))
  t <- roc.test(r1, r2, method = "delong", paired = TRUE)
  best <- coords(r1, "best", ret = c("threshold", "sensitivity", "specificity"), best.method = "youden")
  best <- best[which.max(best$threshold), ]  # ties: the highest threshold, as mammolens
  pa <- as.numeric(auc(r1, partial.auc = c(1, 0.8), partial.auc.focus = "sp"))
  out[[i]] <- list(auc = ci[2], lo = ci[1], hi = ci[3], z = unname(t$statistic), p = t$p.value,
                   thr = best$threshold, se = best$sensitivity, sp = best$specificity, pauc = pa)
}
cat(jsonlite_free <- paste0("[", paste(sapply(out, function(o) paste0("{",
  paste(sprintf('"%s": %.15g', names(o), unlist(o)), collapse = ", "), "}")), collapse = ", "), "]"))
"""


def _have_proc() -> bool:
    if shutil.which("Rscript") is None:
        return False
    r = subprocess.run(["Rscript", "-e", "library(pROC)"], capture_output=True, timeout=60)
    return r.returncode == 0


@pytest.mark.skipif(not _have_proc(), reason="Rscript with pROC not installed")
def test_against_proc_on_random_data(tmp_path):
    rng = np.random.default_rng(2024)
    frames = []
    for rep in range(1, 9):
        n = int(rng.integers(30, 300))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        a = rng.normal(size=n) + rng.uniform(0.2, 1.5) * y
        b = 0.6 * a + rng.normal(size=n) + 0.5 * y
        if rep % 2 == 0:  # heavy ties
            a, b = np.round(a, 0), np.round(b, 1)
        frames.append(pd.DataFrame({"rep": rep, "y": y, "a": a, "b": b}))
    d = pd.concat(frames)
    p = tmp_path / "d.csv"
    d.to_csv(p, index=False)
    script = tmp_path / "oracle.R"
    script.write_text(R_SCRIPT)
    res = subprocess.run(["Rscript", str(script), str(p)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ref = json.loads(res.stdout)
    for rep, r in enumerate(ref, start=1):
        x = d[d.rep == rep]
        ours = auc_ci(x.y, x.a)
        assert ours.auc == pytest.approx(r["auc"], abs=1e-10)
        assert ours.ci_low == pytest.approx(max(r["lo"], 0.0), abs=1e-8)
        assert ours.ci_high == pytest.approx(min(r["hi"], 1.0), abs=1e-8)
        c = delong_test(x.y, x.a, x.b)
        assert c.z == pytest.approx(r["z"], abs=1e-8)
        assert c.p_value == pytest.approx(r["p"], abs=1e-8)
        op = operating_point(x.y, x.a)
        assert op.threshold == pytest.approx(r["thr"], abs=1e-10)
        assert (op.sensitivity, op.specificity) == pytest.approx((r["se"], r["sp"]), abs=1e-10)
        assert partial_auc(x.y, x.a, min_specificity=0.8).pauc == pytest.approx(r["pauc"], abs=1e-10)
