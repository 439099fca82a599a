"""mini-MIAS: the MIAS MiniMammographic Database (``Info.txt`` + ``mdbNNN.pgm``).

Expected layout (one folder, as distributed)::

    SOURCE/
      Info.txt        free-text header, then one line per abnormality
      mdb001.pgm      8-bit binary PGM (P5), 1024 x 1024, 200 micron pixels
      mdb002.pgm
      ...

``Info.txt`` data lines: ``REFNUM BG CLASS [SEVERITY [X Y RADIUS]]``, e.g.::

    mdb001 G CIRC B 535 425 197
    mdb003 D NORM
    mdb059 F CIRC B                 (abnormality without a location)

* ``BG`` background tissue: ``F`` fatty, ``G`` fatty-glandular, ``D`` dense-glandular;
* ``CLASS``: ``CALC``, ``CIRC``, ``SPIC``, ``MISC``, ``ARCH``, ``ASYM``, ``NORM``;
* ``SEVERITY``: ``B`` benign, ``M`` malignant;
* ``X Y``: centre of the abnormality in pixels with the origin at the **bottom-left**
  corner; ``RADIUS``: radius in pixels of a circle enclosing it. Widely distributed
  calcifications have no location (the line stops after the severity, or refers to
  a note such as ``*NOTE 3*``).

Mapping to the manifest
-----------------------
* ``image_id`` = ``mdbNNN``; films come in pairs from one woman: odd numbers are the
  right breast, even numbers the left (``mdb001``/``mdb002`` are one patient), so
  ``patient_id`` = ``study_id`` = ``mdb001-002`` and ``laterality`` = ``R``/``L``;
* ``view`` = ``MLO`` (MIAS films are medio-lateral oblique views); no age, no
  manufacturer (digitised film);
* ``label`` = 1 if any line of the image is ``M``, else 0; ``outcome`` =
  ``malignant`` / ``benign`` (an abnormality, none malignant) / ``normal``;
* ``lesions``: one ``circle`` per located abnormality, ``cx = X``, ``cy = H - Y``
  with ``H`` the image height read from the PGM header (1024 for mini-MIAS), ``r`` =
  RADIUS; ``kind`` from the class (``CALC`` calcification; ``CIRC``/``SPIC``/``MISC``
  mass; ``ARCH`` architectural_distortion; ``ASYM`` asymmetry), ``source`` = class;
  an abnormality without a location keeps its pathology in the label and outcome,
  records no geometry, and gets the flag ``no_location`` (QC ``flag`` row);
* ``density_original`` = ``F``/``G``/``D``; ``density`` on the BI-RADS A-D scale:
  ``F -> A``, ``G -> B``, ``D -> C``. MIAS has three tissue classes, BI-RADS four;
  ``D`` (dense-glandular) spans BI-RADS C-D, and we map it to its lower bound ``C`` so
  that the usual dense / non-dense grouping (A-B vs C-D) is exact while no image is
  claimed to be "extremely dense" without evidence. Use ``density_original`` for
  analyses by the three MIAS classes;
* ``dataset`` = ``mini-mias``.

QC
--
* a malformed data line (too few fields, unknown background, class or severity,
  non-numeric or partial coordinates) is a QC rejection naming ``Info.txt`` and the
  line number. When its class and severity are readable (only the location is bad),
  the pathology is kept and the geometry dropped; otherwise the image's truth is
  incomplete and the image is rejected too (a wrong label is worse than a missing
  image);
* an image listed in ``Info.txt`` whose PGM is missing, a PGM with a corrupt header,
  and a PGM not listed in ``Info.txt`` are rejected;
* a lesion centre outside the image is flagged.

Reference: J Suckling et al. (1994) "The Mammographic Image Analysis Society Digital
Mammogram Database", Excerpta Medica, International Congress Series 1069, 375-378.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import STAGE, Track, add_flag, flag_rows, new_row, no_progress
from mammolens.data.lesions import dump_lesions
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "mias"
SUMMARY = "mini-MIAS: Info.txt + mdbNNN.pgm (y flipped from bottom-left origin)"

BACKGROUNDS = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
#: MIAS background tissue -> BI-RADS density (see module docstring for the reasoning)
DENSITY_MAP = {"F": "A", "G": "B", "D": "C"}
CLASSES = {
    "CALC": "calcification",
    "CIRC": "mass",
    "SPIC": "mass",
    "MISC": "mass",
    "ARCH": "architectural_distortion",
    "ASYM": "asymmetry",
    "NORM": "",
}
SEVERITIES = {"B": "benign", "M": "malignant"}
_REF = re.compile(r"^mdb(\d+)$", re.IGNORECASE)


@dataclass
class _Entry:
    """What Info.txt says about one image."""

    lines: list[int] = field(default_factory=list)
    background: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)  # class, severity, xyr|None, line
    broken: list[int] = field(default_factory=list)  # lines whose truth is unreadable


def find_info(source: Path) -> Path:
    """``Info.txt`` in ``source`` (any case)."""
    for p in sorted(source.iterdir()):
        if p.is_file() and p.name.lower() == "info.txt":
            return p
    raise InputError(source, "no Info.txt in this folder (is it the mini-MIAS folder?)")


def read_pgm_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from a PGM header (P2 or P5), without reading the pixels.

    Raises
    ------
    InputError
        If the file is not a PGM or its header is truncated or invalid.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None
    tokens: list[bytes] = []
    i = 0
    while len(tokens) < 4 and i < len(head):
        c = head[i : i + 1]
        if c == b"#":
            j = head.find(b"\n", i)
            i = len(head) if j < 0 else j + 1
            continue
        if c.isspace():
            i += 1
            continue
        j = i
        while j < len(head) and not head[j : j + 1].isspace() and head[j : j + 1] != b"#":
            j += 1
        tokens.append(head[i:j])
        i = j
    if len(tokens) < 4 or tokens[0] not in (b"P5", b"P2"):
        raise InputError(path, "not a PGM file (bad or truncated header)")
    try:
        width, height, maxval = int(tokens[1]), int(tokens[2]), int(tokens[3])
    except ValueError:
        raise InputError(path, "not a PGM file (non-numeric header)") from None
    if width <= 0 or height <= 0 or not 0 < maxval < 65536:
        raise InputError(path, f"invalid PGM header (width {width}, height {height}, maxval {maxval})")
    if tokens[0] == b"P5":
        expected = width * height * (1 if maxval < 256 else 2)
        size = path.stat().st_size
        if size < expected:
            raise InputError(path, f"truncated PGM ({size} bytes, need at least {expected} of pixels)")
    return height, width


def parse_info(info: Path, qc: QCTable) -> dict[str, _Entry]:
    """Parse ``Info.txt`` into entries by reference (``mdbNNN``); bad lines -> QC rows."""
    try:
        text = info.read_text(encoding="latin-1")
    except OSError as e:
        raise InputError(info, f"cannot read ({e.strerror or e})") from None
    entries: dict[str, _Entry] = {}

    def bad(line_no: int, detail: str, image_id: str = "") -> None:
        qc.add(STAGE, info, f"malformed Info.txt line: line {line_no}: {detail}", image_id=image_id)

    for line_no, raw in enumerate(text.splitlines(), start=1):
        tok = raw.split()
        if not tok or not tok[0].lower().startswith("mdb"):
            continue  # header text
        m = _REF.match(tok[0])
        if not m:
            bad(line_no, f"unreadable reference number {tok[0]!r}")
            continue
        ref = f"mdb{int(m.group(1)):03d}"
        e = entries.setdefault(ref, _Entry())
        e.lines.append(line_no)
        if len(tok) < 3:
            bad(line_no, f"expected at least 3 fields (REFNUM BG CLASS), got {len(tok)}: {raw.strip()!r}", ref)
            e.broken.append(line_no)
            continue
        bg, cls = tok[1].upper(), tok[2].upper()
        if bg not in BACKGROUNDS:
            bad(line_no, f"unknown background tissue {tok[1]!r} (expected F, G or D)", ref)
            e.broken.append(line_no)
            continue
        if e.background and e.background != bg:
            qc.add(STAGE, info, f"inconsistent background: line {line_no} says {bg}, earlier line {e.background}; first kept", severity="flag", image_id=ref)
        e.background = e.background or bg
        if cls not in CLASSES:
            bad(line_no, f"unknown abnormality class {tok[2]!r}", ref)
            e.broken.append(line_no)
            continue
        if cls == "NORM":
            if len(tok) > 3:
                qc.add(STAGE, info, f"extra fields on a NORM line: line {line_no}: {' '.join(tok[3:])!r} ignored", severity="flag", image_id=ref)
            continue
        if len(tok) < 4 or tok[3].upper() not in SEVERITIES:
            got = tok[3] if len(tok) >= 4 else "nothing"
            bad(line_no, f"{cls} without a valid severity (B or M), got {got!r}", ref)
            e.broken.append(line_no)
            continue
        finding: dict[str, Any] = {"cls": cls, "severity": tok[3].upper(), "xyr": None, "line": line_no}
        rest = tok[4:]
        if not rest or any("NOTE" in t.upper() for t in rest):
            finding["no_location"] = True  # documented: widely distributed calcifications
        elif len(rest) != 3:
            bad(line_no, f"expected 3 location fields (X Y RADIUS), got {len(rest)}: {raw.strip()!r}; pathology kept, location dropped", ref)
            finding["no_location"] = True
        else:
            try:
                x, y, r = (float(v) for v in rest)
            except ValueError:
                bad(line_no, f"non-numeric location {' '.join(rest)!r}; pathology kept, location dropped", ref)
                finding["no_location"] = True
            else:
                if r <= 0:
                    bad(line_no, f"non-positive radius {rest[2]!r}; pathology kept, location dropped", ref)
                    finding["no_location"] = True
                else:
                    finding["xyr"] = (x, y, r)
        e.findings.append(finding)
    return entries


def load(source: Path, *, qc: QCTable, track: Track = no_progress) -> pd.DataFrame:
    """Read a mini-MIAS folder into manifest rows (see the module docstring)."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "not a folder")
    info = find_info(source)
    entries = parse_info(info, qc)
    pgms = {p.stem.lower(): p for p in source.iterdir() if p.is_file() and p.suffix.lower() == ".pgm"}
    for stem, p in sorted(pgms.items()):
        m = _REF.match(stem)
        if stem not in entries and not (m and f"mdb{int(m.group(1)):03d}" in entries):
            qc.add(STAGE, p, "not listed in Info.txt: no truth for this image", image_id=stem)

    rows: list[dict[str, Any]] = []
    for ref in track(sorted(entries), len(entries), "mini-MIAS images"):
        e = entries[ref]
        num = int(ref[3:])
        path = pgms.get(ref) or pgms.get(f"mdb{num}")
        where = f" (Info.txt line {e.lines[0]})"
        if path is None:
            qc.add(STAGE, source / f"{ref}.pgm", f"file missing: {ref}.pgm is listed in Info.txt but absent{where}", image_id=ref)
            continue
        if e.broken:
            qc.add(STAGE, path, f"incomplete truth: Info.txt line(s) {', '.join(map(str, e.broken))} unreadable; image not used", image_id=ref)
            continue
        try:
            height, width = read_pgm_size(path)
        except InputError as err:
            qc.add(STAGE, path, f"unreadable image: {err.reason}", image_id=ref)
            continue
        first = num if num % 2 else num - 1
        pid = f"mdb{first:03d}-{first + 1:03d}"
        row = new_row(
            image_id=ref,
            patient_id=pid,
            study_id=pid,
            path=str(path.resolve()),
            laterality="R" if num % 2 else "L",
            view="MLO",
            density=DENSITY_MAP.get(e.background, ""),
            density_original=e.background,
            dataset="mini-mias",
            height=height,
            width=width,
        )
        lesions: list[dict[str, Any]] = []
        for f in e.findings:
            pathology = SEVERITIES[f["severity"]]
            if f["xyr"] is None:
                add_flag(row, "no_location")
                continue
            x, y, r = f["xyr"]
            cy = height - y  # bottom-left origin -> top-left origin
            if not (0 <= x <= width and 0 <= cy <= height):
                qc.add(STAGE, info, f"lesion outside image: line {f['line']}: centre ({x:g}, {y:g}) outside {width}x{height}", severity="flag", image_id=ref)
                add_flag(row, "lesion_outside_image")
            lesions.append(
                {
                    "shape": "circle",
                    "cx": _num(x),
                    "cy": _num(cy),
                    "r": _num(r),
                    "pathology": pathology,
                    "kind": CLASSES[f["cls"]],
                    "source": f["cls"],
                }
            )
        sev = {f["severity"] for f in e.findings}
        row["label"] = 1 if "M" in sev else 0
        row["outcome"] = "malignant" if "M" in sev else ("benign" if sev else "normal")
        row["lesions"] = dump_lesions(lesions)
        rows.append(row)
    flag_rows(rows, qc)
    return pd.DataFrame(rows)


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)
