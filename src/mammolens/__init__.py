"""mammolens: breast cancer detection in screening mammography.

Data (DICOM and public datasets -> manifest -> cache -> patient-level splits), an
attention-pooled ResNet-50 with a lesion-localisation branch, clinical-study statistics
(DeLong, McNemar, MRMC, localisation) and a reading-room service.
"""

__version__ = "0.1.0"
