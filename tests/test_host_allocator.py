"""The glibc settings for XLA's host buffers: one malloc arena (and, on request, a heap
that never returns freed pages)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc mallopt only")

# A jitted computation whose 64 MiB result is freed and allocated again on every call, the
# way a train step's temporary buffer is, run from several threads; counts the page faults
# each call costs and the malloc arenas the process ends with (glibc's malloc_info).
PROBE = """
import ctypes, json, resource, sys, tempfile, threading
from t5cli.runtime import host_allocator
applied = host_allocator.retain_freed_memory()
import jax, jax.numpy as jnp
x = jnp.ones((8192, 2048))
f = jax.jit(lambda x: x * 2.0 + 1.0)
for _ in range(16):  # the heap grows for the first few calls, then stays put
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    y = f(x)
    y.block_until_ready()
    del y
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
def work():
    for _ in range(50):
        z = [bytearray(1000 + i) for i in range(200)]
        del z
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
path = tempfile.mktemp()
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
arenas = open(path).read().count("<heap nr=")
print(json.dumps({"applied": applied, "faults_per_call": faults, "arenas": arenas,
                  "value": float(f(x)[0, 0])}))
"""


def _probe(**env_extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("T5CLI_MALLOC", "MALLOC_"))}
    env.update({"JAX_PLATFORMS": "cpu"}, **env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_arena_by_default():
    """Every thread allocates from the main arena, so freed memory does not pile up in
    per-thread arenas; glibc's defaults give the threads arenas of their own."""
    tuned = _probe()
    plain = _probe(T5CLI_MALLOC_DEFAULTS="0")
    assert tuned["applied"] is True and plain["applied"] is False
    assert tuned["value"] == plain["value"] == 3.0
    assert tuned["arenas"] == 1, tuned
    assert plain["arenas"] > 1, plain


def test_retain_reuses_freed_buffers_without_page_faults():
    """``T5CLI_MALLOC=retain``: the old behaviour, no page faults for a freed buffer."""
    retain = _probe(T5CLI_MALLOC="retain")
    plain = _probe(T5CLI_MALLOC_DEFAULTS="0")
    assert retain["applied"] is True and retain["value"] == 3.0
    # 64 MiB is 16,384 pages: without the settings most of them are new every call
    assert plain["faults_per_call"] > 8000, plain
    # with them the heap stops growing after a few calls (a busy machine may add a few)
    assert retain["faults_per_call"] < plain["faults_per_call"] / 4, (retain, plain)


def test_nothing_is_changed_when_jax_will_not_run_on_the_cpu(monkeypatch):
    """The settings are for XLA's CPU buffers: a GPU or TPU process keeps glibc's defaults."""
    from t5cli.runtime import host_allocator

    monkeypatch.setattr(host_allocator, "_applied", False)
    monkeypatch.setattr(host_allocator.ctypes, "CDLL", None)  # any mallopt call would fail
    for platforms in ("cuda", "tpu,cpu"):
        assert host_allocator.retain_freed_memory({"JAX_PLATFORMS": platforms}) is False
    assert host_allocator._applied is False


@pytest.mark.slow  # a whole `t5 train` in a subprocess (~20-30 s)
def test_t5_train_applies_them_before_jax_starts(tmp_path):
    """They only reach XLA's worker threads if set before the first JAX computation: check
    that the `t5 train` path calls them that early."""
    code = f"""
import sys
from t5cli.runtime import host_allocator, xla_flags
original = host_allocator.retain_freed_memory
def spy(*args, **kwargs):
    print("JAX_STARTED_BEFORE", xla_flags._backend_started(), flush=True)
    return original(*args, **kwargs)
host_allocator.retain_freed_memory = spy
from t5cli.cli import main
sys.argv = ["t5", "train", "--task", "number_words_en_de_999", "--model", "byt5_tiny",
            "--steps", "1", "--batch-size", "2", "--feature-lengths", "inputs=16,targets=16",
            "--model-dir", {str(tmp_path / "m")!r}, "--gin", "train.eval_period = None",
            "--gin", "train.infer_eval_period = 0"]
main()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "JAX_STARTED_BEFORE False" in out.stdout, (out.stdout[-2000:], out.stderr[-2000:])


# 200 MB of small blocks freed below a live one: one arena cannot trim them by itself
TRIM_PROBE = """
import json
from t5cli.runtime import host_allocator
def rss_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
applied = host_allocator.retain_freed_memory()
blocks = [bytearray(1000) for _ in range(200_000)]
keep = bytearray(1000)  # above the freed blocks: the heap's top stays in use
del blocks
before = rss_kb()
released = host_allocator.release_free_memory()
print(json.dumps({"applied": applied, "released": released, "freed_kb": before - rss_kb()}))
"""


def test_release_free_memory_returns_pages_below_the_top_of_the_heap():
    """What the training loop calls after compiling: the free pages inside the heap go
    back to the system; with ``T5CLI_MALLOC=retain`` nothing is released."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("T5CLI_MALLOC", "MALLOC_"))}
    env["JAX_PLATFORMS"] = "cpu"
    run = lambda **extra: json.loads(subprocess.run(  # noqa: E731
        [sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True,
        env=dict(env, **extra)).stdout.strip().splitlines()[-1])
    trimmed = run()
    assert trimmed["applied"] and trimmed["released"]
    assert trimmed["freed_kb"] > 100_000, trimmed
    retained = run(T5CLI_MALLOC="retain")
    assert retained["applied"] and not retained["released"] and retained["freed_kb"] < 10_000, retained
