"""Reading any supported image file: DICOM, PNG (8/16-bit), PGM/PNM (8/16-bit), TIFF.

:func:`read_image` dispatches on content (the DICOM ``DICM`` preamble, PNG / TIFF / PNM
signatures), falls back on a forced DICOM parse for preamble-less DICOM files, and returns
a :class:`LoadedImage` with float32 pixels in [0, 1] scaled by the file's real bit depth
(8-bit: /255; 16-bit: /65535, or /(2**bits - 1) when the file declares fewer significant
bits, e.g. a PGM with maxval 4095 or a PNG sBIT chunk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mammolens.errors import InputError
from mammolens.io.loaded import MAX_SIDE, LoadedImage, implausible_size

__all__ = ["LoadedImage", "read_image", "read_mask_file", "sniff_format", "MAX_SIDE"]

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG_SIG = b"\xff\xd8\xff"


def sniff_format(path: str | Path) -> str:
    """``'dicom'``, ``'png'``, ``'pnm'``, ``'tiff'``, ``'jpeg'`` or ``'unknown'`` from content."""
    with Path(path).open("rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_SIG):
        return "png"
    if head[:4] in _TIFF_SIGS:
        return "tiff"
    if head.startswith(_JPEG_SIG):
        return "jpeg"
    if len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"1234567":
        return "pnm"
    return "unknown"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")


def _check_dims(path: Path, arr: np.ndarray) -> None:
    if arr.ndim != 2:
        raise InputError(path, f"expected a 2-D grayscale image, got shape {arr.shape}")
    h, w = arr.shape
    if h == 0 or w == 0:
        raise InputError(path, f"zero image dimensions ({h}x{w})")
    if implausible_size(h, w):
        raise InputError(path, f"implausible image dimensions ({h}x{w})")


def read_image(path: str | Path, **opts: Any) -> LoadedImage:
    """Read a mammogram from DICOM, PNG, PGM or TIFF.

    Parameters
    ----------
    path
        Image file; the format is detected from the content, not the extension.
    **opts
        Passed to :func:`mammolens.io.dicom.read_dicom` for DICOM files (``voi``,
        ``prefer_lut``, ``validate``); ignored otherwise.

    Returns
    -------
    LoadedImage
        float32 pixels in [0, 1]; ``meta`` has ``height``, ``width``, ``bits``, ``format``
        (plus the DICOM metadata for DICOM files).

    Raises
    ------
    InputError
        Unreadable, empty, truncated, non-image, colour or absurdly sized files.
    """
    p = Path(path)
    _check_file(p)
    try:
        fmt = sniff_format(p)
    except OSError as e:
        raise InputError(p, f"cannot open file ({e.strerror or e})") from None
    if fmt == "dicom":
        from mammolens.io.dicom import read_dicom

        return read_dicom(p, **opts)
    if fmt == "png":
        arr, bits = _read_png(p)
    elif fmt == "pnm":
        arr, bits = _read_pnm(p)
    elif fmt == "tiff":
        arr, bits = _read_tiff(p)
    elif fmt == "jpeg":
        arr, bits = _read_pillow(p)
    else:
        # a DICOM file without the preamble (raw dataset) is still accepted
        from mammolens.io.dicom import read_dicom

        try:
            return read_dicom(p, **opts)
        except InputError as e:
            if "not a DICOM file" in e.reason or "not a readable DICOM" in e.reason:
                raise InputError(p, "unrecognised file format (not DICOM, PNG, PGM or TIFF)") from None
            raise
    pixels = _to_unit(p, arr, bits)
    meta = {"height": int(pixels.shape[0]), "width": int(pixels.shape[1]), "bits": int(bits), "format": fmt}
    return LoadedImage(pixels=pixels, meta=meta)


def _to_unit(path: Path, arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3].astype(np.float64)
        if np.ptp(rgb, axis=2).max() > 0:
            raise InputError(path, "colour image: mammograms must be grayscale")
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # gray (+ alpha)
        arr = arr[..., 0]
    _check_dims(path, arr)
    if arr.dtype.kind == "f":
        a = arr.astype(np.float32)
        if not np.isfinite(a).all():
            raise InputError(path, "image contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 1:
            return a
        return ((a - lo) / max(hi - lo, 1e-12)).astype(np.float32)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    maxval = float(2**bits - 1)
    return np.clip(arr.astype(np.float32) / maxval, 0.0, 1.0)


def _read_png(path: Path) -> tuple[np.ndarray, int]:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(path, "unreadable PNG (truncated or corrupt)")
    if arr.ndim == 3:
        arr = arr[..., ::-1] if arr.shape[2] >= 3 else arr  # BGR -> RGB (colour check only)
    bits = 16 if arr.dtype == np.uint16 else 8
    sbit = _png_sbit(path)
    if sbit and bits == 16 and 1 <= sbit < 16:
        # significant bits: values are stored left-shifted in 16-bit samples (PNG spec 12.4)
        if int(arr.max(initial=0)) < 2**sbit:
            bits = sbit  # not shifted (common in medical exports): scale by the real depth
    return arr, bits


def _png_sbit(path: Path) -> int:
    """The grayscale significant-bits (sBIT) value of a PNG, 0 if absent."""
    try:
        with path.open("rb") as fh:
            fh.read(8)
            while True:
                hdr = fh.read(8)
                if len(hdr) < 8:
                    return 0
                n = int.from_bytes(hdr[:4], "big")
                kind = hdr[4:8]
                if kind == b"sBIT":
                    return fh.read(n)[0] if n else 0
                if kind in (b"IDAT", b"IEND"):
                    return 0
                fh.seek(n + 4, 1)
    except OSError:
        return 0


def _read_pnm(path: Path) -> tuple[np.ndarray, int]:
    """Binary / ASCII PGM (P2/P5; also P1/P4 bitmaps) with 8- or 16-bit samples."""
    data = path.read_bytes()
    magic = data[:2]
    if magic not in (b"P2", b"P5", b"P1", b"P4"):
        if magic in (b"P3", b"P6", b"P7"):
            raise InputError(path, f"colour/PAM netpbm ({magic.decode()}) is not supported: convert to grayscale PGM")
        raise InputError(path, "unreadable PGM (bad magic number)")
    # header tokens, skipping comments
    tokens: list[bytes] = []
    pos = 2
    need = 2 if magic in (b"P1", b"P4") else 3
    n = len(data)
    while len(tokens) < need:
        while pos < n and data[pos : pos + 1].isspace():
            pos += 1
        if pos < n and data[pos : pos + 1] == b"#":
            while pos < n and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < n and not data[pos : pos + 1].isspace() and data[pos : pos + 1] != b"#":
            pos += 1
        if start == pos:
            raise InputError(path, "unreadable PGM (truncated header)")
        tokens.append(data[start:pos])
    try:
        vals = [int(t) for t in tokens]
    except ValueError:
        raise InputError(path, "unreadable PGM (non-numeric header)") from None
    w, h = vals[0], vals[1]
    maxval = vals[2] if need == 3 else 1
    if w <= 0 or h <= 0:
        raise InputError(path, f"zero image dimensions ({h}x{w})")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise InputError(path, f"implausible image dimensions ({h}x{w})")
    if not 1 <= maxval <= 65535:
        raise InputError(path, f"unreadable PGM (maxval {maxval} outside 1-65535)")
    pos += 1  # exactly one whitespace byte after the header
    if magic == b"P5":
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        nbytes = w * h * dtype.itemsize
        body = data[pos : pos + nbytes]
        if len(body) < nbytes:
            raise InputError(path, f"truncated PGM: {len(body)} of {nbytes} pixel bytes")
        arr = np.frombuffer(body, dtype=dtype).reshape(h, w).astype(np.uint16 if maxval > 255 else np.uint8)
    elif magic == b"P2":
        try:
            nums = np.array(data[pos:].split(), dtype=np.int64)
        except ValueError:
            raise InputError(path, "unreadable ASCII PGM (non-numeric pixel values)") from None
        if nums.size < w * h:
            raise InputError(path, f"truncated PGM: {nums.size} of {w * h} pixel values")
        arr = nums[: w * h].reshape(h, w).astype(np.uint16 if maxval > 255 else np.uint8)
    elif magic == b"P4":
        row = (w + 7) // 8
        body = data[pos : pos + row * h]
        if len(body) < row * h:
            raise InputError(path, "truncated PBM")
        arr = (1 - np.unpackbits(np.frombuffer(body, np.uint8).reshape(h, row), axis=1)[:, :w]).astype(np.uint8)
    else:  # P1
        nums = np.array(data[pos - 1 :].replace(b" ", b"").replace(b"\n", b"").replace(b"\r", b"").replace(b"\t", b"")[: w * h], dtype="c")
        if nums.size < w * h:
            raise InputError(path, "truncated PBM")
        arr = (1 - (nums == b"1").reshape(h, w)).astype(np.uint8)
    if arr.max(initial=0) > maxval:
        raise InputError(path, f"corrupt PGM: pixel values exceed maxval {maxval}")
    bits = max(1, int(maxval).bit_length())
    if maxval in (255, 65535):
        bits = 8 if maxval == 255 else 16
    # scale by maxval exactly (maxval may not be 2**bits - 1)
    return (arr.astype(np.float32) / float(maxval)), bits


def _read_tiff(path: Path) -> tuple[np.ndarray, int]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            bits = int(getattr(page, "bitspersample", 0) or arr.dtype.itemsize * 8)
            photometric = getattr(page, "photometric", None)
    except Exception as e:  # noqa: BLE001 - any tifffile failure is a bad file
        raise InputError(path, f"unreadable TIFF ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    arr = np.asarray(arr)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize > 2:
        bits = min(bits, 32)
        arr = arr.astype(np.float64) / float(2**bits - 1)
        arr = arr.astype(np.float32)
    elif arr.dtype.kind == "i":
        arr = (arr.astype(np.int32) - np.iinfo(arr.dtype).min).astype(np.uint16 if arr.dtype.itemsize == 2 else np.uint8)
    if photometric is not None and int(photometric) == 0:  # MINISWHITE
        if arr.dtype.kind == "f":
            arr = 1.0 - arr
        else:
            arr = (2**bits - 1) - arr
    return arr, bits


def _read_pillow(path: Path) -> tuple[np.ndarray, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"unreadable image ({type(e).__name__}: {e})") from None
    return arr, 8 if arr.dtype == np.uint8 else arr.dtype.itemsize * 8


def read_mask_file(path: str | Path) -> np.ndarray:
    """Read a lesion mask (PNG, PGM, TIFF or DICOM); returns a 2-D uint8 array, non-zero = lesion.

    Colour masks count any non-zero channel. Values are not rescaled: a mask with labels
    1/2 keeps them (anything above 255 becomes 255).
    """
    p = Path(path)
    _check_file(p)
    fmt = sniff_format(p)
    if fmt == "png":
        arr, _ = _read_png(p)
    elif fmt == "pnm":
        arr, bits = _read_pnm(p)
        arr = (arr > 0).astype(np.uint8)
    elif fmt == "tiff":
        arr, _ = _read_tiff(p)
    elif fmt == "jpeg":
        arr, _ = _read_pillow(p)
    elif fmt == "dicom":
        import pydicom

        try:
            arr = pydicom.dcmread(p).pixel_array
        except Exception as e:  # noqa: BLE001
            raise InputError(p, f"unreadable DICOM mask ({type(e).__name__}: {e})") from None
        if arr.ndim == 3:
            arr = arr.max(axis=0)
    else:
        raise InputError(p, "unrecognised mask file format (expected PNG, PGM, TIFF or DICOM)")
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(p, f"mask must be a non-empty 2-D image, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        return (arr > 0).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)
