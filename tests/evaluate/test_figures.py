"""The forest plot says why a subgroup has no AUC, and its text stays clear of the labels."""

from __future__ import annotations

import math

from mammolens.evaluate import figures as F

ROWS = [
    {"variable": "manufacturer", "subgroup": "GE", "n": 40, "n_pos": 8, "auc": 0.81, "ci_low": 0.62, "ci_high": 0.95, "note": ""},
    {"variable": "manufacturer", "subgroup": "Hologic", "n": 44, "n_pos": 9, "auc": 1.0, "ci_low": 1.0, "ci_high": 1.0, "note": ""},
    {"variable": "manufacturer", "subgroup": "Siemens (a long vendor name)", "n": 6, "n_pos": 2, "auc": math.nan,
     "ci_low": math.nan, "ci_high": math.nan, "note": "too small"},
    {"variable": "density", "subgroup": "A", "n": 12, "n_pos": 0, "auc": math.nan, "ci_low": math.nan, "ci_high": math.nan,
     "note": "single class"},
    {"variable": "density", "subgroup": "B", "n": 50, "n_pos": 10, "auc": 0.41, "ci_low": 0.20, "ci_high": 0.62, "note": ""},
]


def _texts(fig):
    ax = fig.axes[0]
    return ax, [t for t in ax.texts if t.get_text()]


def test_forest_notes_follow_the_results():
    fig = F.forest_figure(ROWS, overall={"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9}, title="AUC by subgroup")
    _, texts = _texts(fig)
    s = [t.get_text() for t in texts]
    assert "n/a (too small)" in s and "n/a (single class)" in s
    assert not any("one class" in x for x in s)
    F._plt().close(fig)


def test_forest_text_does_not_overlap_tick_labels_or_legend():
    fig = F.forest_figure(ROWS, overall={"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9}, title="AUC by subgroup")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax, texts = _texts(fig)
    ticks = [t.get_window_extent(r) for t in ax.get_yticklabels() if t.get_text()]
    plot_area = ax.get_window_extent(r)
    legend = ax.get_legend().get_window_extent(r)
    title = ax.title.get_window_extent(r)
    for t in texts:
        bb = t.get_window_extent(r)
        assert not any(bb.overlaps(tk) for tk in ticks), t.get_text()
        assert bb.x0 >= plot_area.x1, t.get_text()  # in the right-hand column, not over the data
    for tk in ticks:
        assert tk.x1 <= plot_area.x0 + 1
    assert not legend.overlaps(title)
    assert legend.y0 >= plot_area.y1 - 1  # above the rows, never over a CI
    F._plt().close(fig)
