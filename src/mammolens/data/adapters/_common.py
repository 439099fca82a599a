"""Helpers shared by the dataset adapters: tolerant CSV reading, rows, value mappings.

Every adapter turns one source layout into manifest rows (dicts) and records every bad
input as a :class:`mammolens.qc.QCTable` row instead of raising. These helpers keep the
conventions identical across adapters:

* CSV lines with the wrong number of fields become QC rows naming the file and the
  physical line number; the good lines continue;
* the QC ``reason`` starts with a short category (``"malformed line"``, ``"file missing"``,
  ...) followed by ``": "`` and the detail, so :meth:`QCTable.reasons` groups them.
"""

from __future__ import annotations

import csv
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from mammolens.errors import InputError
from mammolens.qc import QCTable

T = TypeVar("T")

#: ``track(iterable, total, description)`` -> iterable; used to show progress.
Track = Callable[[Iterable[T], int | None, str], Iterable[T]]

STAGE = "ingest"

#: BI-RADS density given as a number (ACR 1-4, CBIS-DDSM 1-4) -> common A-D scale
DENSITY_FROM_NUMBER = {"1": "A", "2": "B", "3": "C", "4": "D"}


def no_progress(items: Iterable[T], total: int | None = None, description: str = "") -> Iterable[T]:
    """The default ``track``: iterate without showing anything."""
    return items


def new_row(**values: Any) -> dict[str, Any]:
    """A manifest row with every required column present (empty = unknown)."""
    row: dict[str, Any] = {
        "image_id": "",
        "patient_id": "",
        "study_id": "",
        "path": "",
        "laterality": "",
        "view": "",
        "manufacturer": "",
        "age": float("nan"),
        "density": "",
        "label": None,
        "lesions": "",
        "split": "",
        "flags": "",
    }
    row.update(values)
    return row


def add_flag(row: dict[str, Any], flag: str) -> None:
    """Append ``flag`` to the row's ``;``-separated ``flags`` (no duplicates)."""
    have = [f for f in str(row.get("flags", "") or "").split(";") if f]
    if flag not in have:
        have.append(flag)
    row["flags"] = ";".join(have)


def density_from_number(value: str) -> str:
    """``"1"``-``"4"`` (also ``"3.0"``) -> ``"A"``-``"D"``; anything else -> ``""``."""
    v = str(value).strip()
    if v.endswith(".0"):
        v = v[:-2]
    return DENSITY_FROM_NUMBER.get(v, "")


def density_from_letter(value: str) -> str:
    """``"A"``, ``"density b"``, ``"DENSITY C"`` -> ``"A"``-``"D"``; else ``""``."""
    m = re.fullmatch(r"(?:density\s*)?([abcd])", str(value).strip(), flags=re.IGNORECASE)
    return m.group(1).upper() if m else ""


def laterality_code(value: str) -> str:
    """``L``/``LEFT``/``R``/``RIGHT`` (any case) -> ``L``/``R``; else ``""``."""
    v = str(value).strip().upper()
    return {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get(v, "")


def parse_age(value: str) -> float:
    """Ages as ``"53"``, ``"53.0"`` or the DICOM form ``"053Y"`` -> float (NaN if unknown)."""
    v = str(value).strip().upper()
    m = re.fullmatch(r"0*(\d+(?:\.\d+)?)\s*Y?", v)
    if not m:
        return float("nan")
    age = float(m.group(1))
    return age if 0 <= age <= 130 else float("nan")


def birads_value(value: str) -> str:
    """Normalise a BI-RADS category: ``"BI-RADS 4"``, ``"4.0"``, ``"4C"`` -> ``"4"``, ``"4c"``."""
    v = str(value).strip().lower().replace("bi-rads", "").replace("birads", "").strip()
    if v.endswith(".0"):
        v = v[:-2]
    return v


def parse_birads_set(value: str | Iterable[str]) -> frozenset[str]:
    """``"4,5"`` or ``["4c", "5"]`` -> normalised set of BI-RADS categories."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = frozenset(birads_value(v) for v in items if str(v).strip())
    if not out:
        raise ValueError("the set of malignant BI-RADS categories is empty")
    return out


def read_csv_rows(
    path: Path,
    qc: QCTable,
    *,
    required: Iterable[str] = (),
    delimiter: str | None = None,
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV file tolerantly: ``(header, [(line_number, row_dict), ...])``.

    Header names and values are stripped of whitespace (and a UTF-8 BOM). Lines whose
    field count differs from the header's become QC rejections naming ``path`` and the
    line number; blank lines are skipped. ``delimiter=None`` picks ``,``, ``;`` or tab
    from the header line.

    Raises
    ------
    InputError
        When the file cannot be read or lacks a ``required`` column.
    """
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError(path, "empty file (no header line)")
    if delimiter is None:
        head = lines[0]
        delimiter = max((",", ";", "\t"), key=head.count)
    reader = csv.reader(_numbered(lines), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise InputError(path, f"unreadable header ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(repr(c) for c in missing)} (has: {', '.join(header)})")
    rows: list[tuple[int, dict[str, str]]] = []
    start = 2
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            qc.add(STAGE, path, f"malformed line: line {reader.line_num}: {e}")
            start = reader.line_num + 1
            continue
        line_no, start = start, reader.line_num + 1
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            qc.add(STAGE, path, f"malformed line: line {line_no}: expected {len(header)} fields, got {len(fields)}")
            continue
        rows.append((line_no, {h: f.strip() for h, f in zip(header, fields, strict=True)}))
    return header, rows


def read_table_rows(
    path: Path,
    qc: QCTable,
    *,
    required: Iterable[str] = (),
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """:func:`read_csv_rows` for a CSV, or the first sheet of an ``.xlsx`` / ``.xls`` file.

    Spreadsheet rows are numbered as the spreadsheet shows them (header = row 1), every
    value is text (stripped; empty cells ``""``) and blank rows are skipped, so adapters
    treat both kinds of file alike (CMMD and INbreast ship their sheets as Excel files).

    Raises
    ------
    InputError
        When the file cannot be read or lacks a ``required`` column.
    """
    if path.suffix.lower() not in (".xlsx", ".xlsm", ".xls"):
        return read_csv_rows(path, qc, required=required)
    import pandas as pd

    try:
        df = pd.read_excel(path, dtype=str, sheet_name=0)
    except ImportError as e:
        raise InputError(path, f"reading Excel needs an extra package ({e}); save the sheet as CSV") from None
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(path, f"cannot read the spreadsheet ({type(e).__name__}: {e})") from None
    header = [str(c).strip() for c in df.columns]
    df.columns = header
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(repr(c) for c in missing)} (has: {', '.join(header)})")
    df = df.fillna("")
    rows = [
        (i + 2, {k: str(v).strip() for k, v in rec.items()})
        for i, rec in enumerate(df.to_dict("records"))
        if any(str(v).strip() for v in rec.values())
    ]
    return header, rows


def _numbered(lines: list[str]) -> Iterator[str]:
    yield from lines


class HeaderCache:
    """DICOM header results by file (path, size, mtime), appended to a JSON-lines file.

    :func:`mammolens.data.ingest.ingest` opens one beside the manifest
    (``<stem>_headers.jsonl``) so an interrupted ingest of a large dataset resumes without
    re-reading the headers it already read; it is removed after a successful run.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._items: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    self._items[item["file"]] = item
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by the interruption
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.hits = 0

    @staticmethod
    def _stamp(path: Path) -> tuple[str, int, int]:
        st = path.stat()
        return str(path.resolve()), int(st.st_size), int(st.st_mtime_ns)

    def metadata(self, path: Path) -> dict[str, Any]:
        """The header metadata of ``path`` (cached); raises the cached or new InputError."""
        from mammolens.io.dicom import read_dicom_metadata

        try:
            key, size, mtime = self._stamp(path)
        except OSError:
            return read_dicom_metadata(path)
        item = self._items.get(key)
        if item and item.get("size") == size and item.get("mtime") == mtime:
            self.hits += 1
            if "error" in item:
                raise InputError(path, item["error"])
            return dict(item["meta"])
        try:
            meta = read_dicom_metadata(path)
        except InputError as e:
            self._put({"file": key, "size": size, "mtime": mtime, "error": e.reason})
            raise
        self._put({"file": key, "size": size, "mtime": mtime, "meta": meta})
        return meta

    def _put(self, item: dict[str, Any]) -> None:
        line = json.dumps(item, default=str) + "\n"
        with self._lock:
            self._items[item["file"]] = item
            self._fh.write(line)
            self._fh.flush()

    def close(self, *, remove: bool = False) -> None:
        self._fh.close()
        if remove:
            self.path.unlink(missing_ok=True)


_HEADER_CACHE: ContextVar[HeaderCache | None] = ContextVar("mammolens_header_cache", default=None)


@contextmanager
def header_cache(path: Path | None) -> Iterator[HeaderCache | None]:
    """Use a :class:`HeaderCache` at ``path`` for DICOM headers read inside the block.

    The cache file is removed when the block finishes without an exception and kept
    (for resuming) when it is interrupted.
    """
    if path is None:
        yield None
        return
    cache = HeaderCache(path)
    token = _HEADER_CACHE.set(cache)
    ok = False
    try:
        yield cache
        ok = True
    finally:
        _HEADER_CACHE.reset(token)
        cache.close(remove=ok)


def metadata_reader() -> Callable[[Path], dict[str, Any]]:
    """The header reader to use now: the active cache's (thread-safe) or the plain one.

    Fetch it in the calling thread: worker threads do not inherit the context.
    """
    cache = _HEADER_CACHE.get()
    if cache is not None:
        return cache.metadata
    from mammolens.io.dicom import read_dicom_metadata

    return read_dicom_metadata


def dicom_metadata(path: Path) -> dict[str, Any]:
    """``read_dicom_metadata`` through the active header cache, if any."""
    cache = _HEADER_CACHE.get()
    if cache is not None:
        return cache.metadata(path)
    from mammolens.io.dicom import read_dicom_metadata

    return read_dicom_metadata(path)


def read_dicom_header(path: Path, qc: QCTable, *, image_id: str = "", where: str = "") -> dict[str, Any] | None:
    """``mammolens.io.dicom.read_dicom_metadata`` or ``None`` with a QC rejection.

    Also rejected: what the header already disproves about the pixel data (no Pixel
    Data, a length that contradicts the dimensions, absurd sizes; see
    :func:`mammolens.io.dicom.check_pixel_header`).
    """
    try:
        meta = dicom_metadata(path)
        if meta.get("pixel_error"):
            raise InputError(path, str(meta["pixel_error"]))
        return meta
    except InputError as e:
        qc.add(STAGE, path, f"unreadable DICOM: {e.reason}{where}", image_id=image_id)
    except Exception as e:  # noqa: BLE001 - a bad file must never stop the good ones
        qc.add(STAGE, path, f"unreadable DICOM: {type(e).__name__}: {e}{where}", image_id=image_id)
    return None


def apply_header(row: dict[str, Any], meta: dict[str, Any]) -> None:
    """Fill manufacturer, model, size, SOP UID and flags from DICOM metadata."""
    for key, col in (
        ("manufacturer", "manufacturer"),
        ("manufacturer_model", "manufacturer_model"),
        ("sop_instance_uid", "sop_instance_uid"),
    ):
        v = meta.get(key)
        if v and not row.get(col):
            row[col] = str(v)
    if meta.get("rows"):
        row["height"] = int(meta["rows"])
    if meta.get("columns"):
        row["width"] = int(meta["columns"])
    age = meta.get("age")
    if age is not None and not _is_number(row.get("age")):
        try:
            row["age"] = float(age)
        except (TypeError, ValueError):
            pass
    for f in meta.get("flags") or []:
        add_flag(row, str(f))


def _is_number(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f


def flag_rows(rows: list[dict[str, Any]], qc: QCTable) -> None:
    """One QC ``flag`` row per image that carries flags."""
    for r in rows:
        if r.get("flags"):
            qc.add(STAGE, r.get("path", ""), f"{r['flags']}: image used, with QC flag(s)", severity="flag", image_id=r.get("image_id", ""))
