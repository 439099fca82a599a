"""Synthetic mammography: a DICOM writer for fixtures and a realistic synthetic cohort.

:func:`write_mammogram_dicom` writes one valid *Digital Mammography X-Ray Image Storage*
file (For Presentation or For Processing) with proper file meta, in any of the usual
transfer syntaxes. Other modules' tests use it to write fixtures.

:func:`synthesize_cohort` writes the built-in synthetic screening cohort (see
``docs/synth.md``): four views per exam from three vendors, BI-RADS density A-D,
malignant findings (spiculated masses, microcalcification clusters) and benign
look-alikes (circumscribed masses, scattered calcifications), with annotations in
original pixel coordinates and a manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "TRANSFER_SYNTAXES",
    "deterministic_uid",
    "write_mammogram_dicom",
]

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

#: short names accepted for ``transfer_syntax`` (UIDs are accepted too)
TRANSFER_SYNTAXES: dict[str, str] = {
    "explicit": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "implicit": "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "jpeg_lossless": "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (SV1)
    "jpeg_lossless_p14": "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
}

#: CID 4014 codes written in the View Code Sequence
_VIEW_SCT = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medial-lateral"),
    "LM": ("399352003", "latero-medial"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally"),
    "XCCM": ("399101009", "cranio-caudal exaggerated medially"),
    "LMO": ("399099002", "latero-medial oblique"),
    "FB": ("399196006", "caudo-cranial"),
}
_MODIFIER_SCT = {
    "magnification": ("399163009", "Magnification"),
    "spot": ("399055006", "Spot Compression"),
    "implant": ("399209000", "Implant Displaced"),
}

_UID_NAMESPACE = __import__("uuid").UUID("6f0c2b7e-4d1a-5b8e-9a3c-6d616d6d6f6c")
_IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1447.1"  # mammolens implementation class


def deterministic_uid(*parts: object) -> str:
    """A reproducible DICOM UID ``2.25.<int>`` derived from ``parts``.

    The integer is a name-based (SHA-1, version 5) UUID of the parts, as PS3.5 B.2 allows
    for UUID-derived UIDs; the same parts always give the same UID.
    """
    import uuid

    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def _resolve_ts(transfer_syntax: str) -> Any:
    from pydicom.uid import UID

    key = str(transfer_syntax).strip()
    value = TRANSFER_SYNTAXES.get(key.lower().replace("-", "").replace(" ", "_"), key)
    if not all(part.isdigit() for part in value.split(".")):
        raise ValueError(f"unknown transfer syntax {transfer_syntax!r}; use a UID or one of {sorted(TRANSFER_SYNTAXES)}")
    uid = UID(value)
    if not uid.is_valid or not uid.is_transfer_syntax:
        raise ValueError(f"unknown transfer syntax {transfer_syntax!r}; use a UID or one of {sorted(TRANSFER_SYNTAXES)}")
    return uid


def _code_item(value: str, meaning: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def write_mammogram_dicom(
    path: str | Path,
    pixels_uint16: np.ndarray,
    *,
    manufacturer: str,
    laterality: str,
    view: str,
    patient_id: str,
    study_uid: str,
    sop_uid: str | None = None,
    series_uid: str | None = None,
    age: float | int | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    transfer_syntax: str = "explicit",
    window: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
    window_explanations: Sequence[str] | None = None,
    voi_function: str | None = None,
    voi_lut: np.ndarray | None = None,
    rescale: tuple[float, float] | None = None,
    presentation_intent: str = "FOR PRESENTATION",
    presentation_lut_shape: str | None = "auto",
    modality: str = "MG",
    manufacturer_model: str = "",
    pixel_spacing: float | None = None,
    study_date: str | None = None,
    birth_date: str | None = None,
    implant: bool = False,
    view_modifiers: Sequence[str] = (),
    series_description: str | None = None,
    instance_number: int = 1,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one valid MG DICOM file (Digital Mammography X-Ray Image Storage).

    Parameters
    ----------
    path
        Output file (parent folders are created).
    pixels_uint16
        The **stored** values, 2-D unsigned integers below ``2**bits_stored`` (for a
        ``MONOCHROME1`` file, pass values where dense tissue is *low*).
    manufacturer
        Written as-is into *Manufacturer* (e.g. ``"HOLOGIC, Inc."``).
    laterality, view
        ``"L"``/``"R"``; ``"CC"``, ``"MLO"``, ... (ViewPosition and the CID 4014 code).
    patient_id, study_uid, sop_uid, series_uid
        Identifiers; ``sop_uid`` / ``series_uid`` default to UIDs derived reproducibly
        from the others.
    age
        Years; written as *Patient's Age* (``'056Y'``).
    photometric
        ``"MONOCHROME2"`` or ``"MONOCHROME1"``.
    bits_stored
        Default: the smallest of 8, 10, 12, 14, 16 that holds the maximum value.
    transfer_syntax
        A UID or ``"explicit"``, ``"implicit"``, ``"rle"``, ``"jpeg2000"`` (lossless),
        ``"jpegls"`` (lossless), ``"jpeg_lossless"`` (Process 14 SV1, .70) or
        ``"jpeg_lossless_p14"`` (.57). RLE / JPEG-LS / JPEG 2000 are encoded by pydicom
        (native RLE, pyjpegls, pylibjpeg-openjpeg); JPEG Lossless by python-gdcm.
    window
        One ``(center, width)`` or several (multi-valued Window Center / Width).
    voi_function
        *VOI LUT Function*: ``"LINEAR"``, ``"LINEAR_EXACT"`` or ``"SIGMOID"``.
    voi_lut
        Optional VOI LUT (1-D uint16, first mapped value 0) written as a VOI LUT Sequence.
    rescale
        Optional ``(slope, intercept)`` (Rescale Slope / Intercept, type ``US``). The
        Digital Mammography IOD requires them (DX Image module): pass ``(1.0, 0.0)`` for a
        conformant file, as :func:`synthesize_cohort` does (None makes the QC fixtures of
        files without a Modality LUT).
    presentation_intent
        ``"FOR PRESENTATION"`` (SOP class ...1.2) or ``"FOR PROCESSING"`` (...1.2.1).
    presentation_lut_shape
        ``"auto"`` (IDENTITY for MONOCHROME2, INVERSE for MONOCHROME1), a value, or None
        to omit the element.
    modality
        Normally ``"MG"`` (other values make QC fixtures).
    extra
        Additional elements by keyword (``{"BreastImplantPresent": "YES"}``); a value of
        None deletes the element (e.g. ``{"PixelData": None}`` for a fixture without pixels).

    Returns
    -------
    Path
        The written file.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DSequence
    from pydicom.uid import ExplicitVRLittleEndian

    arr = np.asarray(pixels_uint16)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"pixels must be a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "ui":
        raise ValueError(f"pixels must be integers, got {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError("pixels must be non-negative (unsigned stored values)")
    vmax = int(arr.max()) if arr.size else 0
    if vmax > 65535:
        raise ValueError("pixels must fit in 16 bits")
    if bits_stored is None:
        bits_stored = next(b for b in (8, 10, 12, 14, 16) if vmax < 2**b)
    if not 1 <= int(bits_stored) <= 16:
        raise ValueError(f"bits_stored must be 1-16, got {bits_stored}")
    if vmax >= 2**bits_stored:
        raise ValueError(f"pixel value {vmax} does not fit in bits_stored={bits_stored}")
    photometric = photometric.upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    laterality = laterality.upper()
    view = view.upper()
    intent = presentation_intent.upper()
    if intent not in ("FOR PRESENTATION", "FOR PROCESSING"):
        raise ValueError(f"presentation_intent must be 'FOR PRESENTATION' or 'FOR PROCESSING', got {presentation_intent!r}")
    ts = _resolve_ts(transfer_syntax)
    sop_class = MG_FOR_PRESENTATION if intent == "FOR PRESENTATION" else MG_FOR_PROCESSING
    series_uid = series_uid or deterministic_uid("series", study_uid, laterality, view)
    sop_uid = sop_uid or deterministic_uid("sop", study_uid, series_uid, patient_id, laterality, view, instance_number)

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = _IMPLEMENTATION_UID
    fm.ImplementationVersionName = "MAMMOLENS_01"

    ds = Dataset()
    ds.file_meta = fm
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date or ""
    ds.ContentDate = study_date or ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.InstitutionName = "mammolens synthetic"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description if series_description is not None else f"{laterality} {view}".strip()
    ds.ManufacturerModelName = manufacturer_model
    ds.PatientName = f"SYNTH^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date or ""
    ds.PatientSex = "F"
    if age is not None and not (isinstance(age, float) and np.isnan(age)):
        ds.PatientAge = f"{int(age):03d}Y"
    ds.BodyPartExamined = "BREAST"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ViewPosition = view
    ds.BreastImplantPresent = "YES" if implant else "NO"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number)
    if laterality in ("L", "R"):  # chest wall on the image's left for L, right for R
        down = ("R" if laterality == "L" else "L") if view in ("CC", "XCCL", "XCCM") else "F"
        ds.PatientOrientation = ["A" if laterality == "L" else "P", down]
    else:
        ds.PatientOrientation = ""
    # image-level laterality only: the MG IOD forbids the series-level Laterality (0020,0060)
    # when Image Laterality is present (PS3.3 C.7.3.1, C.8.11.7)
    ds.ImageLaterality = laterality
    ds.OrganExposed = "BREAST"
    ds.AnatomicRegionSequence = DSequence([_code_item("76752008", "Breast")])  # CID 4013
    # DX Image / DX Detector / Acquisition Context modules (required by the MG IOD)
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower stored values = less X-ray intensity (dense tissue dark in the stored
    # values, as in MONOCHROME1); -1: higher values = less intensity (MONOCHROME2)
    ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME1" else -1
    ds.DetectorType = "DIRECT"
    ds.AcquisitionContextSequence = DSequence([])
    ds.BurnedInAnnotation = "NO"
    ds.PresentationIntentType = intent
    if pixel_spacing:
        ds.ImagerPixelSpacing = [f"{pixel_spacing:.4f}", f"{pixel_spacing:.4f}"]
        ds.PixelSpacing = [f"{pixel_spacing:.4f}", f"{pixel_spacing:.4f}"]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Imager pixel spacing corrected for magnification (factor 1.0)"
        ds.EstimatedRadiographicMagnificationFactor = "1.0"
    if view in _VIEW_SCT:
        item = _code_item(*_VIEW_SCT[view])
        mods = [_code_item(*_MODIFIER_SCT[m]) for m in view_modifiers if m in _MODIFIER_SCT]
        item.ViewModifierCodeSequence = DSequence(mods)
        ds.ViewCodeSequence = DSequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleIntercept = f"{float(rescale[1]):g}"
        ds.RescaleSlope = f"{float(rescale[0]):g}"
        ds.RescaleType = "US"
    if window is not None:
        wins = [window] if isinstance(window[0], int | float | np.integer | np.floating) else list(window)  # type: ignore[index]
        ds.WindowCenter = [f"{float(c):g}" for c, _ in wins] if len(wins) > 1 else f"{float(wins[0][0]):g}"
        ds.WindowWidth = [f"{float(w):g}" for _, w in wins] if len(wins) > 1 else f"{float(wins[0][1]):g}"
        if window_explanations:
            ds.WindowCenterWidthExplanation = list(window_explanations) if len(window_explanations) > 1 else window_explanations[0]
    if voi_function:
        ds.VOILUTFunction = voi_function.upper()
    if voi_lut is not None:
        lut = np.asarray(voi_lut).astype(np.uint16)
        item = Dataset()
        item.add_new("LUTDescriptor", "US", [len(lut) if len(lut) < 65536 else 0, 0, 16])
        item.LUTExplanation = "mammolens"
        item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
        ds.VOILUTSequence = DSequence([item])
    shape = presentation_lut_shape
    if shape == "auto":
        shape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    if shape:
        ds.PresentationLUTShape = shape
    ds.LossyImageCompression = "00"
    stored = arr.astype(np.uint16 if ds.BitsAllocated == 16 else np.uint8)
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated == 16 else "OB"

    if ts != ExplicitVRLittleEndian:
        _encode(ds, stored, ts)
    for key, value in (extra or {}).items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def _encode(ds: Any, arr: np.ndarray, ts: Any) -> None:
    from pydicom.uid import (
        JPEG2000Lossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        RLELossless,
    )

    if ts == "1.2.840.10008.1.2":  # implicit VR: no pixel encoding change
        ds.file_meta.TransferSyntaxUID = ts
        return
    if ts == RLELossless:
        try:  # pylibjpeg-rle (C) is ~50x faster than pydicom's pure-Python encoder
            ds.compress(ts, arr, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        except (RuntimeError, ValueError):
            ds.compress(ts, arr, encoding_plugin="pydicom", generate_instance_uid=False)
    elif ts in (JPEGLSLossless, JPEG2000Lossless):
        ds.compress(ts, arr, generate_instance_uid=False)
    elif ts in (JPEGLosslessSV1, "1.2.840.10008.1.2.4.57"):
        _encode_gdcm_jpeg_lossless(ds, ts)
    else:
        raise ValueError(f"cannot encode transfer syntax {ts.name} ({ts}): lossy and other syntaxes are not written")


def _encode_gdcm_jpeg_lossless(ds: Any, ts: Any) -> None:
    """JPEG Lossless (Process 14 / SV1) through python-gdcm (pydicom has no encoder)."""
    import gdcm
    import pydicom
    from pydicom.encaps import encapsulate, generate_fragmented_frames

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    fd, src = tempfile.mkstemp(suffix=".dcm")
    os.close(fd)
    dst = src + ".jpeg.dcm"
    try:
        Path(src).write_bytes(buf.getvalue())
        reader = gdcm.ImageReader()
        reader.SetFileName(src)
        if not reader.Read():
            raise RuntimeError("gdcm could not read the uncompressed file")
        change = gdcm.ImageChangeTransferSyntax()
        target = gdcm.TransferSyntax.JPEGLosslessProcess14_1 if ts.endswith(".70") else gdcm.TransferSyntax.JPEGLosslessProcess14
        change.SetTransferSyntax(gdcm.TransferSyntax(target))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("gdcm could not encode JPEG Lossless")
        writer = gdcm.ImageWriter()
        writer.SetFileName(dst)
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("gdcm could not write the JPEG Lossless file")
        enc = pydicom.dcmread(dst)
        frames = [b"".join(f) for f in generate_fragmented_frames(enc.PixelData, number_of_frames=1)]
    finally:
        for f in (src, dst):
            try:
                os.unlink(f)
            except OSError:
                pass
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = ts


# =========================================================================== the cohort
#
# Physical picture (everything in millimetres, then sampled on the vendor's grid):
#
# * the compressed breast is a slab of thickness T whose edge is a half-cylinder, so the
#   projected thickness falls off as T * sqrt(1 - (1 - d/R)^2) within R = T/2 of the
#   skin (d = distance to the outline); the outline is a semi-ellipse in CC and a
#   hanging, obliquely cut ellipse in MLO with the pectoral muscle as a triangle with a
#   slightly convex edge in the upper chest-wall corner;
# * fibroglandular tissue is a volume fraction g(x, y) from power-law (1/f^beta,
#   beta ~ 3, Burgess 2001) noise, partly warped into streaks radiating from the nipple,
#   thresholded to the dense-area fraction of the BI-RADS category and kept away from
#   the subcutaneous fat layer;
# * the log-signal is the projected attenuation sum mu * path (fat 0.046/mm, gland
#   0.080/mm, muscle 0.085/mm, calcium ~1.2/mm at ~20 keV), lesions add their own paths;
#   vendors' "for presentation" processing is emulated by partial thickness
#   equalisation, detector blur, quantum noise and a vendor-specific tone curve.
#
# References: Burgess AE, Jacobson FL, Judy PF. Human observer detection experiments with
# mammograms and power-law noise. Med Phys 2001;28:419-437. Bakic PR et al. Mammogram
# synthesis using a 3D simulation. Med Phys 2002;29:2131-2139. Johns PC, Yaffe MJ. X-ray
# characterisation of normal and neoplastic breast tissues. Phys Med Biol 1987;32:675.

MU_FAT, MU_GLAND, MU_MUSCLE, MU_SKIN, MU_MASS, MU_CALC = 0.046, 0.080, 0.085, 0.080, 0.084, 1.2
#: demo-visibility boosts at conspicuity 1.0 (so findings survive ~1 mm/px downsampling)
MASS_GAIN, CALC_GAIN = 2.4, 4.0

#: BI-RADS density -> range of the dense (fibroglandular) area fraction
DENSITY_FRACTION = {"A": (0.04, 0.15), "B": (0.15, 0.35), "C": (0.35, 0.6), "D": (0.6, 0.85)}


@dataclass(frozen=True)
class Vendor:
    """A vendor's acquisition and "for presentation" characteristics."""

    name: str
    manufacturer: str
    model: str
    rows: int
    columns: int
    spacing: float  # mm at full size
    small_scale: float  # matrix scale of --size small
    bits_stored: int
    photometric: str
    voi_function: str
    lo: int  # stored value of the fattest tissue (before inversion)
    hi: int  # stored value of the densest tissue
    background: int
    gamma: float
    equalization: float  # fraction of the thickness fall-off removed by processing
    noise: float  # quantum-noise sd as a fraction of the tissue range
    blur: float  # detector blur sd (pixels of the full matrix)
    syntaxes: tuple[tuple[str, float], ...]
    share: float  # share of patients


VENDORS: dict[str, Vendor] = {
    "Hologic": Vendor("Hologic", "HOLOGIC, Inc.", "Selenia Dimensions", 4096, 3328, 0.065, 0.16, 12, "MONOCHROME2",
                      "LINEAR", 700, 3900, 40, 1.0, 0.55, 0.012, 1.0, (("jpeg2000", 0.7), ("explicit", 0.3)), 0.45),
    "GE": Vendor("GE", "GE MEDICAL SYSTEMS", "Senographe Essential", 3062, 2394, 0.100, 0.20, 14, "MONOCHROME2",
                 "SIGMOID", 2200, 13500, 60, 0.85, 0.65, 0.010, 0.8, (("jpegls", 0.5), ("explicit", 0.5)), 0.30),
    "Siemens": Vendor("Siemens", "SIEMENS", "Mammomat Inspiration", 3584, 2816, 0.085, 0.18, 16, "MONOCHROME1",
                      "LINEAR", 9000, 56000, 200, 1.15, 0.45, 0.014, 1.2, (("rle", 0.7), ("explicit", 0.3)), 0.25),
}

VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))


@dataclass
class SynthResult:
    """What :func:`synthesize_cohort` wrote."""

    out_dir: Path
    manifest_path: Path
    annotations_path: Path
    readme_path: Path
    n_patients: int
    n_images: int
    n_malignant_exams: int
    n_positive_images: int
    n_benign_findings: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    vendors: dict[str, int] = field(default_factory=dict)
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    resumed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("out_dir", "manifest_path", "annotations_path", "readme_path"):
            d[k] = str(d[k])
        return d


# --------------------------------------------------------------------------- noise


@lru_cache(maxsize=16)
def _spectrum(h: int, w: int, spacing: float, beta: float, f0: float) -> np.ndarray:
    fy = np.fft.fftfreq(h, d=spacing).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w, d=spacing).astype(np.float32)[None, :]
    f2 = fx * fx + fy * fy + np.float32(f0 * f0)
    return (f2 ** np.float32(-beta / 4.0)).astype(np.float32)  # amplitude ~ f^(-beta/2)


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], spacing: float, *, beta: float = 3.0,
                    f0: float = 0.01) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian noise with power spectrum ~ 1/f^beta (f in cycles/mm)."""
    h, w = shape
    import scipy.fft

    white = rng.standard_normal((h, w), dtype=np.float32)
    spec = scipy.fft.rfft2(white) * _spectrum(h, w, float(spacing), float(beta), float(f0))
    out = scipy.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    out -= out.mean()
    sd = float(out.std())
    return out / (sd if sd > 0 else 1.0)


# --------------------------------------------------------------------------- anatomy


@dataclass
class BreastShape:
    """Per-breast anatomy shared by its CC and MLO views (mm)."""

    depth: float  # nipple-to-chest-wall distance in CC
    half_height: float  # CC half-extent along the chest wall
    thickness: float  # compressed thickness
    density: str
    dense_fraction: float
    wobble: tuple[float, ...]  # outline harmonics
    cc_offset: float  # vertical offset of the CC centre (fraction of image height)
    mlo_center: float  # MLO centre (fraction of image height)
    pec_width: float  # fraction of the top breast width
    pec_height: float  # fraction of image height
    pec_curve: float


def _breast_mask_and_distance(shape: BreastShape, view: str, h: int, w: int, s: float) -> tuple[np.ndarray, ...]:
    """Breast mask, distance to the skin (mm), the outline x(y) and the pectoral mask (canonical frame)."""
    import cv2

    yy = (np.arange(h, dtype=np.float32) + 0.5) * s
    xx = (np.arange(w, dtype=np.float32) + 0.5) * s
    H = h * s
    phase = np.linspace(0, 2 * np.pi, h, dtype=np.float32)
    wob = 1.0 + sum(a * np.sin((k + 1) * phase + a * 37.0) for k, a in enumerate(shape.wobble))
    if view == "CC":
        yc = H * (0.5 + shape.cc_offset)
        b = min(shape.half_height, 0.48 * H)
        yn = (yy - yc) / b
        xb = shape.depth * np.sqrt(np.clip(1 - yn**2, 0, 1)) * wob
    else:
        yc = H * shape.mlo_center
        a = shape.depth * 1.0
        b_up, b_down = 1.15 * yc, min(0.42 * H, H - yc - 0.03 * H)
        yn = np.where(yy < yc, (yy - yc) / b_up, (yy - yc) / b_down)
        xb = a * np.sqrt(np.clip(1 - yn**2, 0, 1)) ** 0.85 * wob
    xb = np.minimum(xb, w * s - 3.0)
    mask = (xx[None, :] <= xb[:, None]).astype(np.uint8)
    # distance to the skin: the breast continues beyond the chest-wall edge (and the top in MLO)
    pad = 64
    top = pad if view != "CC" else 0
    big = np.pad(mask, ((top, 0), (pad, 0)), mode="edge")
    big[:, :pad] = np.where(big[:, pad:pad + 1] > 0, 1, 0)
    dist = cv2.distanceTransform(big, cv2.DIST_L2, 5)[top:, pad:] * s
    pec = np.zeros((h, w), dtype=np.float32)
    if view == "MLO":
        top_w = float(xb[0]) * shape.pec_width
        ph = shape.pec_height * H
        xp = top_w * np.clip(1 - yy / ph, 0, 1) ** shape.pec_curve
        # soft edge over ~1.5 mm
        pec = np.clip((xp[:, None] - xx[None, :]) / 1.5 + 0.5, 0, 1).astype(np.float32) * mask
    return mask, dist.astype(np.float32), xb, pec, yc


def _render_breast(rng: np.random.Generator, shape: BreastShape, view: str, h: int, w: int, s: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """Projected attenuation without lesions; returns (P, mask, dist, xb, yc, thickness)."""
    import cv2

    mask, dist, xb, pec, yc = _breast_mask_and_distance(shape, view, h, w, s)
    T = shape.thickness
    R = T / 2.0
    t = T * np.sqrt(np.clip(1 - (1 - np.clip(dist / R, 0, 1)) ** 2, 0, 1)) * mask
    # fibroglandular fraction: isotropic clutter + streaks radiating from the nipple, made on
    # a grid of >= 0.8 mm (power-law clutter has little power at finer scales) and upsampled
    cs = max(s, 0.8)
    ch, cw = max(8, int(round(h * s / cs))), max(8, int(round(w * s / cs)))
    iso = power_law_noise(rng, (ch, cw), cs, beta=3.0)
    base = power_law_noise(rng, (ch, cw), cs, beta=2.6)
    nip_y = yc if view == "CC" else yc + 0.1 * h * s
    nip_x = float(np.max(xb))
    cyy, cxx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    dy, dx = (cyy + 0.5) * (h * s / ch) - nip_y, (cxx + 0.5) * (w * s / cw) - nip_x
    rho = np.sqrt(dx * dx + dy * dy)
    phi = np.arctan2(dy, -dx)
    map_x = ((phi * 60.0 / cs) % cw).astype(np.float32)
    map_y = ((rho / 2.5 / cs) % ch).astype(np.float32)
    streak = cv2.remap(base, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    clutter = 0.8 * iso + 0.55 * streak
    if (ch, cw) != (h, w):
        clutter = cv2.resize(clutter, (w, h), interpolation=cv2.INTER_CUBIC)
    xx = np.arange(w, dtype=np.float32)[None, :]
    # where gland lives: behind the nipple, away from subcutaneous fat and the chest wall
    depth_frac = np.clip((xx + 0.5) * s / np.maximum(xb[:, None], 1.0), 0, 1.2)
    env = 1 / (1 + np.exp(-(dist - 6.0) / 2.0))
    env *= np.exp(-((depth_frac - 0.5) / 0.42) ** 2)
    if view == "MLO":
        env *= 1 - 0.5 * pec
    env = env.astype(np.float32) * mask
    score = clutter + 2.2 * (env - 0.5)
    inside = mask > 0
    frac = shape.dense_fraction
    thr = float(np.quantile(score[inside], 1 - frac)) if inside.any() else 0.0
    g = (1 / (1 + np.exp(-(score - thr) / 0.45))).astype(np.float32) * np.clip(env * 1.6, 0, 1) * mask
    P = t * (MU_FAT + (MU_GLAND - MU_FAT) * g)
    P += (MU_MUSCLE - MU_FAT) * T * pec * 0.8
    # the skin: a ~1.5 mm shell seen tangentially at the outline
    P += MU_SKIN * 6.0 * np.exp(-dist / 0.9) * mask
    return P.astype(np.float32), mask, dist, xb, yc, t.astype(np.float32)


# --------------------------------------------------------------------------- findings


@dataclass
class Finding:
    """One finding in breast coordinates, shared by CC and MLO."""

    kind: str  # spiculated_mass | calcification_cluster | circumscribed_mass | scattered_calcifications
    pathology: str  # malignant | benign
    laterality: str
    depth: float  # fraction of the local breast depth (0 chest wall, 1 skin at the nipple)
    cc_pos: float  # vertical position in CC as a fraction of the half-height (-1..1)
    mlo_pos: float  # vertical position in MLO, fraction (-1..1)
    size: float  # mm: mass radius, or cluster / region extent
    contrast: float  # multiplier
    seed: int


def _place(f: Finding, view: str, mask: np.ndarray, dist: np.ndarray, xb: np.ndarray, yc: float, s: float,
           margin: float) -> tuple[float, float]:
    """Centre (x, y) in canonical pixels, inside the breast at least ``margin`` mm from the skin."""
    h, w = mask.shape
    H = h * s
    pos = f.cc_pos if view == "CC" else f.mlo_pos
    ext = (min(0.48 * H, H - yc) if pos > 0 else yc) * 0.75
    y_mm = float(np.clip(yc + pos * ext, 0.08 * H, 0.92 * H))
    for shrink in np.linspace(1.0, 0.2, 17):
        yi = int(np.clip(y_mm / s, 0, h - 1))
        x_mm = f.depth * shrink * float(xb[yi])
        xi = int(np.clip(x_mm / s, 0, w - 1))
        if mask[yi, xi] and dist[yi, xi] >= margin and x_mm >= margin * 0.6:
            return x_mm / s, y_mm / s
        y_mm = y_mm + (yc - y_mm) * 0.15  # move toward the centre too
    ys, xs = np.nonzero(dist >= min(margin, float(dist.max()) * 0.8))
    i = len(ys) // 2
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def _add_blob(P: np.ndarray, lm: np.ndarray, cx: float, cy: float, r_mm: float, s: float, rng: np.random.Generator,
              *, irregular: float, amp: float, sharp: bool) -> np.ndarray:
    """Add a (possibly irregular) sphere-like mass; return its boolean footprint."""
    h, w = P.shape
    R = r_mm / s
    n = int(math.ceil(R * 1.6)) + 3
    x0, x1 = max(0, int(cx) - n), min(w, int(cx) + n + 1)
    y0, y1 = max(0, int(cy) - n), min(h, int(cy) + n + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    ang = np.arctan2(dy, dx)
    rr = np.ones_like(ang)
    for k in range(2, 7):
        rr += irregular / k * rng.uniform(0.5, 1.0) * np.sin(k * ang + rng.uniform(0, 2 * np.pi))
    radius = R * rr
    ratio = np.sqrt(dx * dx + dy * dy) / np.maximum(radius, 1e-3)
    if sharp:
        path = np.sqrt(np.clip(1 - ratio**2, 0, 1))
    else:  # ill-defined margin
        path = np.sqrt(np.clip(1 - ratio**2, 0, 1)) * 0.7 + 0.3 * np.exp(-((ratio / 0.9) ** 4))
    add = (amp * 2 * r_mm * path).astype(np.float32)
    P[y0:y1, x0:x1] += add
    lm[y0:y1, x0:x1] = np.maximum(lm[y0:y1, x0:x1], add)
    foot = np.zeros(P.shape, dtype=bool)
    foot[y0:y1, x0:x1] = ratio <= 1.0
    return foot


def _add_spicules(P: np.ndarray, cx: float, cy: float, r_mm: float, s: float, rng: np.random.Generator,
                  amp: float) -> None:
    import cv2

    h, w = P.shape
    layer = np.zeros((h, w), dtype=np.float32)
    n = int(rng.integers(10, 22))
    for ang in np.sort(rng.uniform(0, 2 * np.pi, n)):
        length = r_mm * rng.uniform(1.4, 2.8)
        width_mm = rng.uniform(0.5, 1.1)
        bend = rng.normal(0, 0.25)
        pts = []
        for u in np.linspace(0.6, 1.0, 6) * 0 + np.linspace(0.0, 1.0, 6):
            rad = (0.6 * r_mm + u * (length - 0.6 * r_mm)) / s
            a = ang + bend * u * u
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        for k in range(len(pts) - 1):
            val = float(1.0 - 0.8 * k / (len(pts) - 1))
            p0 = (int(round(pts[k][0] * 16)), int(round(pts[k][1] * 16)))
            p1 = (int(round(pts[k + 1][0] * 16)), int(round(pts[k + 1][1] * 16)))
            cv2.line(layer, p0, p1, val, thickness=max(1, int(round(width_mm / s))), lineType=cv2.LINE_AA, shift=4)
    # path length of a thin strand ~ its width
    P += (amp * 3.5 * layer).astype(np.float32)


def _calc_positions(rng: np.random.Generator, n: int, extent: float, linear: bool) -> np.ndarray:
    """Calcification centres (mm, relative to the cluster centre)."""
    if linear:  # fine linear / branching: along 1-3 short ducts
        pts = []
        n_br = int(rng.integers(1, 4))
        for b in range(n_br):
            a = rng.uniform(0, 2 * np.pi)
            start = rng.normal(0, extent * 0.12, 2)
            m = n // n_br + (1 if b < n % n_br else 0)
            u = rng.uniform(-0.5, 0.5, m) * extent
            pts.append(start + np.c_[u * math.cos(a), u * math.sin(a)] + rng.normal(0, extent * 0.05, (m, 2)))
        return np.concatenate(pts, axis=0)[:n]
    # pleomorphic cluster: a compact elliptical cloud
    ax = rng.uniform(0.6, 1.0)
    p = rng.normal(0, 1, (n, 2)) * np.array([extent * 0.28, extent * 0.28 * ax])
    th = rng.uniform(0, np.pi)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    return p @ rot.T


def _add_calcs(P: np.ndarray, lm: np.ndarray, cx: float, cy: float, pts_mm: np.ndarray, radii_mm: np.ndarray, s: float,
               gain: float) -> np.ndarray:
    """Add calcifications (partial-volume Gaussian spots conserving mu * volume); return pixel centres."""
    h, w = P.shape
    out = []
    for (px, py), r in zip(pts_mm, radii_mm, strict=True):
        x, y = cx + px / s, cy + py / s
        if not (0 <= x < w and 0 <= y < h):
            continue
        sig = max(r / s, 0.6)  # pixels
        sig_mm = sig * s
        amp = gain * MU_CALC * (4.0 / 3.0) * math.pi * r**3 / (2 * math.pi * sig_mm**2)
        n = int(math.ceil(3 * sig)) + 1
        x0, x1 = max(0, int(x) - n), min(w, int(x) + n + 1)
        y0, y1 = max(0, int(y) - n), min(h, int(y) + n + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        spot = (amp * np.exp(-((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2) / (2 * sig * sig))).astype(np.float32)
        P[y0:y1, x0:x1] += spot
        lm[y0:y1, x0:x1] = np.maximum(lm[y0:y1, x0:x1], spot)
        out.append((x, y))
    return np.asarray(out, dtype=float).reshape(-1, 2)


def _render_finding(P: np.ndarray, lm: np.ndarray, f: Finding, view: str, geo: tuple, s: float, conspicuity: float
                    ) -> dict[str, Any] | list[dict[str, Any]] | None:
    """Draw one finding; return its annotation (canonical pixel coordinates)."""
    mask, dist, xb, yc = geo
    rng = np.random.default_rng([f.seed, 0 if view == "CC" else 1])
    shape_rng = np.random.default_rng(f.seed)  # same lesion shape in both views
    gain = conspicuity * f.contrast
    mgain, cgain = gain * MASS_GAIN, gain * CALC_GAIN
    if f.kind in ("spiculated_mass", "circumscribed_mass"):
        r = f.size * (1.0 if view == "CC" else shape_rng.uniform(0.92, 1.08))
        cx, cy = _place(f, view, mask, dist, xb, yc, s, margin=r + 4.0)
        if f.kind == "spiculated_mass":
            foot = _add_blob(P, lm, cx, cy, r, s, shape_rng, irregular=0.35, amp=(MU_MASS - MU_FAT) * mgain, sharp=False)
            _add_spicules(P, cx, cy, r, s, rng, amp=(MU_GLAND - MU_FAT) * mgain)
            return {"kind": "mass", "pathology": f.pathology, "footprint": foot, "center": (cx, cy), "r": r / s,
                    "source": "spiculated_mass"}
        _add_blob(P, lm, cx, cy, r, s, shape_rng, irregular=0.04, amp=(MU_MASS - MU_FAT) * mgain * 0.85, sharp=True)
        return {"kind": "mass", "pathology": f.pathology, "center": (cx, cy), "r": r / s, "source": "circumscribed_mass"}
    if f.kind == "calcification_cluster":
        n = int(shape_rng.integers(14, 34))
        linear = bool(shape_rng.random() < 0.4)
        pts = _calc_positions(shape_rng, n, f.size, linear)
        radii = shape_rng.uniform(0.22, 0.55, n)  # pleomorphic, fine to medium
        cx, cy = _place(f, view, mask, dist, xb, yc, s, margin=f.size / 2 + 4.0)
        if view == "MLO":  # the same cluster seen from another angle: foreshortened
            pts = pts * np.array([1.0, shape_rng.uniform(0.7, 1.0)])
        if shape_rng.random() < 0.35:  # faint associated density
            _add_blob(P, lm, cx, cy, f.size * 0.45, s, shape_rng, irregular=0.3, amp=(MU_MASS - MU_FAT) * mgain * 0.35, sharp=False)
        centres = _add_calcs(P, lm, cx, cy, pts, radii, s, cgain)
        return {"kind": "calcification", "pathology": f.pathology, "calcs": centres, "source": "calcification_cluster"}
    if f.kind == "scattered_calcifications":
        n = int(shape_rng.integers(5, 14))
        pts = shape_rng.uniform(-0.5, 0.5, (n, 2)) * f.size
        radii = shape_rng.uniform(0.35, 0.8, n)  # coarse, benign-appearing
        cx, cy = _place(f, view, mask, dist, xb, yc, s, margin=6.0)
        centres = _add_calcs(P, lm, cx, cy, pts, radii, s, cgain * 0.6)
        inside = [(x, y) for x, y in centres if mask[int(y), int(x)]]
        return [{"kind": "calcification", "pathology": f.pathology, "point": (x, y), "source": "scattered_calcifications"}
                for x, y in inside]
    raise ValueError(f"unknown finding kind {f.kind!r}")


# --------------------------------------------------------------------------- one image


def render_view(
    rng: np.random.Generator,
    vendor: Vendor,
    shape: BreastShape,
    view: str,
    laterality: str,
    findings: Sequence[Finding],
    *,
    scale: float,
    conspicuity: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray, float]:
    """Render one view: (stored uint16 pixels, annotations in stored pixel coordinates,
    uint8 lesion-mask image of malignant masses, pixel spacing in mm)."""
    import cv2

    h = int(round(vendor.rows * scale))
    w = int(round(vendor.columns * scale))
    s = vendor.spacing / scale
    P, mask, dist, xb, yc, t = _render_breast(rng, shape, view, h, w, s)
    lm = np.zeros_like(P)
    anns: list[dict[str, Any]] = []
    for f in findings:
        if f.laterality != laterality:
            continue
        a = _render_finding(P, lm, f, view, (mask, dist, xb, yc), s, conspicuity)
        if a is None:
            continue
        anns.extend(a if isinstance(a, list) else [a])
    P *= mask
    # "for presentation" processing: partial thickness equalisation, blur, noise, tone curve
    D = P + vendor.equalization * MU_FAT * (shape.thickness - t) * mask
    blur = max(vendor.blur * scale, 0.35)
    D = cv2.GaussianBlur(D, (0, 0), blur)
    inside = mask > 0
    lo = float(np.quantile(D[inside], 0.002))
    hi = float(np.quantile(D[inside], 0.995))
    v = np.clip((D - lo) / max(hi - lo, 1e-6) * 0.82, 0, 1)  # headroom for lesions above the densest tissue
    v = v + rng.standard_normal(v.shape, dtype=np.float32) * np.float32(vendor.noise) * (0.6 + 0.8 * v)
    v = np.clip(v, 0, 1) ** vendor.gamma
    stored = vendor.lo + v * (vendor.hi - vendor.lo)
    bg = vendor.background + np.abs(rng.standard_normal(v.shape, dtype=np.float32)) * np.float32(max(vendor.background * 0.1, 1.0))
    edge = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)
    stored = edge * stored + (1 - edge) * bg
    top = 2**vendor.bits_stored - 1
    stored = np.clip(np.rint(stored), 0, top)
    if vendor.photometric == "MONOCHROME1":
        stored = top - stored
    stored = stored.astype(np.uint16)
    # malignant-mass masks (the mass core) and annotation geometry in stored coordinates
    flip = laterality == "R"
    seg = np.zeros((h, w), dtype=np.uint8)
    out: list[dict[str, Any]] = []

    def fx(x: float) -> float:
        return (w - x) if flip else x

    for a in anns:
        if a["kind"] == "mass" and a["pathology"] == "malignant":
            seg[a["footprint"]] = 255
            out.append({"shape": "mask", "pathology": "malignant", "kind": "mass", "source": a["source"],
                        "center": [round(fx(a["center"][0]), 1), round(a["center"][1], 1)]})
        elif a["kind"] == "mass":
            out.append({"shape": "circle", "cx": round(fx(a["center"][0]), 1), "cy": round(a["center"][1], 1),
                        "r": round(a["r"] * 1.05, 1), "pathology": a["pathology"], "kind": "mass", "source": a["source"]})
        elif "calcs" in a:
            pts = np.asarray(a["calcs"], dtype=np.float32)
            if len(pts) == 0:
                continue
            pad = 1.5 / s + 1.0
            ring = np.concatenate([pts + pad * np.array([math.cos(t_), math.sin(t_)], dtype=np.float32)
                                   for t_ in np.linspace(0, 2 * np.pi, 12, endpoint=False)])
            hull = cv2.convexHull(ring.astype(np.float32)).reshape(-1, 2)
            poly = [[round(fx(float(x)), 1), round(float(y), 1)] for x, y in hull]
            out.append({"shape": "polygon", "points": poly, "pathology": a["pathology"], "kind": "calcification",
                        "source": a["source"], "n_calcifications": int(len(pts))})
        else:
            x, y = a["point"]
            out.append({"shape": "point", "x": round(fx(x), 1), "y": round(y, 1), "pathology": a["pathology"],
                        "kind": "calcification", "source": a["source"]})
    if flip:
        stored = np.ascontiguousarray(stored[:, ::-1])
        seg = np.ascontiguousarray(seg[:, ::-1])
    return stored, out, seg, s


# --------------------------------------------------------------------------- one patient


def _choice(rng: np.random.Generator, items: Sequence[tuple[str, float]]) -> str:
    names = [n for n, _ in items]
    p = np.array([w for _, w in items], dtype=float)
    return str(names[int(rng.choice(len(names), p=p / p.sum()))])


def _patient_plan(seed: int, index: int, *, prevalence: float, benign_rate: float, vendor_names: Sequence[str]
                  ) -> dict[str, Any]:
    """Everything random about one patient except pixel noise (deterministic in seed, index)."""
    rng = np.random.default_rng([seed, index, 1])
    vendor = _choice(rng, [(v, VENDORS[v].share) for v in vendor_names])
    ts = _choice(rng, VENDORS[vendor].syntaxes)
    age = int(rng.integers(40, 76))
    # density falls with age (ACR distribution roughly A 10%, B 40%, C 40%, D 10%)
    shift = (age - 57) / 18.0
    pw = np.array([0.10 + 0.06 * shift, 0.40 + 0.05 * shift, 0.40 - 0.06 * shift, 0.10 - 0.05 * shift]).clip(0.02)
    density = "ABCD"[int(rng.choice(4, p=pw / pw.sum()))]
    frac = float(rng.uniform(*DENSITY_FRACTION[density]))
    size = rng.uniform(0.75, 1.25)
    shapes = {}
    for lat in ("L", "R"):
        shapes[lat] = BreastShape(
            depth=float(120 * size * rng.uniform(0.93, 1.07)),
            half_height=float(100 * size * rng.uniform(0.93, 1.07)),
            thickness=float(rng.uniform(40, 68)),
            density=density,
            dense_fraction=float(np.clip(frac + rng.normal(0, 0.02), 0.02, 0.9)),
            wobble=tuple(float(x) for x in rng.normal(0, 0.015, 3)),
            cc_offset=float(rng.normal(0, 0.03)),
            mlo_center=float(rng.uniform(0.5, 0.6)),
            pec_width=float(rng.uniform(0.55, 0.9)),
            pec_height=float(rng.uniform(0.35, 0.6)),
            pec_curve=float(rng.uniform(0.8, 1.25)),
        )
    findings: list[Finding] = []
    malignant = bool(rng.random() < prevalence)

    def new(kind: str, pathology: str, lat: str, size_mm: float, contrast: float) -> Finding:
        return Finding(kind, pathology, lat, float(rng.uniform(0.3, 0.8)), float(rng.uniform(-0.75, 0.75)),
                       float(rng.uniform(-0.7, 0.7)), float(size_mm), float(contrast), int(rng.integers(2**31)))

    if malignant:
        lat = "LR"[int(rng.integers(2))]
        kinds = ["spiculated_mass"] if rng.random() < 0.55 else ["calcification_cluster"]
        if rng.random() < 0.12:
            kinds = ["spiculated_mass", "calcification_cluster"]
        for k in kinds:
            if k == "spiculated_mass":
                findings.append(new(k, "malignant", lat, rng.uniform(4.0, 10.0), rng.uniform(0.7, 1.3)))
            else:
                findings.append(new(k, "malignant", lat, rng.uniform(7.0, 16.0), rng.uniform(0.7, 1.3)))
    if rng.random() < benign_rate:
        lat = "LR"[int(rng.integers(2))]
        if rng.random() < 0.55:
            findings.append(new("circumscribed_mass", "benign", lat, rng.uniform(4.0, 11.0), rng.uniform(0.7, 1.3)))
        else:
            findings.append(new("scattered_calcifications", "benign", lat, rng.uniform(25.0, 60.0), rng.uniform(0.7, 1.3)))
    return {"vendor": vendor, "transfer_syntax": ts, "age": age, "density": density, "shapes": shapes,
            "findings": findings, "malignant": malignant}


def _patient_ids(seed: int, index: int) -> tuple[str, str]:
    patient_id = f"SYN{index + 1:05d}"
    return patient_id, deterministic_uid("mammolens-synth-study", seed, index)


def _make_patient(args: tuple[Any, ...]) -> list[dict[str, str]]:
    """Render and write one patient's four images; return the annotation rows."""
    out_dir, seed, index, scale_name, conspicuity, prevalence, benign_rate, vendor_names = args
    out_dir = Path(out_dir)
    plan = _patient_plan(seed, index, prevalence=prevalence, benign_rate=benign_rate, vendor_names=vendor_names)
    vendor = VENDORS[plan["vendor"]]
    scale = 1.0 if scale_name == "full" else vendor.small_scale
    patient_id, study_uid = _patient_ids(seed, index)
    rows: list[dict[str, str]] = []
    for k, (lat, view) in enumerate(VIEWS):
        rng = np.random.default_rng([seed, index, 2, k])
        stored, anns, seg, spacing = render_view(rng, vendor, plan["shapes"][lat], view, lat, plan["findings"],
                                                 scale=scale, conspicuity=conspicuity)
        sop_uid = deterministic_uid("mammolens-synth-sop", seed, index, lat, view)
        series_uid = deterministic_uid("mammolens-synth-series", seed, index, lat, view)
        rel = Path("dicom") / patient_id / study_uid / f"{sop_uid}.dcm"
        fg = vendor.hi - vendor.lo
        mid = (vendor.lo + vendor.hi) / 2
        if vendor.photometric == "MONOCHROME1":
            top = 2**vendor.bits_stored - 1
            mid = top - mid
        if vendor.voi_function == "SIGMOID":
            windows, expl = [(mid, fg * 0.9), (mid, fg * 0.7)], ["NORMAL", "HARDER"]
        else:
            windows, expl = [(mid, fg * 1.05), (mid, fg * 0.8), (mid, fg * 1.3)], ["NORMAL", "HARDER", "SOFTER"]
        write_mammogram_dicom(
            out_dir / rel, stored, manufacturer=vendor.manufacturer, manufacturer_model=vendor.model,
            laterality=lat, view=view, patient_id=patient_id, study_uid=study_uid, sop_uid=sop_uid,
            series_uid=series_uid, age=plan["age"], photometric=vendor.photometric, bits_stored=vendor.bits_stored,
            transfer_syntax=plan["transfer_syntax"], window=windows, window_explanations=expl,
            voi_function=vendor.voi_function, pixel_spacing=spacing, study_date="20240101", rescale=(1.0, 0.0),
            series_description=f"{lat} {view}", instance_number=k + 1,
            extra={"InstitutionName": f"mammolens synthetic site ({vendor.name})"},
        )
        lesions = []
        for a in anns:
            if a["shape"] == "mask":
                mrel = Path("masks") / f"{sop_uid}.png"
                _write_png(out_dir / mrel, seg)
                a = {"shape": "mask", "path": mrel.as_posix(), **{k2: v for k2, v in a.items() if k2 != "shape"}}
            lesions.append(a)
        label = int(any(le["pathology"] == "malignant" for le in lesions))
        outcome = "malignant" if label else ("benign" if lesions else "normal")
        rows.append({
            "sop_instance_uid": sop_uid,
            "path": Path(*rel.parts[1:]).as_posix(),
            "label": str(label),
            "outcome": outcome,
            "density": plan["density"],
            "lesions": json.dumps(lesions, separators=(",", ":")) if lesions else "",
            "patient_id": patient_id,
            "laterality": lat,
            "view": view,
            "manufacturer": vendor.name,
            "transfer_syntax": plan["transfer_syntax"],
        })
    return rows


def _worker_init() -> None:
    """One thread per worker process (the pool provides the parallelism)."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001 - best effort
        pass


def _write_png(path: Path, arr: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(buf.tobytes())


# --------------------------------------------------------------------------- the cohort

ANNOTATION_COLUMNS = ["sop_instance_uid", "path", "label", "outcome", "density", "lesions"]


def synthesize_cohort(
    out_dir: str | Path,
    *,
    n_patients: int,
    seed: int = 0,
    size: str = "small",
    conspicuity: float = 1.0,
    prevalence: float = 0.3,
    benign_rate: float = 0.35,
    vendors: Sequence[str] = ("Hologic", "GE", "Siemens"),
    workers: int = 1,
    progress: Any = None,
) -> SynthResult:
    """Write the built-in synthetic screening cohort.

    Parameters
    ----------
    out_dir
        Output folder: ``dicom/<patient>/<study>/<sop>.dcm``, ``masks/<sop>.png``,
        ``annotations.csv``, ``manifest.csv`` (+ ``manifest_qc.csv``), ``README.txt``.
    n_patients
        Women, one screening exam (four views: L/R x CC/MLO) each.
    seed
        Everything (UIDs, anatomy, findings, noise) is a function of the seed: the same
        seed writes the same bytes.
    size
        ``"small"`` (default; ~500-650 px tall, fast) or ``"full"`` (the vendors' real
        matrices: Hologic 4096x3328, GE 3062x2394, Siemens 3584x2816).
    conspicuity
        Multiplier of lesion contrast (1.0 default: learnable, not trivial).
    prevalence
        Share of exams with a malignant finding (default 0.3, far above screening's
        ~0.5% so a small demo cohort has positives to learn from).
    benign_rate
        Share of exams with a benign look-alike (circumscribed mass or scattered
        calcifications).
    vendors
        Which vendors to draw from (shares renormalised).
    workers
        Processes used to render patients (results do not depend on it).
    progress
        Optional callable ``progress(done, total)``.

    The run resumes: a patient whose files and record already exist (same settings) is
    not rendered again.
    """
    t0 = time.perf_counter()
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    if size not in ("small", "full"):
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")
    if not conspicuity > 0:
        raise ValueError("conspicuity must be > 0")
    if not 0 <= prevalence <= 1 or not 0 <= benign_rate <= 1:
        raise ValueError("prevalence and benign_rate must be in [0, 1]")
    bad = [v for v in vendors if v not in VENDORS]
    if bad or not vendors:
        raise ValueError(f"unknown vendor(s) {bad}; choose from {sorted(VENDORS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"seed": int(seed), "size": size, "conspicuity": float(conspicuity), "prevalence": float(prevalence),
                "benign_rate": float(benign_rate), "vendors": list(vendors), "generator": "mammolens-synth-1"}
    state = out / ".synth"
    state.mkdir(exist_ok=True)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    stamp = state / "settings.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") != key:
        for f in state.glob("patient_*.json"):
            f.unlink()
    stamp.write_text(json.dumps({"key": key, **settings}, indent=1, sort_keys=True))

    todo, records, resumed = [], {}, 0
    for i in range(n_patients):
        rec = state / f"patient_{i:05d}.json"
        if rec.exists():
            rows = json.loads(rec.read_text())
            if all((out / "dicom" / r["path"]).exists() for r in rows):
                records[i] = rows
                resumed += 1
                continue
        todo.append(i)
    args = [(str(out), int(seed), i, size, float(conspicuity), float(prevalence), float(benign_rate), tuple(vendors))
            for i in todo]
    done = resumed
    if progress:
        progress(done, n_patients)

    def finish(i: int, rows: list[dict[str, str]]) -> None:
        nonlocal done
        (state / f"patient_{i:05d}.json").write_text(json.dumps(rows))
        records[i] = rows
        done += 1
        if progress:
            progress(done, n_patients)

    if workers > 1 and len(args) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # forkserver, not fork: a forked child of a process that already ran OpenCV /
        # torch thread pools can deadlock on their locks
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, mp_context=ctx) as pool:
            for i, rows in zip(todo, pool.map(_make_patient, args, chunksize=1), strict=True):
                finish(i, rows)
    else:
        for i, a in zip(todo, args, strict=True):
            finish(i, _make_patient(a))

    all_rows = [r for i in range(n_patients) for r in records[i]]
    ann_path = out / "annotations.csv"
    with ann_path.open("w", newline="", encoding="utf-8") as fh:
        wr = csv.DictWriter(fh, fieldnames=ANNOTATION_COLUMNS, extrasaction="ignore", lineterminator="\n")
        wr.writeheader()
        for r in all_rows:
            wr.writerow({k: r[k] for k in ANNOTATION_COLUMNS})
    manifest_path = _write_cohort_manifest(out, ann_path)

    vend: dict[str, int] = {}
    tss: dict[str, int] = {}
    for r in all_rows[::4]:
        vend[r["manufacturer"]] = vend.get(r["manufacturer"], 0) + 1
        tss[r["transfer_syntax"]] = tss.get(r["transfer_syntax"], 0) + 1
    n_mal = len({r["patient_id"] for r in all_rows if r["label"] == "1"})
    n_ben = sum(1 for r in all_rows if r["outcome"] == "benign")
    result = SynthResult(
        out_dir=out, manifest_path=manifest_path, annotations_path=ann_path, readme_path=out / "README.txt",
        n_patients=n_patients, n_images=len(all_rows), n_malignant_exams=n_mal,
        n_positive_images=sum(r["label"] == "1" for r in all_rows), n_benign_findings=n_ben,
        seconds=round(time.perf_counter() - t0, 2), settings=settings, vendors=dict(sorted(vend.items())),
        transfer_syntaxes=dict(sorted(tss.items())), resumed=resumed,
    )
    _write_readme(result)
    return result


def _write_cohort_manifest(out: Path, ann_path: Path) -> Path:
    """The manifest ``ingest dicom OUT/dicom --annotations OUT/annotations.csv`` writes,
    with image and mask paths relative to ``OUT``."""
    from mammolens.data.ingest import ingest
    from mammolens.data.lesions import dump_lesions, parse_lesions
    from mammolens.data.manifest import write_manifest

    manifest_path = out / "manifest.csv"
    res = ingest("dicom", out / "dicom", manifest_path, relative_paths=True, annotations=ann_path)
    df = res.manifest.copy()
    base = out.resolve()

    def rel_masks(cell: str) -> str:
        les = parse_lesions(cell)
        for le in les:
            if le.shape == "mask":
                p = Path(le.geometry["path"])
                if p.is_absolute():
                    le.geometry["path"] = Path(os.path.relpath(p, base)).as_posix()
        return dump_lesions(les)

    df["lesions"] = [rel_masks(c) for c in df["lesions"]]
    df = df.sort_values(["patient_id", "laterality", "view"], kind="stable").reset_index(drop=True)
    write_manifest(df, manifest_path)
    return manifest_path


def _write_readme(r: SynthResult) -> None:
    s = r.settings
    text = f"""mammolens synthetic screening cohort
=====================================

Generated by `mammolens synth` (mammolens.data.synthetic.synthesize_cohort) with
seed={s['seed']}, size={s['size']}, conspicuity={s['conspicuity']}, prevalence={s['prevalence']},
benign_rate={s['benign_rate']}, vendors={', '.join(s['vendors'])}.
The same settings always write the same bytes. This is SIMULATED data: no real patient.

Contents
--------
dicom/<patient>/<study>/<sop>.dcm   {r.n_images} MG DICOM files (Digital Mammography X-Ray Image
                                    Storage - For Presentation), four views per exam (L/R x CC/MLO)
masks/<sop>.png                     ground-truth masks of malignant masses (non-zero = lesion)
annotations.csv                     sop_instance_uid, path, label, outcome, density, lesions
manifest.csv                        the mammolens manifest (paths relative to this folder)
manifest_qc.csv                     the ingest QC table

Cohort
------
patients / exams: {r.n_patients}; images: {r.n_images}
malignant exams: {r.n_malignant_exams} (label-1 images: {r.n_positive_images}); images with a benign finding only: {r.n_benign_findings}
vendors (patients): {json.dumps(r.vendors)}
transfer syntaxes (patients): {json.dumps(r.transfer_syntaxes)}

Simulation
----------
* Breast outline: semi-ellipse (CC), hanging oblique ellipse with pectoral muscle (MLO);
  half-cylinder edge so thickness falls off toward the skin; visible skin line.
* Fibroglandular tissue from 1/f^3 power-law noise plus streaks radiating from the nipple,
  thresholded to the dense-area fraction of the BI-RADS density (A-D; denser when younger).
* Malignant: spiculated masses (8-20 mm) and microcalcification clusters (7-16 mm, 14-33
  calcifications, pleomorphic or linear), in both views of one breast at a consistent
  depth. Benign look-alikes: circumscribed masses and scattered coarse calcifications.
* Vendors: Hologic (12 bits, LINEAR windows, JPEG 2000 or uncompressed), GE (14 bits,
  SIGMOID VOI LUT function, JPEG-LS or uncompressed), Siemens (16 bits, MONOCHROME1,
  RLE or uncompressed); each vendor's own matrix, pixel spacing, tone curve and noise.
* Labels: image label 1 = a malignant finding in that image. Prevalence here is far
  above screening (~0.5%) so a small cohort has positives to learn from.

Lesion geometry (lesions column, JSON, original pixel coordinates of the stored image):
malignant masses as `mask` (+ centre), calcification clusters as `polygon` (hull of the
calcifications + 1.5 mm), benign masses as `circle`, scattered calcifications as `point`.
"""
    r.readme_path.write_text(text, encoding="utf-8")
