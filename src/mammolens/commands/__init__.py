"""CLI commands: thin wrappers over library functions (see :mod:`mammolens.cli`)."""
