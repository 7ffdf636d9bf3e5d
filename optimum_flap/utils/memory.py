"""Give freed memory back to the operating system between the blocks of a streamed prune."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _glibc() -> Any:
    """The C library when it is glibc (it has `malloc_trim`), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def return_freed_memory() -> None:
    """Ask glibc to return the free parts of its heaps to the OS (`malloc_trim(0)`); a no-op elsewhere.

    glibc serves allocations below its mmap threshold (which grows up to 32 MB) from heaps it keeps
    after they are freed. A streamed prune frees a decoder block's tensors after each block; without
    trimming, the freed memory stays resident and the process grows by a fraction of a block per block.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
