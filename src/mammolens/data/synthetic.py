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

import io
import os
import tempfile
from collections.abc import Sequence
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

_IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1447.1"  # mammolens implementation class


def deterministic_uid(*parts: object) -> str:
    """A reproducible DICOM UID (``2.25.<int>``) derived from ``parts`` (PS3.5 B.2)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=None, entropy_srcs=[str(p) for p in parts]))


def _resolve_ts(transfer_syntax: str) -> Any:
    from pydicom.uid import UID

    key = str(transfer_syntax).strip()
    uid = UID(TRANSFER_SYNTAXES.get(key.lower().replace("-", "").replace(" ", "_"), key))
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
        Optional ``(slope, intercept)`` (Rescale Slope / Intercept, type ``US``).
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
    ds.ConversionType = ""
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
    ds.PatientOrientation = (["A", "R"] if laterality == "L" else ["P", "L"]) if laterality in ("L", "R") else ""
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.OrganExposed = "BREAST"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationIntentType = intent
    if pixel_spacing:
        ds.ImagerPixelSpacing = [f"{pixel_spacing:.4f}", f"{pixel_spacing:.4f}"]
        ds.PixelSpacing = [f"{pixel_spacing:.4f}", f"{pixel_spacing:.4f}"]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
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
        ds.compress(ts, arr, encoding_plugin="pydicom")
    elif ts in (JPEGLSLossless, JPEG2000Lossless):
        ds.compress(ts, arr)
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
