"""Keep freed host memory in the process, so that XLA's per-step buffers are not re-faulted.

On CPU, XLA allocates each execution's temporary buffer (1.7 GB for a T5 1.1 small train
step at batch 8 x 128/128) with ``malloc`` and frees it when the step ends. glibc serves a
request that large from a worker thread's arena with a fresh ``mmap`` whatever
``M_MMAP_MAX`` says, and gives it back with ``munmap``: every step then touches ~430,000
new pages, and the kernel zeroes each one. That cost ~12% of the step on a 2-core CPU.

``retain_freed_memory()`` tells glibc to serve every thread from the main arena, never
to ``mmap`` an allocation and never to trim the heap, so a buffer freed by one step is
reused by the next with no page faults. The price is that the process keeps its peak
heap until it exits, which is what a training or decoding process wants anyway.

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

#: (parameter, value) pairs; -1 for the trim threshold disables trimming (mallopt(3))
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))

_applied = False


def retain_freed_memory(environ=os.environ) -> bool:
    """Apply :data:`SETTINGS` through glibc's ``mallopt`` when JAX will run on the CPU;
    returns whether they are in force."""
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
    _applied = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    return _applied
