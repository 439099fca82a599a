"""A generic table: one row per image, columns mapped onto the manifest by the user.

Expected layout: ``SOURCE`` is a CSV file (``,``, ``;`` or tab separated, detected
from the header) with one row per image. Image paths are relative to the CSV's folder
(or absolute). Example::

    File,Patient,Side,View,Malignant,Density
    images/a.png,p1,LEFT,CC,1,3

    mammolens ingest csv table.csv -o manifest.csv \\
        --map path=File --map patient_id=Patient --map laterality=Side \\
        --map view=View --map label=Malignant --map density=Density

``mapping`` (CLI ``--map MANIFEST_COLUMN=CSV_COLUMN``, repeatable): any manifest
column (required or optional, see :mod:`mammolens.data.manifest`) or a new column name.
A manifest column that is not mapped is taken from a CSV column of the same name when
there is one. ``path`` and ``patient_id`` are required; ``image_id`` defaults to the
path without its suffix (relative to the CSV's folder); ``study_id`` defaults to
``patient_id``. Unmapped CSV columns are kept as extra columns.

Values: ``laterality`` L/R/LEFT/RIGHT; ``label`` 0/1/true/false/malignant/benign/normal
or empty; ``density`` A-D, ``DENSITY B`` or 1-4 (anything else goes to
``density_original`` and is flagged); ``age`` a number or ``053Y``; ``lesions`` a JSON
list (see :mod:`mammolens.data.lesions`; relative mask paths resolved against the CSV's
folder).

QC: malformed lines, rows without a path or patient, invalid labels and missing image
files (``check_files``, default on) are rejected with the line number; invalid lesions
JSON is flagged and dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    add_flag,
    density_from_letter,
    density_from_number,
    flag_rows,
    laterality_code,
    new_row,
    no_progress,
    parse_age,
    read_csv_rows,
)
from mammolens.data.lesions import parse_lesions, rebase_mask_paths
from mammolens.data.manifest import OPTIONAL_COLUMNS, OUTCOMES, REQUIRED_COLUMNS
from mammolens.errors import ConfigError, InputError
from mammolens.qc import QCTable

NAME = "csv"
SUMMARY = "a generic CSV table with a column mapping (--map image_id=Col --map path=File ...)"

_LABELS = {"1": 1, "1.0": 1, "true": 1, "yes": 1, "malignant": 1, "m": 1,
           "0": 0, "0.0": 0, "false": 0, "no": 0, "benign": 0, "normal": 0, "b": 0, "n": 0}


def parse_mapping(items: dict[str, str] | list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``["image_id=Img", ...]`` or a dict -> ``{manifest column: csv column}``."""
    if not items:
        return {}
    if isinstance(items, dict):
        return {str(k).strip(): str(v).strip() for k, v in items.items()}
    out: dict[str, str] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--map {it!r}: expected MANIFEST_COLUMN=CSV_COLUMN")
        k, v = it.split("=", 1)
        if not k.strip() or not v.strip():
            raise ConfigError(f"--map {it!r}: expected MANIFEST_COLUMN=CSV_COLUMN")
        out[k.strip()] = v.strip()
    return out


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    mapping: dict[str, str] | list[str] | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """Read a generic table (see the module docstring)."""
    source = Path(source)
    if not source.is_file():
        raise InputError(source, "the csv format takes a table file, not a folder")
    cmap = parse_mapping(mapping)
    header, records = read_csv_rows(source, qc)
    bad = sorted(v for v in cmap.values() if v not in header)
    if bad:
        raise ConfigError(f"{source}: --map names column(s) not in the table: {', '.join(bad)} (has: {', '.join(header)})")
    for col in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        if col not in cmap and col in header:
            cmap[col] = col
    for need in ("path", "patient_id"):
        if need not in cmap:
            raise ConfigError(f"{source}: no column for {need!r}; pass --map {need}=COLUMN")
    used = set(cmap.values())
    base = source.resolve().parent
    rows: list[dict[str, Any]] = []
    for line_no, rec in track(records, len(records), "table rows"):
        where = f"line {line_no}"
        vals = {k: rec[v] for k, v in cmap.items()}
        raw_path = vals.get("path", "")
        if not raw_path or not vals.get("patient_id"):
            qc.add(STAGE, source, f"invalid row: {where}: empty path or patient_id")
            continue
        p = Path(raw_path)
        path = p if p.is_absolute() else base / p
        image_id = vals.get("image_id") or (Path(raw_path).with_suffix("").as_posix() if not p.is_absolute() else p.stem)
        if check_files and not path.is_file():
            qc.add(STAGE, path, f"file missing: {raw_path}: {source.name} {where}", image_id=image_id)
            continue
        row = new_row(image_id=image_id, path=str(path.resolve()), dataset="csv")
        for k, v in rec.items():
            if k not in used:
                row[k] = v
        for k, v in vals.items():
            if k not in ("path", "image_id"):
                row[k] = v
        row["study_id"] = vals.get("study_id") or vals["patient_id"]
        try:
            _convert(row, vals, base)
        except ValueError as e:
            qc.add(STAGE, source, f"invalid row: {where}: {e}", image_id=image_id)
            continue
        if row.pop("_lesions_error", None):
            qc.add(STAGE, source, f"invalid lesions: {where}: not a valid lesion JSON list; dropped", severity="flag", image_id=image_id)
            add_flag(row, "lesions_invalid")
        rows.append(row)
    flag_rows([r for r in rows if r.get("flags") and r["flags"] != "lesions_invalid"], qc)
    return pd.DataFrame(rows)


def _convert(row: dict[str, Any], vals: dict[str, str], base: Path) -> None:
    if "laterality" in vals:
        lat = vals["laterality"].strip()
        row["laterality"] = laterality_code(lat)
        if lat and not row["laterality"]:
            raise ValueError(f"laterality {lat!r} is not L, R, LEFT or RIGHT")
    if "view" in vals:
        row["view"] = vals["view"].strip().upper()
    if "label" in vals:
        t = vals["label"].strip().lower()
        if t in ("", "nan", "na", "none"):
            row["label"] = None
        elif t in _LABELS:
            row["label"] = _LABELS[t]
        else:
            raise ValueError(f"label {vals['label']!r} is not 0, 1 or empty")
    if "outcome" in vals:
        o = vals["outcome"].strip().lower()
        if o not in OUTCOMES:
            raise ValueError(f"outcome {vals['outcome']!r} is not malignant, benign or normal")
        row["outcome"] = o
    if "age" in vals:
        row["age"] = parse_age(vals["age"])
    if "density" in vals:
        d = vals["density"].strip()
        row["density"] = density_from_letter(d) or density_from_number(d)
        if d and not row["density"]:
            row.setdefault("density_original", d)
            add_flag(row, "density_unmapped")
        elif d and "density_original" not in vals:
            row["density_original"] = d
    if vals.get("lesions"):
        try:
            items = json.loads(vals["lesions"])
            parse_lesions(items)
            rebase_mask_paths(items, folders=[base])
            row["lesions"] = json.dumps(items, separators=(",", ":"))
        except (json.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError):
            row["lesions"] = ""
            row["_lesions_error"] = True
