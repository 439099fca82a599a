#!/usr/bin/env python
"""Patient-level k-fold cross-validation on the mini-MIAS development portion.

Malignant vs not (an image is positive if any of its findings is malignant). For each
configuration (attention model / GAP baseline; with or without patch-level pretraining of
the backbone on lesion vs background patches from the training folds; optional initial
weights file) it trains one model per fold on the other folds and scores the held-out
fold, then reports the pooled out-of-fold AUC with a DeLong 95% CI (patients as clusters,
Obuchowski 1997), the per-fold AUCs and their spread, the localisation hit rate on the
malignant images (heatmap maximum inside an annotated malignant circle) and wall time.

Hyper-parameters are fixed a priori (below and in docs/real-data.md), not tuned on the
held-out folds: a sealed test portion exists and these figures must not be optimistic.

Resumable: finished folds are kept in the JSON and skipped on the next run (same
settings). Example::

    .venv/bin/python bench/mias_cv.py --data ../shared/datasets/mini-mias \\
        --out bench/results/mias_cv.json --model both --patch-pretrain
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mias_data import MiasCase, load_cases  # noqa: E402

# ----------------------------------------------------------------------------- folds


FOLD_METHOD = {"name": ""}


def make_folds(cases: list[MiasCase], k: int, seed: int) -> np.ndarray:
    """Patient-level folds stratified by label (the project's ``kfold_manifest`` when present)."""
    try:  # the project's splitter when present
        import pandas as pd

        from mammolens.data.split import kfold_manifest  # type: ignore[attr-defined]

        df = pd.DataFrame({"image_id": [c.image_id for c in cases], "patient_id": [c.patient_id for c in cases],
                           "label": [c.label for c in cases]})
        out = kfold_manifest(df, k=k, seed=seed)
        f = out.set_index("image_id").loc[df["image_id"], "fold"].to_numpy().astype(int)
        FOLD_METHOD["name"] = f"mammolens.data.split.kfold_manifest(k={k}, seed={seed})"
        return f
    except Exception:  # noqa: BLE001 - absent or different API: our own stratified group k-fold
        from sklearn.model_selection import StratifiedGroupKFold

        y = np.array([c.label for c in cases])
        g = np.array([c.patient_id for c in cases])
        pos_pat = {p for p, yy in zip(g, y, strict=True) if yy}
        ys = np.array([1 if p in pos_pat else 0 for p in g])
        folds = np.zeros(len(cases), int)
        for i, (_, te) in enumerate(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(g, ys, g)):
            folds[te] = i
        FOLD_METHOD["name"] = f"sklearn StratifiedGroupKFold(n_splits={k}, shuffle=True, random_state={seed})"
        return folds


# ----------------------------------------------------------------------------- training


def augment_batch(x: Any, m: Any, gen: Any, strength: float) -> tuple[Any, Any]:
    """Joint geometric (rotation, scale, shift, vertical flip) + intensity augmentation."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    if strength <= 0:
        return x, m
    ang = (torch.rand(b, generator=gen) - 0.5) * 2 * math.radians(15) * strength
    sc = 1 + (torch.rand(b, generator=gen) - 0.5) * 0.3 * strength
    tx = (torch.rand(b, generator=gen) - 0.5) * 0.1 * strength
    ty = (torch.rand(b, generator=gen) - 0.5) * 0.1 * strength
    vf = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin * vf, tx], 1), torch.stack([sin, cos * vf, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.6 * strength)
    con = 1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.4 * strength
    bri = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.1 * strength
    x = ((x.clamp(0, 1) ** gamma) * con + bri).clamp(0, 1)
    return x, m


def _cv_loss(out: dict, y, m, *, pos_weight, loc_weight: float, has_loc: bool):
    """This bench's objective: weighted BCE on the image logit, plus (when the model has a
    localisation head) a dense BCE of the malignant-lesion map on the layer4 grid
    (max-pooled mask; every mini-MIAS image is fully annotated for malignancy) and
    auxiliary BCE terms on the attention / localisation logits.

    Note: a variant of the library's :func:`mammolens.train.losses.mammo_loss` (capped
    pos_weight instead of lesion/background-balanced cells); kept so recorded results
    reproduce.
    """
    import torch
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(out["logit"], y, pos_weight=pos_weight)
    if has_loc:
        loc = out["localization"]
        tgt = F.adaptive_max_pool2d(m, loc.shape[-2:]).squeeze(1)
        npos = float(tgt.sum())
        pw = torch.tensor(min(50.0, (tgt.numel() - npos) / max(1.0, npos)))
        loss = loss + loc_weight * F.binary_cross_entropy_with_logits(loc, tgt, pos_weight=pw)
        for key in ("attention_logit", "localization_logit"):
            if key in out:
                loss = loss + 0.5 * F.binary_cross_entropy_with_logits(out[key], y, pos_weight=pos_weight)
    return loss


def train_fold(model: Any, cases: list[MiasCase], *, epochs: int, lr: float, batch_size: int, seed: int,
               loc_weight: float, aug: float, log: Any, freeze: str = "none") -> list[dict[str, float]]:
    import torch

    if epochs == 0:  # score the initialised model (e.g. the transplanted patch detector) as is
        return []
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.stack([c.image for c in cases])).unsqueeze(1)
    m_all = torch.from_numpy(np.stack([(c.mask == 2).astype(np.float32) for c in cases])).unsqueeze(1)
    y_all = torch.tensor([float(c.label) for c in cases])
    n_pos = float(y_all.sum())
    pos_weight = torch.tensor((len(cases) - n_pos) / max(1.0, n_pos))
    frozen = {"none": (), "early": ("stem", "layer1", "layer2"),
              "backbone": ("stem", "layer1", "layer2", "layer3", "layer4")}[freeze]
    for pname, prm in model.backbone.named_parameters():
        # frozen weights; batch-norm running statistics still adapt to whole images (AdaBN)
        prm.requires_grad_(not pname.startswith(frozen))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(cases) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    has_loc = getattr(model, "kind", "") == "attention" and loc_weight > 0
    hist = []
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(cases), generator=gen)
        tl, n = 0.0, 0
        t0 = time.time()
        for i in range(0, len(cases), batch_size):
            idx = perm[i : i + batch_size]
            if idx.numel() < 2:
                continue
            x, m = augment_batch(x_all[idx], m_all[idx], gen, aug)
            y = y_all[idx]
            out = model(x)
            loss = _cv_loss(out, y, m, pos_weight=pos_weight, loc_weight=loc_weight, has_loc=has_loc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss.detach()) * idx.numel()
            n += idx.numel()
        rec = {"epoch": ep + 1, "loss": tl / max(1, n), "seconds": time.time() - t0}
        hist.append(rec)
        log(f"    epoch {ep + 1}/{epochs} loss {rec['loss']:.4f} ({rec['seconds']:.0f}s)")
    return hist


def train_fold_frozen(model: Any, cases: list[MiasCase], *, epochs: int, lr: float, batch_size: int, seed: int,
                      loc_weight: float, aug: float, views: int, log: Any) -> list[dict[str, float]]:
    """Whole-image training of the heads on a fixed backbone, from cached feature maps.

    The backbone's batch-norm statistics are first re-estimated on the training images
    (AdaBN: Li et al. 2016), then every training image is passed through the fixed
    backbone ``views`` times (view 0 as is, the others augmented as in end-to-end
    training) and the heads are trained on those feature maps. Same losses as
    :func:`train_fold`; orders of magnitude cheaper on a CPU.
    """
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    bb = model.backbone
    for prm in bb.parameters():
        prm.requires_grad_(False)
    x_all = torch.from_numpy(np.stack([c.image for c in cases])).unsqueeze(1)
    m_all = torch.from_numpy(np.stack([(c.mask == 2).astype(np.float32) for c in cases])).unsqueeze(1)
    y_all = torch.tensor([float(c.label) for c in cases])
    t0 = time.time()
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
    model.train()
    feats: list[list[Any]] = []
    with torch.no_grad():
        for i in range(0, len(cases), 16):
            model.forward_features(x_all[i : i + 16])
        model.eval()
        for v in range(views):
            c3s, c4s, ms = [], [], []
            for i in range(0, len(cases), 16):
                x, m = x_all[i : i + 16], m_all[i : i + 16]
                if v > 0:
                    x, m = augment_batch(x, m, gen, aug)
                f = model.forward_features(x)
                c3s.append(f["c3"])
                c4s.append(f["c4"])
                ms.append(m)
            feats.append([torch.cat(c3s), torch.cat(c4s), torch.cat(ms)])
    log(f"    cached {views} view(s) of {len(cases)} images in {time.time() - t0:.0f}s")
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    n_pos = float(y_all.sum())
    pos_weight = torch.tensor((len(cases) - n_pos) / max(1.0, n_pos))
    opt = torch.optim.Adam(head, lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(cases) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    has_loc = getattr(model, "kind", "") == "attention" and loc_weight > 0
    hist = []
    model.train()
    bb.eval()
    for ep in range(epochs):
        perm = torch.randperm(len(cases), generator=gen)
        tl, n = 0.0, 0
        for i in range(0, len(cases), batch_size):
            idx = perm[i : i + batch_size]
            if idx.numel() < 2:
                continue
            v = int(torch.randint(0, views, (1,), generator=gen))
            c3, c4, m = (t[idx] for t in feats[v])
            y = y_all[idx]
            out = model.forward_head({"c3": c3, "c4": c4})
            loss = _cv_loss(out, y, m, pos_weight=pos_weight, loc_weight=loc_weight, has_loc=has_loc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss.detach()) * idx.numel()
            n += idx.numel()
        hist.append({"epoch": ep + 1, "loss": tl / max(1, n)})
        if (ep + 1) % 10 == 0 or ep == epochs - 1:
            log(f"    head epoch {ep + 1}/{epochs} loss {tl / max(1, n):.4f}")
    model.eval()
    return hist


def add_score_ablations(data: dict[str, Any]) -> None:
    """For attention models, configs scoring images by one half of the combined score only
    (``|attention`` / ``|localization``): the ablation of the image score."""
    for name, cfg in list(data["configs"].items()):
        if "|" in name or not cfg["folds"]:
            continue
        for part in ("attention", "localization"):
            key = f"score_{part}"
            if not all(key in r for f in cfg["folds"].values() for r in f["rows"]):
                continue
            folds = {fk: {**f, "rows": [{**r, "score": r[key]} for r in f["rows"]], "seconds": 0.0}
                     for fk, f in cfg["folds"].items()}
            d = {"settings": {**cfg["settings"], "score": part}, "key": cfg.get("key"), "folds": folds}
            d["summary"] = summarize(d, cfg["settings"].get("folds", len(folds)))
            data["configs"][f"{name}|{part}"] = d


def score_fold(model: Any, cases: list[MiasCase]) -> list[dict[str, Any]]:
    """Scores and localisation hits of held-out images."""
    import torch
    import torch.nn.functional as F

    from mammolens.train.patch_pretrain import breast_region

    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(0, len(cases), 16):
            chunk = cases[i : i + 16]
            x = torch.from_numpy(np.stack([c.image for c in chunk])).unsqueeze(1)
            out = model(x)
            prob = torch.sigmoid(out["logit"]).numpy()
            parts = {k: torch.sigmoid(out[f"{k}_logit"]).numpy() for k in ("attention", "localization") if f"{k}_logit" in out}
            maps = {k: F.interpolate(out[k].unsqueeze(1).float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
                    .squeeze(1).numpy() for k in ("localization", "attention")}
            for j, c in enumerate(chunk):
                row: dict[str, Any] = {"image_id": c.image_id, "patient_id": c.patient_id, "label": int(c.label),
                                       "score": float(prob[j])}
                for k, v in parts.items():  # the two halves of the image score, for the ablation
                    row[f"score_{k}"] = float(v[j])
                mal = [le for le in c.lesions if le["pathology"] == "malignant"]
                if c.label and mal:
                    breast = breast_region(c.image)
                    for k, mp in maps.items():
                        a = np.where(breast, mp[j], -np.inf)
                        yy, xx = np.unravel_index(int(np.argmax(a)), a.shape)
                        ox, oy = c.transform.inverse_points(np.array([[xx + 0.5, yy + 0.5]]))[0]
                        hit = any((ox - le["cx"]) ** 2 + (oy - le["cy"]) ** 2 <= le["r"] ** 2 for le in mal)
                        row[f"hit_{k}"] = bool(hit)
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------- summary


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def summarize(cfg: dict[str, Any], k: int) -> dict[str, Any]:
    from mammolens.stats.roc import auc_ci, auc_score

    folds = cfg["folds"]
    done = sorted(folds, key=int)
    rows = [r for f in done for r in folds[f]["rows"]]
    out: dict[str, Any] = {"folds_done": len(done), "folds_total": k}
    if not rows:
        return out
    y = np.array([r["label"] for r in rows])
    s = np.array([r["score"] for r in rows])
    pats = np.array([r["patient_id"] for r in rows])
    if 0 < y.sum() < len(y):
        res = auc_ci(y, s, method="delong", clusters=pats)
        out["pooled_auc"] = res.to_dict()
        out["pooled_auc_unclustered"] = auc_ci(y, s, method="delong").to_dict()
    fa = []
    for f in done:
        fr = folds[f]["rows"]
        fy = np.array([r["label"] for r in fr])
        fa.append(auc_score(fy, np.array([r["score"] for r in fr])) if 0 < fy.sum() < len(fy) else float("nan"))
    out["fold_aucs"] = fa
    good = [a for a in fa if np.isfinite(a)]
    out["fold_auc_mean"] = float(np.mean(good)) if good else None
    out["fold_auc_sd"] = float(np.std(good, ddof=1)) if len(good) > 1 else None
    out["fold_auc_range"] = [float(min(good)), float(max(good))] if good else None
    for key in ("localization", "attention"):
        hits = [r[f"hit_{key}"] for r in rows if f"hit_{key}" in r]
        if hits:
            lo, hi = wilson(int(sum(hits)), len(hits))
            out[f"hit_rate_{key}"] = {"hits": int(sum(hits)), "n": len(hits), "rate": sum(hits) / len(hits), "ci95": [lo, hi]}
    out["wall_seconds"] = float(sum(folds[f]["seconds"] for f in done))
    out["patch_seconds"] = float(sum(folds[f].get("patch", {}).get("seconds", 0.0) for f in done))
    return out


def fmt_auc(sm: dict[str, Any]) -> str:
    a = sm.get("pooled_auc")
    return f"{a['auc']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]" if a else "-"


def write_md(path: Path, data: dict[str, Any]) -> str:
    lines = [
        "# mini-MIAS patient-level cross-validation",
        "",
        f"Data: {data['data']} ({data['n_images']} images, {data['n_malignant']} malignant, {data['n_patients']} women); "
        f"{data['k']}-fold, patient-level, stratified; seed {data['seed']}. Machine: {data['machine']}.",
        "Pooled out-of-fold AUC with DeLong 95% CI (patients as clusters, Obuchowski 1997). Hit rate: maximum of the "
        "heatmap inside an annotated malignant circle, malignant images, Wilson 95% CI.",
        "",
        "| configuration | pooled AUC [95% CI] | per-fold AUCs | fold mean ± sd | hit rate (localisation map) | hit rate (attention) | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cfg in data["configs"].items():
        sm = cfg.get("summary", {})
        fa = ", ".join(f"{a:.2f}" for a in sm.get("fold_aucs", []))
        ms = f"{sm['fold_auc_mean']:.3f} ± {sm['fold_auc_sd']:.3f}" if sm.get("fold_auc_sd") is not None else "-"

        def hr(key: str, sm: dict[str, Any] = sm) -> str:
            h = sm.get(f"hit_rate_{key}")
            return f"{h['hits']}/{h['n']} = {h['rate']:.2f} [{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}]" if h else "-"

        wt = f"{sm.get('wall_seconds', 0) / 60:.1f} min" + (f" (patch {sm['patch_seconds'] / 60:.1f})" if sm.get("patch_seconds") else "")
        done = "" if sm.get("folds_done") == sm.get("folds_total") else f" ({sm.get('folds_done')}/{sm.get('folds_total')} folds)"
        lines.append(f"| `{name}`{done} | {fmt_auc(sm)} | {fa} | {ms} | {hr('localization')} | {hr('attention')} | {wt} |")
    lines += ["", "Settings per configuration are in the JSON next to this file (`configs.<name>.settings`).", ""]
    text = "\n".join(lines)
    path.write_text(text)
    return text


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/mini-mias")
    ap.add_argument("--out", default="bench/results/mias_cv.json")
    ap.add_argument("--pretrained", default="none", help="initial backbone weights file (default: none = from scratch)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", default="", help="comma-separated fold indices to run now (resume the rest later)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--model", choices=("attention", "baseline", "both"), default="both")
    ap.add_argument("--patch-pretrain", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--tiny-width", type=int, default=32)
    ap.add_argument("--size", default="256x208", help="cache size HxW")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--freeze", choices=("none", "early", "backbone"), default="none",
                    help="backbone weights kept fixed in whole-image training (none | early = stem..layer2 | backbone)")
    ap.add_argument("--views", type=int, default=6, help="with --freeze backbone: cached views per image (1 plain + augmented)")
    ap.add_argument("--loc-weight", type=float, default=1.0)
    ap.add_argument("--augment", type=float, default=1.0, help="augmentation strength (0 = off)")
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--patch-epochs", type=int, default=6)
    ap.add_argument("--patch-per-lesion", type=int, default=16)
    ap.add_argument("--patch-background", type=int, default=12)
    ap.add_argument("--patch-lr", type=float, default=1e-3)
    ap.add_argument("--patch-classes", type=int, default=3, choices=(2, 3),
                    help="patch classes: 3 background/benign/malignant, 2 background/lesion")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/mias_cv", help="folder for patch-pretrained weights (shared between runs)")
    ap.add_argument("--tag", default="", help="suffix for the configuration name")
    args = ap.parse_args(argv)

    import torch

    from mammolens.models import create_model
    from mammolens.stats.roc import auc_score
    from mammolens.train.patch_pretrain import patch_pretrain

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in args.size.lower().split("x"))

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.time()
    cases = load_cases(args.data, size=(h, w))
    log(f"loaded {len(cases)} images in {time.time() - t0:.1f}s")
    folds = make_folds(cases, args.folds, args.seed)
    data: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    data.update({
        "data": str(args.data), "n_images": len(cases), "n_malignant": int(sum(c.label for c in cases)),
        "n_patients": len({c.patient_id for c in cases}), "k": args.folds, "seed": args.seed,
        "machine": f"CPU, {args.threads} torch threads (shared 2-core machine)" if not torch.cuda.is_available() else "GPU",
        "fold_method": FOLD_METHOD["name"],
        "fold_of": {c.image_id: int(f) for c, f in zip(cases, folds, strict=True)},
    })
    data.setdefault("configs", {})
    kinds = ["attention", "baseline"] if args.model == "both" else [args.model]
    init = args.pretrained
    init_tag = "" if init.lower() in ("none", "") else "+init:" + Path(init).stem
    only = {int(v) for v in args.only_folds.split(",") if v.strip()} if args.only_folds else set(range(args.folds))

    common = {k: getattr(args, k) for k in ("epochs", "arch", "size", "batch_size", "lr", "augment", "seed", "folds", "freeze")}
    if args.freeze == "backbone":
        common["views"] = args.views
    if args.arch == "tiny":
        common["tiny_width"] = args.tiny_width
    patch_cfg = {k: getattr(args, k) for k in ("patch_size", "patch_epochs", "patch_per_lesion", "patch_background", "patch_lr")}
    if args.patch_classes != 3:  # older runs keep their keys
        patch_cfg["patch_classes"] = args.patch_classes

    def save() -> None:
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(out)
        write_md(out.with_suffix(".md"), data)

    for fold in range(args.folds):
        if fold not in only:
            continue
        tr = [c for c, f in zip(cases, folds, strict=True) if f != fold]
        te = [c for c, f in zip(cases, folds, strict=True) if f == fold]
        patch_info: dict[str, Any] | None = None
        weights = init
        for kind in kinds:
            name = (f"{kind}_{args.arch}" + (("+patch" + ("-lesion" if args.patch_classes == 2 else "")) if args.patch_pretrain else "")
                    + init_tag
                    + (f"+freeze-{args.freeze}" if args.freeze != "none" else "") + (f"+{args.tag}" if args.tag else ""))
            settings = {**common, "model": kind, "loc_weight": args.loc_weight if kind == "attention" else 0.0,
                        "patch_pretrain": bool(args.patch_pretrain), "init": init,
                        **(patch_cfg if args.patch_pretrain else {})}
            key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
            cfg = data["configs"].setdefault(name, {"settings": settings, "key": key, "folds": {}})
            if cfg.get("key") != key:
                log(f"[{name}] settings changed: discarding {len(cfg['folds'])} old fold result(s)")
                cfg.update({"settings": settings, "key": key, "folds": {}})
            if str(fold) in cfg["folds"]:
                log(f"[{name}] fold {fold}: done, kept")
                continue
            tf = time.time()
            if args.patch_pretrain and patch_info is None:
                pkey = hashlib.sha1(json.dumps({**patch_cfg, "arch": args.arch, "tw": args.tiny_width, "size": args.size,
                                                "init": init, "seed": args.seed, "folds": args.folds},
                                               sort_keys=True).encode()).hexdigest()[:10]
                wpath = work / f"patch_{args.arch}_fold{fold}_{pkey}.pt"
                wjson = wpath.with_suffix(".json")
            if args.patch_pretrain and patch_info is None and wpath.is_file() and wjson.is_file():
                patch_info = {**json.loads(wjson.read_text()), "seconds": 0.0, "reused": str(wpath)}
                weights = str(wpath)
                log(f"[fold {fold}] reusing patch-pretrained weights {wpath}")
            elif args.patch_pretrain and patch_info is None:
                log(f"[fold {fold}] patch pretraining {args.arch} on {len(tr)} training images ...")
                res = patch_pretrain(
                    [c.image for c in tr], [c.mask for c in tr], [c.image_id for c in tr], wpath,
                    arch=args.arch, tiny_width=args.tiny_width, init=init, exclude=[c.image_id for c in te],
                    patch_size=args.patch_size, per_lesion=args.patch_per_lesion,
                    background_per_image=args.patch_background, epochs=args.patch_epochs, lr=args.patch_lr,
                    classes=args.patch_classes, seed=args.seed + fold,
                    progress=lambda r: log(f"    patch epoch {r['epoch']}: loss {r['loss']:.3f} acc {r['accuracy']:.3f}"),
                )
                patch_info = res.to_dict()
                wjson.write_text(json.dumps(patch_info))
                weights = str(wpath)
                log(f"[fold {fold}] patches {res.counts} in {res.seconds:.0f}s")
            kw: dict[str, Any] = {"tiny_width": args.tiny_width}
            if kind == "attention":
                kw.update({"score": "attention+localization", "attention_dim": 64})
            torch.manual_seed(args.seed + fold)
            model = create_model(f"{kind}_{args.arch}", pretrained=weights, **kw)
            log(f"[{name}] fold {fold}: training on {len(tr)} images ({sum(c.label for c in tr)} malignant), "
                f"testing on {len(te)} ({sum(c.label for c in te)} malignant)")
            if args.freeze == "backbone":
                hist = train_fold_frozen(model, tr, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                         seed=args.seed + fold, loc_weight=args.loc_weight, aug=args.augment,
                                         views=args.views, log=log)
            else:
                hist = train_fold(model, tr, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed + fold,
                                  loc_weight=args.loc_weight, aug=args.augment, log=log, freeze=args.freeze)
            rows = score_fold(model, te)
            secs = time.time() - tf
            rec: dict[str, Any] = {"rows": rows, "history": hist, "seconds": secs}
            if patch_info is not None:
                rec["patch"] = patch_info
                patch_info = {**patch_info, "seconds": 0.0, "shared_with": name}  # count patch time once
            cfg["folds"][str(fold)] = rec
            cfg["summary"] = summarize(cfg, args.folds)
            sm = cfg["summary"]
            fy = np.array([r["label"] for r in rows])
            fauc = auc_score(fy, np.array([r["score"] for r in rows])) if 0 < fy.sum() < len(fy) else float("nan")
            log(f"[{name}] fold {fold}: AUC {fauc:.3f}; "
                f"{secs / 60:.1f} min; pooled so far {fmt_auc(sm)}")
            save()
    for cfg in data["configs"].values():
        cfg["summary"] = summarize(cfg, cfg["settings"].get("folds", args.folds))
    add_score_ablations(data)
    save()
    print(write_md(out.with_suffix(".md"), data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
