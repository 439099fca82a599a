#!/usr/bin/env python
"""Merge mini-MIAS CV result files and compare configurations (paired DeLong tests).

Runs of bench/mias_cv.py can be made in parallel into separate JSON files (one per
configuration); this joins them into one JSON + Markdown table and adds, for each named
pair of configurations, the paired DeLong test of their pooled out-of-fold AUCs (same
images, same folds) and the per-fold AUC differences. Example::

    .venv/bin/python bench/mias_compare.py bench/results/mias_cv_scratch.json \\
        bench/results/mias_cv_patch.json bench/results/mias_cv_patch_baseline.json \\
        --out bench/results/mias_cv.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mias_cv import summarize, write_md  # noqa: E402


def _scores(cfg: dict[str, Any]) -> dict[str, tuple[int, float, str]]:
    return {r["image_id"]: (r["label"], r["score"], r["patient_id"]) for f in cfg["folds"].values() for r in f["rows"]}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    from mammolens.stats.roc import auc_score, delong_test

    sa, sb = _scores(a), _scores(b)
    common = sorted(set(sa) & set(sb))
    if not common:
        return None
    y = np.array([sa[i][0] for i in common])
    if not 0 < y.sum() < len(y):
        return None
    xa = np.array([sa[i][1] for i in common])
    xb = np.array([sb[i][1] for i in common])
    res = delong_test(y, xa, xb)
    d = res.to_dict() if hasattr(res, "to_dict") else dict(vars(res))
    folds = sorted(set(a["folds"]) & set(b["folds"]), key=int)
    diffs = []
    for f in folds:
        ra, rb = a["folds"][f]["rows"], b["folds"][f]["rows"]
        ya = np.array([r["label"] for r in ra])
        if 0 < ya.sum() < len(ya):
            diffs.append(auc_score(ya, [r["score"] for r in ra]) - auc_score(np.array([r["label"] for r in rb]), [r["score"] for r in rb]))
    d.update({"n_images": len(common), "fold_auc_differences": diffs,
              "folds_a_better": int(sum(x > 0 for x in diffs)), "folds": len(diffs)})
    return d


def secondary(merged: dict[str, Any]) -> None:
    """Secondary AUCs of the same malignancy scores (descriptive, not used for any choice).

    ``malignant_vs_normal`` drops benign-only images; ``abnormal_vs_normal`` asks whether
    the score separates images with any finding from normal ones (lesion detection);
    ``malignant_vs_benign`` keeps only images with a finding.
    """
    from mias_data import parse_info

    from mammolens.stats.roc import auc_ci

    try:
        cases = {c.image_id: c for c in parse_info(merged["data"])}
    except FileNotFoundError:
        return
    status = {i: ("malignant" if c.label else "benign" if (c.lesions or c.n_unlocated) else "normal") for i, c in cases.items()}
    for cfg in merged["configs"].values():
        rows = [r for f in cfg["folds"].values() for r in f["rows"]]
        out = {}
        for name, pos, neg in (("malignant_vs_normal", {"malignant"}, {"normal"}),
                               ("abnormal_vs_normal", {"malignant", "benign"}, {"normal"}),
                               ("malignant_vs_benign", {"malignant"}, {"benign"})):
            sel = [r for r in rows if status.get(r["image_id"]) in pos | neg]
            y = np.array([status[r["image_id"]] in pos for r in sel], dtype=int)
            if 0 < y.sum() < len(y):
                res = auc_ci(y, np.array([r["score"] for r in sel]), method="delong",
                             clusters=np.array([r["patient_id"] for r in sel]))
                out[name] = {"auc": res.auc, "ci_low": res.ci_low, "ci_high": res.ci_high, "n_pos": res.n_pos, "n_neg": res.n_neg}
        cfg["summary"]["secondary_auc"] = out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", default="bench/results/mias_cv.json")
    ap.add_argument("--pair", action="append", default=[], help="'A:B' or 'A vs B' (names holding ':') configuration names to compare (default: every pair)")
    args = ap.parse_args(argv)
    merged: dict[str, Any] = {}
    for p in args.inputs:
        d = json.loads(Path(p).read_text())
        if merged and d.get("fold_of") != merged.get("fold_of"):
            raise SystemExit(f"{p}: different fold assignment from {args.inputs[0]}: cannot compare")
        cfgs = d.pop("configs", {})
        if not merged:
            merged = {**d, "configs": {}}
        for name, cfg in cfgs.items():
            have = merged["configs"].get(name)
            if have is not None and have.get("key") == cfg.get("key"):
                have["folds"].update(cfg["folds"])  # the same configuration, other folds (--only-folds runs)
            elif have is not None:
                raise SystemExit(f"{p}: configuration {name} has other settings than in an earlier file")
            else:
                merged["configs"][name] = cfg
    for cfg in merged["configs"].values():
        cfg["summary"] = summarize(cfg, cfg["settings"].get("folds", merged.get("k", 5)))
    secondary(merged)
    names = list(merged["configs"])
    pairs = [tuple(p.split(" vs ", 1) if " vs " in p else p.split(":", 1)) for p in args.pair] or [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    comps = {}
    for a, b in pairs:
        c = compare(merged["configs"][a], merged["configs"][b])
        if c is not None:
            comps[f"{a} vs {b}"] = c
    merged["comparisons"] = comps
    out = Path(args.out)
    out.write_text(json.dumps(merged, indent=1))
    text = write_md(out.with_suffix(".md"), merged)
    lines = ["", "## Paired comparisons (pooled out-of-fold AUC, DeLong test on the same images)", "",
             "| A vs B | AUC A | AUC B | difference [95% CI] | p | folds where A > B |", "|---|---|---|---|---|---|"]
    for k, c in comps.items():
        lo, hi = c.get("ci_low", float("nan")), c.get("ci_high", float("nan"))
        lines.append(f"| {k} | {c.get('auc_a', float('nan')):.3f} | {c.get('auc_b', float('nan')):.3f} | "
                     f"{c.get('difference', float('nan')):+.3f} [{lo:+.3f}, {hi:+.3f}] | {c.get('p_value', float('nan')):.3f} | "
                     f"{c['folds_a_better']}/{c['folds']} |")
    lines += ["", "## Secondary AUCs of the same scores (descriptive)", "",
              "| configuration | malignant vs normal | abnormal vs normal | malignant vs benign |", "|---|---|---|---|"]
    for name, cfg in merged["configs"].items():
        sec = cfg["summary"].get("secondary_auc", {})
        cells = [f"{sec[k]['auc']:.3f} [{sec[k]['ci_low']:.3f}, {sec[k]['ci_high']:.3f}]" if k in sec else "-"
                 for k in ("malignant_vs_normal", "abnormal_vs_normal", "malignant_vs_benign")]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    text += "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
