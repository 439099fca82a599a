"""GPU figures for the paper model (issue 14): inference, training, and the cache DataLoader.

Measures, in one run on one CUDA device (``--json OUT``, a ``.md`` beside it):

1. inference images/s of ``attention_resnet50`` at 1024x832 (the paper preset), weights
   and inputs in channels_last under ``inference_mode``, float32 and AMP (bfloat16
   autocast), at batch 1, 8 and 32 (``inference.<precision>.b<N>``);
2. training images/s (forward, the package's loss :func:`mammolens.train.losses.mammo_loss`,
   backward, Adam step) with AMP at batch 8 and 16 (``training.b<N>``);
3. whether the DataLoader reading the preprocessing cache keeps up: images/s that
   :class:`mammolens.data.dataset.MammoDataset` with the paper preset's augmentation
   delivers with 0..N worker processes, on a cache written here by ``preprocess`` at the
   same size (``loader.w<N>``), against the training rate (``loader_keeps_up``).

Usage (a GPU machine; the CPU-only suite never runs it)::

    python bench/bench_gpu.py --json bench/results/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def _timed(fn, iters: int, sync) -> float:
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", dest="out", type=Path, default=Path("bench/results/gpu.json"))
    ap.add_argument("--model", default="attention_resnet50")
    ap.add_argument("--size", default="1024x832")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--loader-images", type=int, default=96, help="images in the cache the DataLoader reads")
    ap.add_argument("--workers", default="0,4,8,14")
    args = ap.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mammolens.models import create_model
    from mammolens.train.losses import mammo_loss

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device")
    h, w = (int(v) for v in args.size.lower().split("x"))
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize
    res: dict = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "model": args.model, "size": [h, w],
    }
    model = create_model(args.model, pretrained="none").to(dev).to(memory_format=torch.channels_last)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.eval()(torch.rand(1, 1, h, w, device=dev))
    res["gflop_per_image"] = fc.get_total_flops() / 1e9
    print(f"{res['device']}, torch {res['torch']}: {args.model} at {h}x{w}, {res['gflop_per_image']:.1f} GFLOP/image", flush=True)

    res["inference"] = {}
    model.eval()
    for prec in ("fp32", "bf16"):
        res["inference"][prec] = {}
        for b in (1, 8, 32):
            x = torch.rand(b, 1, h, w, device=dev).contiguous(memory_format=torch.channels_last)

            def infer(x=x, prec=prec) -> None:
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    model(x)

            dt = _timed(infer, args.iters, sync)
            ips = b * args.iters / dt
            res["inference"][prec][f"b{b}"] = {"images_per_s": ips, "tflops": ips * res["gflop_per_image"] / 1e3}
            print(f"inference {prec} batch {b}: {ips:.1f} images/s", flush=True)

    res["training"] = {}
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for b in (8, 16):
        x = torch.rand(b, 1, h, w, device=dev).contiguous(memory_format=torch.channels_last)
        mask = torch.zeros(b, h, w, dtype=torch.uint8, device=dev)
        mask[: b // 2, h // 3 : h // 3 + 64, w // 3 : w // 3 + 64] = 2
        batch = {"label": (torch.arange(b, device=dev) < b // 2).float(), "mask": mask,
                 "has_mask": torch.ones(b, dtype=torch.bool, device=dev)}

        def step(x=x, batch=batch) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
            loss, _ = mammo_loss(out, batch, loc_target="lesion")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        dt = _timed(step, max(5, args.iters // 2), sync)
        ips = b * max(5, args.iters // 2) / dt
        res["training"][f"b{b}"] = {"images_per_s": ips}
        print(f"training (AMP bf16, Adam) batch {b}: {ips:.1f} images/s", flush=True)
    res["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    train_rate = max(v["images_per_s"] for v in res["training"].values())

    res["loader"] = {}
    from mammolens.config import load_config
    from mammolens.data.dataset import MammoDataset
    from mammolens.data.manifest import read_manifest
    from mammolens.testing.toydata import make_toy_cache, make_toy_cohort

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        man = make_toy_cohort(Path(d), n_patients=max(1, args.loader_images // 4), size=(int(h * 1.25), int(w * 1.25)), seed=0)
        make_toy_cache(man, Path(d) / "cache", size=(h, w))
        res["loader_cache_seconds"] = time.perf_counter() - t
        ds = MammoDataset(read_manifest(man), Path(d) / "cache", augment_cfg=load_config("paper").data.augment, seed=0)
        for nw in (int(v) for v in args.workers.split(",")):
            dl = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=nw, pin_memory=True,
                                             persistent_workers=nw > 0, drop_last=False)
            for _ in dl:  # epoch 1: start the workers, warm the page cache
                pass
            t = time.perf_counter()
            n = 0
            for _epoch in range(2):
                for bt in dl:
                    bt["image"].to(dev, non_blocking=True)
                    n += len(bt["image"])
            sync()
            ips = n / (time.perf_counter() - t)
            res["loader"][f"w{nw}"] = {"images_per_s": ips}
            print(f"DataLoader, {nw} worker(s): {ips:.1f} images/s (training consumes {train_rate:.1f})", flush=True)
            del dl
    best = max(v["images_per_s"] for v in res["loader"].values())
    res["loader_keeps_up"] = bool(best >= train_rate)
    res["loader_best_over_training"] = best / train_rate
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    args.out.with_suffix(".md").write_text(_markdown(res))
    print(f"wrote {args.out}", flush=True)


def _markdown(r: dict) -> str:
    lines = [
        "# GPU figures (bench/bench_gpu.py)", "",
        f"{r['device']}, torch {r['torch']}, {r['cpu_count']} CPU cores. {r['model']} at {r['size'][0]}x{r['size'][1]}: "
        f"{r['gflop_per_image']:.1f} GFLOP per image (forward).", "",
        "| inference (channels_last, inference_mode) | batch 1 | batch 8 | batch 32 |", "|---|---|---|---|",
    ]
    for prec, v in r["inference"].items():
        lines.append(f"| {prec} images/s | " + " | ".join(f"{v[k]['images_per_s']:.1f}" for k in ("b1", "b8", "b32")) + " |")
    lines += ["", "Training (AMP bfloat16, the package's loss, Adam): " + ", ".join(
        f"batch {k[1:]} {v['images_per_s']:.1f} images/s" for k, v in r["training"].items()) + f"; peak GPU memory {r['peak_gpu_memory_gb']:.1f} GB.", ""]
    lines += ["DataLoader on the preprocessing cache (MammoDataset, the paper preset's augmentation, batch 16, pinned): " + ", ".join(
        f"{k[1:]} worker(s) {v['images_per_s']:.1f} images/s" for k, v in r["loader"].items())
        + f". Best / training rate = {r['loader_best_over_training']:.2f}: the loader "
        + ("keeps up." if r["loader_keeps_up"] else "does NOT keep up.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
