"""PNG / PGM / TIFF reading, format dispatch, masks and the real mini-MIAS files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from mammolens.data.synthetic import write_mammogram_dicom
from mammolens.errors import InputError
from mammolens.io import LoadedImage, read_image, read_mask_file, sniff_format

MIAS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "mini-mias"


def _pgm(path: Path, arr: np.ndarray, maxval: int, comment: bool = True) -> Path:
    head = b"P5\n" + (b"# made by a test\n" if comment else b"") + f"{arr.shape[1]} {arr.shape[0]}\n{maxval}\n".encode()
    body = arr.astype(">u2").tobytes() if maxval > 255 else arr.astype(np.uint8).tobytes()
    path.write_bytes(head + body)
    return path


def test_png_8_and_16_bit(tmp_path):
    a8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))
    cv2.imwrite(str(tmp_path / "a.png"), a8)
    img = read_image(tmp_path / "a.png")
    assert isinstance(img, LoadedImage) and img.pixels.dtype == np.float32
    np.testing.assert_allclose(img.pixels, a8 / 255.0, atol=1e-6)
    assert img.meta == {"height": 32, "width": 64, "bits": 8, "format": "png"}
    a16 = (np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "b.png"), a16)
    img16 = read_image(tmp_path / "b.png")
    np.testing.assert_allclose(img16.pixels, a16 / 65535.0, atol=1e-6)
    assert img16.meta["bits"] == 16


def test_pgm_8_and_16_bit(tmp_path):
    a = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) % 256
    img = read_image(_pgm(tmp_path / "a.pgm", a, 255))
    np.testing.assert_allclose(img.pixels, a / 255.0, atol=1e-6)
    assert img.meta["format"] == "pnm" and img.meta["bits"] == 8
    b = (np.arange(20 * 30).reshape(20, 30) * 6).astype(np.uint16)  # up to 3594 < 4095
    img = read_image(_pgm(tmp_path / "b.pgm", b, 4095, comment=False))
    np.testing.assert_allclose(img.pixels, b / 4095.0, atol=1e-6)
    assert img.meta["bits"] == 12


def test_tiff_16_bit(tmp_path):
    a = (np.arange(24 * 24).reshape(24, 24) * 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a)
    img = read_image(tmp_path / "a.tif")
    np.testing.assert_allclose(img.pixels, a / 65535.0, atol=1e-6)
    assert img.meta["format"] == "tiff"


def test_dispatch_by_content_not_extension(tmp_path):
    a = np.full((32, 32), 100, np.uint16)
    p = write_mammogram_dicom(tmp_path / "image.png", a, manufacturer="SIEMENS", laterality="R", view="CC",
                              patient_id="p", study_uid="1.2.3", bits_stored=12)
    assert sniff_format(p) == "dicom"
    assert read_image(p).meta["manufacturer"] == "Siemens"
    q = tmp_path / "scan.dcm"
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((16, 16), np.uint8))
    q.write_bytes((tmp_path / "x.png").read_bytes())
    assert read_image(q).meta["format"] == "png"


def test_raw_dicom_without_preamble(tmp_path):
    a = (np.arange(32 * 32).reshape(32, 32)).astype(np.uint16)
    p = write_mammogram_dicom(tmp_path / "a.dcm", a, manufacturer="GE", laterality="L", view="MLO",
                              patient_id="p", study_uid="1.2.3", bits_stored=12)
    import pydicom

    ds = pydicom.dcmread(p)
    q = tmp_path / "raw"
    ds.preamble = None
    ds.save_as(q, enforce_file_format=False)  # no preamble
    assert q.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(q, voi="none").pixels, a / 4095.0, atol=1e-6)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty file"),
        (b"P5\n100 100\n255\n" + b"\x00" * 50, "truncated PGM"),
        (b"P5\n0 100\n255\n", "zero image dimensions"),
        (b"P5\n99999 10\n255\n", "implausible"),
        (b"P5\nab cd\n255\n", "non-numeric"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "unreadable PNG"),
        (b"II*\x00" + b"\x00" * 40, "unreadable TIFF"),
        (b"hello world, definitely not an image" * 10, "unrecognised file format"),
    ],
)
def test_bad_files_raise_input_error(tmp_path, content, match):
    p = tmp_path / "bad.img"
    p.write_bytes(content)
    with pytest.raises(InputError) as ei:
        read_image(p)
    assert ei.value.path == str(p) and match in ei.value.reason, ei.value.reason


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="directory"):
        read_image(tmp_path)


def test_colour_png_rejected_gray_rgb_accepted(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 2] = 200
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    with pytest.raises(InputError, match="colour"):
        read_image(tmp_path / "c.png")
    gray3 = np.repeat(np.arange(400, dtype=np.uint8).reshape(20, 20)[..., None] % 200, 3, axis=2)
    cv2.imwrite(str(tmp_path / "g.png"), gray3)
    np.testing.assert_allclose(read_image(tmp_path / "g.png").pixels, gray3[..., 0] / 255.0, atol=1e-6)


def test_read_mask_file(tmp_path):
    m = np.zeros((30, 40), np.uint8)
    m[5:10, 5:15] = 255
    cv2.imwrite(str(tmp_path / "m.png"), m)
    out = read_mask_file(tmp_path / "m.png")
    assert out.dtype == np.uint8 and out.shape == (30, 40) and (out > 0).sum() == 50
    lab = np.zeros((30, 40), np.uint8)
    lab[0:2, 0:2] = 2
    cv2.imwrite(str(tmp_path / "l.png"), lab)
    assert read_mask_file(tmp_path / "l.png").max() == 2
    assert (read_mask_file(_pgm(tmp_path / "m.pgm", m, 255)) > 0).sum() == 50
    (tmp_path / "bad.png").write_bytes(b"nonsense")
    with pytest.raises(InputError):
        read_mask_file(tmp_path / "bad.png")


@pytest.mark.skipif(not MIAS.is_dir(), reason="mini-MIAS not present")
def test_real_mini_mias_pgm():
    files = sorted(MIAS.glob("mdb*.pgm"))[:3]
    assert files
    for f in files:
        img = read_image(f)
        assert img.shape == (1024, 1024)
        assert img.meta["bits"] == 8 and img.meta["format"] == "pnm"
        assert 0.0 <= img.pixels.min() and img.pixels.max() <= 1.0
        # film background is dark, the breast bright: a sizeable bright region exists
        assert (img.pixels > 0.5).mean() > 0.05 and (img.pixels < 0.1).mean() > 0.2
