"""Helpers of the service tests: tiny DICOM mammograms, a stand-in scorer, service policy.

The PostgreSQL fixture ``initdb``s a throw-away cluster with the Debian binaries under
``/usr/lib/postgresql/*/bin`` (as the ``postgres`` user when the tests run as root) on a
free loopback port, and removes it afterwards. Without the binaries the PostgreSQL
variants are skipped, unless ``MAMMOLENS_REQUIRE_SERVICES=1`` (then they fail).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pytest

from mammolens.data.heatmap_io import save_heatmaps
from mammolens.data.transform import Transform
from mammolens.serve.scoring import ImageResult

SECRET = "test-secret-key-0123456789abcdef"
PASSWORD = "correct horse battery"


def _require_services() -> bool:
    return os.environ.get("MAMMOLENS_REQUIRE_SERVICES", "") not in ("", "0", "false")


def skip_or_fail(reason: str) -> None:
    if _require_services():
        pytest.fail(f"required for this run (MAMMOLENS_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


from mammolens.serve.threaded import free_port  # noqa: E402,F401 - re-exported for the tests

# --------------------------------------------------------------------------- DICOM


def write_mg(
    path: Path,
    *,
    study_uid: str,
    patient_id: str = "PAT-001",
    laterality: str = "L",
    view: str = "CC",
    rows: int = 96,
    cols: int = 64,
    seed: int = 0,
    modality: str = "MG",
) -> Path:
    """A small, valid MG 'For Presentation' DICOM with a breast-shaped blob at the chest wall."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cx = 0 if laterality == "R" else cols - 1  # R: chest wall on the left as stored
    breast = ((xx - cx) / (0.9 * cols)) ** 2 + ((yy - rows / 2) / (0.45 * rows)) ** 2 < 1
    img = np.where(breast, 1800 + 600 * rng.random((rows, cols)), 60).astype(np.uint16)
    blob = ((xx - cols * 0.45) ** 2 + (yy - rows * 0.5) ** 2) < (rows * 0.06) ** 2
    img[blob & breast] = 3600
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.PatientAge = "060Y"
    ds.StudyDate = "20240101"
    ds.StudyTime = "101010"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = "ACC" + patient_id[-3:]
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "HOLOGIC, Inc."
    ds.ManufacturerModelName = "Selenia Dimensions"
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.BodyPartExamined = "BREAST"
    ds.PatientOrientation = ["A", "R"] if laterality == "L" else ["P", "L"]
    ds.ContentDate = "20240101"
    ds.ContentTime = "101010"
    ds.PixelSpacing = [0.1, 0.1]
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2000
    ds.WindowWidth = 4000
    ds.PixelData = img.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_study(folder: Path, *, patient: int = 1, seed: int = 0, rows: int = 96, cols: int = 64) -> tuple[str, list[Path]]:
    """Four views (R/L CC/MLO) of one exam; returns (StudyInstanceUID, paths)."""
    from pydicom.uid import generate_uid

    uid = generate_uid()
    paths = []
    for i, (lat, view) in enumerate((("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))):
        paths.append(
            write_mg(
                folder / f"p{patient:03d}_{lat}{view}.dcm",
                study_uid=uid,
                patient_id=f"PAT-{patient:03d}",
                laterality=lat,
                view=view,
                seed=seed * 10 + i,
                rows=rows,
                cols=cols,
            )
        )
    return uid, paths


# --------------------------------------------------------------------------- scorer


class PixelScorer:
    """A deterministic stand-in for the model in API tests: the score is the fraction of
    bright pixels, the heatmap the smoothed intensity (a real ``.npz`` heatmap file)."""

    name = "pixel-test-scorer"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def score_files(self, paths: list[Path], heatmaps_dir: Path) -> dict[Path, ImageResult]:
        import pydicom

        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        out = {}
        per_img = {}
        for p in paths:
            ds = pydicom.dcmread(str(p))
            a = ds.pixel_array.astype(np.float32)
            a = (a - a.min()) / max(float(np.ptp(a)), 1.0)
            per_img[p] = (float((a > 0.8).mean() * 10 % 1.0), a, str(ds.ImageLaterality))
        breast = {}
        for _p, (sc, _a, lat) in per_img.items():
            breast[lat] = max(breast.get(lat, 0.0), sc)
        exam = max(breast.values())
        for i, (p, (sc, a, lat)) in enumerate(per_img.items()):
            h, w = a.shape
            tf = Transform.identity(h, w)
            hm = save_heatmaps(Path(heatmaps_dir) / f"{i}.npz", {"localization": a, "attention": a}, tf)
            out[p] = ImageResult(score=sc, breast_score=breast[lat], exam_score=exam, heatmap=hm)
        return out


def upload(client, headers: dict, paths: list[Path]):
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
    return client.post("/api/studies", files=files, headers=headers)


# --------------------------------------------------------------------------- hostile input


def write_poison_j2k(path: Path, *, study_uid: str, patient_id: str = "PAT-666", laterality: str = "L") -> Path:
    """A mammogram whose header is consistent but whose JPEG 2000 codestream declares a
    sample precision of 33 bits (SIZ ``Ssiz``): python-gdcm aborts the process on it
    (the crash corpus's N1). Every header check passes; only decoding can tell."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    write_mg(path, study_uid=study_uid, patient_id=patient_id, laterality=laterality, view="MLO")
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    data = bytearray(ds.PixelData)
    i = data.find(b"\xff\x51", 16)  # SIZ marker, after the Basic Offset Table item
    data[i + 40] = 32  # Ssiz: precision - 1
    ds.PixelData = bytes(data)
    ds.save_as(path, enforce_file_format=True)
    return path


class AbortingScorer:
    """Kills its own process (SIGABRT), like a native decoder crash, on every study."""

    name = "aborting-test-scorer"

    def score_files(self, paths, heatmaps_dir):
        os.abort()


# --------------------------------------------------------------------------- API schema


def _strict(components: dict) -> dict:
    """``components`` with every object schema closed (``additionalProperties: false``)."""
    out = copy.deepcopy(components)

    def close(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)

    close(out)
    return out


class SchemaChecker:
    """Validates responses against the schema the OpenAPI document gives their
    (path template, method, status code, content type)."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.components = _strict(doc.get("components", {}))
        self.checked: set[tuple[str, str]] = set()

    def schema(self, path: str, method: str, status: int, media: str = "application/json") -> dict:
        op = self.doc["paths"][path][method]
        resp = op["responses"].get(str(status))
        assert resp is not None, f"{method.upper()} {path}: status {status} not documented"
        assert media in resp.get("content", {}), f"{method.upper()} {path} {status}: no {media} schema"
        return resp["content"][media]["schema"]

    def __call__(self, r, path: str, *, status: int | None = None):
        method = r.request.method.lower()
        expected = status if status is not None else r.status_code
        assert r.status_code == expected, (method, path, r.status_code, r.text[:300])
        schema = {**self.schema(path, method, r.status_code), "components": self.components}
        import jsonschema

        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema).validate(r.json())
        self.checked.add((method, path))
        return r.json()
