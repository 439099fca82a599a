"""Input validation shared by every :mod:`mammolens.stats` function.

Every problem with the data raises :class:`StatsInputError`, which is both a
:class:`ValueError` (so scikit-learn-style callers can catch it as such) and a
:class:`~mammolens.errors.MammolensError` (so the CLI prints one line and exits 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mammolens.errors import MammolensError


class StatsInputError(MammolensError, ValueError):
    """Invalid input to a statistics function (the message names the column/problem)."""


def as_1d(x: Any, *, name: str) -> np.ndarray:
    """Convert to a 1-D numpy array (pandas Series/lists accepted)."""
    arr = np.asarray(getattr(x, "to_numpy", lambda: x)())
    if arr.ndim == 0:
        raise StatsInputError(f"{name}: expected a 1-D array, got a scalar")
    if arr.ndim != 1:
        raise StatsInputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def check_truth(y_true: Any, *, name: str = "y_true", positive: Any = None) -> np.ndarray:
    """Validate a binary truth vector and return it as ``int8`` 0/1.

    Accepted: booleans, the numbers 0 and 1 (any numeric dtype), or any two-valued vector
    when ``positive`` names the positive value. Missing values and any third value are
    errors (the message lists the offending values).
    """
    arr = as_1d(y_true, name=name)
    if arr.size == 0:
        raise StatsInputError(f"{name}: empty")
    if positive is not None:
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise StatsInputError(f"{name}: {int(np.isnan(arr).sum())} missing value(s)")
        values = _unique_values(arr)
        pos = _coerce_like(positive, arr)
        if not any(_eq(v, pos) for v in values):
            raise StatsInputError(f"{name}: positive value {positive!r} not found (values: {_show(values)})")
        if len(values) > 2:
            raise StatsInputError(f"{name}: expected two classes, found {len(values)} values: {_show(values)}")
        return np.array([_eq(v, pos) for v in arr], dtype=np.int8) if arr.dtype == object else (arr == pos).astype(np.int8)
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind in "iuf":
        if arr.dtype.kind == "f":
            nan = np.isnan(arr)
            if nan.any():
                raise StatsInputError(f"{name}: {int(nan.sum())} missing value(s) (NaN)")
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            raise StatsInputError(
                f"{name}: expected 0/1 (or booleans), found {_show(_unique_values(arr[bad]))}; "
                "give the positive value explicitly (positive=...)"
            )
        return arr.astype(np.int8)
    if arr.dtype == object:
        # pandas nullable / mixed: try numbers
        try:
            num = np.array([float(v) for v in arr])
        except (TypeError, ValueError):
            raise StatsInputError(
                f"{name}: non-numeric values {_show(_unique_values(arr))}; give the positive value (--positive / positive=...)"
            ) from None
        return check_truth(num, name=name)
    raise StatsInputError(
        f"{name}: values {_show(_unique_values(arr))} are not 0/1; give the positive value (--positive / positive=...)"
    )


def check_both_classes(y: np.ndarray, *, name: str = "y_true") -> tuple[int, int]:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        which = "positive" if n_pos == 0 else "negative"
        raise StatsInputError(f"{name}: only one class present (no {which} cases); AUC is undefined")
    return n_pos, n_neg


def check_scores(x: Any, *, name: str = "y_score", n: int | None = None) -> np.ndarray:
    """Validate finite numeric scores (NaN and +-inf are errors)."""
    arr = as_1d(x, name=name)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise StatsInputError(f"{name}: scores must be numeric") from None
    arr = arr.astype(np.float64, copy=False)
    if n is not None and arr.size != n:
        raise StatsInputError(f"{name}: length {arr.size} does not match y_true ({n})")
    bad = ~np.isfinite(arr)
    if bad.any():
        kind = "NaN" if np.isnan(arr[bad]).any() else "infinite"
        raise StatsInputError(f"{name}: {int(bad.sum())} {kind} (non-finite) score(s); drop or impute them first")
    return arr


def check_alpha(alpha: float) -> float:
    if not (0.0 < float(alpha) < 1.0):
        raise StatsInputError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def check_choice(value: Any, choices: Sequence[str], *, name: str) -> str:
    if value not in choices:
        raise StatsInputError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)


def check_columns(df: Any, columns: Sequence[str], *, what: str = "table") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StatsInputError(f"{what}: missing column(s) {missing} (has {list(df.columns)})")


def _unique_values(arr: np.ndarray) -> list[Any]:
    try:
        return list(np.unique(arr))
    except TypeError:
        seen: list[Any] = []
        for v in arr:
            if not any(_eq(v, s) for s in seen):
                seen.append(v)
        return seen


def _eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _coerce_like(value: Any, arr: np.ndarray) -> Any:
    """Make a CLI string such as ``"1"`` comparable with a numeric column."""
    if isinstance(value, str) and arr.dtype.kind in "iuf":
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, str) and arr.dtype == bool:
        return value.strip().lower() in ("1", "true", "yes")
    return value


def _show(values: list[Any], k: int = 6) -> str:
    shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in values[:k])
    return f"[{shown}{', ...' if len(values) > k else ''}]"
