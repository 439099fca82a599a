"""``cross_validate()``: patient-level k-fold cross-validation through the package's own stages.

For each fold seed ``S`` and fold ``k`` it writes the fold's manifest (held-out fold =
``test``, a stratified share of the other patients = ``val`` for early stopping, the rest
= ``train``), runs the leakage check, trains with :func:`mammolens.train.train`, scores the
held-out fold with :func:`mammolens.predict.predict`, and finally pools the out-of-fold
predictions. Output folder::

    DIR/folds_seed<S>.csv                 the manifest with the fold column of seed S
    DIR/seed<S>/fold<k>/manifest.csv      the fold's manifest (train / val / test)
    DIR/seed<S>/fold<k>/run/              the training run folder
    DIR/seed<S>/fold<k>/predictions.csv   predictions for the held-out fold (+ heatmaps)
    DIR/seed<S>/fold<k>/fold.json         written last: the fold is finished
    DIR/oof_seed<S>.csv                   pooled out-of-fold predictions (every image once),
                                          a table ``mammolens evaluate`` reads with
    DIR/manifest_oof.csv                  the manifest with every image in split ``test``:
        mammolens evaluate DIR/oof_seed0.csv --manifest DIR/manifest_oof.csv --out EVAL
    DIR/cv.json                           per-fold and pooled AUC (patient-clustered DeLong
                                          CI), localisation hit rates per finding class,
                                          wall time

A fold whose ``fold.json`` exists is skipped, so an interrupted run resumes fold by fold
(a fold interrupted during training resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.errors import ConfigError, ManifestError
from mammolens.jsonio import write_json

CV_JSON = "cv.json"
FOLD_JSON = "fold.json"

#: finding classes reported separately (the manifest lesions' ``kind``)
FINDING_CLASSES = ("calcification", "mass", "distortion", "asymmetry")


@dataclass
class CVResult:
    """What :func:`cross_validate` returns (``to_dict()`` is ``cv.json``)."""

    out: Path
    config: str
    folds: int
    seeds: list[int]
    per_seed: dict[int, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "config": self.config,
            "folds": self.folds,
            "seeds": list(self.seeds),
            "per_seed": {str(s): v for s, v in self.per_seed.items()},
            "seconds": round(self.seconds, 1),
        }


def fold_manifest(df: pd.DataFrame, fold: int, *, val: float, seed: int) -> pd.DataFrame:
    """One fold's manifest: fold ``fold`` = test; of the rest a stratified, patient-level
    share ``val`` = val (early stopping), the others = train."""
    from mammolens.data.manifest import check_no_leakage
    from mammolens.data.split import split_manifest

    test = df["fold"].astype(int) == fold
    rest = split_manifest(df[~test], val=val, test=0.0, seed=seed)
    # early stopping on validation AUC needs both classes there: with few patients the
    # stratified share can round to none of one class; move one such patient over
    plabel = rest.groupby("patient_id")["label"].max().astype(int)
    rng = np.random.default_rng(seed)
    for c in (1, 0):
        in_val = set(rest.loc[rest["split"] == "val", "patient_id"])
        if any(plabel[p] == c for p in in_val):
            continue
        cands = sorted(p for p in plabel.index if plabel[p] == c and p not in in_val)
        if len(cands) > 1:  # keep at least one for training
            rest.loc[rest["patient_id"] == cands[int(rng.integers(len(cands)))], "split"] = "val"
    out = df.copy()
    out["split"] = "test"
    out.loc[rest.index, "split"] = rest["split"]
    check_no_leakage(out)
    return out


def _hit_rates(oof: pd.DataFrame, base: Path, fold_heatmaps: dict[int, Path] | None = None) -> dict[str, Any]:
    """Pointing-game hit rate of the localisation map, per malignant image and per finding class.

    A lesion is hit when the heatmap maximum (original geometry) lies inside it; an image
    is hit when one of its malignant lesions is. Lesions without a location (e.g. a
    widely distributed calcification) are not counted. A heatmap is looked for where the
    predictions table says and then, by file name, in its fold's heatmap folder
    (``fold_heatmaps[fold]``: a cross-validation folder that was moved or copied); one
    found in neither place, or unreadable, is listed in ``heatmaps_missing`` (image ids)
    rather than silently shrinking the denominators.
    """
    from mammolens.data.heatmap_io import heatmap_original
    from mammolens.data.lesions import parse_lesions, rasterize_lesions
    from mammolens.stats.localization import pointing_hit

    per_class: dict[str, list[int]] = {}
    per_class_mal: dict[str, list[int]] = {}
    images: list[int] = []
    missing: list[str] = []
    for _, r in oof.iterrows():
        lesions = [les for les in parse_lesions(r.get("lesions")) if les.shape != "mask"]
        if not lesions:
            continue
        hm = r.get("heatmap")
        candidates: list[Path] = []
        if not pd.isna(hm) and str(hm):
            stored = Path(str(hm))
            candidates.append(stored if stored.is_absolute() else base / stored)
            if fold_heatmaps and int(r["fold"]) in fold_heatmaps:
                candidates.append(fold_heatmaps[int(r["fold"])] / stored.name)
        arr = None
        for path in candidates:
            try:
                arr, _ = heatmap_original(path, "localization")
                break
            except (OSError, ValueError, KeyError):
                continue
        if arr is None:
            missing.append(str(r["image_id"]))
            continue
        img_hit = None
        for les in lesions:
            m = rasterize_lesions([les], arr.shape) > 0
            if not m.any():
                continue
            hit = int(pointing_hit(arr, m))
            kind = les.kind or "other"
            per_class.setdefault(kind, []).append(hit)
            if les.pathology == "malignant":
                per_class_mal.setdefault(kind, []).append(hit)
                img_hit = max(img_hit or 0, hit)
        if img_hit is not None and int(r["label"]) == 1:
            images.append(img_hit)

    def summ(d: dict[str, list[int]]) -> dict[str, Any]:
        return {k: {"hits": int(sum(v)), "n": len(v), "rate": float(np.mean(v))} for k, v in sorted(d.items())}

    return {
        "malignant_images": {"hits": int(sum(images)), "n": len(images), "rate": float(np.mean(images)) if images else None},
        "malignant_lesions_by_class": summ(per_class_mal),
        "all_lesions_by_class": summ(per_class),
        "heatmaps_missing": missing,
    }


def _auc_summary(y: np.ndarray, s: np.ndarray, clusters: np.ndarray | None) -> dict[str, Any]:
    from mammolens.stats import auc_ci

    if len(np.unique(y)) < 2:
        return {"auc": None, "n": int(len(y)), "n_pos": int(y.sum()), "note": "one class only"}
    r = auc_ci(y, s, clusters=clusters)
    return {"auc": float(r.auc), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high), "n": int(len(y)), "n_pos": int(y.sum())}


def cross_validate(
    manifest: str | Path | pd.DataFrame,
    cache: Any,
    *,
    out: str | Path,
    config: str | Path = "mias",
    folds: int = 5,
    seeds: Sequence[int] = (0,),
    val: float = 0.15,
    overrides: list[str] | None = None,
    model: str | None = None,
    heatmaps: bool = True,
    device: str | None = None,
    progress: bool = True,
    on_fold: Callable[[dict[str, Any]], None] | None = None,
) -> CVResult:
    """Patient-level, stratified k-fold cross-validation with the package's train and predict.

    Parameters
    ----------
    manifest
        Manifest path or DataFrame with 0/1 ``label`` for every row (its ``split`` column
        is ignored: the folds assign every image).
    cache
        Preprocessing cache folder holding every image of the manifest.
    out
        Output folder (see the module docstring); an existing one is resumed.
    config, overrides, model, device
        As for :func:`mammolens.train.train`.
    folds, seeds
        ``folds``-fold CV repeated for each fold-assignment seed.
    val
        Share of each fold's training patients held out for validation (early stopping).
    heatmaps
        Write heatmaps of the held-out images (needed for the localisation hit rates).

    Returns
    -------
    CVResult
    """
    from mammolens.data.manifest import read_manifest, validate_manifest
    from mammolens.data.split import kfold_manifest
    from mammolens.predict import predict
    from mammolens.train import train

    t0 = time.perf_counter()
    outp = Path(out)
    df = validate_manifest(manifest.copy()) if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    if df["label"].isna().any():
        n = int(df["label"].isna().sum())
        raise ManifestError(f"{manifest if not isinstance(manifest, pd.DataFrame) else 'manifest'}: {n} image(s) without a 0/1 label; cross-validation needs a label for every image")
    if folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {folds}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    outp.mkdir(parents=True, exist_ok=True)
    from mammolens.data.manifest import write_manifest

    write_manifest(df.assign(split="test"), outp / "manifest_oof.csv")
    cfg_name = str(config)
    from mammolens.config import load_config

    # the contralateral weight is a scoring rule, not a training setting: every fold (a
    # resumed one too) is pooled with this configuration's weight, from the logits
    contra_w = float(load_config(config, overrides).predict.contralateral)
    result = CVResult(outp, cfg_name, folds, seeds)
    old = {}
    if (outp / CV_JSON).exists():
        try:
            old = json.loads((outp / CV_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
    if old and (old.get("config") != cfg_name or old.get("folds") != folds):
        raise ConfigError(
            f"{outp}: holds a cross-validation with config {old.get('config')!r} and {old.get('folds')} folds; "
            f"use another --out for config {cfg_name!r} with {folds} folds"
        )
    for seed in seeds:
        fdf = kfold_manifest(df, k=folds, seed=seed)
        fdf.to_csv(outp / f"folds_seed{seed}.csv", index=False)
        fold_recs: list[dict[str, Any]] = []
        preds: list[pd.DataFrame] = []
        for k in range(folds):
            fdir = outp / f"seed{seed}" / f"fold{k}"
            done = fdir / FOLD_JSON
            pred_csv = fdir / "predictions.csv"
            if done.exists() and pred_csv.exists():
                rec = json.loads(done.read_text(encoding="utf-8"))
                rec["resumed"] = True
            else:
                ft = time.perf_counter()
                m = fold_manifest(fdf, k, val=val, seed=seed)  # the leakage check runs here, before every fold
                fdir.mkdir(parents=True, exist_ok=True)
                m.to_csv(fdir / "manifest.csv", index=False)
                run = fdir / "run"
                state = _run_state(run)
                if state == "finished":
                    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
                    train_s, best_val = meta.get("seconds"), meta.get("best_val_auc")
                else:
                    if state == "fresh" and run.exists():
                        shutil.rmtree(run)  # an unfinished run with no checkpoint yet: start it again
                    tr = train(m, cache, config=config, out=run, model=model, overrides=overrides, resume=state == "resume", device=device, progress=progress)
                    train_s, best_val = tr.seconds, tr.best_val_auc
                for stale in (pred_csv, fdir / "predictions.partial.csv"):
                    stale.unlink(missing_ok=True)
                pt = time.perf_counter()
                predict(run, fdir / "manifest.csv", out=pred_csv, split="test", cache=cache,
                        heatmaps_dir=fdir / "heatmaps" if heatmaps else None, progress=progress, resume=False)
                rec = {
                    "seed": seed, "fold": k, "n_train": int((m["split"] == "train").sum()), "n_val": int((m["split"] == "val").sum()),
                    "n_test": int((m["split"] == "test").sum()), "best_val_auc": best_val,
                    "seconds_train": train_s, "seconds_predict": round(time.perf_counter() - pt, 1),
                    "seconds": round(time.perf_counter() - ft, 1),
                }
            p = _with_truth(pd.read_csv(pred_csv), df, contra_w)
            # the fold's test AUC under this configuration's scoring (a resumed fold too)
            rec["test"] = _auc_summary(p["label"].astype(int).to_numpy(), p["score"].to_numpy(float), None)
            if not rec.get("resumed"):
                write_json(done, rec)
            fold_recs.append(rec)
            p["fold"] = k
            preds.append(p)
            if on_fold is not None:
                on_fold(rec)
        oof = pd.concat(preds, ignore_index=True)
        dup = oof["image_id"].astype(str).duplicated()
        if dup.any():  # pragma: no cover - folds are disjoint by construction
            raise ManifestError(f"images predicted in two folds: {list(oof.loc[dup, 'image_id'][:5])}")
        missing = sorted(set(df["image_id"].astype(str)) - set(oof["image_id"].astype(str)))
        oof_path = outp / f"oof_seed{seed}.csv"
        oof.to_csv(oof_path, index=False)
        lesions = df.set_index(df["image_id"].astype(str))["lesions"]
        oof_l = oof.assign(lesions=oof["image_id"].astype(str).map(lesions))
        y = oof["label"].astype(int).to_numpy()
        fold_mean, fold_sd = _mean_sd([(r.get("test") or {}).get("auc") for r in fold_recs])
        result.per_seed[seed] = {
            "oof": str(oof_path),
            "pooled": _auc_summary(y, oof["score"].to_numpy(float), oof["patient_id"].astype(str).to_numpy()),
            # pooling puts five separately trained models' scores on one scale, which
            # costs AUC when their scales differ; the mean of the folds' own AUCs is the
            # figure that does not pay that price (report both)
            "fold_auc_mean": fold_mean,
            "fold_auc_sd": fold_sd,
            "folds": fold_recs,
            "missing_images": missing,
            "localization": _hit_rates(oof_l, oof_path.parent, {k: outp / f"seed{seed}" / f"fold{k}" / "heatmaps" for k in range(folds)})
            if heatmaps else None,
            "contralateral": contralateral_ablation(oof),
            "seconds": round(sum(float(r.get("seconds") or 0) for r in fold_recs), 1),
        }
        result.seconds = time.perf_counter() - t0
        _write(result, old)
    return result


def _with_truth(pred: pd.DataFrame, df: pd.DataFrame, contralateral: float = 0.0) -> pd.DataFrame:
    """A fold's predictions with the manifest's labels, scored with ``contralateral``."""
    truth = df.set_index(df["image_id"].astype(str))["label"]
    pred = pred.copy()
    pred["image_id"] = pred["image_id"].astype(str)
    pred["label"] = pred["image_id"].map(truth).astype(int)
    if "contralateral_logit" in pred.columns and "logit" in pred.columns:
        from mammolens.predict.api import contralateral_score

        pred["score"] = contralateral_score(pred["logit"], pred["contralateral_logit"], contralateral)
    return pred


def contralateral_ablation(oof: pd.DataFrame, *, weight: float = 0.5) -> dict[str, Any] | None:
    """The contralateral-difference score ``logit - weight * contralateral_logit`` against the
    image's own logit on the same out-of-fold images (paired DeLong test)."""
    from mammolens.stats import delong_test

    if "contralateral_logit" not in oof.columns:
        return None
    contra = pd.to_numeric(oof["contralateral_logit"], errors="coerce")
    own = oof["logit"].to_numpy(float)
    diff = own - weight * contra.fillna(0.0).to_numpy(float)
    y = oof["label"].astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        return None
    t = delong_test(y, diff, own)
    return {"weight": weight, "n_paired_images": int(contra.notna().sum()), "auc_contralateral": float(t.auc_a),
            "auc_own": float(t.auc_b), "difference": float(t.difference), "p_value": float(t.p_value)}


def compare_cv(a: str | Path, b: str | Path, *, score_a: str = "score", score_b: str = "score") -> dict[str, Any]:
    """Paired DeLong tests of two cross-validations on the same out-of-fold images, per seed.

    ``a`` and ``b`` are ``mammolens cv`` output folders (or one folder twice with two score
    columns); the seeds both hold are compared, image by image (joined on ``image_id``).
    """
    from mammolens.stats import auc_ci, delong_test

    a, b = Path(a), Path(b)
    out: dict[str, Any] = {"a": str(a), "b": str(b), "score_a": score_a, "score_b": score_b, "seeds": {}}
    seeds_a = {p.stem.removeprefix("oof_seed") for p in a.glob("oof_seed*.csv")}
    seeds_b = {p.stem.removeprefix("oof_seed") for p in b.glob("oof_seed*.csv")}
    common = sorted(seeds_a & seeds_b, key=lambda x: int(x) if x.isdigit() else x)
    if not common:
        raise ConfigError(f"{a} and {b} share no seed with oof_seed<S>.csv: run `mammolens cv` with the same --seeds")
    for seed in common:
        ta = pd.read_csv(a / f"oof_seed{seed}.csv", dtype={"image_id": str})
        tb = pd.read_csv(b / f"oof_seed{seed}.csv", dtype={"image_id": str})
        for t, col, where in ((ta, score_a, a), (tb, score_b, b)):
            if col not in t.columns:
                raise ConfigError(f"{where / f'oof_seed{seed}.csv'}: no column {col!r} (columns: {', '.join(t.columns)})")
        j = ta[["image_id", "label", "patient_id", score_a]].merge(
            tb[["image_id", score_b]], on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
        ca, cb = (f"{score_a}_a", f"{score_b}_b") if score_a == score_b else (score_a, score_b)
        if len(j) != len(ta) or len(j) != len(tb):
            raise ConfigError(f"seed {seed}: the two cross-validations scored different images ({len(ta)} vs {len(tb)}, {len(j)} in common)")
        y = j["label"].astype(int).to_numpy()
        t = delong_test(y, j[ca].to_numpy(float), j[cb].to_numpy(float))
        cl = j["patient_id"].astype(str).to_numpy()
        ra, rb = auc_ci(y, j[ca].to_numpy(float), clusters=cl), auc_ci(y, j[cb].to_numpy(float), clusters=cl)
        out["seeds"][seed] = {
            "n": int(len(j)), "auc_a": float(t.auc_a), "auc_b": float(t.auc_b),
            "ci_a": [float(ra.ci_low), float(ra.ci_high)], "ci_b": [float(rb.ci_low), float(rb.ci_high)],
            "difference": float(t.difference), "diff_ci": [float(t.ci_low), float(t.ci_high)], "p_value": float(t.p_value),
        }
    return out


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None


def _run_state(run: Path) -> str:
    """``finished`` (a best checkpoint and a finished status), ``resume`` (any checkpoint of
    an unfinished run) or ``fresh`` (nothing to continue from)."""
    ckpts = run / "checkpoints"
    if (ckpts / "best.ckpt").exists():
        try:
            meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        return "finished" if meta.get("status") in ("completed", "early_stopped") else "resume"
    return "resume" if (ckpts / "last.ckpt").exists() else "fresh"


def _write(result: CVResult, old: dict[str, Any]) -> None:
    d = result.to_dict()
    merged = dict(old.get("per_seed") or {})
    merged.update(d["per_seed"])
    d["per_seed"] = merged
    d["seeds"] = sorted({int(s) for s in merged})
    write_json(result.out / CV_JSON, d)
