"""The service's file store: DICOM instances, heatmaps and DICOM outputs.

Every stored file is named by a SHA-256 digest (of the SOP Instance UID, or of a key the
service builds), so no path built from user input ever reaches the filesystem; the
database holds only those names, and :meth:`Storage.resolve` refuses anything that is not
such a name. Stored DICOM instances are immutable (:meth:`Storage.write_new`): a re-sent
SOP Instance UID never replaces the file the scores were computed from.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_NAME_RE = re.compile(r"^[0-9a-f]{64}\.(dcm|npz)$")
KINDS = ("instances", "heatmaps", "outputs", "incoming")


def digest_name(key: str, suffix: str) -> str:
    """``sha256(key).hexdigest() + suffix`` (suffix ``.dcm`` or ``.npz``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest() + suffix


class Storage:
    """Content folders under ``root``: ``instances/``, ``heatmaps/``, ``outputs/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        for k in KINDS:
            (self.root / k).mkdir(parents=True, exist_ok=True)

    def resolve(self, kind: str, name: str) -> Path:
        """The path of a stored file; ``name`` must be a digest name (never user text)."""
        if kind not in KINDS or not _NAME_RE.match(name or ""):
            raise ValueError(f"not a storage name: {kind}/{name!r}")
        return self.root / kind / name[:2] / name

    def write_bytes(self, kind: str, name: str, data: bytes) -> Path:
        """Write atomically (temp file + rename) and return the path."""
        path = self.resolve(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def write_new(self, kind: str, name: str, data: bytes) -> bool:
        """Write ``data`` under ``name`` unless a file of that name exists; never replaces one.

        Returns ``True`` when the file was created, ``False`` when one was there already
        (its content untouched). Atomic also between concurrent writers: the complete
        file is linked into place (``link`` fails on an existing name, where ``rename``
        would replace it).
        """
        path = self.resolve(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return False
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def same_content(self, kind: str, name: str, data: bytes) -> bool:
        """Whether the stored file ``name`` holds exactly ``data``."""
        path = self.resolve(kind, name)
        try:
            if path.stat().st_size != len(data):
                return False
            return hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
        except FileNotFoundError:
            return False

    def new_path(self, kind: str, name: str) -> Path:
        path = self.resolve(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def delete(self, kind: str, name: str) -> None:
        if name:
            self.resolve(kind, name).unlink(missing_ok=True)
