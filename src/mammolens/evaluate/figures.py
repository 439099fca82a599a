"""Figures of the evaluation report (matplotlib, Agg backend; PNG for the report + SVG).

Every function takes numbers already computed by :mod:`mammolens.evaluate.evaluate`
(which gets them from :mod:`mammolens.stats`) and returns a matplotlib ``Figure``;
:func:`save_figure` writes it as ``NAME.png`` and ``NAME.svg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_COLORS = ["#1f5fa8", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#5c7cfa", "#e67700", "#0b7285"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, directory: Path, name: str, *, dpi: int = 110, svg: bool = True) -> tuple[Path, Path | None]:
    """Write ``directory/name.png`` (and ``directory/name.svg``) and close the figure."""
    plt = _plt()
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / f"{name}.png"
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    svg_path = None
    if svg:
        svg_path = directory / f"{name}.svg"
        fig.savefig(svg_path, bbox_inches="tight")
    plt.close(fig)
    return png, svg_path


def _fmt_ci(est: float, lo: float, hi: float) -> str:
    if est is None or not np.isfinite(est):
        return "n/a"
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:.3f}"
    return f"{est:.3f} (95% CI {lo:.3f}-{hi:.3f})"


def roc_figure(curves: Sequence[dict[str, Any]], *, title: str) -> Any:
    """ROC curves with their DeLong CI in the legend, a CI band and the operating point.

    Each curve is a dict: ``label``, ``fpr``, ``tpr``, ``auc``, ``ci_low``, ``ci_high``,
    optional ``band`` = ``(fpr_grid, tpr_low, tpr_high)`` and ``point`` = ``(fpr, tpr)``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
    for i, c in enumerate(curves):
        col = _COLORS[i % len(_COLORS)]
        label = f"{c['label']}: AUC {_fmt_ci(c['auc'], c.get('ci_low'), c.get('ci_high'))}"
        ax.step(c["fpr"], c["tpr"], where="post", color=col, lw=2, label=label)
        band = c.get("band")
        if band is not None:
            g, lo, hi = band
            ax.fill_between(g, lo, hi, color=col, alpha=0.15, lw=0, step="post")
        pt = c.get("point")
        if pt is not None:
            ax.plot([pt[0]], [pt[1]], marker="o", ms=8, mfc="white", mec=col, mew=2, ls="none")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(title, fontsize=11)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7.5, framealpha=0.9)
    return fig


def readers_roc_figure(
    ai_curve: dict[str, Any] | None,
    readers: Sequence[dict[str, Any]],
    *,
    title: str,
) -> Any:
    """The AI's ROC curve with each reader's empirical ROC curve and operating point.

    ``readers``: dicts with ``reader``, ``modality``, ``fpr``, ``tpr``, ``auc`` and ``point``
    (the reader's sensitivity/specificity at their own recall threshold).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharey=True)
    for ax, modality in zip(axes, ("unaided", "aided"), strict=True):
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
        if ai_curve is not None:
            ax.step(ai_curve["fpr"], ai_curve["tpr"], where="post", color="black", lw=2.5,
                    label=f"AI: AUC {ai_curve['auc']:.3f}")
        rs = [r for r in readers if r["modality"] == modality]
        for i, r in enumerate(rs):
            col = _COLORS[(i + 1) % len(_COLORS)]
            ax.step(r["fpr"], r["tpr"], where="post", color=col, lw=1, alpha=0.8,
                    label=f"{r['reader']}: AUC {r['auc']:.3f}")
            if r.get("point") is not None:
                ax.plot([r["point"][0]], [r["point"][1]], marker="s", ms=6, color=col, ls="none")
        ax.set_title(f"readers {modality}", fontsize=11)
        ax.set_xlabel("1 - specificity")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_ylabel("sensitivity")
    fig.suptitle(title, fontsize=12)
    return fig


def forest_figure(rows: Sequence[dict[str, Any]], *, overall: dict[str, Any] | None, title: str) -> Any:
    """Forest plot of AUC with 95% CI by subgroup.

    ``rows``: dicts ``variable``, ``subgroup``, ``n``, ``n_pos``, ``auc``, ``ci_low``,
    ``ci_high`` and ``note``. A subgroup without an AUC is drawn without a marker, with its
    ``note`` (``too small``, ``single class``, ...) in the right-hand column where the
    others show their AUC: text is kept outside the data area, so it never runs into the
    subgroup labels left of the axis. ``overall``: ``auc``, ``ci_low``, ``ci_high`` drawn
    as a reference line and band (legend above the plot).
    """
    plt = _plt()
    n = max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * n + 1.9))
    ys = np.arange(n)[::-1]
    labels = []
    last_var = None
    for y, r in zip(ys, rows, strict=False):
        var = r["variable"]
        labels.append(f"{var if var != last_var else ''}  {r['subgroup']}  (n={r['n']}, {r['n_pos']}+)")
        last_var = var
        auc, lo, hi = r.get("auc"), r.get("ci_low"), r.get("ci_high")
        if auc is None or not np.isfinite(auc):
            note = str(r.get("note") or "").strip() or "no AUC"
            ax.text(1.02, y, f"n/a ({note})", va="center", ha="left", fontsize=7.5, color="grey",
                    transform=ax.get_yaxis_transform())
            continue
        if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [y, y], color="#1f5fa8", lw=2)
        ax.plot([auc], [y], marker="s", color="#1f5fa8", ms=7)
        ax.text(1.02, y, _fmt_ci(auc, lo, hi).replace("95% CI ", ""), va="center", ha="left", fontsize=7.5,
                transform=ax.get_yaxis_transform())
    if overall is not None and overall.get("auc") is not None:
        ax.axvline(overall["auc"], color="#d9480f", ls="--", lw=1.2, label=f"overall AUC {overall['auc']:.3f}")
        if overall.get("ci_low") is not None and overall.get("ci_high") is not None:
            ax.axvspan(overall["ci_low"], overall["ci_high"], color="#d9480f", alpha=0.08)
        # above the axes, not over the rows
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.2)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(-0.6, n - 0.4)
    los = [r["ci_low"] for r in rows if r.get("ci_low") is not None and np.isfinite(r["ci_low"])]
    # a little room right of 1.0, so an AUC of 1 is drawn whole, clear of the CI column
    ax.set_xlim(min([0.5, *los]) - 0.02, 1.02)
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("AUC (95% CI)")
    ax.set_title(title, fontsize=11, pad=22 if overall is not None else 6)
    ax.grid(axis="x", alpha=0.3)
    return fig


def calibration_figure(bins: Sequence[dict[str, Any]], scores: np.ndarray, *, title: str) -> Any:
    """Reliability diagram (observed malignancy rate vs mean score per bin) + score histogram.

    ``bins``: dicts ``mean_score``, ``observed``, ``ci_low``, ``ci_high``, ``n``.
    """
    plt = _plt()
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5.2, 6.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    b = [x for x in bins if x["n"] > 0]
    if b:
        xs = np.array([x["mean_score"] for x in b])
        ys = np.array([x["observed"] for x in b])
        lo = np.array([x["ci_low"] for x in b])
        hi = np.array([x["ci_high"] for x in b])
        ax.errorbar(xs, ys, yerr=[np.clip(ys - lo, 0, None), np.clip(hi - ys, 0, None)], fmt="o-",
                    color="#1f5fa8", capsize=3, label="observed (Wilson 95% CI)")
    ax.set_ylabel("observed malignancy rate")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=11)
    axh.hist(scores, bins=20, range=(0, 1), color="#868e96")
    axh.set_xlabel("predicted probability (score)")
    axh.set_ylabel("images")
    return fig


def score_distribution_figure(scores: np.ndarray, truth: np.ndarray, threshold: float | None, *, title: str) -> Any:
    """Histograms of the scores of malignant and non-malignant cases with the threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(0, 1, 26)
    ax.hist(scores[truth == 0], bins=bins, alpha=0.6, color="#2b8a3e", label="not malignant")
    ax.hist(scores[truth == 1], bins=bins, alpha=0.6, color="#c92a2a", label="malignant")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"operating point {threshold:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    return fig
