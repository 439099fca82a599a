"""Decoding untrusted pixel data in processes that may die.

Image decoders are native code. A crafted or corrupt file can make one abort
(an uncaught C++ exception), segfault, panic (a Rust ``PanicException``, a
``BaseException`` that escapes ``except Exception``) or loop. In the process that
runs a whole preprocessing job, a prediction run or a server, any of these takes
everything down. This module is the one place that runs decoding where such a death
is survivable:

* :func:`read_image_isolated` reads one file in a child process and turns every way
  the child can fail (killed by a signal, a ``BaseException``, a timeout, an exception
  that is not an :class:`~mammolens.errors.InputError`) into an ``InputError`` naming
  the file and the reason, e.g. ``decoder crashed (SIGABRT) while decoding JPEG 2000
  Image Compression (Lossless Only) pixel data``.
* :class:`IsolatedPool` runs a function over many items in a supervised
  :class:`concurrent.futures.ProcessPoolExecutor`. When a worker dies, the executor
  reports ``BrokenProcessPool`` for every item it had in flight; the pool is then
  replaced, and each of those items is run once more, alone, in a one-shot child: the
  item that kills its process again is recorded as an ``InputError`` with the exact
  signal, the innocent ones give their normal result. An item that runs past
  ``timeout`` is recorded as timed out, its pool is killed and replaced, and the other
  in-flight items are run again. Nothing hangs, and every good item is processed.

Cost: children are started with the ``forkserver`` method where available (else
``spawn``; never plain ``fork``, which inherits thread-pool locks), and the fork
server preloads NumPy, pydicom and the readers, so a child starts in milliseconds.
Pool workers are reused across items; one-shot children are only used for
:func:`read_image_isolated` and for the few items that were in flight when a worker
died.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mammolens.errors import InputError
from mammolens.io._isolation import (
    DEFAULT_TIMEOUT,
    IsolatedPool,
    crash_reason,
    default_path_of,
    describe_source,
    in_sandbox,
    run_isolated,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "IsolatedPool",
    "crash_reason",
    "default_path_of",
    "describe_source",
    "in_sandbox",
    "read_image_isolated",
    "run_isolated",
]


def _read_task(task: tuple[str, dict[str, Any]]) -> Any:
    from mammolens.io.images import read_image

    path, opts = task
    return read_image(path, **opts)


def read_image_isolated(path: str | os.PathLike[str], *, timeout: float | None = DEFAULT_TIMEOUT, **read_opts: Any) -> Any:
    """:func:`mammolens.io.read_image` in a child process that may die.

    Parameters
    ----------
    path
        The image file (DICOM, PNG, PGM, TIFF).
    timeout
        Seconds before a decoder is declared hung and killed (``None``: no limit).
    **read_opts
        Passed to :func:`mammolens.io.read_image` (``voi``, ``prefer_lut``, ``validate``).

    Returns
    -------
    LoadedImage
        The same object the in-process reader returns.

    Raises
    ------
    InputError
        Everything the reader raises, plus: the child was killed by a signal (abort,
        segfault), raised a ``BaseException`` (a Rust panic), raised an exception that
        is not an ``InputError``, or ran past ``timeout``.
    """
    p = str(Path(path))
    out = run_isolated(_read_task, (p, dict(read_opts)), timeout=timeout)
    if isinstance(out, InputError):
        raise out
    return out
