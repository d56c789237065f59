"""One malloc arena for the whole process, so that freed host memory does not pile up.

XLA's CPU backend allocates each execution's temporary buffer (0.93 GB for a T5 1.1 small
train step at batch 8 x 128/128) with ``malloc`` from a worker thread; TensorFlow's input
pipeline, orbax and XLA's compiler allocate from threads of their own. glibc gives each
thread that meets contention an arena of its own (up to 8 per core), and every arena keeps
the free memory it cannot trim: measured on ``t5 train --model t5_1_1_small --batch-size 8
--feature-lengths inputs=128,targets=128``, the peak RSS wandered between 2.9 and 3.1 GB
from run to run with glibc's defaults, and was 2.6 GB with one arena.

``retain_freed_memory()`` (its name from when it did more, see below) sets
``M_ARENA_MAX=1``: every thread allocates from the main arena, whose free memory glibc
trims; large buffers are still ``mmap``-ed and returned when freed, as glibc does by default.

It used to also set ``M_MMAP_MAX=0`` and ``M_TRIM_THRESHOLD=-1`` so that the step's buffer
was never returned and re-faulted (the kernel zeroes each new page: ~12% of a step when the
buffer was 1.7 GB). Holding every freed page that way let the heap fragment: small
allocations from other threads landed in the freed buffer, the next step's buffer no longer
fitted, and the same run peaked at 7.3 GB. ``T5CLI_MALLOC=retain`` still asks for that
behaviour (for a machine with memory to spare); ``T5CLI_MALLOC_DEFAULTS=0`` leaves glibc as
it is.

It only affects threads that have not yet allocated, so ``train()`` calls it before its
first JAX computation. It is about XLA's CPU backend, whose buffers live in host memory:
when JAX will run on a GPU or TPU (``xla_flags.platform_is_cpu``), with another libc
(macOS, musl) or with ``T5CLI_MALLOC_DEFAULTS=0``, nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import platform

from t5cli.runtime.xla_flags import platform_is_cpu

# mallopt(3) parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

#: (parameter, value) pairs given to mallopt(3): one arena
SETTINGS = ((M_ARENA_MAX, 1),)

#: ``T5CLI_MALLOC=retain``: besides, never ``mmap`` and never trim (-1 disables trimming):
#: no page faults for a step's buffers, but the heap keeps and fragments every freed page
RETAIN_SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))

_applied = False


def retain_freed_memory(environ=os.environ) -> bool:
    """Apply :data:`SETTINGS` (with ``T5CLI_MALLOC=retain``, :data:`RETAIN_SETTINGS`)
    through glibc's ``mallopt`` when JAX will run on the CPU; returns whether they are in
    force."""
    global _applied
    if _applied:
        return True
    if environ.get("T5CLI_MALLOC_DEFAULTS", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    if not platform_is_cpu(environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = RETAIN_SETTINGS if environ.get("T5CLI_MALLOC", "").strip().lower() == "retain" else SETTINGS
    _applied = all(mallopt(param, value) == 1 for param, value in settings)
    return _applied


def release_free_memory() -> bool:
    """Hand the free pages inside the malloc heap back to the system (glibc's
    ``malloc_trim(0)``) when :func:`retain_freed_memory` is in force without
    ``T5CLI_MALLOC=retain``; returns whether it ran.

    One arena trims only the top of its heap by itself: what XLA's compiler, TensorFlow's
    input pipeline or a checkpoint save free below live allocations stays resident. The
    training loop calls this once its step is compiled (and after its off-the-clock work),
    when those pages are free; it takes a few milliseconds.
    """
    if not _applied or os.environ.get("T5CLI_MALLOC", "").strip().lower() == "retain":
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim(0)
    return True
