"""Model speed per inference backend and whole-process predict, next to the GEMM limit.

Measures, in ONE run on this machine (``--json OUT``; keys in brackets):

1. the peak float32 GEMM rate on 4096x4096 matrices, the best of torch.matmul and NumPy's
   BLAS (``gemm_gflops``, each library under ``gemm.libraries``): the ceiling for
   convolution throughput on this CPU;
2. the FLOPs of the paper preset's model (``attention_resnet50`` at 1024x832) per image,
   counted with ``torch.utils.flop_counter`` (``model_gflop_per_image``);
3. model-only images/s of every backend of ``predict --backend`` at batch 1 and at
   larger batches (``backends.<name>.images_per_s_b1``, ``.share_of_peak_b1``,
   ``.best_batch``, ``.images_per_s_best``, ``.share_of_peak_best``), plus the old
   path (eager, NCHW layout, ``backends_reference.eager_nchw``) that made batch 2
   slower than batch 1;
4. whole-process ``mammolens predict`` images/s on >= 32 full-field synthetic DICOMs
   (``mammolens synth --size full``) with the paper preset, the fastest backend, decode
   workers and heatmap + overlay writing (``predict_whole_process.images_per_s``,
   ``.share_of_peak``, ``.ratio_to_model_only``), in a fresh process;
5. the attention_tiny figures of the demo, and the peak memory of ``predict`` on 250 and
   1,000 inputs (flat = streaming).

share of peak = model FLOPs x images/s / GEMM peak.

The machine's load average is recorded at the start and end (``machine``); figures
measured while other jobs run are lower bounds.

Usage::

    .venv/bin/python bench/bench_model_speed.py --json bench/results/model_speed.json
    .venv/bin/python bench/bench_model_speed.py --quick      # fewer repeats, no memory runs
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
sys.path.insert(0, str(HERE.parent / "src"))


def load_text() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def gemm_peak(n: int = 4096, repeats: int = 3) -> dict:
    """The best float32 GEMM rate this machine's BLAS libraries reach on n x n matrices.

    torch's matmul (MKL / oneDNN) is not the fastest GEMM on every CPU: on the 2-core
    machine of this project NumPy's OpenBLAS reached 285 GFLOP/s where torch reached 224,
    and ONNX Runtime / OpenVINO convolutions ran above torch's figure. Taking only torch's
    rate as "the peak" then gives shares above 100 %. The peak is the best of the
    libraries measured (each recorded under ``libraries``).
    """
    import numpy as np
    import torch

    def best_of(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    a, b = torch.randn(n, n), torch.randn(n, n)
    an, bn = a.numpy(), b.numpy()
    libs = {
        "torch.matmul": best_of(lambda: torch.matmul(a, b)),
        f"numpy.matmul ({_blas_name(np)})": best_of(lambda: an @ bn),
    }
    name = min(libs, key=libs.get)
    return {
        "n": n, "seconds_best": libs[name], "gflops": 2 * n**3 / libs[name] / 1e9, "library": name,
        "libraries": {k: round(2 * n**3 / v / 1e9, 1) for k, v in libs.items()},
    }


def _blas_name(np_mod) -> str:
    try:
        cfg = np_mod.show_config(mode="dicts")
        return str(cfg["Build Dependencies"]["blas"]["name"])
    except Exception:  # noqa: BLE001 - only a label
        return "BLAS"


def flops_per_image(model, shape) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 1, *shape)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return float(fc.get_total_flops())


def time_fn(fn, x, repeats: int) -> dict:
    fn(x)  # warm-up: primitive creation, allocator, (re)compilation for this shape
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    best = min(times)
    return {"batch": int(x.shape[0]), "repeats": repeats, "seconds_best": best,
            "seconds_median": sorted(times)[len(times) // 2], "images_per_s": x.shape[0] / best}


def bench_backends(model, shape, names, batches, repeats, gflop, peak, reference: bool = True) -> tuple[dict, dict]:
    import torch

    from mammolens.predict.backends import make_backend

    out: dict = {}
    for name in names:
        print(f"backend {name} ...", flush=True)
        t = time.perf_counter()
        try:
            be = make_backend(name, model, shape, fallback=False)
        except Exception as e:  # noqa: BLE001 - recorded, the others still run
            out[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"  unavailable: {e}", flush=True)
            continue
        rec: dict = {"build_seconds": time.perf_counter() - t, "batches": {}}
        for b in batches:
            x = torch.rand(b, 1, *shape)
            r = time_fn(be, x, repeats if b == 1 else max(1, repeats - 1))
            r["share_of_peak"] = r["images_per_s"] * gflop / peak
            rec["batches"][str(b)] = r
            print(f"  batch {b}: {r['images_per_s']:.3f} img/s = {100 * r['share_of_peak']:.0f}% of GEMM peak", flush=True)
        b1 = rec["batches"]["1"]
        best_b, best = max(rec["batches"].items(), key=lambda kv: kv[1]["images_per_s"])
        rec.update(images_per_s_b1=b1["images_per_s"], share_of_peak_b1=b1["share_of_peak"], best_batch=int(best_b),
                   images_per_s_best=best["images_per_s"], share_of_peak_best=best["share_of_peak"])
        out[name] = rec
        del be
    ref: dict = {}
    if not reference:
        return out, ref
    # the old path: eager in the default NCHW layout (no channels_last)
    m = model.to(memory_format=torch.contiguous_format).eval()

    def nchw(x):
        with torch.inference_mode():
            return m(x)

    print("reference: eager NCHW (the old path) ...", flush=True)
    ref["eager_nchw"] = {}
    for b in batches[:2]:
        r = time_fn(nchw, torch.rand(b, 1, *shape), repeats if b == 1 else max(1, repeats - 1))
        r["share_of_peak"] = r["images_per_s"] * gflop / peak
        ref["eager_nchw"][str(b)] = r
        print(f"  batch {b}: {r['images_per_s']:.3f} img/s = {100 * r['share_of_peak']:.0f}% of GEMM peak", flush=True)
    # thread oversubscription: the same eager forward on one thread (on a machine shared with
    # other busy processes, OpenMP threads that spin-wait for each other can cost more than
    # the second core brings)
    print("reference: eager channels_last, 1 thread ...", flush=True)
    n_threads = torch.get_num_threads()
    mc = model.to(memory_format=torch.channels_last).eval()

    def cl(x):
        with torch.inference_mode():
            return mc(x.contiguous(memory_format=torch.channels_last))

    torch.set_num_threads(1)
    try:
        r = time_fn(cl, torch.rand(1, 1, *shape), repeats)
    finally:
        torch.set_num_threads(n_threads)
    r["share_of_peak"] = r["images_per_s"] * gflop / peak
    ref["eager_channels_last_1_thread"] = {"1": r}
    print(f"  batch 1: {r['images_per_s']:.3f} img/s = {100 * r['share_of_peak']:.0f}% of GEMM peak ({n_threads} threads elsewhere)", flush=True)
    return out, ref


_WHOLE_CHILD = r"""
import json, sys, time
from pathlib import Path


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


from mammolens.predict import load_predictor, predict
from mammolens.predict.scoring import start_decode_pool

run, inputs, out, backend, workers, batch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
t = time.perf_counter()
# as `mammolens predict` does: the decode workers start before the model loads
pool = start_decode_pool(workers) if workers > 0 else None
p = load_predictor(run, backend=backend)
# a first call: torch.compile compiles (and ONNX Runtime / OpenVINO allocate) on it, which
# belongs to start-up, as the backend's build does in the model-only figures
import torch
p.backend(torch.zeros(batch, 1, *p.image_size))
setup = time.perf_counter() - t
t = time.perf_counter()
df = predict(p, [inputs], out, heatmaps_dir=out + ".heatmaps", batch_size=batch, gradcam=False, workers=workers, progress=False,
             decode_pool=pool)
dt = time.perf_counter() - t
if pool is not None:
    pool.close()
print(json.dumps({"backend": p.backend.name, "fallback_reason": p.backend.fallback_reason, "setup_seconds": setup,
                  "n": int(len(df)), "rejected": int(df.attrs["n_rejected"]), "seconds": dt, "peak_rss_mb": status("VmHWM")}))
"""


def _uncompressed_copy(src: Path, dst: Path) -> Path:
    """The cohort with every file decoded to Explicit VR Little Endian (same pixels)."""
    import pydicom

    for f in sorted(src.rglob("*.dcm")):
        out = dst / f.relative_to(src)
        if out.is_file():
            continue
        ds = pydicom.dcmread(f)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
    return dst


def decode_cpu_by_syntax(dicom_dir: Path) -> dict:
    """CPU seconds to read one image (``io.read_image``) per transfer syntax of the cohort."""
    import pydicom

    from mammolens.io import read_image

    out: dict[str, dict] = {}
    files = sorted(dicom_dir.rglob("*.dcm"))
    if files:
        read_image(files[0])  # warm-up: first-use imports and caches are not decoding
    for f in files:
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
        rec = out.setdefault(ts, {"files": 0, "cpu_seconds_one_read": None})
        rec["files"] += 1
        if rec["cpu_seconds_one_read"] is None:
            t = time.process_time()
            read_image(f)
            rec["cpu_seconds_one_read"] = round(time.process_time() - t, 3)
    return out


def whole_process(
    work: Path, n_images: int, backend: str, workers: int, batch: int, model_name: str, shape: tuple[int, int], synth_dir: Path | None = None,
    *, uncompressed: bool = False,
) -> dict:
    from mammolens.data.synthetic import synthesize_cohort
    from mammolens.serve.scoring import write_untrained_run

    synth = synth_dir or work / "synth"
    t = time.perf_counter()
    if not (synth / "manifest.csv").is_file():
        print(f"synthesising {n_images} full-field DICOMs ...", flush=True)
        synthesize_cohort(synth, n_patients=(n_images + 3) // 4, size="full", seed=0)
    synth_s = time.perf_counter() - t
    kind, arch = model_name.split("_", 1)
    run = write_untrained_run(work / "run", preset="paper", image_size=shape, overrides={"model.kind": kind, "model.arch": arch})
    dicom_dir = synth / "dicom"
    if uncompressed:
        dicom_dir = _uncompressed_copy(dicom_dir, synth / "dicom_uncompressed")
    n = sum(1 for _ in dicom_dir.rglob("*.dcm"))
    print(f"predict ({backend}, {workers} decode worker(s), batch {batch}) on {n} images ...", flush=True)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    p = subprocess.run([sys.executable, "-c", _WHOLE_CHILD, str(run), str(dicom_dir), str(work / "pred.csv"), backend, str(workers), str(batch)],
                       capture_output=True, text=True, env=env, check=False)
    if p.returncode not in (0, 3):
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r.update(images=n, synth_seconds=synth_s, workers=workers, batch=batch, heatmaps=True, gradcam=False,
             images_per_s=r["n"] / r["seconds"], inputs=str(dicom_dir), decode_cpu_by_syntax=decode_cpu_by_syntax(dicom_dir))
    return r


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


_STAGES_CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from mammolens.predict import load_predictor
from mammolens.predict.scoring import FileItem, _write_outputs
from mammolens.explain.heatmaps import compute_heatmaps
from mammolens.io.images import read_image
from mammolens.data.preprocess import preprocess_image
from mammolens.predict.scoring import overlay_base

run, backend, out, files = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
p = load_predictor(run, backend=backend)
s, cfg = p.settings, p.config.predict
cpu = {k: [] for k in ("read", "preprocess", "overlay_base", "model", "heatmaps", "write_outputs")}


def timed(key, fn, *a, **k):
    c = time.process_time()  # every thread of this process: the model's too
    r = fn(*a, **k)
    cpu[key].append(time.process_time() - c)
    return r


x = torch.zeros(1, 1, *p.image_size)
p.backend(x)
for i, f in enumerate(files):
    loaded = timed("read", read_image, f, voi=s.window)
    pre = timed("preprocess", preprocess_image, loaded.pixels, s, laterality=(loaded.meta or {}).get("laterality") or None)
    base = timed("overlay_base", overlay_base, loaded.pixels, cfg.overlay_max_side)
    xb = torch.from_numpy(np.ascontiguousarray(pre.image, dtype=np.float32))[None, None]
    outs = timed("model", p.backend, xb)
    maps = timed("heatmaps", compute_heatmaps, None, xb, {k: torch.from_numpy(np.asarray(v)) for k, v in outs.items()}, gradcam=False)
    timed("write_outputs", _write_outputs, p, FileItem.from_path(f), out, maps[0], pre.transform, pre.image, base, cfg.overlay_kind, cfg.overlay_max_side, 3)
# the first image pays first-use costs (imports, page cache): the median of the others
print(json.dumps({k: float(np.median(v[1:] if len(v) > 1 else v)) for k, v in cpu.items()}))
"""


def stage_cpu(work: Path, backend: str, model_name: str, shape: tuple[int, int], synth_dir: Path | None, n: int = 6) -> dict:
    """CPU seconds per image of each stage of whole-process predict, one image at a time in
    one process (uncompressed full-field DICOMs), and the ceiling they put on the
    whole-process rate when the model's threads use every core: stages that are not the
    model take their CPU from it, so whole / model-only <= model CPU / total CPU."""
    from mammolens.serve.scoring import write_untrained_run

    synth = synth_dir or work / "synth"
    files = sorted((synth / "dicom_uncompressed").rglob("*.dcm"))[:n]
    if not files:
        return {"error": "no uncompressed synthetic DICOMs (run the whole-process bench first)"}
    kind, arch = model_name.split("_", 1)
    run = write_untrained_run(work / "run_stages", preset="paper", image_size=shape, overrides={"model.kind": kind, "model.arch": arch})
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    (work / "stage_out").mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-c", _STAGES_CHILD, str(run), backend, str(work / "stage_out"), *map(str, files)],
                       capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    cpu = json.loads(p.stdout.strip().splitlines()[-1])
    other = sum(v for k, v in cpu.items() if k != "model")
    return {"backend": backend, "images": len(files), "cpu_seconds_per_image": cpu, "non_model_cpu_seconds": other,
            "ceiling_ratio_to_model_only": cpu["model"] / (cpu["model"] + other)}


def predict_memory(work: Path, sizes: tuple[int, ...]) -> list[dict]:
    from mammolens.testing.toydata import make_toy_cache, make_toy_cohort
    from mammolens.train.api import train

    n_pat = (max(sizes) + 1) // 2
    manifest = make_toy_cohort(work / "cohort", n_patients=n_pat, size=(96, 80), mask_fraction=0.5, seed=0)
    sub = work / "sub"
    m_small = make_toy_cohort(sub, n_patients=12, size=(96, 80), seed=1)
    make_toy_cache(m_small, sub / "cache", size=(64, 48))
    run = work / "run"
    train(m_small, sub / "cache", config="tiny", out=run, overrides=["train.max_epochs=1"], progress=False)
    res = []
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    for n in sizes:
        out = work / f"pred_{n}.csv"
        p = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(n), str(manifest), str(run), str(out)], capture_output=True, text=True, check=True, env=env)
        res.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return res


def tiny_figures(repeats: int) -> dict:
    import torch

    from mammolens.models import create_model
    from mammolens.train.losses import mammo_loss

    tiny = create_model("attention_tiny", pretrained="none").eval()
    shape = (256, 208)
    gflop = flops_per_image(tiny, shape) / 1e9
    with torch.inference_mode():
        inf = time_fn(tiny, torch.rand(16, 1, *shape), repeats)
    tiny.train()
    opt = torch.optim.Adam(tiny.parameters(), lr=1e-4)
    x = torch.rand(16, 1, *shape)
    b = {"label": torch.tensor([1.0, 0.0] * 8), "mask": torch.zeros(16, *shape, dtype=torch.uint8), "has_mask": torch.zeros(16, dtype=torch.bool)}

    def step(_x):
        opt.zero_grad(set_to_none=True)
        loss, _ = mammo_loss(tiny(_x), b, loc_weight=1.0)
        loss.backward()
        opt.step()

    tr = time_fn(step, x, repeats)
    return {"gflops_per_image": gflop, "inference_b16": inf, "training_b16": tr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", dest="out", type=Path, default=RESULTS / "model_speed.json", help="write the results here (and a .md beside it)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no memory runs")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement after a warm-up (default 3, --quick 2)")
    ap.add_argument("--backends", default="eager,compiled,onnx,openvino")
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--images", type=int, default=32, help="full-field DICOMs for whole-process predict (>= 32)")
    ap.add_argument("--workers", type=int, default=1, help="decode workers of whole-process predict")
    ap.add_argument("--model", default=None, help="model name (default: the paper preset's)")
    ap.add_argument("--size", default="1024x832", help="input HxW (default: the paper preset's cache size)")
    ap.add_argument("--synth-dir", type=Path, default=None, help="reuse (or write) the synthetic full-field cohort here")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-whole", action="store_true")
    ap.add_argument("--skip-reference", action="store_true", help="skip the eager NCHW and one-thread references")
    ap.add_argument("--skip-tiny", action="store_true", help="skip the attention_tiny (demo) figures")
    args = ap.parse_args()

    import torch

    from mammolens.config import load_config
    from mammolens.models import create_model, model_kwargs_from_config

    reps = args.repeats or (2 if args.quick else 3)
    t0 = time.perf_counter()
    start_load = os.getloadavg()
    res: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "uptime_at_start": load_text(),
            "load_average_at_start": list(start_load),
            "under_load": start_load[0] >= 1.0,
            "note": ("idle machine" if start_load[0] < 1.0 else
                     f"measured UNDER LOAD (load average {start_load[0]:.1f} on {os.cpu_count()} cores: other jobs were running); "
                     "absolute figures are lower bounds, ratios within this run are comparable"),
        },
    }
    cfg = load_config("paper")
    model_name = args.model or cfg.model.name
    model = create_model(model_name, pretrained="none", **model_kwargs_from_config(cfg.model)).eval()
    shape = tuple(int(v) for v in args.size.lower().split("x"))
    res.update(preset="paper", model=model_name, image_size=list(shape))
    print("GEMM peak ...", flush=True)
    res["gemm"] = gemm_peak(4096, reps)
    peak = res["gemm_gflops"] = res["gemm"]["gflops"]
    print(f"  {peak:.1f} GFLOP/s ({res['gemm'].get('library', 'torch.matmul')}; {res['gemm'].get('libraries')})", flush=True)
    fl = flops_per_image(model, shape)
    gflop = res["model_gflop_per_image"] = fl / 1e9
    print(f"{model_name} at {shape[0]}x{shape[1]}: {gflop:.1f} GFLOP/image", flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    res["backends"], res["backends_reference"] = bench_backends(model, shape, args.backends.split(","), batches, reps, gflop, peak, not args.skip_reference)
    ok = {k: v for k, v in res["backends"].items() if "error" not in v}
    best_name = max(ok, key=lambda k: ok[k]["images_per_s_b1"]) if ok else "eager"
    res["best_backend_b1"] = best_name
    del model

    if not args.skip_whole:
        # as synthesised (the vendors' mix of JPEG 2000, RLE and uncompressed files), then
        # the same images uncompressed: on a small CPU, JPEG 2000 decoding alone can cost
        # more core-seconds per image than the model, and the second run shows what the
        # pipeline itself (overlap, heatmaps, overlays) costs
        for key, unc in (("predict_whole_process", False), ("predict_whole_process_uncompressed", True)):
            with tempfile.TemporaryDirectory() as d:
                w = whole_process(Path(d), max(32, args.images), best_name, args.workers, 1, model_name, shape, args.synth_dir,
                                  uncompressed=unc)
            if "error" not in w:
                w["share_of_peak"] = w["images_per_s"] * gflop / peak
                w["ratio_to_model_only"] = w["images_per_s"] / ok[best_name]["images_per_s_b1"] if best_name in ok else None
                print(f"  whole process{' (uncompressed inputs)' if unc else ''}: {w['images_per_s']:.3f} img/s = "
                      f"{100 * w['share_of_peak']:.0f}% of GEMM peak, {100 * (w['ratio_to_model_only'] or 0):.0f}% of the model-only rate; "
                      f"decode CPU s per image by syntax: { {k: v['cpu_seconds_one_read'] for k, v in w['decode_cpu_by_syntax'].items()} }",
                      flush=True)
            res[key] = w
        print("CPU per image of each stage ...", flush=True)
        with tempfile.TemporaryDirectory() as d:
            res["predict_stage_cpu"] = stage_cpu(Path(d), best_name, model_name, shape, args.synth_dir)
        print(f"  {res['predict_stage_cpu']}", flush=True)

    if not args.skip_tiny:
        print("attention_tiny (the demo) ...", flush=True)
        res["attention_tiny_256x208"] = tiny_figures(reps)
    if not (args.skip_memory or args.quick):
        print("predict memory on 250 and 1000 files ...", flush=True)
        with tempfile.TemporaryDirectory() as d:
            res["predict_memory"] = predict_memory(Path(d), (250, 1000))
    res["machine"]["uptime_at_end"] = load_text()
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    res["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    args.out.with_suffix(".md").write_text(to_markdown(res))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Model speed (bench/bench_model_speed.py)",
        "",
        f"Machine: {m['platform']}, {m['cpu_count']} CPU cores, torch threads {m['torch_threads']}, torch {m['torch']}.",
        "",
        f"**Load:** {m['note']}. `uptime` at start: `{m['uptime_at_start']}`; at end: `{m.get('uptime_at_end', '?')}`.",
        "",
        f"Peak float32 GEMM ({r['gemm']['n']}x{r['gemm']['n']}, best of "
        f"{', '.join(f'{k} {v:.0f}' for k, v in r['gemm'].get('libraries', {}).items())} GFLOP/s): **{r['gemm_gflops']:.1f} GFLOP/s**. "
        f"{r['model']} (preset {r['preset']}) at {r['image_size'][0]}x{r['image_size'][1]}: {r['model_gflop_per_image']:.1f} GFLOP per image.",
        "",
        "Model only (forward pass on a batch in memory; share of peak = GFLOP/image x images/s / GEMM peak):",
        "",
        "| backend | batch 1 images/s | batch 1 share of peak | best batch | best images/s | best share of peak | build (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in r["backends"].items():
        if "error" in v:
            lines.append(f"| {name} | unavailable: {v['error'][:80]} | | | | | |")
            continue
        lines.append(f"| {name} | {v['images_per_s_b1']:.3f} | {_pct(v['share_of_peak_b1'])} | {v['best_batch']} | "
                     f"{v['images_per_s_best']:.3f} | {_pct(v['share_of_peak_best'])} | {v['build_seconds']:.1f} |")
    for key, what in (("eager_nchw", "The old path (eager, NCHW layout)"), ("eager_channels_last_1_thread", "Eager channels_last on ONE thread")):
        ref = r.get("backends_reference", {}).get(key, {})
        if ref:
            cells = ", ".join(f"batch {b}: {v['images_per_s']:.3f} img/s ({_pct(v['share_of_peak'])})" for b, v in ref.items())
            lines += ["", f"{what}: {cells}."]
    lines += ["", "Per batch size:", "", "| backend | batch | images/s | share of peak |", "|---|---|---|---|"]
    for name, v in r["backends"].items():
        for b, x in v.get("batches", {}).items():
            lines.append(f"| {name} | {b} | {x['images_per_s']:.3f} | {_pct(x['share_of_peak'])} |")
    for key, what in (("predict_whole_process", "as synthesised"), ("predict_whole_process_uncompressed", "the same images uncompressed")):
        w = r.get(key)
        if not w:
            continue
        if "error" in w:
            lines += ["", f"Whole-process predict ({what}) failed: {w['error']}"]
        else:
            dec = ", ".join(f"{k} {v['files']} files, {v['cpu_seconds_one_read']} CPU s per read" for k, v in (w.get("decode_cpu_by_syntax") or {}).items())
            lines += [
                "",
                f"Whole-process `predict`, {what} ({dec}; "
                f"{w['n']} full-field synthetic DICOMs, backend {w['backend']}, {w['workers']} decode worker(s), "
                f"batch {w['batch']}, heatmaps + overlays written, no Grad-CAM; fresh process): **{w['images_per_s']:.3f} images/s** = "
                f"{_pct(w['share_of_peak'])} of GEMM peak = {_pct(w.get('ratio_to_model_only'))} of the backend's model-only rate "
                f"(decode workers started, model load, backend build and a first call before it: {w['setup_seconds']:.1f} s; peak RSS {w['peak_rss_mb']:.0f} MB).",
            ]
    sc = r.get("predict_stage_cpu")
    if sc and "error" not in sc:
        c = sc["cpu_seconds_per_image"]
        lines += [
            "",
            f"Where the CPU goes (one uncompressed full-field image at a time in one process, backend {sc['backend']}, "
            f"median of {sc['images'] - 1} images; CPU seconds per image, all threads):",
            "",
            "| stage | where it runs | CPU s / image |",
            "|---|---|---|",
            f"| read (pydicom decode, VOI table) | decode worker | {c['read']:.3f} |",
            f"| preprocess (breast crop, resize) | decode worker | {c['preprocess']:.3f} |",
            f"| overlay base (original shrunk) | decode worker | {c['overlay_base']:.3f} |",
            f"| model | main process ({r['machine']['torch_threads']} threads) | {c['model']:.3f} |",
            f"| heatmaps (maps upsampled to the input size) | main process | {c['heatmaps']:.3f} |",
            f"| write outputs (.npz, overlay PNG, top-K regions) | writer thread | {c['write_outputs']:.3f} |",
            "",
            f"When the model's threads use every core, every other stage takes its CPU from the model, so whole-process / "
            f"model-only cannot exceed model CPU / total CPU = **{_pct(sc['ceiling_ratio_to_model_only'])}** here "
            f"({sc['non_model_cpu_seconds']:.3f} CPU s per image besides the model's {c['model']:.3f}); a JPEG 2000 file adds its "
            "decoding (the per-syntax read cost above).",
        ]
    elif sc:
        lines += ["", f"Stage CPU figures failed: {sc['error']}"]
    ti = r.get("attention_tiny_256x208")
    if ti:
        lines += ["", f"attention_tiny at 256x208 (the demo): {ti['gflops_per_image']:.2f} GFLOP per image; inference "
                  f"{ti['inference_b16']['images_per_s']:.0f} images/s, training {ti['training_b16']['images_per_s']:.0f} images/s (batch 16)."]
    if "predict_memory" in r:
        lines += [
            "",
            "Memory of `predict` (a fresh process each; 96x80 PNG inputs, tiny model, heatmaps incl. Grad-CAM + overlays; VmHWM = peak):",
            "",
            "| inputs | RSS before (MB) | RSS at 25/50/75/100% of the run (MB) | peak RSS (MB) | images/s |",
            "|---|---|---|---|---|",
        ]
        for x in r["predict_memory"]:
            q = " / ".join(f"{v:.0f}" for v in x.get("rss_quartiles_mb", []))
            lines.append(f"| {x['n']} | {x.get('rss_before_mb', float('nan')):.0f} | {q} | {x['peak_rss_mb']:.0f} | {x['scored'] / x['seconds']:.1f} |")
    lines += ["", f"Total bench time {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
