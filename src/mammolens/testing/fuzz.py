"""Fuzzing the pixel pipeline: seeded mutations of real MG DICOMs of every supported
transfer syntax, each run through header ingest, :func:`~mammolens.io.dicom.read_dicom`
and preprocessing in a child process.

Every case must end as a clean :class:`~mammolens.errors.InputError` or a valid image
(float32, finite, in [0, 1], the declared shape): no signal, no hang, no other
exception, no NaN. Used by ``tests/io/test_io_fuzz.py`` (a few hundred cases) and
``bench/fuzz_pipeline.py`` (10,000 or more, figures in ``bench/results``).

The cases run in a :class:`~mammolens.io.sandbox.IsolatedPool` whose workers act as an
ordinary (unsandboxed) process: :func:`read_dicom` must protect itself there (it sends
python-gdcm to its own child), so a worker that dies is a failure of the pipeline, not
an expected outcome.

Examples
--------
>>> from mammolens.testing.fuzz import write_seeds, run_fuzz          # doctest: +SKIP
>>> seeds = write_seeds("fuzz-seeds")
>>> report = run_fuzz(seeds, n_cases=500, seed=0, workers=2)
>>> report["failures"]
[]
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MUTATIONS", "SEED_SPECS", "mutate", "run_case", "run_fuzz", "write_seeds"]

#: (file stem, transfer syntax, vendor, extra writer options): one seed per syntax and
#: per display-pipeline variant (VOI LUT, rescale, SIGMOID, MONOCHROME1)
SEED_SPECS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("hologic_j2k", "jpeg2000", "HOLOGIC, Inc.", {"window": (2048, 4096)}),
    ("ge_jpegls_sigmoid", "jpegls", "GE MEDICAL SYSTEMS", {"window": (2000, 3000), "voi_function": "SIGMOID"}),
    ("siemens_rle", "rle", "SIEMENS", {"window": [(2048, 4096), (1800, 2500)]}),
    ("explicit_voilut", "explicit", "HOLOGIC, Inc.", {"voi_lut": "ramp"}),
    ("implicit_rescale", "implicit", "Philips", {"rescale": (2.0, -100.0), "window": (4000, 8000)}),
    ("fuji_mono1_jpeg_lossless", "jpeg_lossless", "FUJIFILM Corporation", {"photometric": "MONOCHROME1", "window": (2048, 4096)}),
    ("konica_jpeg_baseline", "jpeg_baseline", "KONICA MINOLTA", {"window": (128, 256)}),
]

MUTATIONS = ("flip", "pixel_flip", "truncate", "header_field", "codestream", "splice", "transfer_syntax")

#: hostile values per header attribute (raw bytes are written as they are, VR kept)
_FIELD_VALUES: dict[str, list[Any]] = {
    "Rows": [0, 1, 15, 17, 95, 97, 192, 4096, 12000, 16385, 65535],
    "Columns": [0, 1, 79, 81, 160, 4096, 65535],
    "BitsAllocated": [0, 1, 8, 12, 16, 24, 32, 64, 255],
    "BitsStored": [0, 1, 7, 8, 11, 13, 16, 17, 32, 255],
    "HighBit": [0, 7, 15, 16, 31, 255],
    "PixelRepresentation": [1, 2, 255],
    "SamplesPerPixel": [0, 2, 3, 4],
    "NumberOfFrames": [b"0", b"2", b"-1", b"abc"],
    "PhotometricInterpretation": [b"RGB", b"MONOCHROME1", b"YBR_FULL", b"PALETTE COLOR", b"", b"\x00\x00"],
    "WindowCenter": [b"NaN", b"inf", b"-inf", b"abc", b"1e308", b"-5", b"", b"1\\2\\3"],
    "WindowWidth": [b"NaN", b"inf", b"0", b"-1", b"0.5", b"1e-300", b"abc", b"", b"1e308"],
    "RescaleSlope": [b"NaN", b"0", b"-1", b"1e308", b"inf", b"abc"],
    "RescaleIntercept": [b"NaN", b"-1e308", b"inf", b"abc"],
    "VOILUTFunction": [b"SIGMOID", b"LINEAR_EXACT", b"BOGUS", b""],
    "PresentationLUTShape": [b"INVERSE", b"IDENTITY", b"XYZ"],
    "Modality": [b"CT", b"", b"MG"],
}


# --------------------------------------------------------------------------- seeds


def _breast(h: int, w: int, rng: np.random.Generator, hi: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w] + 0.5
    img = rng.integers(0, hi // 20 + 1, (h, w)).astype(np.float64)
    r2 = (xx / (0.62 * w)) ** 2 + ((yy - h / 2) / (0.46 * h)) ** 2
    inside = r2 <= 1
    img[inside] = 0.45 * hi + 0.35 * hi * (1 - r2[inside]) + rng.normal(0, hi / 60, inside.sum())
    return np.clip(img, 0, hi).astype(np.uint16)


def _jpeg_baseline(path: Path, pixels: np.ndarray, **kw: Any) -> Path:
    """An 8-bit JPEG baseline MG file (pillow encodes; pydicom has no JPEG encoder)."""
    from PIL import Image
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from mammolens.data.synthetic import write_mammogram_dicom

    u8 = (pixels >> 4).astype(np.uint8)
    write_mammogram_dicom(path, u8.astype(np.uint16), bits_stored=8, transfer_syntax="explicit", **kw)
    ds = dcmread(path)
    buf = io.BytesIO()
    Image.fromarray(u8, mode="L").save(buf, format="JPEG", quality=92)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_seeds(folder: str | Path, *, size: tuple[int, int] = (96, 80)) -> list[Path]:
    """Write one small valid MG DICOM per entry of :data:`SEED_SPECS`; return their paths."""
    from mammolens.data.synthetic import write_mammogram_dicom

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (stem, ts, vendor, opts) in enumerate(SEED_SPECS):
        rng = np.random.default_rng(1000 + i)
        h, w = size
        pixels = _breast(h, w, rng, 4095)
        opts = dict(opts)
        if opts.get("voi_lut") == "ramp":
            opts["voi_lut"] = np.clip(np.arange(4096) * 16, 0, 65535).astype(np.uint16)
        kw = dict(manufacturer=vendor, laterality="LR"[i % 2], view=("CC", "MLO")[i % 2], patient_id=f"FUZZ{i}",
                  study_uid=f"1.2.826.0.1.3680043.10.1{i}", **opts)
        p = out / f"{stem}.dcm"
        if ts == "jpeg_baseline":
            paths.append(_jpeg_baseline(p, pixels, **kw))
        else:
            paths.append(write_mammogram_dicom(p, pixels, bits_stored=12, transfer_syntax=ts, **kw))
    return paths


# --------------------------------------------------------------------------- mutations


def _pixel_offset(data: bytes) -> int:
    i = data.rfind(b"\xe0\x7f\x10\x00")
    return i if i > 0 else len(data) // 2


def _set_field(data: bytes, keyword: str, value: Any) -> bytes:
    import pydicom
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        tag = Tag(keyword)
        vr = dictionary_VR(tag)
        if isinstance(value, bytes):
            raw = value + (b" " if len(value) % 2 else b"")
        else:  # US: pack as the dataset's byte order would
            raw = int(value).to_bytes(2, "little")
        ds._dict[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One seeded mutation of a DICOM file's bytes; returns ``(bytes, description)``."""
    kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    b = bytearray(data)
    px = _pixel_offset(data)
    if kind == "flip":
        k = int(rng.integers(1, 17))
        pos = rng.integers(132, len(b), k)
        for p in pos:
            b[p] = int(rng.integers(256))
        return bytes(b), f"flip {k} bytes"
    if kind == "pixel_flip":
        k = int(rng.integers(1, 9))
        for p in rng.integers(px, len(b), k):
            b[p] ^= 1 << int(rng.integers(8))
        return bytes(b), f"flip {k} bits in the pixel data"
    if kind == "truncate":
        cut = int(rng.integers(132, len(b)))
        return bytes(b[:cut]), f"truncate at {cut} of {len(b)}"
    if kind == "codestream":
        start = px + 12
        k = int(rng.integers(1, 5))
        for p in rng.integers(start, min(len(b), start + 96), k):
            b[p] = int(rng.choice([0, 1, 8, 12, 16, 17, 32, 33, 0x7F, 0xFF, int(rng.integers(256))]))
        return bytes(b), f"patch {k} bytes near the start of the pixel stream"
    if kind == "splice":
        p = int(rng.integers(px, len(b)))
        n = int(rng.integers(1, 64))
        if rng.random() < 0.5:
            del b[p : p + n]
            return bytes(b), f"delete {n} bytes at {p}"
        b[p:p] = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        return bytes(b), f"insert {n} bytes at {p}"
    if kind == "transfer_syntax":
        from mammolens.data.synthetic import TRANSFER_SYNTAXES

        uids = sorted(set(TRANSFER_SYNTAXES.values()) | {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
        uid = uids[int(rng.integers(len(uids)))].encode()
        try:
            return _set_field_meta(data, uid), f"transfer syntax -> {uid.decode()}"
        except Exception:  # noqa: BLE001 - the seed itself is fine; fall back to a flip
            b[int(rng.integers(132, len(b)))] ^= 0xFF
            return bytes(b), "flip 1 byte (syntax swap failed)"
    # header_field
    keyword = sorted(_FIELD_VALUES)[int(rng.integers(len(_FIELD_VALUES)))]
    values = _FIELD_VALUES[keyword]
    value = values[int(rng.integers(len(values)))]
    try:
        return _set_field(data, keyword, value), f"{keyword} = {value!r}"
    except Exception:  # noqa: BLE001
        return data, f"{keyword} = {value!r} (not applied)"


def _set_field_meta(data: bytes, uid: bytes) -> bytes:
    """Rewrite the file meta Transfer Syntax UID in place (same length, padded with NUL)."""
    i = data.find(b"\x02\x00\x10\x00UI")
    if i < 0:
        raise ValueError("no Transfer Syntax UID")
    n = int.from_bytes(data[i + 6 : i + 8], "little")
    if len(uid) > n:
        raise ValueError("new UID longer than the old")
    return data[: i + 8] + uid.ljust(n, b"\x00") + data[i + 8 + n :]


# --------------------------------------------------------------------------- one case

_SEEDS: dict[str, bytes] = {}
_TMP: list[str] = []


def case_bytes(seed_path: str, case: int, master_seed: int) -> tuple[bytes, str]:
    """The mutated file of case ``case`` (deterministic in the seed file, ``case`` and ``master_seed``)."""
    data = _SEEDS.get(seed_path)
    if data is None:
        data = _SEEDS[seed_path] = Path(seed_path).read_bytes()
    rng = np.random.default_rng([master_seed, case])
    out, desc = mutate(data, rng)
    if rng.random() < 0.25:  # a second mutation on a quarter of the cases
        out, d2 = mutate(out, rng)
        desc = f"{desc}; {d2}"
    return out, desc


def _unsandboxed() -> None:
    """Pool initializer: behave as an ordinary process (read_dicom protects itself there)."""
    from mammolens.io import _isolation

    _isolation._IN_SANDBOX = False
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001
        pass


def run_case(task: tuple[str, int, int]) -> dict[str, Any]:
    """Run one case (in a child): header ingest, ``read_dicom``, preprocessing.

    Returns ``{"outcome": ..., "stage": ..., "detail": ..., "mutation": ...}`` with
    outcome ``ok`` (a valid image), ``rejected`` (a clean InputError at ``stage``),
    ``stray_exception`` or ``invalid_image`` (the last two are failures).
    """

    with warnings.catch_warnings():
        # pydicom warns on every invalid value a mutation produces; the outcome is what counts
        warnings.simplefilter("ignore")
        return _run_case(task)


def _run_case(task: tuple[str, int, int]) -> dict[str, Any]:
    from mammolens.data.preprocess import preprocess_image
    from mammolens.data.preprocess_settings import PreprocessSettings
    from mammolens.errors import InputError
    from mammolens.io.dicom import read_dicom, read_dicom_metadata, validate_mammogram

    seed_path, case, master_seed = task
    data, desc = case_bytes(seed_path, case, master_seed)
    if not _TMP:
        _TMP.append(tempfile.mkdtemp(prefix="mammolens-fuzz-"))
    path = Path(_TMP[0]) / f"case_{os.getpid()}.dcm"
    path.write_bytes(data)
    res: dict[str, Any] = {"seed": Path(seed_path).stem, "case": case, "mutation": desc}
    stage = "ingest"
    try:
        try:
            validate_mammogram(read_dicom_metadata(path), path)
            ingest_reason = ""
        except InputError as e:
            ingest_reason = e.reason  # go on: the reader must hold on its own
        stage = "read_dicom"
        img = read_dicom(path)
        px = img.pixels
        meta = img.meta
        if px.dtype != np.float32 or px.ndim != 2 or not np.isfinite(px).all() or px.min() < 0 or px.max() > 1:
            return {**res, "outcome": "invalid_image", "stage": stage,
                    "detail": f"dtype {px.dtype}, shape {px.shape}, finite {bool(np.isfinite(px).all())}"}
        if px.shape != (int(meta.get("rows") or 0), int(meta.get("columns") or 0)):
            return {**res, "outcome": "invalid_image", "stage": stage, "detail": f"shape {px.shape} != header"}
        stage = "preprocess"
        pre = preprocess_image(px, PreprocessSettings(size=(64, 48), seg_size=96))
        if not np.isfinite(pre.image).all():
            return {**res, "outcome": "invalid_image", "stage": stage, "detail": "non-finite preprocessed image"}
        if ingest_reason:
            return {**res, "outcome": "rejected", "stage": "ingest", "detail": ingest_reason}
        return {**res, "outcome": "ok", "stage": "", "detail": ""}
    except InputError as e:
        if stage != "ingest" and ingest_reason:
            return {**res, "outcome": "rejected", "stage": "ingest", "detail": ingest_reason}
        return {**res, "outcome": "rejected", "stage": stage, "detail": e.reason}
    except MemoryError:
        return {**res, "outcome": "stray_exception", "stage": stage, "detail": "MemoryError"}
    except Exception as e:  # noqa: BLE001 - exactly what the fuzzer looks for
        return {**res, "outcome": "stray_exception", "stage": stage, "detail": f"{type(e).__name__}: {str(e)[:200]}"}


# --------------------------------------------------------------------------- a run


def run_fuzz(
    seeds: list[str | Path],
    *,
    n_cases: int,
    seed: int = 0,
    start: int = 0,
    workers: int = 2,
    timeout: float = 120.0,
    keep_failures: str | Path | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run ``n_cases`` mutated cases (numbers ``start`` .. ``start + n_cases - 1``,
    round-robin over ``seeds``) in an IsolatedPool.

    Returns a report: ``cases``, ``seconds``, ``outcomes`` (counts: ``ok``, ``rejected``,
    ``stray_exception``, ``invalid_image``, ``crash``, ``hang``), ``rejected_by_stage``,
    ``by_seed``, ``top_reasons``, ``failures`` (the cases that are not ``ok`` or
    ``rejected``), ``machine``. With ``keep_failures``, each failing case's file is
    written there.
    """
    from mammolens.errors import InputError
    from mammolens.io.sandbox import IsolatedPool

    seeds = [str(Path(s).resolve()) for s in seeds]
    tasks = ((seeds[i % len(seeds)], i, seed) for i in range(start, start + n_cases))
    outcomes: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    by_seed: dict[str, Counter[str]] = {}
    reasons: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    done = 0
    with IsolatedPool(workers, run_case, timeout=timeout, initializer=_unsandboxed,
                      path_of=lambda t: f"{Path(t[0]).stem}#{t[1]}") as pool:
        for task, res in pool.map_unordered(tasks):
            if isinstance(res, InputError):  # the worker died or hung: a pipeline failure
                kind = "hang" if "timed out" in res.reason else "crash"
                data, desc = case_bytes(*task)
                res = {"seed": Path(task[0]).stem, "case": task[1], "mutation": desc, "outcome": kind,
                       "stage": "", "detail": res.reason}
            outcomes[res["outcome"]] += 1
            by_seed.setdefault(res["seed"], Counter())[res["outcome"]] += 1
            if res["outcome"] == "rejected":
                by_stage[res["stage"]] += 1
                reasons[_reason_class(res["detail"])] += 1
            elif res["outcome"] != "ok":
                failures.append(res)
                if keep_failures is not None:
                    d = Path(keep_failures)
                    d.mkdir(parents=True, exist_ok=True)
                    (d / f"{res['seed']}_{res['case']}.dcm").write_bytes(case_bytes(*task)[0])
            done += 1
            if progress is not None:
                progress(done, n_cases)
        restarts = pool.restarts
    seconds = time.perf_counter() - t0
    for k in ("ok", "rejected", "stray_exception", "invalid_image", "crash", "hang"):
        outcomes.setdefault(k, 0)
    return {
        "cases": n_cases,
        "first_case": start,
        "master_seed": seed,
        "workers": workers,
        "seconds": round(seconds, 1),
        "cases_per_second": round(n_cases / max(seconds, 1e-9), 2),
        "outcomes": dict(outcomes),
        "rejected_by_stage": dict(by_stage),
        "by_seed": {k: dict(v) for k, v in sorted(by_seed.items())},
        "top_reasons": dict(reasons.most_common(25)),
        "reasons": dict(reasons),
        "failures": failures,
        "pool_restarts": restarts,
        "seeds": [Path(s).stem for s in seeds],
        "seed_sha1": {Path(s).stem: hashlib.sha1(Path(s).read_bytes()).hexdigest()[:12] for s in seeds},
        "machine": machine(),
    }


def _reason_class(reason: str) -> str:
    """A reason without its numbers, so that like reasons count together."""
    import re

    text = re.sub(r"\(1\.2\.840[\d.]*\)", "", reason)
    text = re.sub(r"[-+]?\d[\d,._e+-]*", "#", text)
    return text[:120]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "load_average_at_end": [round(x, 2) for x in load],
    }
