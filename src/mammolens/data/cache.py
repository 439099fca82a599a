"""The preprocessing cache's on-disk format, and reading it.

The one owner of the layout: ``settings.json`` (the :class:`PreprocessSettings`),
``index.csv`` (one row per image: :data:`INDEX_COLUMNS`; appended a complete line at a time,
rewritten atomically), ``arrays/<2-hex shard>/<safe name>.npy`` (+ ``.mask.npy``),
``qc.csv``, and ``.lock`` (one writer at a time). :func:`mammolens.data.preprocess.preprocess_manifest`
writes it through the helpers here; everything else reads it with :func:`open_cache`.

>>> cache = open_cache("cache/")                          # doctest: +SKIP
>>> image, mask, transform = cache.load("mdb001")          # doctest: +SKIP

``image`` is float32 ``(H, W)`` in [0, 1] with the chest wall on the left (the default
``flip_to``), ``mask`` uint8 ``(H, W)`` with 0 background, 1 benign/unknown lesion,
2 malignant lesion, or ``None`` when the image had no lesion annotations, and
``transform`` the :class:`~mammolens.data.transform.Transform` from the original image.

:meth:`Cache.load` is what training's DataLoader workers call in their hot loop: it is a
dict lookup and one or two ``np.load`` calls (no pandas). The object pickles cheaply, so
it can be handed to DataLoader worker processes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from mammolens.data.preprocess_settings import PreprocessSettings
from mammolens.data.transform import Transform
from mammolens.errors import MammolensError

#: columns of CACHE/index.csv
INDEX_COLUMNS = [
    "image_id",
    "status",  # ok | rejected
    "file",  # image array, relative to the cache folder ("" when rejected)
    "mask_file",  # mask array, relative ("" when no lesions)
    "height",
    "width",
    "has_mask",  # 0 | 1
    "transform",  # Transform JSON
    "flags",  # ';'-separated QC flags
    "reason",  # why rejected
    "path",  # the input file
    "fingerprint",  # hash of (path, size, mtime)
    "key",  # PreprocessSettings.key()
    "seconds",  # processing time
]

INDEX_FILE = "index.csv"
SETTINGS_FILE = "settings.json"
QC_FILE = "qc.csv"
ARRAYS_DIR = "arrays"


def safe_name(image_id: str) -> str:
    """A file-system-safe, collision-free file stem for an image id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._")[:80] or "image"
    return f"{stem}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"


def array_relpath(image_id: str) -> str:
    """Relative path of an image's array in the cache (sharded by a hash prefix)."""
    shard = hashlib.sha1(image_id.encode()).hexdigest()[:2]
    return f"{ARRAYS_DIR}/{shard}/{safe_name(image_id)}.npy"


def mask_relpath(image_id: str) -> str:
    return array_relpath(image_id)[: -len(".npy")] + ".mask.npy"


def input_fingerprint(path: str | Path) -> str:
    """Hash of the input file's absolute path, size and modification time ("missing" if absent)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return "missing"
    text = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def encode_image(img: np.ndarray, dtype: str) -> np.ndarray:
    """Float [0, 1] image -> stored array (uint16 scaled by 65535, or float16)."""
    if dtype == "uint16":
        return (np.clip(img, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    return img.astype(np.float16)


def decode_image(arr: np.ndarray) -> np.ndarray:
    """Stored array -> float32 image in [0, 1]."""
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(1.0 / 65535.0)
    return arr.astype(np.float32)


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_index_rows(path: Path) -> list[dict[str, str]]:
    """Read index.csv rows, tolerating a last line cut by a kill (it is dropped)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != INDEX_COLUMNS:
        if header is None:
            return []
        raise MammolensError(f"{path}: not a mammolens cache index (unexpected columns)")
    for rec in reader:
        if len(rec) == len(INDEX_COLUMNS):
            rows.append(dict(zip(INDEX_COLUMNS, rec, strict=True)))
    return rows


class IndexWriter:
    """Appends complete lines to index.csv (repairing a cut last line first)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb+") as fh:
                data = fh.read()
                if not data.endswith(b"\n"):
                    fh.truncate(data.rfind(b"\n") + 1)
            self.fh = path.open("a", newline="", encoding="utf-8")
        else:
            self.fh = path.open("w", newline="", encoding="utf-8")
            csv.writer(self.fh).writerow(INDEX_COLUMNS)
        self.writer = csv.writer(self.fh)
        self._last_sync = time.monotonic()

    def write(self, row: dict[str, Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf).writerow([row.get(c, "") for c in INDEX_COLUMNS])
        self.fh.write(buf.getvalue())  # one write per complete line
        self.fh.flush()
        if time.monotonic() - self._last_sync > 2.0:
            os.fsync(self.fh.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()


class CacheLock:
    """An exclusive advisory lock on CACHE/.lock: one writer per cache folder at a time."""

    def __init__(self, cache_dir: Path) -> None:
        self.fh = (cache_dir / ".lock").open("a+")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise MammolensError(
                f"{cache_dir}: another `mammolens preprocess` is writing this cache; wait for it or use another --out"
            ) from None

    def release(self) -> None:
        if not self.fh.closed:
            self.fh.close()  # closing drops the lock


def write_index(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite index.csv atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(INDEX_COLUMNS)
    for r in rows:
        w.writerow([r.get(c, "") for c in INDEX_COLUMNS])
    write_text_atomic(path, buf.getvalue())


def is_fresh(row: dict[str, str] | None, fingerprint: str, key: str, cache_dir: Path) -> bool:
    """Whether an index row still stands for this input file and these settings (its files exist)."""
    if row is None or row.get("key") != key or row.get("fingerprint") != fingerprint:
        return False
    if row.get("status") == "rejected":
        return True
    if row.get("status") != "ok" or not row.get("file") or not (cache_dir / row["file"]).exists():
        return False
    return not (row.get("mask_file") and not (cache_dir / row["mask_file"]).exists())


class CacheError(MammolensError):
    """A missing or foreign cache folder, or an image that is not in the cache."""


class Cache:
    """A preprocessed-image cache folder (read-only view).

    Attributes
    ----------
    root
        The cache folder.
    settings
        The :class:`~mammolens.data.preprocess.PreprocessSettings` it was built with.
    key
        ``settings.key()``.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise CacheError(f"{root}: cache folder not found (run `mammolens preprocess` first)")
        sfile = root / SETTINGS_FILE
        if not sfile.exists():
            raise CacheError(f"{root}: not a mammolens cache (no {SETTINGS_FILE}); run `mammolens preprocess` first")
        try:
            meta = json.loads(sfile.read_text(encoding="utf-8"))
            self.settings = PreprocessSettings.model_validate(meta["settings"])
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(f"{sfile}: not a mammolens cache settings file ({e})") from None
        self.root = root
        self.key = self.settings.key()
        try:
            rows = read_index_rows(root / INDEX_FILE)
        except MammolensError as e:
            raise CacheError(str(e)) from None
        # latest row per image, only rows made with these settings
        self._rows: dict[str, dict[str, str]] = {}
        for r in rows:
            if r.get("key") == self.key:
                self._rows[r["image_id"]] = r
        self._ok: dict[str, tuple[str, str, str]] = {
            iid: (str(root / r["file"]), str(root / r["mask_file"]) if r["mask_file"] else "", r["transform"])
            for iid, r in self._rows.items()
            if r["status"] == "ok" and r["file"]
        }
        self._tf: dict[str, Transform] = {}
        self._index = None

    # -- lookup ------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[str]:
        """Ids of the images available (status ok), in index order."""
        return list(self._ok)

    def has(self, image_id: str) -> bool:
        """Whether ``image_id`` was preprocessed successfully."""
        return str(image_id) in self._ok

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._ok

    def __len__(self) -> int:
        return len(self._ok)

    @property
    def index(self) -> Any:  # pandas.DataFrame
        """The index as a DataFrame (every image, ok and rejected)."""
        if self._index is None:
            import pandas as pd

            df = pd.DataFrame(list(self._rows.values()), columns=INDEX_COLUMNS)
            for c in ("height", "width", "has_mask"):
                df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
            df["has_mask"] = df["has_mask"].fillna(0).astype(bool)
            df["seconds"] = pd.to_numeric(df["seconds"], errors="coerce")
            self._index = df
        return self._index

    def _entry(self, image_id: str) -> tuple[str, str, str]:
        try:
            return self._ok[image_id]
        except KeyError:
            r = self._rows.get(str(image_id))
            if r is not None and r["status"] != "ok":
                raise CacheError(f"{self.root}: image {image_id!r} was rejected by preprocessing: {r['reason']}") from None
            raise CacheError(f"{self.root}: image {image_id!r} is not in the cache (run `mammolens preprocess` on a manifest that has it)") from None

    def transform(self, image_id: str) -> Transform:
        """The :class:`Transform` from the original image to the cache image."""
        tf = self._tf.get(image_id)
        if tf is None:
            tf = self._tf[image_id] = Transform.from_json(self._entry(image_id)[2])
        return tf

    def path(self, image_id: str) -> Path:
        """The image array file of ``image_id``."""
        return Path(self._entry(image_id)[0])

    # -- loading -------------------------------------------------------------------------
    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray | None, Transform]:
        """Load ``(image float32 (H, W) in [0, 1], mask uint8 (H, W) or None, transform)``.

        Raises :class:`CacheError` for an image that is not in the cache or whose array
        file has gone.
        """
        file, mask_file, _ = self._entry(image_id)
        try:
            image = decode_image(np.load(file, allow_pickle=False))
            mask = np.load(mask_file, allow_pickle=False) if mask_file else None
        except (OSError, ValueError) as e:
            raise CacheError(f"{file}: cannot read cached array of {image_id!r} ({e}); run `mammolens preprocess` again to regenerate it") from None
        return image, mask, self.transform(image_id)

    def load_image(self, image_id: str) -> np.ndarray:
        """Only the image (float32 (H, W) in [0, 1])."""
        return self.load(image_id)[0]

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, images={len(self._ok)}, size={self.settings.size}, key={self.key})"

    # pickling: drop the lazily built DataFrame (workers rarely need it)
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_index"] = None
        return d


def open_cache(root: str | Path) -> Cache:
    """Open a cache folder written by ``mammolens preprocess``; :class:`CacheError` if it is not one."""
    return Cache(root)
