"""Reading pixels and metadata (DICOM, PNG/PGM/TIFF) and writing DICOM results."""
