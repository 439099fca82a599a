"""Model speed and predict memory, next to the machine's float32 GEMM limit.

Measures, in one run on this machine:

1. the peak float32 GEMM rate (``torch.matmul`` of large square matrices): the ceiling
   for convolution throughput on this CPU;
2. inference images/s of ``attention_resnet50`` at 1024x832 (batch 1 and batched), with
   the exact FLOPs per image (``torch.utils.flop_counter``) so the achieved GFLOP/s can be
   compared with the GEMM peak;
3. training images/s (forward + backward + Adam step) of ``attention_resnet50`` at
   1024x832 (and of the ``tiny`` model at 256x208, the demo's setting);
4. the peak memory (max RSS) of ``mammolens predict`` on 250 and on 1,000 small image
   files, each in a fresh process: equal peaks show memory does not grow with the number
   of inputs (streaming).

Usage::

    .venv/bin/python bench/bench_model_speed.py            # ~3-5 min on 2 cores
    .venv/bin/python bench/bench_model_speed.py --quick    # smaller repeat counts

Writes ``bench/results/model_speed.json`` and ``bench/results/model_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def gemm_peak(n: int = 2048, repeats: int = 5) -> dict:
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return {"n": n, "seconds_best": best, "gflops": 2 * n**3 / best / 1e9}


def flops_per_image(model, shape) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 1, *shape)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return float(fc.get_total_flops())


def time_inference(model, shape, batch: int, repeats: int, *, warmup: bool = True) -> dict:
    import torch

    x = torch.rand(batch, 1, *shape)
    with torch.inference_mode():
        if warmup:
            model(x)  # oneDNN primitive creation, allocator
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    best = min(times)
    return {"batch": batch, "repeats": repeats, "seconds_best": best, "seconds_median": sorted(times)[len(times) // 2], "images_per_s": batch / best}


def time_training(model, shape, batch: int, steps: int, *, warmup: bool = True) -> dict:
    import torch

    from mammolens.train.losses import mammo_loss

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, *shape)
    b = {"label": torch.tensor([1.0, 0.0] * (batch // 2) + [1.0] * (batch % 2)), "mask": torch.zeros(batch, *shape, dtype=torch.uint8), "has_mask": torch.zeros(batch, dtype=torch.bool)}

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = mammo_loss(model(x), b, loc_weight=1.0)
        loss.backward()
        opt.step()

    if warmup:
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    model.eval()
    best = min(times)
    return {"batch": batch, "steps": steps, "seconds_best": best, "images_per_s": batch / best}


_MEM_CHILD = r"""
import json, sys, threading, time


def status(key):
    # VmHWM is the peak RSS of this process image (reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


samples = []
stop = False


def sampler():
    t0 = time.perf_counter()
    while not stop:
        samples.append((round(time.perf_counter() - t0, 2), round(status("VmRSS"), 1)))
        time.sleep(0.5)


from mammolens.predict import predict
import pandas as pd

n, manifest, run, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
m = pd.read_csv(manifest)
base = manifest.rsplit("/", 1)[0]
files = [base + "/" + p for p in m["path"][:n]]
rss_before = status("VmRSS")
th = threading.Thread(target=sampler, daemon=True)
th.start()
t = time.perf_counter()
df = predict(run, files, out, heatmaps_dir=out + ".heatmaps", batch_size=16, progress=False)
dt = time.perf_counter() - t
stop = True
th.join()
k = len(samples)
print(json.dumps({"n": n, "scored": len(df), "seconds": dt, "rss_before_mb": rss_before, "peak_rss_mb": status("VmHWM"),
                  "rss_quartiles_mb": [samples[min(k - 1, int(q * (k - 1)))][1] for q in (0.25, 0.5, 0.75, 1.0)] if k else []}))
"""


def predict_memory(work: Path, sizes: tuple[int, ...]) -> list[dict]:
    from mammolens.testing.toydata import make_toy_cache, make_toy_cohort
    from mammolens.train.api import train

    n_pat = (max(sizes) + 1) // 2
    manifest = make_toy_cohort(work / "cohort", n_patients=n_pat, size=(96, 80), mask_fraction=0.5, seed=0)
    # a small trained run (1 epoch on a subset is enough: this measures memory, not accuracy)
    sub = work / "sub"
    m_small = make_toy_cohort(sub, n_patients=12, size=(96, 80), seed=1)
    make_toy_cache(m_small, sub / "cache", size=(64, 48))
    run = work / "run"
    train(m_small, sub / "cache", config="tiny", out=run, overrides=["train.max_epochs=1"], progress=False)
    res = []
    for n in sizes:
        out = work / f"pred_{n}.csv"
        p = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(n), str(manifest), str(run), str(out)], capture_output=True, text=True, check=True)
        res.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--batch", type=int, default=2, help="batch size of the batched inference measurement")
    ap.add_argument("--out", type=Path, default=RESULTS / "model_speed.json")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--only-memory", action="store_true", help="re-measure predict memory only, updating --out")
    args = ap.parse_args()

    import torch

    from mammolens.models import create_model

    if args.only_memory:
        res = json.loads(args.out.read_text())
        with tempfile.TemporaryDirectory() as d:
            res["predict_memory"] = predict_memory(Path(d), (250, 1000))
        args.out.write_text(json.dumps(res, indent=2))
        args.out.with_suffix(".md").write_text(to_markdown(res))
        print(json.dumps(res["predict_memory"], indent=1))
        return

    shape = (args.height, args.width)
    reps = 2 if args.quick else 3
    t0 = time.perf_counter()
    res: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "load_average_at_start": list(os.getloadavg()),
            "note": (
                "idle machine" if os.getloadavg()[0] < 1.0
                else "machine shared with other jobs (load average >= 1): figures are lower bounds"
            ),
        },
        "image_size": list(shape),
    }
    print("GEMM peak ...", flush=True)
    res["gemm_fp32"] = gemm_peak(2048, 3 if args.quick else 5)
    peak = res["gemm_fp32"]["gflops"]
    print(f"  {peak:.1f} GFLOP/s", flush=True)

    model = create_model("attention_resnet50", pretrained="none").eval()
    fl = flops_per_image(model, shape)
    res["attention_resnet50"] = {"flops_per_image": fl, "gflops_per_image": fl / 1e9}
    inf = {}
    for b in (1, args.batch):
        print(f"inference resnet50 batch {b} ...", flush=True)
        # the batch-1 run warms the kernels up; the batched run reuses them
        r = time_inference(model, shape, b, reps if b == 1 else max(1, reps - 1), warmup=b == 1)
        r["achieved_gflops"] = r["images_per_s"] * fl / 1e9
        r["fraction_of_gemm_peak"] = r["achieved_gflops"] / peak
        inf[f"batch_{b}"] = r
        print(f"  {r['images_per_s']:.3f} img/s = {r['achieved_gflops']:.1f} GFLOP/s ({100 * r['fraction_of_gemm_peak']:.0f}% of GEMM peak)", flush=True)
    res["attention_resnet50"]["inference"] = inf
    print("training resnet50 batch 2 ...", flush=True)
    tr = time_training(model, shape, 2, 1, warmup=False)  # one step: ~1 TFLOP, slow on 2 cores
    tr["achieved_gflops_approx"] = tr["images_per_s"] * 3 * fl / 1e9  # fwd + bwd ~ 3x fwd
    res["attention_resnet50"]["training"] = tr
    print(f"  {tr['images_per_s']:.3f} img/s", flush=True)
    del model

    tiny = create_model("attention_tiny", pretrained="none").eval()
    tshape = (256, 208)
    res["attention_tiny_256x208"] = {
        "gflops_per_image": flops_per_image(tiny, tshape) / 1e9,
        "inference": time_inference(tiny, tshape, 16, reps),
        "training": time_training(tiny, tshape, 16, 2 if args.quick else 3),
    }
    print(f"tiny 256x208: {res['attention_tiny_256x208']['inference']['images_per_s']:.0f} img/s inference, {res['attention_tiny_256x208']['training']['images_per_s']:.0f} img/s training", flush=True)

    if not args.skip_memory:
        print("predict memory on 250 and 1000 files ...", flush=True)
        with tempfile.TemporaryDirectory() as d:
            res["predict_memory"] = predict_memory(Path(d), (250, 1000))
        for r in res["predict_memory"]:
            print(f"  {r['n']} inputs: peak RSS {r['peak_rss_mb']:.0f} MB, {r['scored'] / r['seconds']:.1f} img/s (with heatmaps + overlays)", flush=True)
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    res["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    args.out.with_suffix(".md").write_text(to_markdown(res))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


def to_markdown(r: dict) -> str:
    a = r["attention_resnet50"]
    lines = [
        "# Model speed (bench/bench_model_speed.py)",
        "",
        f"Machine: {r['machine']['platform']}, {r['machine']['cpu_count']} CPU(s), torch threads {r['machine']['torch_threads']}, "
        f"load average at start {r['machine']['load_average_at_start'][0]:.1f} ({r['machine']['note']}).",
        "",
        f"Peak float32 GEMM (torch.matmul {r['gemm_fp32']['n']}x{r['gemm_fp32']['n']}): **{r['gemm_fp32']['gflops']:.1f} GFLOP/s**.",
        "",
        f"attention_resnet50 at {r['image_size'][0]}x{r['image_size'][1]}: {a['gflops_per_image']:.1f} GFLOP per image (forward).",
        "",
        "| measurement | batch | images/s | GFLOP/s | share of GEMM peak |",
        "|---|---|---|---|---|",
    ]
    for v in a["inference"].values():
        lines.append(f"| inference | {v['batch']} | {v['images_per_s']:.3f} | {v['achieved_gflops']:.1f} | {100 * v['fraction_of_gemm_peak']:.0f}% |")
    t = a["training"]
    lines.append(f"| training (fwd+bwd+Adam) | {t['batch']} | {t['images_per_s']:.3f} | ~{t['achieved_gflops_approx']:.1f} | ~{100 * t['achieved_gflops_approx'] / r['gemm_fp32']['gflops']:.0f}% |")
    ti = r["attention_tiny_256x208"]
    lines += [
        "",
        f"attention_tiny at 256x208 (the demo): {ti['gflops_per_image']:.2f} GFLOP per image; "
        f"inference {ti['inference']['images_per_s']:.0f} images/s (batch 16), training {ti['training']['images_per_s']:.0f} images/s (batch 16).",
    ]
    if "predict_memory" in r:
        lines += [
            "",
            "Memory of `predict` (a fresh process each; 96x80 PNG inputs preprocessed on the fly, tiny model, "
            "heatmaps incl. Grad-CAM + overlays written; RSS sampled every 0.5 s, VmHWM = peak):",
            "",
            "| inputs | RSS before (MB) | RSS at 25/50/75/100% of the run (MB) | peak RSS (MB) | images/s |",
            "|---|---|---|---|---|",
        ]
        for m in r["predict_memory"]:
            q = " / ".join(f"{x:.0f}" for x in m.get("rss_quartiles_mb", []))
            lines.append(f"| {m['n']} | {m.get('rss_before_mb', float('nan')):.0f} | {q} | {m['peak_rss_mb']:.0f} | {m['scored'] / m['seconds']:.1f} |")
    lines += ["", f"Total bench time {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
