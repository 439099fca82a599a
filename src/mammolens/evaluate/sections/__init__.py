"""One module per section of the evaluation report; each turns tables into the section's
JSON (numbers from :mod:`mammolens.stats`) and its tables."""
