"""Shared fixtures: paths to the repository and the real mini-MIAS data, service policy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests read CLI output, and rich wraps it at the terminal's width: under `make test` in a
# narrow terminal a message split over two lines no longer matched. One wide, fixed width
# for every console the CLI creates (module-level consoles read it when they are built,
# i.e. after this file is loaded) makes that output independent of the terminal; the
# suite's subprocesses inherit it.
_TERMINAL_COLUMNS = shutil.get_terminal_size().columns
os.environ["COLUMNS"] = "400"
os.environ.pop("LINES", None)


@pytest.hookimpl(trylast=True)
def pytest_configure(config) -> None:
    """pytest's own report keeps the real terminal's width."""
    if config.pluginmanager.get_plugin("terminalreporter") is not None:
        config.get_terminal_writer().fullwidth = _TERMINAL_COLUMNS


def require_services() -> bool:
    """True in CI: tests that need a server/browser must fail instead of skipping."""
    return os.environ.get("MAMMOLENS_REQUIRE_SERVICES", "") not in ("", "0", "false")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose external tool is missing, or fail when CI requires it."""
    if require_services():
        pytest.fail(f"required for this run (MAMMOLENS_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def mias_dir() -> Path:
    """The development portion of mini-MIAS beside the checkout (../shared/datasets/mini-mias)."""
    for cand in (REPO_ROOT.parent / "shared" / "datasets" / "mini-mias", REPO_ROOT / "shared" / "datasets" / "mini-mias"):
        if (cand / "Info.txt").exists():
            return cand
    pytest.skip("mini-MIAS development data not found beside the checkout")


@pytest.fixture(scope="session")
def crash_corpus(tmp_path_factory) -> Path:
    """The DICOM crash corpus (../shared/dicom-crash-corpus/build_all.py), built once per session:
    one file per decoder crash / panic / stray exception / NaN signature, plus controls."""
    import subprocess
    import sys

    for cand in (REPO_ROOT.parent / "shared" / "dicom-crash-corpus", REPO_ROOT / "shared" / "dicom-crash-corpus"):
        if (cand / "build_all.py").exists():
            break
    else:
        pytest.skip("dicom-crash-corpus not found beside the checkout (../shared/dicom-crash-corpus)")
    out = tmp_path_factory.mktemp("crash-corpus")
    proc = subprocess.run([sys.executable, str(cand / "build_all.py"), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models: threads only add contention on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
