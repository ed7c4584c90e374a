"""Prediction maps large allocations on their own, so freed block buffers go back to the system."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from dinogeo.inference.predict import map_large_allocations


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mmap threshold",
)
def test_a_freed_block_buffer_is_returned_to_the_system():
    """A freed 8 MiB buffer (a block's bands, a batch) no longer stays in the heap.

    With glibc's dynamic threshold, freeing a 16 MiB array lets the next 8 MiB one come from the
    heap, where a small allocation made after it keeps it from being trimmed: the heap then grows
    block after block.
    """
    assert map_large_allocations()
    big = np.ones(16 << 17)  # 16 MiB, freed: raises a dynamic threshold to 16 MiB
    del big
    before = _rss_mb()
    buf = np.ones(8 << 17)  # 8 MiB, touched
    keep = [np.ones(64) for _ in range(1000)]  # small allocations after it
    del buf
    assert _rss_mb() - before < 4, "the freed 8 MiB buffer is still resident"
    assert len(keep) == 1000
