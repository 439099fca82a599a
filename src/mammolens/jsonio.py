"""JSON for files a person opens and for ``--json``: NumPy types converted, NaN/inf as null.

Light on purpose (NumPy imported only when met): the CLI helpers and library stages that
write reports share it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return _finite(float(o))
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(x: float) -> float | None:
    return None if (math.isnan(x) or math.isinf(x)) else x


def _clean(o: Any) -> Any:
    if isinstance(o, float):
        return _finite(o)
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON (``allow_nan=False``) with NumPy types converted and NaN/inf written as null."""
    return json.dumps(_clean(json.loads(json.dumps(obj, default=_default))), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as :func:`to_json` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_json(obj) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
