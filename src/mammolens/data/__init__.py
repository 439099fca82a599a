"""Data side: manifest schema, dataset adapters, preprocessing cache, splits, synthetic cohort."""
