"""Reading mammography DICOM: metadata without pixels, and display-ready pixels.

The pixel pipeline follows DICOM PS3.3 / PS3.4 (grayscale standard display pipeline):

1. decode the stored values. Decoders are chosen so that a corrupt stream fails as a
   Python error where such a decoder exists for the syntax: pylibjpeg-openjpeg for
   JPEG 2000 (pillow next), pyjpegls for JPEG-LS, pillow for JPEG baseline / extended,
   pylibjpeg-rle for RLE (its Rust panics, ``BaseException``s, are caught). python-gdcm,
   which aborts or segfaults on some corrupt streams, is used only where nothing else
   decodes the syntax (JPEG Lossless), and then only inside a sandbox child process
   (:mod:`mammolens.io.sandbox`). No GPL codec. The header is checked first
   (:func:`check_pixel_header`): no pixel data, a pixel data length that contradicts
   the declared dimensions, or absurd declared sizes are rejected before decoding,
2. respect *Bits Stored* (mask the unused high bits of unsigned data, sign-extend signed
   data),
3. the **Modality LUT** (Rescale Slope / Intercept or the Modality LUT Sequence,
   PS3.3 C.11.1),
4. the **VOI LUT** (PS3.3 C.11.2): a VOI LUT Sequence item, or a Window Center / Width
   pair with *VOI LUT Function* ``LINEAR`` (C.11.2.1.2.1), ``LINEAR_EXACT``
   (C.11.2.1.3.2) or ``SIGMOID`` (C.11.2.1.3.1); several vendor windows can be present
   and one is chosen by index (default: the first, the vendor's "normal" window),
5. the **Presentation LUT**: ``MONOCHROME1`` images are inverted (whether or not
   Presentation LUT Shape ``INVERSE`` is present); a ``MONOCHROME2`` image with
   Presentation LUT Shape ``INVERSE`` is inverted too,

so that the result is float32 in [0, 1] with dense tissue bright.

References
----------
DICOM PS3.3 2024e, sections C.7.6.3 (Image Pixel), C.8.11.7 (Mammography Image),
C.11.1 (Modality LUT), C.11.2 (VOI LUT), C.11.6 (Softcopy Presentation LUT).
DICOM PS3.16 CID 4014 (View for Mammography) and CID 4015 (View Modifier for Mammography).
"""

from __future__ import annotations

import math
import re
import warnings
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mammolens.errors import InputError
from mammolens.io._isolation import in_sandbox
from mammolens.io.loaded import LoadedImage, implausible_size

__all__ = [
    "MG_SOP_CLASSES",
    "canonical_manufacturer",
    "check_pixel_header",
    "decoding_plugin",
    "normalize_view",
    "parse_age",
    "read_dicom",
    "read_dicom_metadata",
    "validate_mammogram",
]

#: Digital Mammography X-Ray Image Storage (For Presentation / For Processing)
MG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "FOR PRESENTATION",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "FOR PROCESSING",
}
#: Breast Tomosynthesis / Breast Projection X-Ray images (not 2-D FFDM)
_DBT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.13.1.3", "1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5"}

#: largest declared matrix side / pixel count accepted from any header before decoding
#: (a decoder would allocate what the header declares)
MAX_DECLARED_SIDE = 16384
MAX_DECLARED_PIXELS = 250_000_000

#: transfer syntaxes whose Pixel Data is stored uncompressed (its length follows from the header)
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_MANUFACTURERS: list[tuple[str, str]] = [
    # (regex on the lower-cased raw value, canonical name); order matters
    (r"hologic|lorad", "Hologic"),
    (r"siemens", "Siemens"),
    (r"philips|sectra", "Philips"),
    (r"fuji", "Fujifilm"),
    (r"agfa", "Agfa"),
    (r"konica|minolta", "Konica"),
    (r"planmed", "Planmed"),
    (r"\bims\b|giotto|i\.m\.s", "IMS"),
    (r"carestream|kodak", "Carestream"),
    (r"canon|toshiba", "Canon"),
    (r"metaltronica", "Metaltronica"),
    (r"varian", "Varian"),
    (r"general electric|\bge\b|ge healthcare|ge medical|gems|senographe", "GE"),
]

# CID 4014 View for Mammography: SNOMED-CT (SCT) and legacy SNOMED-RT (SRT) codes
_VIEW_CODES: dict[str, str] = {
    "399162004": "CC", "R-10242": "CC",
    "399368009": "MLO", "R-10226": "MLO",
    "399260004": "ML", "R-10224": "ML",
    "399352003": "LM", "R-10228": "LM",
    "399099002": "LMO", "R-10230": "LMO",
    "399196006": "FB", "R-10244": "FB",
    "399192008": "XCCL", "R-1024A": "XCCL",
    "399101009": "XCCM", "R-1024B": "XCCM",
    "399188001": "SIO", "R-102CF": "SIO",
    "441555000": "ISO", "R-40AAA": "ISO",
    "127457009": "SPECIMEN",
}
# CID 4015 View Modifier for Mammography (SCT codes) -> flag
_MODIFIER_CODES: dict[str, str] = {
    "399163009": "magnification",
    "399055006": "spot",
    "399209000": "implant",
    "399161006": "cleavage",
    "399011000": "axillary_tail",
    "442580003": "axillary_tissue",
    "399110001": "tangential",
    "441752004": "anterior_compression",
    "442593008": "infra_mammary_fold",
    "442581004": "nipple_in_profile",
    "414493004": "rolled", "399197002": "rolled", "399226006": "rolled", "415670009": "rolled",
}
_VIEW_ALIASES: dict[str, str] = {
    "CC": "CC", "CRANIOCAUDAL": "CC", "CRANIO-CAUDAL": "CC", "CRANIO CAUDAL": "CC",
    "MLO": "MLO", "MEDIOLATERAL OBLIQUE": "MLO", "MEDIO-LATERAL OBLIQUE": "MLO", "OBLIQUE": "MLO",
    "ML": "ML", "MEDIOLATERAL": "ML", "MEDIO-LATERAL": "ML", "MEDIAL-LATERAL": "ML", "LATERAL": "ML",
    "LM": "LM", "LATEROMEDIAL": "LM", "LATERO-MEDIAL": "LM",
    "LMO": "LMO", "XCCL": "XCCL", "XCCM": "XCCM", "XCC": "XCCL", "FB": "FB", "SIO": "SIO", "ISO": "ISO",
    "AT": "AT", "CV": "CV", "SPECIMEN": "SPECIMEN",
}
STANDARD_VIEWS = {"CC", "MLO"}

SUPPORTED_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2"}


# --------------------------------------------------------------------------- helpers


def canonical_manufacturer(raw: str | None) -> str:
    """Map a free-text *Manufacturer* (0008,0070) to a canonical vendor name.

    ``"HOLOGIC, Inc."`` -> ``"Hologic"``, ``"GE MEDICAL SYSTEMS"`` -> ``"GE"``,
    ``"SIEMENS"`` -> ``"Siemens"``, ``"FUJIFILM Corporation"`` -> ``"Fujifilm"``...
    Unknown vendors are returned stripped (first letter upper-case); empty stays empty.
    """
    if raw is None:
        return ""
    text = " ".join(str(raw).split())
    if not text:
        return ""
    low = text.lower()
    for pattern, name in _MANUFACTURERS:
        if re.search(pattern, low):
            return name
    return text[0].upper() + text[1:]


def normalize_view(value: str | None) -> str:
    """Normalise a *View Position* or free-text view to ``CC``, ``MLO``, ``ML``, ``LM``...

    Unknown non-empty values are returned upper-cased; empty stays empty.
    """
    if value is None:
        return ""
    v = " ".join(str(value).upper().replace("_", " ").split())
    if not v:
        return ""
    if v in _VIEW_ALIASES:
        return _VIEW_ALIASES[v]
    # laterality-prefixed forms: "LCC", "R MLO", "L-CC"
    m = re.fullmatch(r"[LR][ \-]?(CC|MLO|ML|LM|XCCL|XCCM|LMO|FB)", v)
    if m:
        return m.group(1)
    return v


def parse_age(patient_age: str | None, birth_date: str | None = None, ref_date: str | None = None) -> float:
    """Age in years from *Patient's Age* (``'056Y'``, ``'006M'``, ``'010W'``, ``'100D'``),
    else from *Patient's Birth Date* and a reference date (YYYYMMDD); NaN if unknown.
    """
    if patient_age:
        s = str(patient_age).strip().upper()
        m = re.fullmatch(r"(\d{1,3})\s*([YMWD]?)", s)
        if m:
            n = float(m.group(1))
            unit = m.group(2) or "Y"
            years = {"Y": n, "M": n / 12.0, "W": n * 7 / 365.25, "D": n / 365.25}[unit]
            if 0 <= years <= 130:
                return years
    b, r = _parse_da(birth_date), _parse_da(ref_date)
    if b is not None and r is not None and r >= b:
        years = r.year - b.year - ((r.month, r.day) < (b.month, b.day))
        if 0 <= years <= 130:
            return float(years)
    return math.nan


def _parse_da(value: str | None) -> date | None:
    if not value:
        return None
    s = str(value).strip().replace(".", "").replace("-", "")
    if not re.fullmatch(r"\d{8}", s):
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None


def _str(ds: Any, keyword: str) -> str:
    v = ds.get(keyword, None)
    if v is None:
        return ""
    if hasattr(v, "value"):  # DataElement
        v = v.value
    if v is None:
        return ""
    if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
        v = "\\".join(str(x) for x in v)
    return str(v).strip()


def _int(ds: Any, keyword: str) -> int | None:
    v = ds.get(keyword, None)
    try:
        return None if v in (None, "") else int(v)
    except (TypeError, ValueError):
        return None


def _codes(seq: Any) -> list[tuple[str, str]]:
    """(code value, meaning) pairs of a code sequence (empty when absent)."""
    out: list[tuple[str, str]] = []
    for item in seq or []:
        val = str(item.get("CodeValue", "") or item.get("LongCodeValue", "") or "").strip()
        out.append((val, str(item.get("CodeMeaning", "") or "").strip()))
    return out


def _laterality_hint(text: str) -> str:
    t = text.upper()
    if re.search(r"\b(LEFT|LINKS|GAUCHE|IZQUIERD)", t) or re.search(r"(^|[^A-Z])L[ _\-]?(CC|MLO|ML|LM|XCCL|XCCM)\b", t):
        return "L"
    if re.search(r"\b(RIGHT|RECHTS|DROIT|DERECH)", t) or re.search(r"(^|[^A-Z])R[ _\-]?(CC|MLO|ML|LM|XCCL|XCCM)\b", t):
        return "R"
    return ""


def _view_hint(text: str) -> str:
    t = text.upper()
    for pat, view in ((r"XCCL", "XCCL"), (r"XCCM", "XCCM"), (r"MLO|OBLIQUE", "MLO"), (r"(^|[^A-Z])[LR]?CC\b|CRANIO", "CC"),
                      (r"(^|[^A-Z])[LR]?ML\b", "ML"), (r"(^|[^A-Z])[LR]?LM\b", "LM")):
        if re.search(pat, t):
            return view
    return ""


# --------------------------------------------------------------------------- metadata


def _read_header(path: str | Path, *, stop_before_pixels: bool = True):
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if p.is_dir():
        raise InputError(p, "is a directory, not a DICOM file")
    if p.stat().st_size == 0:
        raise InputError(p, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), p.open("rb") as fh:
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                # no 128-byte preamble + 'DICM': accept only raw datasets that look like images
                fh.seek(0)
                ds = pydicom.dcmread(fh, stop_before_pixels=stop_before_pixels, force=True)
                if "SOPClassUID" not in ds and "Rows" not in ds:
                    raise InputError(p, "not a DICOM file (no DICM preamble and no DICOM image tags)") from None
            if stop_before_pixels:
                # pydicom stops *at* the Pixel Data element: read its header while we are there
                ds._mammolens_pixel_element = _pixel_element_at(fh, ds)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad file
        raise InputError(p, f"not a readable DICOM file (truncated or corrupt header: {type(e).__name__}: {e})") from None
    return ds


def _pixel_element_at(fh: Any, ds: Any) -> tuple[bool, int | None, int]:
    """``(found, value length or None when undefined/unknown, bytes left in the file after
    the element header)`` of the Pixel Data element starting at ``fh``'s position."""
    import struct

    ts = _transfer_syntax(ds)
    if ts == _DEFLATED_SYNTAX:  # the position is inside the deflated stream: unknown
        return True, None, -1
    start = fh.tell()
    head = fh.read(12)
    fh.seek(0, 2)
    end = fh.tell()
    implicit = ts == "1.2.840.10008.1.2"
    little = ts != "1.2.840.10008.1.2.2"
    tag = b"\xe0\x7f\x10\x00" if little else b"\x7f\xe0\x00\x10"
    if len(head) < 8 or head[:4] != tag:
        # stopped at the end of the file (no pixel data), or at Float / Double Float Pixel Data
        found = len(head) >= 8 and head[:2] == tag[:2]
        return found, None, -1
    fmt = "<I" if little else ">I"
    if implicit:
        (length,) = struct.unpack(fmt, head[4:8])
        hdr = 8
    else:
        if len(head) < 12:
            return True, None, 0
        (length,) = struct.unpack(fmt, head[8:12])
        hdr = 12
    left = end - start - hdr
    return True, (None if length == 0xFFFFFFFF else int(length)), int(left)


def _transfer_syntax(ds: Any) -> str:
    fm = getattr(ds, "file_meta", None)
    return str(fm.get("TransferSyntaxUID", "") or "").strip() if fm is not None else ""


def _pixel_data_size(ds: Any, path: str | Path | None) -> tuple[bool, int | None, int]:
    """``(present, value length in bytes or None if undefined / unknown, bytes available)``."""
    for kw in _PIXEL_TAGS:
        if kw in ds:
            elem = ds.get_item(kw)
            if getattr(elem, "is_undefined_length", False):
                return True, None, -1
            length = getattr(elem, "length", None)
            value = getattr(elem, "value", None)
            if isinstance(value, bytes | bytearray):
                return True, len(value), len(value)
            if length is not None and length != 0xFFFFFFFF:
                return True, int(length), -1
            return True, None, -1
    info = getattr(ds, "_mammolens_pixel_element", None)
    if info is None and path is not None and Path(path).is_file():
        try:
            import pydicom

            with warnings.catch_warnings(), Path(path).open("rb") as fh:
                warnings.simplefilter("ignore")
                pydicom.dcmread(fh, stop_before_pixels=True, force=True)
                info = _pixel_element_at(fh, ds)
        except Exception:  # noqa: BLE001 - unreadable here: the reader will say why
            info = None
    if info is None:
        return False, None, -1
    return info


def _pixel_header_problem(ds: Any, path: str | Path | None) -> str:
    """The reason the header disproves decodable pixel data, or ``''``."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or cols is None:
        return "missing Rows / Columns: not an image"
    if rows <= 0 or cols <= 0:
        return f"zero image dimensions (Rows={rows}, Columns={cols})"
    spp = _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    ba = _int(ds, "BitsAllocated")
    if ba is None:
        return "missing Bits Allocated"
    if ba not in (1, 8, 16, 32, 64):
        return f"invalid Bits Allocated {ba} (expected 1, 8, 16, 32 or 64)"
    bs = _int(ds, "BitsStored")
    if bs is not None and not 1 <= bs <= ba:
        return f"Bits Stored {bs} is outside 1..Bits Allocated ({ba})"
    if spp < 1 or frames < 1:
        return f"invalid Samples per Pixel ({spp}) or Number of Frames ({frames})"
    if rows > MAX_DECLARED_SIDE or cols > MAX_DECLARED_SIDE:
        return f"absurd declared image size {rows} x {cols} (more than {MAX_DECLARED_SIDE} pixels per side)"
    n = rows * cols * spp * frames
    if n > MAX_DECLARED_PIXELS:
        return f"absurd declared image size: {n:,} samples (limit {MAX_DECLARED_PIXELS:,})"
    present, length, available = _pixel_data_size(ds, path)
    if not present:
        return "missing pixel data (no PixelData element)"
    ts = _transfer_syntax(ds)
    if ts in _NATIVE_SYNTAXES or (ts == _DEFLATED_SYNTAX and length is not None):
        need = (n * ba + 7) // 8
        dims = f"{rows} x {cols}" + (f" x {spp} samples" if spp > 1 else "") + (f" x {frames} frames" if frames > 1 else "")
        if length is None and ts != _DEFLATED_SYNTAX:
            return "uncompressed transfer syntax but the pixel data is encapsulated (compressed)"
        if length is not None and length < need:
            return f"truncated or short pixel data: {length:,} bytes, but the header declares {dims} at {ba} bits ({need:,} bytes)"
        if length is not None and length >= 2 * need + 2:
            return f"pixel data is {length:,} bytes, more than twice what the header declares ({dims} at {ba} bits: {need:,} bytes)"
        if length is not None and 0 <= available < min(length, need):
            return f"truncated file: pixel data declares {length:,} bytes, the file holds {available:,}"
    elif length == 0:
        return "empty pixel data"
    return ""


def check_pixel_header(ds: Any, path: str | Path | None) -> None:
    """Reject, before any decoding, what the header already disproves.

    One check for every path that admits pixel data (ingest, :func:`read_dicom`, the
    service upload).

    Parameters
    ----------
    ds
        A :class:`pydicom.Dataset`: read with its pixel data (possibly deferred), or
        with ``stop_before_pixels`` from ``path`` (the Pixel Data element's length is
        then read from the file).
    path
        The file, named in the error.

    Raises
    ------
    InputError
        No Pixel Data element; missing or zero Rows / Columns; Bits Allocated not 1, 8,
        16, 32 or 64; Bits Stored outside 1..Bits Allocated; a declared size above
        :data:`MAX_DECLARED_SIDE` per side or :data:`MAX_DECLARED_PIXELS` samples; for
        uncompressed transfer syntaxes, a Pixel Data length shorter than Rows x Columns x
        Samples per Pixel x Bits Allocated (x frames) needs, more than twice as long, or
        cut short by the end of the file.
    """
    try:
        why = _pixel_header_problem(ds, path)
    except Exception as e:  # noqa: BLE001 - a header too corrupt to check is rejected
        why = f"cannot check the image header ({type(e).__name__}: {_first_line(e)})"
    if why:
        raise InputError(path, why)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n")[0]
    # object reprs ("<_io.BytesIO object at 0x7f..>") would make every reason unique
    return re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"<\1>", text)[:300]


def read_dicom_metadata(path: str | Path, *, dataset: Any = None) -> dict[str, Any]:
    """Read the metadata of a mammogram without decoding pixels.

    Parameters
    ----------
    path
        The DICOM file.
    dataset
        An already-read :class:`pydicom.Dataset` for ``path`` (avoids a second read).

    Returns
    -------
    dict
        ``patient_id, study_id, sop_instance_uid, series_instance_uid, sop_class_uid,
        laterality ('L'|'R'|''), view ('CC', 'MLO', ... or ''), view_modifiers (list),
        manufacturer (canonical), manufacturer_raw, manufacturer_model, age (float, NaN
        if unknown), modality, presentation_intent, photometric, rows, columns,
        bits_allocated, bits_stored, pixel_representation, number_of_frames,
        transfer_syntax, has_pixel_data, pixel_spacing (mm or NaN), flags (list[str]),
        pixel_error`` (what :func:`check_pixel_header` would reject, ``''`` if nothing;
        :func:`validate_mammogram` raises it).

    Raises
    ------
    InputError
        When the file is missing, empty, not DICOM, or its header is corrupt.
    """
    ds = dataset if dataset is not None else _read_header(path)
    try:
        meta = _metadata_from_dataset(ds)
        if not meta["has_pixel_data"]:
            # stop_before_pixels leaves PixelData out: the reader noted the element it stopped at
            info = getattr(ds, "_mammolens_pixel_element", None)
            if info is not None:
                meta["has_pixel_data"] = bool(info[0])
            elif dataset is None:
                meta["has_pixel_data"] = _file_has_pixel_data(path)
        # what the header disproves about the pixel data ('' = nothing); raised by
        # validate_mammogram after the modality checks, so a non-image keeps its reason
        try:
            meta["pixel_error"] = _pixel_header_problem(ds, path if dataset is None else None)
        except Exception as e:  # noqa: BLE001
            meta["pixel_error"] = f"cannot check the image header ({type(e).__name__}: {_first_line(e)})"
        return meta
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"cannot parse DICOM header ({type(e).__name__}: {e})") from None


def _file_has_pixel_data(path: str | Path) -> bool:
    """Whether the (7FE0,0010) Pixel Data tag occurs in the file (little or big endian)."""
    import mmap

    try:
        with Path(path).open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.find(b"\xe0\x7f\x10\x00") >= 0 or mm.find(b"\x7f\xe0\x00\x10") >= 0
    except (OSError, ValueError):
        return False


def _metadata_from_dataset(ds: Any) -> dict[str, Any]:
    fm = getattr(ds, "file_meta", None)
    ts = str(fm.get("TransferSyntaxUID", "")) if fm is not None else ""
    sop_class = _str(ds, "SOPClassUID") or (_str(fm, "MediaStorageSOPClassUID") if fm is not None else "")

    view_codes = _codes(ds.get("ViewCodeSequence"))
    modifiers: list[str] = []
    for item in ds.get("ViewCodeSequence") or []:
        for val, meaning in _codes(item.get("ViewModifierCodeSequence")):
            modifiers.append(_MODIFIER_CODES.get(val) or meaning.lower().replace(" ", "_").replace("-", "_"))

    desc = " ".join(x for x in (_str(ds, "SeriesDescription"), _str(ds, "ProtocolName"), _str(ds, "AcquisitionDeviceProcessingDescription")) if x)

    # laterality: ImageLaterality, Laterality, FrameLaterality (enhanced), then hints
    lat = _str(ds, "ImageLaterality").upper() or _str(ds, "Laterality").upper()
    if lat not in ("L", "R"):
        for grp in (ds.get("SharedFunctionalGroupsSequence") or []):
            for fa in grp.get("FrameAnatomySequence") or []:
                lat = str(fa.get("FrameLaterality", "") or "").upper()
    if lat not in ("L", "R"):
        lat = ""
        for _, meaning in view_codes:
            lat = lat or _laterality_hint(meaning)
        lat = lat or _laterality_hint(desc)
    # view: ViewPosition, ViewCodeSequence, then hints
    view = normalize_view(_str(ds, "ViewPosition"))
    if view in ("", "UNKNOWN") or view not in _VIEW_ALIASES.values():
        coded = ""
        for val, meaning in view_codes:
            coded = _VIEW_CODES.get(val) or normalize_view(meaning) if not coded else coded
        if coded and coded in _VIEW_ALIASES.values():
            view = coded
        elif not view:
            view = _view_hint(desc)
    if view == "UNKNOWN":
        view = ""

    raw_manu = _str(ds, "Manufacturer")
    intent = _str(ds, "PresentationIntentType").upper() or MG_SOP_CLASSES.get(sop_class, "")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        px = float(spacing[0]) if spacing else math.nan
    except (TypeError, ValueError, IndexError):
        px = math.nan

    age = parse_age(_str(ds, "PatientAge"), _str(ds, "PatientBirthDate"),
                    _str(ds, "StudyDate") or _str(ds, "AcquisitionDate") or _str(ds, "ContentDate") or _str(ds, "SeriesDate"))

    flags: list[str] = []
    if intent == "FOR PROCESSING":
        flags.append("for_processing")
    if _str(ds, "BreastImplantPresent").upper() == "YES" or "implant" in modifiers or view == "ID":
        flags.append("implant")
    hint = desc.upper()
    if "spot" in modifiers or re.search(r"\bSPOT\b", hint):
        flags.append("spot")
    mag = ds.get("EstimatedRadiographicMagnificationFactor", None)
    try:
        mag_f = float(mag) if mag not in (None, "") else 1.0
    except (TypeError, ValueError):
        mag_f = 1.0
    if "magnification" in modifiers or re.search(r"\bMAG(NIF)?", hint) or mag_f >= 1.4:
        flags.append("magnification")
    if view and view not in STANDARD_VIEWS:
        flags.append("non_standard_view")
    if not view:
        flags.append("unknown_view")
    if not lat:
        flags.append("unknown_laterality")
    if view == "SPECIMEN" or sop_class == "1.2.840.10008.5.1.4.1.1.1.2" and "SPECIMEN" in hint:
        flags.append("specimen")
    if (_int(ds, "NumberOfFrames") or 1) > 1:
        flags.append("multi_frame")
    if sop_class in _DBT_SOP_CLASSES:
        flags.append("tomosynthesis")
    if _str(ds, "BurnedInAnnotation").upper() == "YES":
        flags.append("burned_in_annotation")
    if _str(ds, "LossyImageCompression") == "01":
        flags.append("lossy")
    flags.extend(f"modifier_{m}" for m in modifiers if m not in ("implant", "spot", "magnification"))

    return {
        "patient_id": _str(ds, "PatientID"),
        "study_id": _str(ds, "StudyInstanceUID"),
        "sop_instance_uid": _str(ds, "SOPInstanceUID"),
        "series_instance_uid": _str(ds, "SeriesInstanceUID"),
        "sop_class_uid": sop_class,
        "laterality": lat,
        "view": view,
        "view_modifiers": modifiers,
        "manufacturer": canonical_manufacturer(raw_manu),
        "manufacturer_raw": raw_manu,
        "manufacturer_model": _str(ds, "ManufacturerModelName"),
        "age": age,
        "modality": _str(ds, "Modality").upper(),
        "presentation_intent": intent,
        "photometric": _str(ds, "PhotometricInterpretation").upper(),
        "rows": rows if rows is not None else 0,
        "columns": cols if cols is not None else 0,
        "bits_allocated": _int(ds, "BitsAllocated") or 0,
        "bits_stored": _int(ds, "BitsStored") or _int(ds, "BitsAllocated") or 0,
        "pixel_representation": _int(ds, "PixelRepresentation") or 0,
        "number_of_frames": _int(ds, "NumberOfFrames") or 1,
        "transfer_syntax": ts,
        "has_pixel_data": any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")),
        "pixel_spacing": px,
        "flags": list(dict.fromkeys(flags)),
    }


def validate_mammogram(meta: dict[str, Any], path: str | Path | None = None, *, require_pixels: bool = True) -> list[str]:
    """Reject what cannot be a 2-D mammogram; return the QC flags of the rest.

    Raises
    ------
    InputError
        Modality other than ``MG`` (e.g. a CT or MR slice), missing pixel data, zero or
        absurd dimensions, unsupported photometric interpretation (colour), bit depth
        outside 1-16, tomosynthesis / multi-frame objects, and what the header disproves
        about the pixel data (``meta['pixel_error']``, see :func:`check_pixel_header`).
    """
    modality = meta.get("modality", "")
    sop = meta.get("sop_class_uid", "")
    if modality != "MG" and sop not in MG_SOP_CLASSES:
        raise InputError(path, f"not a mammogram: Modality is {modality or 'missing'!r} (expected 'MG')")
    if sop in _DBT_SOP_CLASSES or "tomosynthesis" in meta.get("flags", []):
        raise InputError(path, "breast tomosynthesis object: only 2-D mammograms are supported")
    if require_pixels and not meta.get("has_pixel_data", False):
        raise InputError(path, "missing pixel data (no PixelData element)")
    rows, cols = int(meta.get("rows") or 0), int(meta.get("columns") or 0)
    if rows <= 0 or cols <= 0:
        raise InputError(path, f"zero image dimensions (Rows={rows}, Columns={cols})")
    if implausible_size(rows, cols):
        raise InputError(path, f"implausible image dimensions for a mammogram (Rows={rows}, Columns={cols})")
    photometric = meta.get("photometric", "")
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise InputError(path, f"unsupported photometric interpretation {photometric or 'missing'!r} (expected MONOCHROME1 or MONOCHROME2)")
    bits = int(meta.get("bits_stored") or 0)
    if not 1 <= bits <= 16:
        raise InputError(path, f"unsupported Bits Stored {bits} (expected 1-16)")
    if int(meta.get("number_of_frames") or 1) > 1:
        raise InputError(path, f"multi-frame object ({meta.get('number_of_frames')} frames): only single 2-D images are supported")
    why = str(meta.get("pixel_error") or "")
    if why and (require_pixels or not why.startswith("missing pixel data")):
        raise InputError(path, why)
    return list(meta.get("flags", []))


# --------------------------------------------------------------------------- pixels


#: images larger than this go through the value table of :func:`read_dicom`
_TABLE_MIN_PIXELS = 4096


#: pydicom decoding plugins whose failures on a corrupt stream are Python errors (or, for
#: pylibjpeg-rle, a Rust panic that is caught), in order of preference. python-gdcm is not
#: here: it aborts or segfaults on some corrupt JPEG 2000 / JPEG-LS / JPEG streams.
SAFE_PLUGINS = ("pylibjpeg", "pyjpegls", "pillow", "pydicom")


def decoding_plugin(transfer_syntax: str) -> str:
    """The pydicom decoding plugin :func:`read_dicom` uses for a transfer syntax.

    ``''`` for uncompressed (or unknown) syntaxes, the first installed of
    :data:`SAFE_PLUGINS` that decodes the syntax, else ``'gdcm'`` when python-gdcm is the
    only one (JPEG Lossless): :func:`read_dicom` then decodes in a sandbox child.
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        uid = UID(str(transfer_syntax))
        if not uid.is_compressed:
            return ""
        available = set(get_decoder(uid).available_plugins)
    except (ValueError, NotImplementedError):
        return ""
    for name in SAFE_PLUGINS:
        if name in available:
            return name
    return "gdcm" if "gdcm" in available else ""


def _decode(ds: Any, path: str | Path, plugin: str = "") -> np.ndarray:
    from pydicom.uid import UID

    ts = UID(_transfer_syntax(ds))
    ts_name = f"{ts.name} ({ts})" if ts and ts.is_valid else (str(ts) or "missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if plugin:
                ds.pixel_array_options(decoding_plugin=plugin)
            arr = ds.pixel_array
    except NotImplementedError as e:
        raise InputError(path, f"unsupported transfer syntax {ts_name}: no decoder ({_first_line(e)})") from None
    except RuntimeError as e:
        text = str(e)
        if "exceptions were raised by all" in text:
            # pydicom lists each plugin's error on the following lines
            detail = "; ".join(x.strip() for x in text.split("\n")[1:] if x.strip())
            detail = re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"<\1>", detail)[:300]
            raise InputError(path, f"truncated or corrupt pixel data ({ts_name}): {detail or _first_line(e)}") from None
        msg = _first_line(e)
        if "plugin" in msg.lower() and ("no " in msg.lower() or "missing" in msg.lower() or "available" in msg.lower()):
            raise InputError(path, f"unsupported transfer syntax {ts_name}: no installed decoder can read it") from None
        raise InputError(path, f"cannot decode pixel data ({ts_name}): {msg}") from None
    except MemoryError:
        raise InputError(path, f"out of memory while decoding the pixel data ({ts_name})") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - truncated, corrupt, inconsistent
        msg = _first_line(e)
        if "could not broadcast" in msg or "cannot reshape" in msg:
            msg = f"the decoded stream does not hold Rows x Columns pixels ({msg})"
        else:
            msg = f"{type(e).__name__}: {msg}"
        raise InputError(path, f"truncated or corrupt pixel data ({ts_name}): {msg}") from None
    except BaseException as e:  # noqa: BLE001 - pyo3 PanicException (Rust decoders) escapes `except Exception`
        raise InputError(path, f"decoder panicked on corrupt pixel data ({ts_name}): {type(e).__name__}: {_first_line(e)}") from None
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise InputError(path, f"expected one 2-D grayscale frame, decoded array has shape {arr.shape}")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if (rows, cols) != tuple(arr.shape):
        raise InputError(path, f"decoded image is {arr.shape[0]} x {arr.shape[1]}, the header declares {rows} x {cols}")
    return arr


def _min_max(arr: np.ndarray) -> tuple[int, int]:
    """``(min, max)`` of integer pixel data in one pass (OpenCV) where it can, else NumPy."""
    if arr.ndim == 2 and arr.size and arr.dtype in (np.uint8, np.uint16, np.int16):
        import cv2

        lo, hi, _a, _b = cv2.minMaxLoc(np.ascontiguousarray(arr))
        return int(lo), int(hi)
    if not arr.size:
        return 0, 0
    return int(arr.min()), int(arr.max())


def _mask_bits(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Keep the low ``bits_stored`` bits (PS3.5 8.1.1); sign-extend signed data."""
    if bits_stored <= 0 or bits_stored >= arr.dtype.itemsize * 8:
        return arr
    if signed:
        u = arr.astype(np.int64) & ((1 << bits_stored) - 1)
        sign = 1 << (bits_stored - 1)
        return ((u ^ sign) - sign).astype(np.int32)
    if arr.dtype.kind == "u":
        return np.bitwise_and(arr, arr.dtype.type((1 << bits_stored) - 1))
    return (arr.astype(np.uint32) & ((1 << bits_stored) - 1)).astype(np.uint32)


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Map values to [0, 1] with a DICOM window (PS3.3 C.11.2.1.2.1, C.11.2.1.3)."""
    function = (function or "LINEAR").upper()
    if not (math.isfinite(center) and math.isfinite(width)):
        raise ValueError(f"window center / width not finite (C={center}, W={width})")
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError("SIGMOID window width must be > 0")
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError("LINEAR_EXACT window width must be > 0")
        y = (x - (center - width / 2.0)) / width
    else:  # LINEAR
        if width < 1:
            raise ValueError("LINEAR window width must be >= 1")
        y = (x - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _multi(v: Any) -> list[float]:
    if v is None or v == "":
        return []
    if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
        return [float(x) for x in v]
    return [float(v)]


def _lut_bits(item: Any) -> int:
    desc = item.get("LUTDescriptor")
    try:
        return int(desc[2])
    except (TypeError, IndexError, ValueError):
        return 16


def read_dicom(
    path: str | Path,
    *,
    voi: Literal["auto", "none"] | int | str = "auto",
    prefer_lut: bool = True,
    validate: bool = True,
) -> Any:
    """Read a mammogram and return display-ready pixels.

    Parameters
    ----------
    path
        A DICOM file.
    voi
        ``"auto"`` (default): the VOI LUT Sequence if present (and ``prefer_lut``), else the
        first window (Window Center / Width with the VOI LUT Function), else the min-max
        range of the modality values. An ``int``: that window (or VOI LUT Sequence item
        when no windows exist), 0-based. ``"none"``: no VOI; modality values are scaled
        by the full range of *Bits Stored* (or their min-max when a rescale is present).
    prefer_lut
        In ``"auto"`` mode, use a VOI LUT Sequence before windows when both exist.
    validate
        Reject non-mammograms (see :func:`validate_mammogram`).

    Returns
    -------
    LoadedImage
        ``pixels`` float32 (rows, columns) in [0, 1], dense tissue bright; ``meta`` the
        dict of :func:`read_dicom_metadata` plus ``voi_applied`` (a description) and
        ``height``, ``width``, ``bits``.

    Raises
    ------
    InputError
        For any unreadable, truncated or unsupported file (named, with the reason).
    """
    ds = _read_header(path, stop_before_pixels=False)
    meta = read_dicom_metadata(path, dataset=ds)
    if validate:
        validate_mammogram(meta, path)
    else:
        if not meta["has_pixel_data"]:
            raise InputError(path, "missing pixel data (no PixelData element)")
        if meta["photometric"] not in SUPPORTED_PHOTOMETRIC:
            raise InputError(path, f"unsupported photometric interpretation {meta['photometric'] or 'missing'!r}")
    check_pixel_header(ds, path)
    plugin = decoding_plugin(meta["transfer_syntax"])
    if plugin == "gdcm" and not in_sandbox():
        # python-gdcm is the only installed decoder for this syntax (JPEG Lossless), and a
        # corrupt stream can abort or segfault it: decode in a child process that may die
        from mammolens.io._isolation import run_isolated

        out = run_isolated(_read_dicom_task, (str(path), {"voi": voi, "prefer_lut": prefer_lut, "validate": validate}))
        if isinstance(out, InputError):
            raise out
        return out
    try:
        return _render(ds, meta, path, plugin, voi=voi, prefer_lut=prefer_lut)
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, "out of memory while decoding (image too large?)") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, OverflowError, ZeroDivisionError) as e:
        # inconsistent Modality LUT / VOI attributes (pydicom's LUT code raises all of these)
        raise InputError(path, f"invalid Modality LUT / VOI attributes ({type(e).__name__}: {_first_line(e)})") from None


def _read_dicom_task(task: tuple[str, dict[str, Any]]) -> Any:
    """:func:`read_dicom` of ``(path, options)``, run in a sandbox child."""
    path, opts = task
    return read_dicom(path, **opts)


def _render(ds: Any, meta: dict[str, Any], path: str | Path, plugin: str, *, voi: Any, prefer_lut: bool) -> Any:
    """Decode and run the display pipeline (steps 2-5 of the module docstring)."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    raw = _decode(ds, path, plugin)
    signed = meta["pixel_representation"] == 1
    lo_hi = _min_max(raw) if raw.dtype.kind == "u" and not signed else None
    if lo_hi is None or lo_hi[1] >> max(0, int(meta["bits_stored"] or 0)):
        # bits above Bits Stored are set (or signed data): mask / sign-extend them. Most
        # decoders already clear them, and the range check is the pass the table needs
        raw = _mask_bits(raw, meta["bits_stored"], signed)
        lo_hi = None
    # Integer data of <= 16 bits: run rescale -> VOI -> inversion once over the stored
    # values [min, max] and apply it with one table lookup. Same numbers as running it on
    # every pixel in float64, ~5x faster on full-field images.
    table_lo: int | None = None
    if raw.dtype.kind in "ui" and raw.dtype.itemsize <= 2 and raw.size > _TABLE_MIN_PIXELS:
        table_lo, table_hi = lo_hi or _min_max(raw)
        full_raw, raw = raw, np.arange(table_lo, table_hi + 1, dtype=raw.dtype)

    for kw in ("RescaleSlope", "RescaleIntercept"):
        v = ds.get(kw, None)
        if v not in (None, "") and not math.isfinite(float(v)):  # pydicom would skip it silently
            raise InputError(path, f"invalid Modality LUT / rescale ({kw} is not finite: {v})")
    try:
        has_modality = "ModalityLUTSequence" in ds or ("RescaleSlope" in ds or "RescaleIntercept" in ds)
        if has_modality:
            values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
        else:
            values = raw.astype(np.float64)
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"invalid Modality LUT / rescale ({type(e).__name__}: {e})") from None

    centers = _multi(ds.get("WindowCenter"))
    widths = _multi(ds.get("WindowWidth"))
    n_win = min(len(centers), len(widths))
    luts = list(ds.get("VOILUTSequence") or [])
    function = _str(ds, "VOILUTFunction").upper() or "LINEAR"

    def full_range() -> np.ndarray:
        bits = meta["bits_stored"] or 16
        if has_modality:
            lo, hi = float(values.min()), float(values.max())
        elif signed:
            lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
        else:
            lo, hi = 0.0, 2.0**bits - 1
        return np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)

    def use_lut(i: int) -> np.ndarray:
        item = luts[i]
        out = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds, index=i), dtype=np.float64)
        data = item.get("LUTData", None)
        if isinstance(data, bytes):
            data = np.frombuffer(data, dtype="<u2" if _lut_bits(item) > 8 else np.uint8)
        top = max(2.0 ** _lut_bits(item) - 1, float(np.max(np.asarray(data, dtype=np.float64))) if data is not None and len(data) else 1.0)
        return np.clip(out / max(top, 1.0), 0, 1).astype(np.float32)

    def use_window(i: int) -> np.ndarray:
        return _window(values, centers[i], widths[i], function)

    try:
        if voi == "none":
            pixels, applied = full_range(), "none (bit-depth range)"
        elif isinstance(voi, int | np.integer) and not isinstance(voi, bool):
            i = int(voi)
            if n_win:
                if not 0 <= i < n_win:
                    raise InputError(path, f"window index {i} out of range: the file has {n_win} window(s)")
                pixels, applied = use_window(i), f"window {i} (C={centers[i]:g}, W={widths[i]:g}, {function})"
            elif luts:
                if not 0 <= i < len(luts):
                    raise InputError(path, f"VOI LUT index {i} out of range: the file has {len(luts)} VOI LUT(s)")
                pixels, applied = use_lut(i), f"VOI LUT {i}"
            else:
                raise InputError(path, f"window index {i} requested but the file has no window or VOI LUT")
        elif voi == "auto":
            if luts and (prefer_lut or not n_win):
                pixels, applied = use_lut(0), "VOI LUT 0"
            elif n_win:
                pixels, applied = use_window(0), f"window 0 (C={centers[0]:g}, W={widths[0]:g}, {function})"
            else:
                lo, hi = float(values.min()), float(values.max())
                pixels = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)
                applied = "min-max (no VOI in file)"
        else:
            raise ValueError(f"voi must be 'auto', 'none' or a window index, got {voi!r}")
    except InputError:
        raise
    except ValueError as e:
        raise InputError(path, f"invalid VOI (window / VOI LUT): {e}") from None

    shape = _str(ds, "PresentationLUTShape").upper()
    photometric = meta["photometric"]
    if photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE"):
        pixels = 1.0 - pixels
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    # checked before the table is applied (every stored value is in it; a full-field
    # image has ~200x more pixels than the table has entries)
    if not np.isfinite(pixels).all():
        # e.g. a NaN Window Width or Rescale Slope: never hand NaN pixels on as an image
        raise InputError(path, f"non-finite pixel values (NaN or infinity) after the Modality LUT / VOI ({applied})")
    if table_lo is not None:
        if full_raw.dtype.kind == "u":
            table = np.empty(table_lo + pixels.size, dtype=np.float32)
            table[table_lo:] = pixels
            pixels = table[full_raw]
        else:
            pixels = pixels[full_raw.astype(np.int32) - table_lo]
    meta = dict(meta)
    meta.update(height=int(pixels.shape[0]), width=int(pixels.shape[1]), bits=int(meta["bits_stored"]),
                voi_applied=applied, format="dicom", inverted=bool(photometric == "MONOCHROME1" or shape == "INVERSE"))
    return LoadedImage(pixels=pixels, meta=meta)
