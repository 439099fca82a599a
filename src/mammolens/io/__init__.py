"""Reading pixels and metadata (DICOM, PNG/PGM/TIFF) and writing DICOM results.

Public API::

    from mammolens.io import read_image, read_dicom, read_dicom_metadata, LoadedImage
    from mammolens.io import read_image_isolated, IsolatedPool   # untrusted pixels, out of process
"""

from mammolens.io.dicom import (
    canonical_manufacturer,
    normalize_view,
    parse_age,
    read_dicom,
    read_dicom_metadata,
    validate_mammogram,
)
from mammolens.io.images import LoadedImage, read_image, read_mask_file, sniff_format
from mammolens.io.sandbox import IsolatedPool, read_image_isolated

__all__ = [
    "IsolatedPool",
    "LoadedImage",
    "canonical_manufacturer",
    "normalize_view",
    "parse_age",
    "read_dicom",
    "read_dicom_metadata",
    "read_image",
    "read_image_isolated",
    "read_mask_file",
    "sniff_format",
    "validate_mammogram",
]
