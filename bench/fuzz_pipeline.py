"""Fuzzing the pixel pipeline at scale: 10,000+ seeded mutations of MG DICOMs of every
supported transfer syntax through header ingest, ``read_dicom`` and preprocessing, each
in a sandbox worker (:mod:`mammolens.testing.fuzz`).

Seeds: JPEG 2000 (Hologic), JPEG-LS with a SIGMOID window (GE), RLE with two windows
(Siemens), uncompressed with a VOI LUT, implicit VR with a rescale, JPEG Lossless
MONOCHROME1 (Fujifilm), 8-bit JPEG baseline. Mutations: byte flips, bit flips in the
pixel data, truncation, hostile header values (Rows, Columns, Bits, windows, rescale,
photometric, ...), codestream marker patches, splices, transfer syntax swaps.

Every case must end as a clean ``InputError`` or a valid finite image; the figures
(cases, outcome counts, time, machine) go to ``bench/results/fuzz_pipeline.{json,md}``
and the exit status is 1 when any case crashed, hung, raised another exception or gave
an invalid image (those files are kept in ``--keep-failures``).

Run::

    .venv/bin/python bench/fuzz_pipeline.py                    # 10,000 cases, 2 workers
    .venv/bin/python bench/fuzz_pipeline.py --cases 300 --out /tmp/fz   # quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _merge(a: dict, b: dict) -> dict:
    """Counts of two blocks added; the machine of the last."""
    from collections import Counter

    out = dict(b)
    out["cases"] = a["cases"] + b["cases"]
    out["first_case"] = a["first_case"]
    out["pool_restarts"] = a["pool_restarts"] + b["pool_restarts"]
    out["outcomes"] = dict(Counter(a["outcomes"]) + Counter(b["outcomes"]))
    for k in ("ok", "rejected", "stray_exception", "invalid_image", "crash", "hang"):
        out["outcomes"].setdefault(k, 0)
    out["rejected_by_stage"] = dict(Counter(a["rejected_by_stage"]) + Counter(b["rejected_by_stage"]))
    out["by_seed"] = {s: dict(Counter(a["by_seed"].get(s, {})) + Counter(b["by_seed"].get(s, {})))
                      for s in sorted(set(a["by_seed"]) | set(b["by_seed"]))}
    out["reasons"] = dict(Counter(a["reasons"]) + Counter(b["reasons"]))
    out["top_reasons"] = dict(Counter(out["reasons"]).most_common(25))
    out["failures"] = a["failures"] + b["failures"]
    return out


def _markdown(r: dict) -> str:
    m = r["machine"]
    o = r["outcomes"]
    bad = o["stray_exception"] + o["invalid_image"] + o["crash"] + o["hang"]
    lines = [
        "# Fuzzing the pixel pipeline (`bench/fuzz_pipeline.py`)",
        "",
        ("" if r.get("complete", True) else "**Interrupted run: the figures cover the cases done so far.** ") +
        f"{r['cases']:,} mutated MG DICOMs (master seed {r['master_seed']}) from {len(r['seeds'])} seed files "
        f"({', '.join(r['seeds'])}), each through header ingest (`read_dicom_metadata` + `validate_mammogram`), "
        "`read_dicom` and `preprocess_image` in a sandbox worker that acts as an ordinary process.",
        "",
        f"Machine: {m['cpu_count']} CPU cores ({m['processor']}, {m['platform']}, Python {m['python']}), "
        f"shared with other jobs (load average at the end {', '.join(map(str, m['load_average_at_end']))}); "
        f"{r['workers']} worker processes.",
        "",
        f"Time: {r['seconds']:,.0f} s ({r['cases_per_second']:.1f} cases/s); pool replacements: {r['pool_restarts']}.",
        "",
        "| outcome | cases |",
        "|---|---:|",
    ]
    for k in ("ok", "rejected", "stray_exception", "invalid_image", "crash", "hang"):
        lines.append(f"| {k} | {o[k]:,} |")
    lines += ["", f"**Failures (not a clean InputError nor a valid image): {bad}.**", "",
              "Rejections by stage: " + ", ".join(f"{k or '?'} {v:,}" for k, v in sorted(r["rejected_by_stage"].items())) + ".",
              "", "| seed file | ok | rejected | failures |", "|---|---:|---:|---:|"]
    for seed, c in r["by_seed"].items():
        fails = sum(v for k, v in c.items() if k not in ("ok", "rejected"))
        lines.append(f"| {seed} | {c.get('ok', 0):,} | {c.get('rejected', 0):,} | {fails} |")
    lines += ["", "Most frequent rejection reasons (numbers replaced by #):", "", "| reason | cases |", "|---|---:|"]
    for reason, n in r["top_reasons"].items():
        lines.append(f"| {reason.replace('|', '/')} | {n:,} |")
    if r["failures"]:
        lines += ["", "Failures:", ""]
        for f in r["failures"][:50]:
            lines.append(f"- {f['seed']} case {f['case']} ({f['mutation']}): {f['outcome']} at {f['stage'] or '?'}: {f['detail']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from mammolens.testing.fuzz import run_fuzz, write_seeds

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0, help="master seed of the mutations")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a case counts as a hang")
    ap.add_argument("--out", type=Path, default=RESULTS / "fuzz_pipeline", help="writes OUT.json and OUT.md")
    ap.add_argument("--keep-failures", type=Path, default=None, help="folder for the files of failing cases")
    ap.add_argument("--block", type=int, default=500, help="cases between two writes of the figures")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            print(f"{done:,}/{total:,} cases, {time.perf_counter() - t0:,.0f} s", flush=True)

    # in blocks, the figures rewritten after each: an interrupted run still reports what it did
    total: dict | None = None
    with tempfile.TemporaryDirectory(prefix="mammolens-fuzz-seeds-") as tmp:
        seeds = write_seeds(tmp)
        for start in range(0, args.cases, args.block):
            n = min(args.block, args.cases - start)
            block = run_fuzz(seeds, n_cases=n, seed=args.seed, start=start, workers=args.workers,
                             timeout=args.timeout, keep_failures=args.keep_failures)
            total = block if total is None else _merge(total, block)
            total["seconds"] = round(time.perf_counter() - t0, 1)
            total["cases_per_second"] = round(total["cases"] / max(total["seconds"], 1e-9), 2)
            total["complete"] = total["cases"] >= args.cases
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps(total, indent=2) + "\n", encoding="utf-8")
            args.out.with_suffix(".md").write_text(_markdown(total), encoding="utf-8")
            progress(total["cases"], args.cases)
    report = total
    o = report["outcomes"]
    print(json.dumps({k: report[k] for k in ("cases", "seconds", "outcomes")}))
    return 1 if o["stray_exception"] + o["invalid_image"] + o["crash"] + o["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
