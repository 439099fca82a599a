"""Service throughput: studies scored per minute under concurrent uploads (loopback).

For each model (the tiny preset and the paper-size attention ResNet-50, both with
untrained weights: throughput does not depend on the weights), the script starts
``mammolens serve``'s app under uvicorn on a free loopback port, uploads N synthetic
four-view exams concurrently while readers poll the worklist, and waits until every
study is scored *and* its DICOM outputs (SR, overlays, segmentations) are written. It
reports the upload time, the end-to-end time and studies/minute, and checks that no
request failed and no study was lost.

Usage::

    .venv/bin/python bench/bench_serve_load.py                 # tiny + resnet50
    .venv/bin/python bench/bench_serve_load.py --models tiny --studies 50

Writes ``bench/results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

PASSWORD = "bench-password-123"
#: name -> (preset, cache size H x W): the tiny preset's demo cache and the paper's 1024x832
MODELS = {"tiny": ("tiny", (256, 208)), "resnet50": ("paper", (1024, 832))}


def run_one(name: str, n_studies: int, workdir: Path, *, readers: int = 2, gradcam: bool = False) -> dict:

    from mammolens.data.synthetic import synthesize_cohort
    from mammolens.serve.app import ServeSettings, create_app
    from mammolens.serve.auth import create_user
    from mammolens.serve.scoring import write_untrained_run
    from mammolens.serve.threaded import running_server

    preset, size = MODELS[name]
    run = write_untrained_run(workdir / f"run-{name}", preset=preset, image_size=size)
    cohort = workdir / "cohort"
    if not (cohort / "dicom").exists():
        synthesize_cohort(cohort, n_patients=n_studies, seed=7, size="small")
    exams: dict[Path, list[Path]] = {}
    for p in sorted((cohort / "dicom").rglob("*.dcm")):
        exams.setdefault(p.parent, []).append(p)
    payloads = [[("files", (p.name, p.read_bytes(), "application/dicom")) for p in files] for files in exams.values()][:n_studies]

    app = create_app(ServeSettings(model=run, data_dir=workdir / f"data-{name}", secret_key="bench-secret-key-0123456789",
                                   gradcam=gradcam))
    with app.state.svc.db.session() as s:
        create_user(s, "admin", PASSWORD, role="admin")
        create_user(s, "reader", PASSWORD, role="reader")
    stack = contextlib.ExitStack()
    base = stack.enter_context(running_server(app))

    def token(user: str) -> dict:
        r = httpx.post(f"{base}/api/auth/login", json={"username": user, "password": PASSWORD, "bearer": True})
        return {"Authorization": f"Bearer {r.json()['token']}"}

    admin, reader = token("admin"), token("reader")
    stop = threading.Event()
    read_codes: list[int] = []
    read_ms: list[float] = []

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while not stop.is_set():
                t = time.perf_counter()
                read_codes.append(c.get("/api/studies?limit=100", headers=reader).status_code)
                read_ms.append((time.perf_counter() - t) * 1000)
                time.sleep(0.2)

    def up(files) -> int:
        with httpx.Client(base_url=base, timeout=300) as c:
            return c.post("/api/studies", files=files, headers=admin).status_code

    pollers = [threading.Thread(target=poll) for _ in range(readers)]
    for t in pollers:
        t.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        codes = list(pool.map(up, payloads))
    upload_s = time.monotonic() - t0
    with httpx.Client(base_url=base, timeout=60) as c:
        while True:
            wl = c.get("/api/studies?limit=1000", headers=admin).json()
            done = [it for it in wl["items"] if it["status"] in ("scored", "failed") and (it["pacs_status"] or it["status"] == "failed")]
            if len(done) >= len(payloads):
                break
            time.sleep(0.5)
    total_s = time.monotonic() - t0
    stop.set()
    for t in pollers:
        t.join(30)
    stack.close()
    statuses = [it["status"] for it in wl["items"]]
    read_ms.sort()
    return {
        "model": name,
        "preset": preset,
        "input_size": list(size),
        "gradcam": gradcam,
        "studies": len(payloads),
        "images": sum(len(p) for p in payloads),
        "upload_errors": sum(1 for c in codes if c != 202),
        "studies_in_db": wl["total"],
        "scored": statuses.count("scored"),
        "failed": statuses.count("failed"),
        "upload_s": round(upload_s, 2),
        "end_to_end_s": round(total_s, 2),
        "studies_per_minute": round(60.0 * len(payloads) / total_s, 2),
        "worklist_reads": len(read_codes),
        "worklist_read_errors": sum(1 for c in read_codes if c != 200),
        "worklist_read_ms_p50": round(read_ms[len(read_ms) // 2], 1) if read_ms else None,
        "worklist_read_ms_p95": round(read_ms[int(len(read_ms) * 0.95)], 1) if read_ms else None,
        "dicom_outputs": "SR + SC overlay + SEG per study (written to the store, no PACS)",
        "load_average_at_end": round(os.getloadavg()[0], 2),  # other jobs on the machine slow every figure
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "resnet50"], choices=sorted(MODELS))
    ap.add_argument("--studies", type=int, default=20, help="studies per tiny run")
    ap.add_argument("--studies-resnet50", type=int, default=6, help="studies for the ResNet-50 run (CPU: slow)")
    ap.add_argument("--gradcam", action="store_true", help="also compute Grad-CAM maps (the service's --gradcam)")
    ap.add_argument("--append", action="store_true", help="add to the results already in --out")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve_load.json")
    args = ap.parse_args()
    import torch

    results = []
    with tempfile.TemporaryDirectory(prefix="mammolens-bench-serve-") as tmp:
        for name in args.models:
            n = args.studies_resnet50 if name == "resnet50" else args.studies
            r = run_one(name, n, Path(tmp) / name, gradcam=args.gradcam)
            print(json.dumps(r, indent=1), flush=True)
            results.append(r)
    if args.append and args.out.exists():
        results = json.loads(args.out.read_text(encoding="utf-8"))["results"] + results
    out = {
        "benchmark": "serve load: concurrent uploads + worklist reads on loopback; time until every study is scored and its DICOM outputs written",
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "shared 2-core CPU, no GPU; untrained weights (throughput does not depend on them)",
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
