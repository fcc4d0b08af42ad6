"""The process allocator: the same numerics, fewer page faults.

``tune_allocator()`` matters on CPU: glibc's malloc maps and unmaps every large activation,
so a third of the time goes to the kernel zeroing fresh pages. Turning mmap off for large
blocks and never trimming the heap keeps those pages mapped (numerics unchanged). ``RunOptions``'
``allocator="auto"`` calls it when a run starts (``perf.activate``); with tcmalloc or jemalloc
preloaded nothing is changed.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_tuned: str | None = None


def tune_allocator() -> str:
    """Make large allocations cheap; returns which allocator setting is in effect.

    With tcmalloc or jemalloc preloaded (``LD_PRELOAD``) nothing is changed. Otherwise glibc's
    malloc is told, through ``mallopt``, to stop using mmap for big blocks and to stop trimming.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    preload = os.environ.get("LD_PRELOAD", "")
    if "tcmalloc" in preload or "jemalloc" in preload:
        _tuned = "preloaded:" + os.path.basename(preload.split(":")[0])
        return _tuned
    if not sys.platform.startswith("linux"):
        _tuned = "default"
        return _tuned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) \
            and libc.mallopt(_M_TOP_PAD, 64 << 20)
        _tuned = "glibc-mallopt" if ok else "default"
    except (OSError, AttributeError):
        _tuned = "default"
    return _tuned


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS now; True when an allocator did so.

    With ``tune_allocator``'s glibc setting freed heap pages stay resident for reuse, and how
    blocks of different lifetimes interleave makes the heap's high-water mark creep upward over
    a long loop even when live memory is constant. Calling this between the iterations of such a
    loop (glibc ``malloc_trim(0)``: free pages anywhere in the heap are released with
    MADV_DONTNEED; tcmalloc ``MallocExtension_ReleaseFreeMemory``) keeps resident memory at
    what is live; the next iteration touches its pages afresh (one page fault per page).
    """
    try:
        proc = ctypes.CDLL(None)
    except OSError:
        return False
    release = getattr(proc, "MallocExtension_ReleaseFreeMemory", None)  # tcmalloc preloaded
    if release is not None:
        release()
        return True
    trim = getattr(proc, "malloc_trim", None) if sys.platform.startswith("linux") else None
    if trim is None or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


@contextlib.contextmanager
def resident_is_live(threshold: int = 1 << 20):
    """Within the block, freed memory goes back to the OS: glibc serves blocks of at least
    ``threshold`` bytes with their own mmap (unmapped when freed), and free heap pages are
    released on entry; yields whether this took effect (False with another allocator or OS).

    For loops whose *live* memory is constant but long: with ``tune_allocator``'s setting every
    block comes from one heap that is never trimmed, and the way blocks of different lifetimes
    interleave makes the heap's resident high-water mark creep with the number of iterations.
    Here resident memory follows live memory, at the price of page faults (kernel zeroing) on
    every large allocation. On exit the previous setting is restored (glibc's adaptive mmap
    threshold stays fixed at ``threshold`` afterwards; the tuned setting does not use it).
    """
    if not sys.platform.startswith("linux"):
        yield False
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if "tcmalloc" in preload or "jemalloc" in preload:
        yield False
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)) and libc.mallopt(_M_MMAP_MAX, 65536)
    except (OSError, AttributeError):
        yield False
        return
    try:
        if ok:
            release_free_memory()
        yield bool(ok)
    finally:
        libc.mallopt(_M_MMAP_MAX, 0 if _tuned == "glibc-mallopt" else 65536)


def allocator_in_use() -> str:
    """What ``tune_allocator`` set (``glibc-mallopt``, ``preloaded:<lib>``) or ``default``."""
    preload = os.environ.get("LD_PRELOAD", "")
    if _tuned is None and ("tcmalloc" in preload or "jemalloc" in preload):
        return "preloaded:" + os.path.basename(preload.split(":")[0])
    return _tuned or "default"
