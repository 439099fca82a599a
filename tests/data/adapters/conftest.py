"""Fixture writers for the adapter tests: tiny images in each dataset's real format."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def _write_dicom(path: Path, *, patient_id: str = "P1", laterality: str = "L", view: str = "CC",
                 study: str = "1.2.3.4", sop: str | None = None, rows: int = 40, cols: int = 32,
                 manufacturer: str = "HOLOGIC, Inc.", **kw) -> Path:
    from mammolens.data.synthetic import write_mammogram_dicom

    rng = np.random.default_rng(zlib.crc32(f"{path}|{sop}".encode()))  # reproducible pixels
    px = rng.integers(0, 4000, size=(rows, cols), dtype=np.uint16)
    return write_mammogram_dicom(
        path, px, manufacturer=manufacturer, laterality=laterality, view=view,
        patient_id=patient_id, study_uid=study, sop_uid=sop, age=kw.pop("age", 55), **kw,
    )


@pytest.fixture
def write_dicom() -> Callable[..., Path]:
    """``write_dicom(path, **fields)`` -> a tiny valid MG DICOM file."""
    return _write_dicom


def write_pgm(path: Path, height: int, width: int, *, value: int = 60) -> Path:
    """A binary 8-bit PGM (P5) like mini-MIAS's, with a comment in the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    px = np.full((height, width), value, dtype=np.uint8)
    path.write_bytes(f"P5\n# mini-MIAS-like\n{width} {height}\n255\n".encode() + px.tobytes())
    return path


@pytest.fixture
def pgm_writer() -> Callable[..., Path]:
    return write_pgm
