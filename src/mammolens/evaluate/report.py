"""The self-contained HTML report: every figure embedded (base64 PNG), no external assets.

:func:`write_report` renders ``templates/report.html.j2`` with the results dictionary of
:func:`mammolens.evaluate.evaluate.evaluate`; the page opens offline and prints cleanly
(A4, sections kept together, figures scaled to the page).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

SECTIONS = (
    ("cohort", "Cohort"),
    ("performance", "Performance"),
    ("comparison", "Model vs baseline"),
    ("subgroups", "Subgroups"),
    ("reader-study", "Reader study"),
    ("interpretability", "Interpretability"),
    ("calibration", "Calibration"),
    ("model-card", "Model card"),
)


def data_uri(path: str | Path) -> str:
    """A ``data:image/png;base64,...`` URI of a PNG file."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def ci(d: dict[str, Any] | None, key: str = "estimate", digits: int = 3, pct: bool = False) -> Any:
    """``0.912 (0.871-0.944)`` from a dict with the estimate and ``ci_low``/``ci_high``."""
    from markupsafe import Markup

    if not isinstance(d, dict) or not d:
        return "n/a"
    est = d.get(key, d.get("estimate", d.get("value", d.get("auc"))))
    if est is None or est != est:
        return "n/a"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.{digits}f}")
    lo, hi = d.get("ci_low"), d.get("ci_high")
    if lo is None or hi is None or lo != lo or hi != hi:
        return f(est)
    return Markup(f"{f(est)} ({f(lo)}&ndash;{f(hi)})")


def pval(p: Any) -> Any:
    from markupsafe import Markup

    if p is None or p != p:
        return "n/a"
    p = float(p)
    return Markup("&lt;0.001") if p < 0.001 else f"{p:.3f}"


def merge_ci_columns(df: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """Show ``m, m_ci_low, m_ci_high`` as one column ``m (95% CI)`` for reading."""
    d = df.copy()
    for c in list(d.columns):
        lo, hi = f"{c}_ci_low", f"{c}_ci_high"
        if lo in d.columns and hi in d.columns:
            def cell(row: pd.Series, c: str = c, lo: str = lo, hi: str = hi) -> str:
                v, a, b = row[c], row[lo], row[hi]
                if pd.isna(v):
                    return "n/a"
                if pd.isna(a) or pd.isna(b):
                    return f"{v:.{digits}f}"
                return f"{v:.{digits}f} ({a:.{digits}f}-{b:.{digits}f})"

            d[c] = d.apply(cell, axis=1)
            d = d.drop(columns=[lo, hi]).rename(columns={c: f"{c} (95% CI)"})
    if {"auc", "ci_low", "ci_high"} <= set(d.columns):
        d["auc"] = [("n/a" if pd.isna(v) else f"{v:.{digits}f}" if pd.isna(a) else f"{v:.{digits}f} ({a:.{digits}f}-{b:.{digits}f})")
                    for v, a, b in zip(d["auc"], d["ci_low"], d["ci_high"], strict=True)]
        d = d.drop(columns=["ci_low", "ci_high"]).rename(columns={"auc": "AUC (95% CI)"})
    return d


def table_html(df: pd.DataFrame | None, *, digits: int = 3, max_rows: int = 60) -> str:
    if df is None or len(df) == 0:
        return "<p class='muted'>(none)</p>"
    d = merge_ci_columns(df.head(max_rows), digits=digits)
    out = d.to_html(index=False, classes="tbl", border=0, na_rep="n/a", escape=True,
                    float_format=lambda x: f"{x:.{digits}f}")
    if len(df) > max_rows:
        out += f"<p class='muted'>first {max_rows} of {len(df)} rows; full table in the CSV</p>"
    return out


def write_report(results: dict[str, Any], out: Path, *, figures: dict[str, Path], tables: dict[str, pd.DataFrame]) -> Path:
    """Render ``report.html`` into ``out`` and return its path."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["f"] = _fmt
    env.globals.update(ci=ci, pval=pval)
    figs = {k: data_uri(p) for k, p in figures.items() if Path(p).exists()}
    gallery = {}
    g = (results.get("interpretability") or {}).get("gallery") or {}
    for kind in ("true_positive", "false_negative", "false_positive"):
        items = []
        for it in g.get(kind, []):
            uri = data_uri(out / it["file"]) if it.get("file") and (out / it["file"]).exists() else None
            items.append({**it, "uri": uri})
        gallery[kind] = items
    from markupsafe import Markup

    tbl = {k: Markup(table_html(v)) for k, v in tables.items()}
    page = env.get_template("report.html.j2").render(
        r=results, figs=figs, tbl=tbl, gallery=gallery, sections=SECTIONS, Markup=Markup,
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
