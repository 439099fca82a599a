"""keep_freed_memory: freed activation-sized blocks stay in the process for the next pass (glibc)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# glibc's own account of its memory (mallinfo2): hblkhd = bytes in mmap'd blocks,
# fordblks = free bytes kept in the heap for reuse
_CHILD = r"""
import ctypes, json, sys
import numpy as np
from mammolens.predict.backends import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
on = keep_freed_memory() if sys.argv[1] == "on" else None
a = np.ones(64 << 18, dtype=np.float32)  # 64 MB: above glibc's largest mmap threshold (32 MB)
held = libc.mallinfo2()
del a
freed = libc.mallinfo2()
print(json.dumps({"set": on, "mmapped_while_held": held.hblkhd, "kept_after_free": freed.fordblks}))
"""


def _info(mode: str) -> dict:
    p = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt / mallinfo2")
def test_freed_activation_sized_blocks_stay_in_the_heap():
    mb64 = 64 << 20
    try:
        default = _info("off")
        kept = _info("on")
    except subprocess.CalledProcessError as e:
        if "mallinfo2" in e.stderr:
            pytest.skip("glibc without mallinfo2 (< 2.33)")
        raise
    if not kept["set"]:
        pytest.skip("not glibc: mallopt unavailable")
    # glibc's default: the block is its own mmap and goes back to the kernel when freed,
    # so the next pass must fault in (and the kernel zero) every page again
    assert default["mmapped_while_held"] >= mb64 and default["kept_after_free"] < mb64
    # kept: served from the heap and still there, free, for the next pass
    assert kept["mmapped_while_held"] < mb64 and kept["kept_after_free"] >= mb64
