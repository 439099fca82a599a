"""DICOM results of the model, for PACS viewers (library functions, usable without the service).

* :func:`make_sr` -- a TID 1500 *Imaging Measurement Report* (Comprehensive 3D SR, built
  with highdicom): per image, the AI probability of malignancy with the location of the
  heatmap peak as a spatial coordinate (POINT) on the source image; per breast and per
  exam, the rolled-up probability.
* :func:`make_heatmap_secondary_capture` -- the mammogram with the heatmap blended in
  colour (RGB Secondary Capture: every viewer shows it).
* :func:`make_heatmap_segmentation` -- the heatmap as a FRACTIONAL DICOM Segmentation
  referencing the source image (viewers that support SEG overlay it themselves).
* :func:`write_study_results` -- all of the above for one study, written to a folder.

Every object is marked research-only: its Series Description ends with
``NOT FOR CLINICAL USE`` and the SR states it in a text item.

References: DICOM PS3.16 TID 1500 (Measurement Report), TID 1410/1501 (planar ROI and
measurement groups); PS3.3 A.8 (Secondary Capture), A.51 (Segmentation); Herrmann et al.,
"Implementing the DICOM standard for digital pathology" / highdicom (J Digit Imaging 2022).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammolens import __version__
from mammolens.errors import InputError
from mammolens.explain.colormap import blend_heatmap, heat_colormap, to_unit  # noqa: F401 - re-exported

NOT_CLINICAL = "NOT FOR CLINICAL USE"
SERIES_NUMBERS = {"sr": 9001, "sc": 9002, "seg": 9003}


def series_description(what: str) -> str:
    """``"mammolens AI <what> - NOT FOR CLINICAL USE"`` (at most 64 characters, LO)."""
    text = f"mammolens AI {what} - {NOT_CLINICAL}"
    return text if len(text) <= 64 else f"mammolens AI - {NOT_CLINICAL}"


@dataclass(frozen=True)
class ImageFinding:
    """The model's result for one source image.

    Attributes
    ----------
    sop_instance_uid
        Of the source image (must be one of the datasets passed with it).
    score
        Image-level probability of malignancy in [0, 1].
    breast_score
        Breast-level probability (``None``: the image score).
    peak
        ``(x, y)`` of the heatmap maximum in the source image's pixel coordinates
        (column, row; continuous, origin at the top-left corner), or ``None``.
    """

    sop_instance_uid: str
    score: float
    breast_score: float | None = None
    peak: tuple[float, float] | None = None


def _check_prob(x: float, what: str) -> float:
    x = float(x)
    if not 0.0 <= x <= 1.0 or np.isnan(x):
        raise ValueError(f"{what} must be a probability in [0, 1], got {x}")
    return x


def _laterality_code(lat: str):
    from pydicom.sr.codedict import codes

    return {"L": codes.SCT.Left, "R": codes.SCT.Right}.get(str(lat).upper())


def _codes() -> dict[str, Any]:
    """The standard concepts of the report (no private codes are needed).

    * DCM 111047 *Probability of cancer* -- the score (Mammography CAD SR, TID 4015);
    * DCM 111056 *Rendering Intent*, with DCM 111150 *Presentation Required* (the score
      passes the operating point) or DCM 111151 *Presentation Optional* -- how the
      Mammography CAD SR (TID 4000/4001) separates the marks a CAD system asserts from
      those below its operating point;
    * DCM 111071 *CAD Operating Point* -- the threshold used;
    * SCT 52988006 *Lesion* -- the finding type of an image whose score passes it.
    """
    from pydicom.sr.codedict import codes

    return {
        "prob": codes.DCM.ProbabilityOfCancer,
        "intent": codes.DCM.RenderingIntent,
        "required": codes.DCM.PresentationRequiredRenderingDeviceIsExpectedToPresent,
        "optional": codes.DCM.PresentationOptionalRenderingDeviceMayPresent,
        "op": codes.DCM.CADOperatingPoint,
        "finding": codes.SCT.Lesion,
    }


def make_sr(
    sources: Sequence[Any],
    findings: Sequence[ImageFinding],
    *,
    exam_score: float,
    model_name: str,
    operating_point: float | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBERS["sr"],
    instance_number: int = 1,
):
    """A TID 1500 measurement report of the AI results (``highdicom.sr.Comprehensive3DSR``).

    Every scored image gets a measurement group with its score (*Probability of cancer*)
    and a reference to the image (a POINT at the heatmap peak when known). A *finding*
    (finding type *Lesion*, rendering intent *Presentation Required*) is asserted only
    when the score is at or above ``operating_point``; below it the group carries the
    score alone (rendering intent *Presentation Optional*), as the mammography CAD SR
    treats marks below its operating point. Without an operating point no finding is
    asserted at all. Breast and exam groups carry the rolled-up scores the same way;
    the exam group also records the operating point (*CAD Operating Point*).

    Parameters
    ----------
    sources
        The study's source images (pydicom datasets): the evidence of the report.
    findings
        One :class:`ImageFinding` per scored image.
    exam_score
        Exam-level probability of malignancy.
    model_name
        Recorded as the observer device's model name.
    operating_point
        The threshold on the scores (the service's worklist flag), in [0, 1].
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not sources:
        raise ValueError("make_sr needs the source images")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    exam_score = _check_prob(exam_score, "exam_score")
    op = None if operating_point is None else _check_prob(operating_point, "operating_point")
    c = _codes()
    unit = hd.sr.CodedConcept("1", "UCUM", "no units")
    algorithm = hd.sr.AlgorithmIdentification(name="mammolens", version=__version__, parameters=[str(model_name)[:64]])
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name="mammolens", manufacturer_name="mammolens", model_name=str(model_name)[:64]
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )

    def assessed(score: float) -> tuple[Any, list[Any] | None]:
        """(finding type or None, qualitative evaluations) of one score."""
        if op is None:
            return None, None
        positive = score >= op
        intent = hd.sr.QualitativeEvaluation(name=c["intent"], value=c["required"] if positive else c["optional"])
        return (c["finding"] if positive else None), [intent]

    def score_item(score: float) -> Any:
        return hd.sr.Measurement(name=c["prob"], value=round(score, 6), unit=unit)

    groups: list[Any] = []
    breast: dict[str, float] = {}
    for i, f in enumerate(findings, start=1):
        ds = by_uid.get(str(f.sop_instance_uid))
        if ds is None:
            raise ValueError(f"finding {i}: SOP Instance UID {f.sop_instance_uid} is not among the sources")
        score = _check_prob(f.score, f"finding {i} score")
        lat = str(getattr(ds, "ImageLaterality", "") or getattr(ds, "Laterality", "") or "").upper()
        if lat in ("L", "R"):
            bs = _check_prob(f.breast_score if f.breast_score is not None else score, f"finding {i} breast score")
            breast[lat] = max(breast.get(lat, 0.0), bs)
        site = [hd.sr.FindingSite(anatomic_location=codes.SCT.Breast, laterality=_laterality_code(lat))] if lat in ("L", "R") else None
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"AI image {i}")
        finding, quals = assessed(score)
        if f.peak is not None:
            x, y = (float(v) for v in f.peak)
            rows, cols = int(ds.Rows), int(ds.Columns)
            if not (0 <= x <= cols and 0 <= y <= rows):
                raise ValueError(f"finding {i}: peak {f.peak} outside the {cols}x{rows} image")
            region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POINT,
                graphic_data=np.array([[x, y]], dtype=float),
                source_image=hd.sr.SourceImageForRegion.from_source_image(ds),
            )
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_region=region,
                    finding_type=finding,
                    finding_sites=site,
                    measurements=[score_item(score)],
                    qualitative_evaluations=quals,
                    algorithm_id=algorithm,
                )
            )
        else:
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    finding_type=finding,
                    finding_sites=site,
                    measurements=[score_item(score)],
                    qualitative_evaluations=quals,
                    algorithm_id=algorithm,
                    source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
                )
            )
    for lat, bs in sorted(breast.items()):
        finding, quals = assessed(bs)
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"AI breast {lat}"),
                finding_type=finding,
                finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Breast, laterality=_laterality_code(lat))],
                measurements=[score_item(bs)],
                qualitative_evaluations=quals,
                algorithm_id=algorithm,
            )
        )
    finding, quals = assessed(exam_score)
    exam_items = [score_item(exam_score)]
    if op is not None:
        exam_items.append(hd.sr.Measurement(name=c["op"], value=round(op, 6), unit=unit))
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="AI exam"),
            finding_type=finding,
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Breast)],
            measurements=exam_items,
            qualitative_evaluations=quals,
            algorithm_id=algorithm,
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept("24606-6", "LN", "MG Breast Screening"),
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    first = sources[0]
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=report,
        series_number=series_number,
        series_instance_uid=series_instance_uid or hd.UID(),
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer="mammolens",
        is_complete=True,
        is_final=False,
        series_description=series_description("report"),
        institution_name=getattr(first, "InstitutionName", None),
    )
    sr.ContentQualification = "RESEARCH"
    return sr


def _grey01(ds: Any) -> np.ndarray:
    """Display-ready grey image in [0, 1] (VOI applied, MONOCHROME1 inverted)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    try:
        arr = apply_voi_lut(arr, ds).astype(np.float32)
    except Exception:  # noqa: BLE001 - no/odd VOI: min-max below
        pass
    lo, hi = float(np.percentile(arr, 0.5)), float(np.percentile(arr, 99.5))
    out = np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 1.0 - out
    return out


def _laterality(ds: Any) -> str:
    """``"L"``, ``"R"`` or ``""`` (Image Laterality, else the series' Laterality)."""
    lat = str(getattr(ds, "ImageLaterality", "") or getattr(ds, "Laterality", "") or "").upper()
    return lat if lat in ("L", "R") else ""


def _view(ds: Any) -> str:
    return str(getattr(ds, "ViewPosition", "") or "").upper()


def _orientation(ds: Any) -> tuple[str, str]:
    """The source's Patient Orientation (the derived objects keep its pixel geometry).

    A source without one gets the mammographic default for its view: the posterior
    direction (chest wall) on the image's side facing the breast's laterality.
    """
    o = [str(v) for v in (getattr(ds, "PatientOrientation", None) or [])]
    if len(o) == 2 and all(o):
        return o[0], o[1]
    lat = _laterality(ds)
    return ("A" if lat != "R" else "P"), "F"


def _source_reference(ds: Any) -> Any:
    """A Source Image Sequence item: the image a derived object was computed from."""
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    purpose = Dataset()
    code = codes.DCM.SourceImageForImageProcessingOperation
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = code.value, code.scheme_designator, code.meaning
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _check_heatmap(heat: np.ndarray, ds: Any) -> np.ndarray:
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != (int(ds.Rows), int(ds.Columns)):
        raise ValueError(
            f"heatmap shape {heat.shape} != image shape {(int(ds.Rows), int(ds.Columns))}: "
            "map it to the original geometry first (load_heatmap(..., geometry='original'))"
        )
    return to_unit(heat)


def make_heatmap_secondary_capture(
    source: Any,
    heatmap: np.ndarray,
    *,
    opacity: float = 0.45,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBERS["sc"],
    instance_number: int = 1,
):
    """The source mammogram with ``heatmap`` (original geometry, [0, 1]) blended in colour.

    Returns a ``highdicom.sc.SCImage`` (RGB, same patient/study as ``source``).
    """
    import highdicom as hd

    heat = _check_heatmap(heatmap, source)
    rgb = blend_heatmap(_grey01(source), heat, opacity=opacity)
    lat = _laterality(source)
    view = _view(source)
    sc = hd.sc.SCImage.from_ref_dataset(
        source,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid or hd.UID(),
        sop_instance_uid=sop_instance_uid or hd.UID(),
        series_number=series_number,
        instance_number=instance_number,
        manufacturer="mammolens",
        patient_orientation=_orientation(source),
        # series-level laterality: each overlay is its own series (one per source image),
        # so the series' laterality is the image's and never contradicts a sibling's
        laterality=lat or None,
        series_description=series_description(f"heatmap {lat} {view}".replace("  ", " ").strip()),
    )
    sc.DerivationDescription = f"AI heatmap blended over the source image; {NOT_CLINICAL}"
    sc.SourceImageSequence = [_source_reference(source)]
    sc.BurnedInAnnotation = "NO"
    return sc


def make_heatmap_segmentation(
    source: Any,
    heatmap: np.ndarray,
    *,
    model_name: str,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBERS["seg"],
    instance_number: int = 1,
):
    """The heatmap as a FRACTIONAL (probability) DICOM Segmentation of ``source``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    heat = _check_heatmap(heatmap, source)
    algo = hd.AlgorithmIdentificationSequence(
        name="mammolens", version=__version__, family=codes.cid7162.ArtificialIntelligence,
        parameters={"model": str(model_name)[:64]},
    )
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="AI malignancy heatmap",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
    )
    # a projection image has no slice thickness, but readers of the Pixel Measures
    # Sequence expect one: record the nominal 1 mm with the (imager) pixel spacing
    spacing = getattr(source, "PixelSpacing", None) or getattr(source, "ImagerPixelSpacing", None)
    pixel_measures = (
        hd.PixelMeasuresSequence(pixel_spacing=[float(v) for v in spacing], slice_thickness=1.0)
        if spacing is not None and len(spacing) == 2
        else None
    )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_measures=pixel_measures,
        pixel_array=heat[None],
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[desc],
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer="mammolens",
        manufacturer_model_name=str(model_name)[:64] or "mammolens",
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description("heatmap segmentation"),
        max_fractional_value=255,
    )
    # General Image: Patient Orientation is Type 2C, required without an Image
    # Orientation (Patient), as for a projection image's segmentation (PS3.3 C.7.6.1)
    seg.PatientOrientation = list(_orientation(source))
    return seg


@dataclass
class StudyImage:
    """One scored source image for :func:`write_study_results`."""

    path: Path
    score: float
    breast_score: float | None = None
    heatmap: np.ndarray | None = None  # original geometry, [0, 1]
    peak: tuple[float, float] | None = None


#: Type 2 attributes of the Patient and General Study modules that the output objects
#: copy from their source: "required, may be empty" in the IOD, but often simply absent
#: (anonymised exports, some modalities). Absent and empty mean the same; highdicom reads
#: them as attributes and fails on an absent one.
_TYPE2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)


def _fill_type2(ds: Any) -> Any:
    """``ds`` with every absent attribute of :data:`_TYPE2_COPIED` present and empty."""
    for kw in _TYPE2_COPIED:
        if kw not in ds:
            setattr(ds, kw, "")
    return ds


def write_study_results(
    images: Sequence[StudyImage],
    out_dir: str | Path,
    *,
    exam_score: float,
    model_name: str,
    operating_point: float | None = None,
    segmentation: bool = True,
    secondary_capture: bool = True,
) -> dict[str, list[Path]]:
    """Write the SR, heatmap secondary captures and segmentations of one study.

    Returns ``{"sr": [path], "sc": [paths], "seg": [paths]}``; files are named by their
    SOP Instance UID. All images must belong to one study.
    """
    import highdicom as hd
    import pydicom

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = []
    for im in images:
        try:
            sources.append(_fill_type2(pydicom.dcmread(str(im.path))))
        except Exception as e:  # noqa: BLE001
            raise InputError(im.path, f"cannot read source DICOM ({type(e).__name__})") from None
    studies = {str(ds.StudyInstanceUID) for ds in sources}
    if len(studies) != 1:
        raise ValueError(f"images from {len(studies)} studies: write one study at a time")
    written: dict[str, list[Path]] = {"sr": [], "sc": [], "seg": []}
    findings = []
    for im, ds in zip(images, sources, strict=True):
        peak = im.peak
        if peak is None and im.heatmap is not None:
            h = np.asarray(im.heatmap)
            r, c = np.unravel_index(int(np.argmax(h)), h.shape)
            peak = (float(c) + 0.5, float(r) + 0.5)
        findings.append(ImageFinding(str(ds.SOPInstanceUID), im.score, im.breast_score, peak))
    sr = make_sr(sources, findings, exam_score=exam_score, model_name=model_name, operating_point=operating_point)
    p = out / f"{sr.SOPInstanceUID}.dcm"
    sr.save_as(p)
    written["sr"].append(p)
    seg_series = hd.UID()
    for n, (im, ds) in enumerate(zip(images, sources, strict=True), start=1):
        if im.heatmap is None:
            continue
        if secondary_capture:
            # one series per overlay: an SC image has only the series-level Laterality,
            # so a series shared by both breasts' overlays would contradict itself
            sc = make_heatmap_secondary_capture(
                ds, im.heatmap, series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS["sc"] * 10 + n, instance_number=1
            )
            p = out / f"{sc.SOPInstanceUID}.dcm"
            sc.save_as(p)
            written["sc"].append(p)
        if segmentation:
            seg = make_heatmap_segmentation(ds, im.heatmap, model_name=model_name, series_instance_uid=seg_series, instance_number=n)
            p = out / f"{seg.SOPInstanceUID}.dcm"
            seg.save_as(p)
            written["seg"].append(p)
    return written
