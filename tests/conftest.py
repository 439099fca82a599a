"""Shared fixtures: paths to the repository and the real mini-MIAS data, service policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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
