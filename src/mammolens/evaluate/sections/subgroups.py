"""Report section: subgroups (manufacturer, density, age band) with a heterogeneity test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mammolens.evaluate._common import SUBGROUP_VARIABLES, _f, _subgroups


def subgroup_section(tab: pd.DataFrame, *, variables: Sequence[str] = SUBGROUP_VARIABLES) -> tuple[dict[str, Any], pd.DataFrame]:
    """AUC with CI per subgroup and the heterogeneity test, per variable."""
    out: dict[str, Any] = {}
    rows = []
    t = tab.copy()
    for var in variables:
        if var not in t.columns:
            continue
        t[var] = t[var].astype(str).replace({"": "unknown", "nan": "unknown", "None": "unknown"})
        if t[var].nunique() < 2:  # one value: nothing to compare
            out[var] = {"skipped": f"only one {var} value ({t[var].iloc[0]!r})"}
            continue
        res = _subgroups(t, var)
        out[var] = res
        for g in res.get("groups", []):
            grp = str(g.get("group", g.get("value")))
            note = g.get("note", "")
            corrected = {str(c["group"]) for c in (res.get("heterogeneity") or {}).get("corrected", [])}
            if grp in corrected:
                note = "zero SE: continuity-corrected in Cochran's Q"
            rows.append({"variable": var, "subgroup": grp, "n": g.get("n"),
                         "n_pos": g.get("n_pos"), "auc": _f(g.get("auc")), "ci_low": _f(g.get("ci_low")),
                         "ci_high": _f(g.get("ci_high")), "in_heterogeneity_test": bool(g.get("in_q", False)), "note": note})
    return out, pd.DataFrame(rows, columns=["variable", "subgroup", "n", "n_pos", "auc", "ci_low", "ci_high",
                                            "in_heterogeneity_test", "note"])
