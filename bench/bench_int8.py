"""int8 against float32: speed, and the AUC change on the same test images.

``mammolens export --int8`` quantises a trained run after training (ONNX Runtime's static
quantisation, QDQ; for OpenVINO the same graph converted to IR). This measures, in one run:

1. **accuracy** on a finished demo (``--demo DIR``, the output of ``mammolens demo``): the
   attention model exported as float32 and as int8 for both runtimes (calibrated on the
   demo cache's *train* split, the run's own training cache), each predicting the
   validation + test images from the cache; the image-level test AUC of each against the
   float32 PyTorch predictions of the demo itself, and the largest score difference per
   image (``accuracy``);
2. **speed**, model only: the demo's model (attention_tiny, 256x208, batch 16) and the
   paper preset's ``attention_resnet50`` at 1024x832 (random weights, calibrated on
   random images: speed only), batch 1, float32 vs int8 per runtime (``speed``).

Usage::

    .venv/bin/python bench/bench_int8.py --demo demo_out --json bench/results/int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def time_fn(fn, x, repeats: int) -> dict:
    fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    best, med = min(times), sorted(times)[len(times) // 2]
    return {"batch": int(x.shape[0]), "repeats": repeats, "images_per_s_best": x.shape[0] / best, "images_per_s_median": x.shape[0] / med}


def split_auc(pred_csv: Path, manifest: Path) -> tuple[float, object]:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    p = pd.read_csv(pred_csv)[["image_id", "score"]]
    m = pd.read_csv(manifest)[["image_id", "split", "label"]]
    j = p.merge(m, on="image_id")
    t = j[j["split"] == "test"]
    return float(roc_auc_score(t["label"].astype(int), t["score"])), j.set_index("image_id")["score"]


def accuracy(demo: Path, work: Path) -> dict:
    from mammolens.predict import predict
    from mammolens.predict.export import export_run

    run = demo / "runs" / "attention"
    man_split = demo / "manifest_split.csv"
    man_eval = demo / "manifest_eval.csv"
    auc_ref, s_ref = split_auc(demo / "predictions" / "attention.csv", man_split)
    res: dict = {"reference": {"what": "float32 PyTorch (the demo's own predictions)", "test_auc_image": auc_ref}, "exports": {}}
    for fmt in ("onnx", "openvino"):
        for int8 in (False, True):
            name = f"{fmt}_{'int8' if int8 else 'fp32'}"
            print(f"export + predict {name} ...", flush=True)
            out = work / name
            t = time.perf_counter()
            rec = export_run(run, fmt, out, int8=int8)
            t_export = time.perf_counter() - t
            t = time.perf_counter()
            predict(out, man_eval, work / f"{name}.csv", cache=demo / "cache", progress=False, workers=0)
            t_pred = time.perf_counter() - t
            auc, s = split_auc(work / f"{name}.csv", man_split)
            d = (s - s_ref.reindex(s.index)).abs()
            res["exports"][name] = {"test_auc_image": auc, "auc_change": auc - auc_ref, "max_abs_score_diff": float(d.max()),
                                    "mean_abs_score_diff": float(d.mean()), "images": int(len(d)), "export_seconds": t_export,
                                    "predict_seconds": t_pred, "check": rec["check"], "quantization": rec.get("quantization")}
            print(f"  test AUC {auc:.4f} (float32 PyTorch {auc_ref:.4f}); max |score diff| {d.max():.4f}", flush=True)
    return res


def speed(repeats: int, work: Path, demo: Path | None, paper: bool = True, n_cal: int = 16) -> dict:
    import numpy as np
    import torch

    from mammolens.predict.backends import EagerBackend, export_onnx, runtime_backend
    from mammolens.predict.quantize import quantize_onnx, quantize_openvino
    from mammolens.serve.scoring import write_untrained_run

    res: dict = {}
    cases = [("attention_resnet50_1024x832_b1", "paper", (1024, 832), 1)] if paper else []
    if demo is not None:
        cases.insert(0, ("attention_tiny_256x208_b16", str(demo / "runs" / "attention"), (256, 208), 16))
    for key, src, size, batch in cases:
        print(f"speed {key} ...", flush=True)
        from mammolens.predict import load_predictor

        if src == "paper":
            run = write_untrained_run(work / "paper_run", preset="paper", image_size=size)
        else:
            run = Path(src)
        model = load_predictor(run).model.float().eval().to(memory_format=torch.contiguous_format)
        rng = np.random.default_rng(0)
        if demo is not None and src != "paper":
            from mammolens.data.cache import open_cache

            c = open_cache(demo / "cache")
            imgs = np.stack([c.load_image(i) for i in c.image_ids[:64]])[:, None].astype(np.float32)
        else:
            imgs = rng.random((n_cal, 1, *size), dtype=np.float32)  # speed only: the weights are random too
        x = imgs[:batch] if len(imgs) >= batch else np.repeat(imgs, batch, axis=0)[:batch]
        onnx_path = export_onnx(model, work / f"{key}.onnx", size)
        rec: dict = {"eager": time_fn(EagerBackend(model), torch.from_numpy(x), repeats)}
        quantize_onnx(onnx_path, work / f"{key}_int8.onnx", imgs)
        quantize_openvino(onnx_path, work / f"{key}_int8.xml", imgs)
        for name, fmt, path in (("onnx_fp32", "onnx", onnx_path), ("onnx_int8", "onnx", work / f"{key}_int8.onnx"),
                                ("openvino_fp32", "openvino", onnx_path), ("openvino_int8", "openvino", work / f"{key}_int8.xml")):
            be = runtime_backend(fmt, path)
            rec[name] = time_fn(be, x, repeats)
            del be
        for k, v in rec.items():
            print(f"  {k}: {v['images_per_s_median']:.2f} img/s (best {v['images_per_s_best']:.2f})", flush=True)
        res[key] = rec
    return res


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# int8 against float32 (bench/bench_int8.py)", "",
             f"Machine: {m['cpu_count']} CPU cores ({m['cpu']}), load average at start {m['load_average_at_start'][0]:.1f}, "
             f"at end {m['load_average_at_end'][0]:.1f} (other jobs running: absolute speeds are lower bounds; "
             "the ratios within a row are measured in the same minutes).", ""]
    a = r.get("accuracy")
    if a:
        lines += ["## Accuracy: the demo's attention model on its test split (image level)", "",
                  f"float32 PyTorch (the demo's own predictions): AUC **{a['reference']['test_auc_image']:.4f}**.", "",
                  "| export | test AUC | change vs float32 PyTorch | max abs score difference (val+test images) | mean abs difference |",
                  "|---|---|---|---|---|"]
        for k, v in a["exports"].items():
            lines.append(f"| {k} | {v['test_auc_image']:.4f} | {v['auc_change']:+.4f} | {v['max_abs_score_diff']:.4f} | {v['mean_abs_score_diff']:.5f} |")
    s = r.get("speed")
    if s:
        lines += ["", "## Speed, model only (images/s, median of the repeats; best in brackets)", "",
                  "| model | eager fp32 | onnx fp32 | onnx int8 | openvino fp32 | openvino int8 |", "|---|---|---|---|---|---|"]
        for k, v in s.items():
            cells = " | ".join(f"{v[n]['images_per_s_median']:.2f} ({v[n]['images_per_s_best']:.2f})" for n in
                               ("eager", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8"))
            lines.append(f"| {k} | {cells} |")
    lines += ["", f"Total {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=None, help="a finished `mammolens demo` output folder (accuracy + tiny speed)")
    ap.add_argument("--json", dest="out", type=Path, default=HERE / "results" / "int8.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-paper", action="store_true", help="no attention_resnet50 1024x832 speed case")
    ap.add_argument("--calibration-size", type=int, default=16, help="random calibration images of the 1024x832 speed case")
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") if os.path.exists("/proc/cpuinfo") else "?"
    t0 = time.perf_counter()
    res: dict = {"machine": {"cpu_count": os.cpu_count(), "cpu": cpu, "load_average_at_start": list(os.getloadavg())}}
    with tempfile.TemporaryDirectory() as d:
        if args.demo is not None:
            res["accuracy"] = accuracy(args.demo, Path(d))
        if not args.skip_speed:
            res["speed"] = speed(args.repeats, Path(d), args.demo, paper=not args.skip_paper, n_cal=args.calibration_size)
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    res["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))
    args.out.with_suffix(".md").write_text(to_markdown(res))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
