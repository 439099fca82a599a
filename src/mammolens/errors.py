"""Exceptions and exit codes shared by every stage.

Exit status of every CLI command (documented in the README):

* 0 -- all inputs processed;
* 1 -- error (nothing useful produced);
* 2 -- usage error (bad options, missing arguments);
* 3 -- completed, but some inputs were rejected: see the QC table the command wrote.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3


class MammolensError(Exception):
    """Base class: an error the CLI reports as a one-line message, never a traceback."""


class InputError(MammolensError):
    """A bad input file (corrupt, wrong modality, missing...), named with the reason.

    Stages catch it per input, record a QC row and carry on with the good inputs.
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = "" if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class ManifestError(MammolensError):
    """A manifest that does not follow the schema (missing columns, bad values)."""


class LeakageError(MammolensError):
    """A patient appears in more than one split."""


class ConfigError(MammolensError):
    """An invalid configuration value or preset."""


class CheckpointError(MammolensError):
    """A corrupt, missing or incompatible checkpoint."""
