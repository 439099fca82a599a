"""Functions that die in the ways decoders die, for the sandbox tests.

They live in a plain module (not a test module) because sandbox children import them by
name; the tests put this folder on ``sys.path`` first.
"""

from __future__ import annotations

import os
import signal
import time

from mammolens.errors import InputError


class PanicException(BaseException):
    """Stands for pyo3's ``PanicException``: a BaseException that escapes ``except Exception``."""


def behave(item: str) -> str:
    """``item`` names what to do: ``ok:<x>``, ``abort``, ``segv``, ``exit``, ``hang``,
    ``panic``, ``value``, ``input``, ``slow:<seconds>``."""
    kind, _, arg = str(item).partition(":")
    if kind == "ok":
        return f"done {arg}"
    if kind == "abort":
        os.abort()
    if kind == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "exit":
        os._exit(7)
    if kind == "hang":
        time.sleep(3600)
    if kind == "panic":
        raise PanicException("index out of bounds: the len is 8 but the index is 9")
    if kind == "value":
        raise ValueError("could not convert string to float: 'abc'")
    if kind == "input":
        raise InputError(f"/data/{arg}.dcm", "missing pixel data")
    if kind == "slow":
        time.sleep(float(arg))
        return f"slept {arg}"
    raise AssertionError(item)
