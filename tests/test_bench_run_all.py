"""`make bench` runs bench/run_all.py: every bench it names exists and takes its arguments."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_listed_bench_exists_and_parses_its_arguments():
    mod = _run_all()
    for name, (script, full, quick) in mod.BENCHES.items():
        path = BENCH / script
        assert path.is_file(), name
        text = path.read_text(encoding="utf-8")
        for arg in [a for a in full + quick if a.startswith("--")]:
            assert arg in text, f"{script} has no {arg} option"


def test_list_and_a_failing_bench_sets_the_exit_status(tmp_path, monkeypatch):
    r = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "stats" in r.stdout
    mod = _run_all()
    bad = tmp_path / "bad.py"
    bad.write_text("import sys; sys.exit(3)\n")
    monkeypatch.setattr(mod, "HERE", tmp_path)
    monkeypatch.setattr(mod, "BENCHES", {"bad": ("bad.py", [], [])})
    assert mod.main(["--only", "bad"]) == 1
