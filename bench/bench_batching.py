"""Why batch 2 was slower per image than batch 1 (eager, 1024x832): a focused measurement.

For ``attention_resnet50`` at 1024x832 (the paper preset), eager PyTorch, this times one
forward pass per configuration in interleaved rounds (so a change of the machine's load
hits every configuration alike), for

* memory layout: ``nchw`` (PyTorch's default) and ``channels_last``;
* batch: 1 and 2;
* intra-op threads: 1 and all cores;
* allocator: glibc's default, and glibc with large blocks kept in the heap
  (``mallopt(M_MMAP_MAX, 0)``, ``M_TRIM_THRESHOLD`` high: what
  :func:`mammolens.predict.backends.keep_freed_memory` sets), one child process each.

and records per image: wall seconds (best and median of the rounds), minor page faults,
user and system CPU seconds. glibc serves every allocation above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and returns it with ``munmap`` on free: a forward
pass at 1024x832 allocates gigabytes of such activations, and the kernel must fault in
and zero every page of them again on every pass -- system time that grows with the
batch.

Usage::

    .venv/bin/python bench/bench_batching.py --json bench/results/batching.json [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def child(alloc: str, rounds: int, size: tuple[int, int], batches: list[int]) -> dict:
    import torch

    from mammolens.config import load_config
    from mammolens.models import create_model, model_kwargs_from_config

    if alloc == "heap":
        from mammolens.predict.backends import keep_freed_memory

        if not keep_freed_memory():
            return {"error": "mallopt unavailable (not glibc)"}
    cfg = load_config("paper")
    torch.manual_seed(0)
    model = create_model(cfg.model.name, pretrained="none", **model_kwargs_from_config(cfg.model)).eval()
    n_all = torch.get_num_threads()
    configs = [(lay, b, t) for lay in ("nchw", "channels_last") for b in batches for t in sorted({1, n_all})]
    xs = {b: torch.rand(b, 1, *size) for b in batches}
    rec: dict = {}

    def run(lay: str, b: int, t: int) -> dict:
        fmt = torch.channels_last if lay == "channels_last" else torch.contiguous_format
        model.to(memory_format=fmt)
        x = xs[b].contiguous(memory_format=fmt)
        torch.set_num_threads(t)
        r0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.perf_counter()
        with torch.inference_mode():
            model(x)
        w1, c1, r1 = time.perf_counter(), os.times(), resource.getrusage(resource.RUSAGE_SELF)
        return {"wall": (w1 - w0) / b, "user": (c1.user - c0.user) / b, "sys": (c1.system - c0.system) / b,
                "minflt": (r1.ru_minflt - r0.ru_minflt) / b, "nivcsw": (r1.ru_nivcsw - r0.ru_nivcsw) / b}

    for c in configs:  # warm-up: oneDNN primitives, first touch of the heap
        run(*c)
    samples: dict = {c: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            samples[c].append(run(*c))
    for (lay, b, t), ss in samples.items():
        walls = sorted(s["wall"] for s in ss)
        med = ss[[s["wall"] for s in ss].index(walls[len(walls) // 2])]
        rec[f"{lay}/b{b}/t{t}"] = {
            "layout": lay, "batch": b, "threads": t, "rounds": rounds,
            "seconds_per_image_best": walls[0], "seconds_per_image_median": walls[len(walls) // 2],
            "images_per_s_best": 1 / walls[0], "images_per_s_median": 1 / walls[len(walls) // 2],
            "user_s_per_image": med["user"], "sys_s_per_image": med["sys"],
            "minor_faults_per_image": med["minflt"], "involuntary_switches_per_image": med["nivcsw"],
        }
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", dest="out", type=Path, default=HERE / "results" / "batching.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1024x832")
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(child(args.child, args.rounds, size, batches)))
        return
    t0 = time.perf_counter()
    res: dict = {"machine": {"cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg())},
                 "model": "attention_resnet50", "size": list(size), "rounds": args.rounds, "allocators": {}}
    for alloc in ("glibc_default", "heap"):
        print(f"allocator {alloc} ...", flush=True)
        p = subprocess.run([sys.executable, __file__, "--child", alloc, "--rounds", str(args.rounds), "--size", args.size,
                            "--batches", args.batches], capture_output=True, text=True, check=False)
        if p.returncode != 0:
            res["allocators"][alloc] = {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
            continue
        res["allocators"][alloc] = json.loads(p.stdout.strip().splitlines()[-1])
        for k, v in res["allocators"][alloc].items():
            print(f"  {k}: {v['images_per_s_median']:.3f} img/s (best {v['images_per_s_best']:.3f}), user {v['user_s_per_image']:.2f} s, "
                  f"sys {v['sys_s_per_image']:.2f} s, {v['minor_faults_per_image']:.0f} minor faults per image", flush=True)
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    res["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
