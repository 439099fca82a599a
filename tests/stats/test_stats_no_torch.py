"""mammolens.stats must never import torch (it runs on any machine, on anyone's scores)."""

from __future__ import annotations

import subprocess
import sys


def test_stats_does_not_import_torch():
    code = (
        "import sys, mammolens.stats, mammolens.stats.mrmc, mammolens.stats.localization, "
        "mammolens.stats.subgroups, mammolens.commands.stats; "
        "bad = [m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
