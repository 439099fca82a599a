#!/usr/bin/env python
"""mini-MIAS CV of the patch classifier used as a sliding-window detector at full resolution.

The lever from Shen et al. (2019) in its simplest form. Per fold:

1. Train a patch classifier (background / benign / malignant) on patches cut at the
   **original 200 um resolution** (lesion margins and calcification clusters are visible)
   from the training folds' images only (:mod:`mammolens.train.patch_pretrain`).
2. Apply it fully convolutionally to every held-out image at full resolution. The
   malignant-class probability of each 64 x 64 window (stride 32) forms a heatmap.
   Image score = its maximum inside the breast. Localisation hit = that maximum falls
   inside an annotated malignant circle.

The output JSON has the layout of bench/mias_cv.py, so ``bench/mias_compare.py`` can merge
and compare it. No image-level training: this measures what the patch stage alone gives
at full resolution. Example::

    .venv/bin/python bench/mias_patchdet.py --out bench/results/mias_cv_patchdet.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mias_cv import FOLD_METHOD, make_folds, summarize, write_md  # noqa: E402
from mias_data import MiasCase, parse_info  # noqa: E402


def load_original(c: MiasCase, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The image in [0, 1] at ``1 / scale`` of its 200 um resolution, and its lesion mask."""
    import cv2

    from mammolens.data.lesions import parse_lesions, rasterize_lesions

    px = cv2.imread(str(c.path), cv2.IMREAD_UNCHANGED)
    if px is None:
        raise FileNotFoundError(f"{c.path}: cannot decode image")
    img = px.astype(np.float32) / float(np.iinfo(px.dtype).max if px.dtype.kind == "u" else px.max())
    lesions = c.lesions
    if scale != 1.0:
        h, w = img.shape
        img = cv2.resize(img, (int(round(w / scale)), int(round(h / scale))), interpolation=cv2.INTER_AREA)
        lesions = [{**le, "cx": le["cx"] / scale, "cy": le["cy"] / scale, "r": le["r"] / scale} for le in lesions]
    mask = rasterize_lesions(parse_lesions(lesions), img.shape) if lesions else np.zeros(img.shape, np.uint8)
    return img, mask


def window_probs(net: Any, img: np.ndarray, *, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive-class probability of every ``window`` x ``window`` window, and the window centres (cy, cx)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        x = torch.from_numpy(img)[None, None]
        feats = net.backbone((x - net.mean) / net.std)
        c4 = feats[-1] if isinstance(feats, (tuple, list)) else feats
        stride = img.shape[0] / c4.shape[-2]
        k = max(1, int(round(window / stride)))
        pooled = F.avg_pool2d(c4, k, stride=1) if k > 1 else c4
        logits = torch.einsum("bchw,kc->bkhw", pooled, net.head.weight) + net.head.bias[None, :, None, None]
        prob = torch.softmax(logits, dim=1)[0, -1].numpy()  # last class = malignant (or lesion)
    h, w = prob.shape
    cy = (np.arange(h) * stride + k * stride / 2).clip(0, img.shape[0] - 1)
    cx = (np.arange(w) * stride + k * stride / 2).clip(0, img.shape[1] - 1)
    return prob, cy, cx


def aggregate(prob: np.ndarray, cy: np.ndarray, cx: np.ndarray, img: np.ndarray, *, top: int = 1) -> tuple[float, tuple[float, float]]:
    """Mean of the ``top`` highest window probabilities inside the breast, and the best window's centre (x, y)."""
    from mammolens.train.patch_pretrain import breast_region

    breast = breast_region(img)
    inside = breast[cy.astype(int)[:, None], cx.astype(int)[None, :]]
    p = np.where(inside, prob, -1.0) if inside.any() else prob
    i, j = np.unravel_index(int(np.argmax(p)), p.shape)
    flat = np.sort(p[p >= 0].ravel() if (p >= 0).any() else prob.ravel())[::-1]
    return float(flat[: max(1, top)].mean()), (float(cx[j]), float(cy[i]))


def score_image(net: Any, img: np.ndarray, *, window: int) -> tuple[float, tuple[float, float]]:
    """Maximum positive-class probability over windows inside the breast, and its centre (x, y)."""
    prob, cy, cx = window_probs(net, img, window=window)
    return aggregate(prob, cy, cx, img)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/mini-mias")
    ap.add_argument("--out", default="bench/results/mias_cv_patchdet.json")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", default="")
    ap.add_argument("--arch", default="tiny")
    ap.add_argument("--tiny-width", type=int, default=16)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--patch-per-lesion", type=int, default=8)
    ap.add_argument("--patch-background", type=int, default=6)
    ap.add_argument("--patch-epochs", type=int, default=6)
    ap.add_argument("--patch-lr", type=float, default=1e-3)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="downsampling factor of the 1024-pixel images (2 = 400 um pixels); patches are cut at that scale")
    ap.add_argument("--classes", type=int, default=3, choices=(2, 3),
                    help="3: background/benign/malignant, score = P(malignant); 2: background/lesion, score = P(lesion)")
    ap.add_argument("--ensemble", type=int, default=1, help="patch classifiers per fold (seeds differ); their maps are averaged")
    ap.add_argument("--init", default="none", help="initial backbone weights for the patch classifier (e.g. synthetic-cohort "
                    "or self-supervised pretraining); default: from scratch")
    ap.add_argument("--ssl-epochs", type=int, default=0,
                    help="per fold, SimCLR pretraining of the backbone on the training folds' images (labels unused) "
                    "for this many epochs before the patch stage (0 = off)")
    ap.add_argument("--ssl-per-image", type=int, default=32)
    ap.add_argument("--work", default="runs/mias_patchdet", help="folder for per-fold SSL weights (reused when present)")
    ap.add_argument("--top", type=int, default=0, help="also record the mean of the top-N windows as config '<name>+topN'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix for the configuration name")
    args = ap.parse_args(argv)

    import torch

    from mammolens.models.backbone import build_backbone
    from mammolens.stats.roc import auc_score
    from mammolens.train.patch_pretrain import pretrain_backbone, sample_patches

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cases = parse_info(args.data)
    origs = {c.image_id: load_original(c, args.scale) for c in cases}
    print(f"loaded {len(cases)} images in {time.time() - t0:.1f}s", flush=True)
    folds = make_folds(cases, args.folds, args.seed)
    data: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    data.update({
        "data": str(args.data), "n_images": len(cases), "n_malignant": int(sum(c.label for c in cases)),
        "n_patients": len({c.patient_id for c in cases}), "k": args.folds, "seed": args.seed,
        "machine": f"CPU, {args.threads} torch threads (shared 2-core machine)", "fold_method": FOLD_METHOD["name"],
        "fold_of": {c.image_id: int(f) for c, f in zip(cases, folds, strict=True)},
    })
    data.setdefault("configs", {})
    settings = {"model": "patch-detector", "arch": args.arch, "tiny_width": args.tiny_width, "resolution": "original (1024)",
                "patch_size": args.patch_size, "patch_per_lesion": args.patch_per_lesion,
                "patch_background": args.patch_background, "patch_epochs": args.patch_epochs, "patch_lr": args.patch_lr,
                "seed": args.seed, "folds": args.folds}
    if args.init != "none":
        settings["init"] = str(args.init)
    if args.ssl_epochs > 0:
        settings.update({"ssl": "simclr", "ssl_epochs": args.ssl_epochs, "ssl_per_image": args.ssl_per_image})
    if args.scale != 1.0 or args.classes != 3 or args.ensemble != 1:  # old runs keep their keys
        settings.update({"resolution": f"{200 * args.scale:g} um ({1024 / args.scale:g} px)", "scale": args.scale,
                         "classes": args.classes, "ensemble": args.ensemble})
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    res_tag = "fullres" if args.scale == 1.0 else f"{1024 / args.scale:g}px"
    name = f"patchdetector_{args.arch}_{res_tag}" + ("+lesion" if args.classes == 2 else "") \
        + (f"+ens{args.ensemble}" if args.ensemble > 1 else "") + (f"+init:{Path(args.init).stem}" if args.init != "none" else "") \
        + (f"+ssl{args.ssl_epochs}" if args.ssl_epochs > 0 else "") + (f"+{args.tag}" if args.tag else "")
    cfg = data["configs"].setdefault(name, {"settings": settings, "key": key, "folds": {}})
    if cfg.get("key") != key:
        cfg.update({"settings": settings, "key": key, "folds": {}})
    top_name = f"{name}+top{args.top}"
    tcfg = None
    if args.top > 0:
        tcfg = data["configs"].setdefault(top_name, {"settings": {**settings, "aggregate": f"mean of top {args.top}"}, "key": key, "folds": {}})
        if tcfg.get("key") != key:
            tcfg.update({"settings": {**settings, "aggregate": f"mean of top {args.top}"}, "key": key, "folds": {}})
    only = {int(v) for v in args.only_folds.split(",") if v.strip()} if args.only_folds else set(range(args.folds))
    for fold in sorted(only):
        if str(fold) in cfg["folds"]:
            print(f"fold {fold}: done, kept", flush=True)
            continue
        tf = time.time()
        tr = [c for c, f in zip(cases, folds, strict=True) if f != fold]
        te = [c for c, f in zip(cases, folds, strict=True) if f == fold]
        ps = sample_patches([origs[c.image_id][0] for c in tr], [origs[c.image_id][1] for c in tr], [c.image_id for c in tr],
                            patch_size=args.patch_size, per_lesion=args.patch_per_lesion,
                            background_per_image=args.patch_background, classes=args.classes,
                            exclude=[c.image_id for c in te], seed=args.seed + fold)
        init = args.init
        ssl_info: dict[str, Any] | None = None
        if args.ssl_epochs > 0:
            from mammolens.train.ssl_pretrain import ssl_pretrain

            wdir = Path(args.work)
            wdir.mkdir(parents=True, exist_ok=True)
            wpath = wdir / f"ssl_{args.arch}_fold{fold}_{key}.pt"
            if wpath.is_file() and wpath.with_suffix(".json").is_file():
                ssl_info = {**json.loads(wpath.with_suffix(".json").read_text()), "reused": str(wpath)}
            else:
                sres = ssl_pretrain([origs[c.image_id][0] for c in tr], [c.image_id for c in tr], wpath, arch=args.arch,
                                    tiny_width=args.tiny_width, init=args.init, exclude=[c.image_id for c in te],
                                    patch_size=args.patch_size, per_image=args.ssl_per_image, epochs=args.ssl_epochs,
                                    seed=args.seed + fold,
                                    progress=lambda r: print(f"    ssl epoch {r['epoch']}: loss {r['loss']:.3f} "
                                                             f"retrieval {r['accuracy']:.3f}", flush=True))
                ssl_info = sres.to_dict() if hasattr(sres, "to_dict") else {"seconds": getattr(sres, "seconds", 0.0)}
                wpath.with_suffix(".json").write_text(json.dumps(ssl_info, default=str))
            init = str(wpath)
        nets, pinfos = [], []
        for e in range(args.ensemble):
            s_e = args.seed + fold + 1000 * e
            torch.manual_seed(s_e)
            bb = build_backbone(args.arch, tiny_width=args.tiny_width, pretrained=init)
            res = pretrain_backbone(bb, ps, epochs=args.patch_epochs, lr=args.patch_lr, seed=s_e,
                                    progress=lambda r: print(f"    patch epoch {r['epoch']}: loss {r['loss']:.3f} acc {r['accuracy']:.3f}", flush=True))
            nets.append(res.classifier)
            pinfos.append(res.to_dict())
        rows, trows = [], []
        for c in te:
            img, _ = origs[c.image_id]
            maps = [window_probs(net, img, window=args.patch_size) for net in nets]
            prob = np.mean([m[0] for m in maps], axis=0)
            _, cy, cx = maps[0]
            s, (x, y) = aggregate(prob, cy, cx, img)
            x, y = x * args.scale, y * args.scale  # back to the 1024-pixel frame of the annotations
            row: dict[str, Any] = {"image_id": c.image_id, "patient_id": c.patient_id, "label": int(c.label), "score": s}
            mal = [le for le in c.lesions if le["pathology"] == "malignant"]
            if c.label and mal:
                row["hit_localization"] = bool(any((x - le["cx"]) ** 2 + (y - le["cy"]) ** 2 <= le["r"] ** 2 for le in mal))
            rows.append(row)
            if tcfg is not None:
                trows.append({**row, "score": aggregate(prob, cy, cx, img, top=args.top)[0]})
        secs = time.time() - tf
        pinfo = pinfos[0] if len(pinfos) == 1 else {"ensemble": pinfos, "seconds": sum(p["seconds"] for p in pinfos)}
        if ssl_info is not None:
            pinfo = {**pinfo, "ssl": ssl_info}
        cfg["folds"][str(fold)] = {"rows": rows, "history": [], "seconds": secs, "patch": pinfo}
        cfg["summary"] = summarize(cfg, args.folds)
        if tcfg is not None:
            tcfg["folds"][str(fold)] = {"rows": trows, "history": [], "seconds": secs, "patch": pinfo}
            tcfg["summary"] = summarize(tcfg, args.folds)
        fy = np.array([r["label"] for r in rows])
        fa = auc_score(fy, np.array([r["score"] for r in rows])) if 0 < fy.sum() < len(fy) else float("nan")
        print(f"[{name}] fold {fold}: AUC {fa:.3f}; {secs / 60:.1f} min; patches {ps.counts()}", flush=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(out)
        write_md(out.with_suffix(".md"), data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
