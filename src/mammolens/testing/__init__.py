"""Helpers for tests, benchmarks and quick experiments (not used by the pipeline itself).

:mod:`mammolens.testing.toydata`: a toy cohort of small PNG "mammograms" and its cache,
learnable by the ``tiny`` model in seconds.
"""
