"""glibc ``malloc`` settings for CPU training: keep freed buffers for reuse instead of handing them back to the OS.

A training step on the CPU allocates and frees the same large activation and gradient buffers every step. With
glibc's defaults, a buffer above the ``mmap`` threshold (128 KiB, rising to at most 32 MiB as big buffers are
freed) is mapped fresh and unmapped on free, and the top of the heap is trimmed back to the OS whenever 128 KiB
lie free there, so each step pays its buffers again in page faults (the kernel zeroes every new page).
``tune_malloc_for_training()`` fixes the threshold at 32 MiB and stops trimming, so freed buffers below 32 MiB
are reused. Measured on this project's CPU (``benchmarks/bench_allocator.py``, benchmarks/RESULTS.md): the
plain-head training step of the calibration config runs 1.39× faster, the fused-loss step 1.08×. The cost: a
process keeps its peak heap after freeing (its RSS does not shrink).

**Opt-in**: no entry point calls it. Switching ``mmap`` off as well (``M_MMAP_MAX`` 0) made the plain step 2.05×
faster, but a capacity run's data build (4,400 people × 1000 exposures) then grew to 23.6 GB and was killed for
memory (untuned, that build then peaked at ~21 GB; ``PackedStream.to_dataset`` has since cut it to ~2 GB): a tuned
process keeps its peak heap. Call it in a training script after the data is built.

Nothing changes where glibc is not the allocator (macOS, Windows, musl, a preloaded jemalloc or tcmalloc), where
the user already set glibc's ``MALLOC_*`` tunables in the environment, or with ``HF_CAPACITY_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

logger = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024**2
"""Buffers below this come from the heap (and are reused); glibc's largest dynamic threshold, the most it accepts."""
TRIM_THRESHOLD_BYTES = 2**31 - 1
"""Free memory at the heap's top is kept up to this much (2 GiB, the largest ``mallopt`` takes: an int)."""
TOP_PAD_BYTES = 64 * 1024**2
"""Extra bytes the heap grows by whenever it has to grow (fewer ``brk`` calls)."""

OPT_OUT_ENV = "HF_CAPACITY_MALLOC_TUNING"
USER_TUNABLES = (
    "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")
"""A user's own malloc settings: any of these (GLIBC_TUNABLES only with glibc.malloc.* in it) turns the tuning off."""

_applied: bool | None = None  # None: not tried yet in this process


@functools.cache
def _glibc_mallopt():
    """glibc's ``mallopt``, or None where the C library is not glibc or another allocator is preloaded (looked up
    once a process)."""
    if not sys.platform.startswith("linux"):
        return None
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload or "mimalloc" in preload:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no such symbol)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def malloc_tuning_reason() -> str | None:
    """Why ``tune_malloc_for_training`` leaves the allocator alone here, or None where it tunes it."""
    if os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{OPT_OUT_ENV}={os.environ[OPT_OUT_ENV]}"
    user = [name for name in USER_TUNABLES if name in os.environ]
    if "GLIBC_TUNABLES" in user and "glibc.malloc." not in os.environ["GLIBC_TUNABLES"]:
        user.remove("GLIBC_TUNABLES")  # tunables of other glibc parts (cpu, pthread) leave malloc to us
    if user:
        return f"the environment sets {', '.join(user)}"
    if _glibc_mallopt() is None:
        return "the allocator is not glibc's malloc"
    return None


def tune_malloc_for_training() -> bool:
    """Fix glibc's ``mmap`` threshold at 32 MiB and stop heap trimming for this process (once; later calls
    return the first call's answer). Returns whether the settings are in effect; see the module docstring for when
    they are not. Does not change any result: only where freed memory goes."""
    global _applied
    if _applied is not None:
        return _applied
    reason = malloc_tuning_reason()
    if reason is not None:
        logger.debug("malloc left at its defaults: %s", reason)
        _applied = False
        return False
    mallopt = _glibc_mallopt()
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                (M_TOP_PAD, TOP_PAD_BYTES))
    ok = all(mallopt(param, value) == 1 for param, value in settings)
    _applied = ok
    logger.debug("malloc tuned for training: %s", ok)
    return ok
