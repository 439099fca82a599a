"""The QC table: every rejected or flagged input, with the file and a readable reason.

Every stage that reads inputs collects :class:`QCIssue` rows in a :class:`QCTable`
instead of stopping, writes them as CSV next to its output, and returns exit status 3
(``errors.EXIT_REJECTED``) when anything was rejected.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

Severity = Literal["reject", "flag"]

QC_COLUMNS = ["stage", "severity", "path", "image_id", "reason"]


@dataclass(frozen=True)
class QCIssue:
    """One QC row.

    ``severity`` is ``"reject"`` (the input was not used) or ``"flag"`` (used, but
    something about it deserves a look, e.g. a FOR PROCESSING image or a spot view).
    """

    stage: str
    severity: Severity
    path: str
    reason: str
    image_id: str = ""


class QCTable:
    """An append-only collection of :class:`QCIssue` rows."""

    def __init__(self, rows: Iterable[QCIssue] = ()) -> None:
        self._rows: list[QCIssue] = list(rows)

    def add(
        self,
        stage: str,
        path: str | Path | None,
        reason: str,
        *,
        severity: Severity = "reject",
        image_id: str | None = None,
    ) -> QCIssue:
        if severity not in ("reject", "flag"):
            raise ValueError(f"severity must be 'reject' or 'flag', got {severity!r}")
        row = QCIssue(stage, severity, "" if path is None else str(path), reason, image_id or "")
        self._rows.append(row)
        return row

    def extend(self, other: QCTable | Iterable[QCIssue]) -> None:
        self._rows.extend(other)

    def __iter__(self) -> Iterator[QCIssue]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rejected(self) -> list[QCIssue]:
        return [r for r in self._rows if r.severity == "reject"]

    @property
    def flagged(self) -> list[QCIssue]:
        return [r for r in self._rows if r.severity == "flag"]

    def reasons(self, severity: Severity = "reject") -> Counter[str]:
        """Counts of reasons (the text before any ':' detail) for one severity."""
        return Counter(r.reason.split(":")[0] for r in self._rows if r.severity == severity)

    def to_records(self) -> list[dict[str, str]]:
        return [asdict(r) for r in self._rows]

    def to_frame(self):  # -> pandas.DataFrame
        import pandas as pd

        return pd.DataFrame(self.to_records(), columns=QC_COLUMNS)

    def write_csv(self, path: str | Path, *, append: bool = False) -> Path:
        """Write the rows (header always present) to ``path``; ``append`` keeps old rows."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        exists = path.exists() and path.stat().st_size > 0
        mode = "a" if append and exists else "w"
        with path.open(mode, newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=QC_COLUMNS)
            if mode == "w":
                writer.writeheader()
            for r in self._rows:
                writer.writerow({f.name: getattr(r, f.name) for f in fields(r)})
        return path

    @classmethod
    def read_csv(cls, path: str | Path) -> QCTable:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            return cls(
                QCIssue(
                    stage=row["stage"],
                    severity=row["severity"],  # type: ignore[arg-type]
                    path=row["path"],
                    reason=row["reason"],
                    image_id=row.get("image_id", "") or "",
                )
                for row in csv.DictReader(fh)
            )
