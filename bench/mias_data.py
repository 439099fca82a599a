"""Minimal mini-MIAS loading for the real-data bench (bench/mias_cv.py).

Parses ``Info.txt`` (``REFNUM BG CLASS [SEVERITY X Y RADIUS]``, origin bottom-left),
builds one record per image (patient = film pair, odd = right, even = left), and
preprocesses every image in memory with :func:`mammolens.data.preprocess.preprocess_image`
(breast crop, chest wall to the left, resize, lesion mask). This duplicates a little of
the mias ingest adapter on purpose: the bench must run even where the adapter is absent,
and it keeps the bench independent of a manifest file on disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LINE = re.compile(r"^(mdb\d{3})\s+([FGD])\s+(CALC|CIRC|SPIC|MISC|ARCH|ASYM|NORM)\s*(.*)$")
KIND = {
    "CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass",
    "ARCH": "architectural_distortion", "ASYM": "asymmetry", "NORM": "",
}


@dataclass
class MiasCase:
    image_id: str
    patient_id: str
    laterality: str
    path: Path
    background: str
    label: int
    lesions: list[dict[str, Any]] = field(default_factory=list)
    n_unlocated: int = 0
    # filled by preprocess
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    transform: Any = None


def parse_info(data_dir: str | Path) -> list[MiasCase]:
    """Read ``Info.txt`` of a mini-MIAS folder; one :class:`MiasCase` per image present."""
    data_dir = Path(data_dir)
    info = data_dir / "Info.txt"
    if not info.is_file():
        raise FileNotFoundError(f"{info}: Info.txt not found (is {data_dir} a mini-MIAS folder?)")
    cases: dict[str, MiasCase] = {}
    for raw in info.read_text(errors="replace").splitlines():
        m = LINE.match(raw.strip())
        if not m:
            continue
        ref, bg, cls, rest = m.groups()
        path = data_dir / f"{ref}.pgm"
        if not path.is_file():
            continue
        num = int(ref[3:])
        c = cases.get(ref)
        if c is None:
            c = MiasCase(ref, f"mias_p{(num + 1) // 2:03d}", "R" if num % 2 else "L", path, bg, 0)
            cases[ref] = c
        if cls == "NORM":
            continue
        toks = rest.split()
        sev = toks[0] if toks else ""
        if sev == "M":
            c.label = 1
        nums = [t for t in toks[1:4] if re.fullmatch(r"-?\d+(\.\d+)?", t)]
        if len(nums) == 3:
            x, y, r = (float(t) for t in nums)
            c.lesions.append({
                "shape": "circle", "cx": x, "cy": 1024.0 - y, "r": r,
                "pathology": "malignant" if sev == "M" else "benign", "kind": KIND[cls], "source": cls,
            })
        else:
            c.n_unlocated += 1
    return [cases[k] for k in sorted(cases)]


def load_cases(data_dir: str | Path, *, size: tuple[int, int] = (256, 208)) -> list[MiasCase]:
    """Parse and preprocess every image (cached as ``.npz`` next to nothing: in memory only)."""
    import cv2

    from mammolens.data.preprocess import PreprocessSettings, preprocess_image

    settings = PreprocessSettings(size=size)
    cases = parse_info(data_dir)
    for c in cases:
        px = cv2.imread(str(c.path), cv2.IMREAD_UNCHANGED)
        if px is None:
            raise FileNotFoundError(f"{c.path}: cannot decode image")
        pre = preprocess_image(px, settings, lesions=c.lesions or [], laterality=c.laterality)
        c.image = pre.image.astype(np.float32)
        c.mask = pre.mask if pre.mask is not None else np.zeros(size, np.uint8)
        c.transform = pre.transform
    return cases
