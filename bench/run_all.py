"""Run the benchmarks one after the other (``make bench``); each writes bench/results/.

Usage::

    .venv/bin/python bench/run_all.py                  # every bench, full size
    .venv/bin/python bench/run_all.py --quick          # the quick variants (minutes)
    .venv/bin/python bench/run_all.py --only stats preprocess
    .venv/bin/python bench/run_all.py --list

The benches are separate processes (a crash or an out-of-memory kill in one leaves the
others running); the script exits 1 when any failed, and prints a table of what ran,
its exit status and its time. The real-data runs (``bash bench/mias_cv.sh``) need the mini-MIAS files
and are not part of this list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (script, arguments of the full run, arguments of the quick run)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "stats": ("bench_stats.py", [], []),
    "preprocess": ("bench_preprocess.py", [], ["--quick"]),
    "model_speed": ("bench_model_speed.py", [], ["--quick"]),
    "serve_load": ("bench_serve_load.py", [], ["--models", "tiny", "--studies", "10"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick variant of each bench")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    ap.add_argument("--list", action="store_true", help="list the benches and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (script, full, quick) in BENCHES.items():
            print(f"{name:12s} bench/{script} {' '.join(full)}  (quick: {' '.join(quick) or 'same'})")
        return 0
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done: list[tuple[str, int, float]] = []
    for name in args.only or list(BENCHES):
        script, full, quick = BENCHES[name]
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, env=env, cwd=HERE.parent)
        done.append((name, rc, time.perf_counter() - t0))
    print("\nbench          status  seconds")
    for name, rc, dt in done:
        print(f"{name:14s} {'ok' if rc == 0 else f'rc={rc}':7s} {dt:7.1f}")
    return 1 if any(rc for _, rc, _ in done) else 0


if __name__ == "__main__":
    sys.exit(main())
