"""Dataset adapters: one module per source layout, each producing manifest rows.

An adapter module defines ``NAME``, ``SUMMARY`` and
``load(source, *, qc, track=no_progress, **options) -> pandas.DataFrame`` returning
manifest rows (paths absolute) and recording every bad input in ``qc``. Its docstring
documents the exact layout it expects. Use :func:`get_adapter` or
:func:`mammolens.data.ingest.ingest` rather than importing the modules directly.

==============  ===============================================================
``dicom``       any folder tree of DICOM files (+ optional annotations CSV)
``mias``        mini-MIAS ``Info.txt`` + ``mdbNNN.pgm``
``cbis-ddsm``   CBIS-DDSM description CSVs + DICOM tree + ROI masks
``vindr``       VinDr-Mammo breast-level + finding annotations + DICOMs
``rsna``        RSNA Screening Mammography 2023 ``train.csv`` + DICOMs
``inbreast``    INbreast ``INbreast.csv`` + ``AllXML`` ROIs + ``AllDICOMs``
``cmmd``        CMMD (TCIA) DICOM tree + per-breast clinical sheet
``embed``       EMBED (Emory) metadata + clinical tables + DICOM tree
``csv``         a generic table with a column mapping
==============  ===============================================================
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from mammolens.errors import ConfigError

#: format name -> module (under mammolens.data.adapters)
_MODULES: dict[str, str] = {
    "dicom": "dicom",
    "mias": "mias",
    "cbis-ddsm": "cbis_ddsm",
    "vindr": "vindr",
    "rsna": "rsna",
    "inbreast": "inbreast",
    "cmmd": "cmmd",
    "embed": "embed",
    "csv": "csv_table",
}

#: the format names ``ingest`` accepts
ADAPTERS: tuple[str, ...] = tuple(_MODULES)


@dataclass(frozen=True)
class Adapter:
    """A loaded adapter: its name, one-line summary, documentation and ``load``."""

    name: str
    summary: str
    doc: str
    load: Callable[..., object]
    module: ModuleType

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the keyword options ``load`` accepts (besides ``qc`` and ``track``)."""
        params = inspect.signature(self.load).parameters
        return tuple(
            n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("qc", "track")
        )


def get_adapter(name: str) -> Adapter:
    """The adapter for a format name (case-insensitive; ``_`` and ``-`` equivalent).

    Raises
    ------
    ConfigError
        For an unknown format, listing the known ones.
    """
    key = str(name).strip().lower().replace("_", "-")
    aliases = {"mini-mias": "mias", "cbis": "cbis-ddsm", "vindr-mammo": "vindr", "rsna-2023": "rsna"}
    key = aliases.get(key, key)
    if key not in _MODULES:
        raise ConfigError(f"unknown dataset format {name!r}; known: {', '.join(ADAPTERS)}")
    mod = importlib.import_module(f"{__name__}.{_MODULES[key]}")
    return Adapter(key, mod.SUMMARY, mod.__doc__ or "", mod.load, mod)


__all__ = ["ADAPTERS", "Adapter", "get_adapter"]
