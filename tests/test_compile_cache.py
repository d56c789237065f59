"""The persistent compilation cache: written by one `t5 infer`, read by the next, damaged
entries replaced, settings from the environment, and `t5 paths`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, python_env

TASK = "number_words_en_de_999"
TINY = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
            num_decoder_layers=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model trained for two steps."""
    from t5cli.plugins import load_runtime
    from t5cli.runtime.train import train

    path = tmp_path_factory.mktemp("cc") / "model"
    train(model_dir=str(path), mixture_or_task_name=TASK, model_name="byt5_tiny", model_overrides=TINY,
          task_feature_lengths={"inputs": 16, "targets": 16}, total_steps=2, batch_size=8,
          checkpoint_period=2, eval_period=None, infer_eval_period=0, runtime=load_runtime())
    return path


def entries(folder: Path) -> dict:
    """Cache entry name -> the time JAX last read or wrote it (its ``-atime`` file)."""
    return {p.name[:-len("-cache")]: (p.with_name(p.name[:-len("-cache")] + "-atime")).read_bytes()
            for p in folder.glob("*-cache")}


def infer_one(t5, model_dir, text="three hundred and twelve"):
    """`t5 infer` of one line, as a fresh process would run it: nothing compiled in memory."""
    import jax

    jax.clear_caches()
    r = t5("infer", "--checkpoint", model_dir, "--input", "-", "--output", "-", input=text + "\n")
    assert r.exit_code == 0, r.err
    return json.loads(r.out.strip().splitlines()[-1]), r.err


@pytest.fixture
def t5(t5, monkeypatch):
    """The in-process `t5` runner, with stdin."""
    import io
    import sys

    def run(*args, input: str = ""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        return t5(*args)

    return run


def test_first_infer_writes_the_cache_and_the_second_reads_it(model_dir, t5, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("T5CLI_CACHE_DIR", str(folder))
    first, _ = infer_one(t5, model_dir)
    written = entries(folder)
    assert len(written) >= 2  # at least the encoder and the decoding loop
    assert any("decode" in name or "fn" in name for name in written), sorted(written)

    second, err = infer_one(t5, model_dir)
    again = entries(folder)
    assert sorted(again) == sorted(written)  # nothing compiled anew
    read = [k for k in written if again[k] != written[k]]  # JAX stamps each entry it reads
    assert len(read) == len(written), (len(read), len(written))
    assert second == first and "warning" not in err

    r = t5("paths")
    line = next(ln for ln in r.out.splitlines() if ln.startswith("compile_cache_dir"))
    assert str(folder) in line and f"({len(written)} entries," in line


def test_damaged_entries_are_deleted_with_a_warning_and_compiled_again(model_dir, t5, tmp_path,
                                                                        monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("T5CLI_CACHE_DIR", str(folder))
    first, _ = infer_one(t5, model_dir)
    names = sorted(entries(folder))
    damaged = folder / f"{names[0]}-cache"  # bytes that do not decompress
    damaged.write_bytes(b"not a compressed executable")
    # one that decompresses but is no executable: only loading it in XLA can tell
    from jax._src.compilation_cache import compress_executable

    unloadable = folder / f"{names[-1]}-cache"
    unloadable.write_bytes(compress_executable(b"\0\0\0\1" + b"garbage" * 10))

    with pytest.warns(UserWarning, match="Error reading persistent compilation cache"):  # JAX's
        second, err = infer_one(t5, model_dir)
    assert second == first
    warned = [ln for ln in err.splitlines() if ln.startswith("warning: compilation cache entry")]
    assert any(str(damaged) in ln and "damaged" in ln for ln in warned), err
    assert any(str(unloadable) in ln and "could not load" in ln for ln in warned), err
    assert sorted(entries(folder)) == names  # both written again, by the fresh compilations
    assert damaged.read_bytes() != b"not a compressed executable"

    third, err = infer_one(t5, model_dir)  # the cache is whole again: no warning
    assert third == first and "warning" not in err


def test_off_switch_and_size_limit(model_dir, t5, tmp_path, monkeypatch):
    from t5cli.errors import ConfigError
    from t5cli.runtime import compile_cache

    folder = tmp_path / "cache"
    monkeypatch.setenv("T5CLI_CACHE_DIR", str(folder))
    monkeypatch.setenv("T5CLI_COMPILE_CACHE", "0")
    infer_one(t5, model_dir)
    assert not folder.exists() or not entries(folder)
    assert "off: T5CLI_COMPILE_CACHE=0" in t5("paths").out

    monkeypatch.delenv("T5CLI_COMPILE_CACHE")
    monkeypatch.setenv("T5CLI_COMPILE_CACHE_MAX_SIZE", "500M")
    assert compile_cache.settings().max_size == 500 * 2 ** 20
    assert compile_cache.parse_size("1.5G") == int(1.5 * 2 ** 30) and compile_cache.parse_size("4096") == 4096
    monkeypatch.setenv("T5CLI_COMPILE_CACHE_MAX_SIZE", "lots")
    with pytest.raises(ConfigError, match="T5CLI_COMPILE_CACHE_MAX_SIZE='lots' is not a size"):
        compile_cache.settings()
    r = t5("infer", "--checkpoint", model_dir, "--input", "-", input="one\n")
    assert r.exit_code == 1 and "T5CLI_COMPILE_CACHE_MAX_SIZE='lots'" in r.err


def test_default_folder_and_a_users_own_jax_cache(tmp_path, monkeypatch):
    import jax

    from t5cli.runtime import compile_cache

    monkeypatch.delenv("T5CLI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.enable() == tmp_path / "xdg" / "t5cli" / "jax"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "t5cli" / "jax")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    assert jax.config.jax_compilation_cache_max_size == 2 ** 30

    mine = str(tmp_path / "mine")  # set by the user: t5cli leaves it as it is
    jax.config.update("jax_compilation_cache_dir", mine)
    try:
        assert compile_cache.enable() is None
        assert jax.config.jax_compilation_cache_dir == mine
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.enable() == tmp_path / "xdg" / "t5cli" / "jax"  # and takes over again


@pytest.mark.slow
def test_warm_cli_infer_in_fresh_processes_reads_the_cache(model_dir, tmp_path):
    """`echo TEXT | t5 infer` twice, each a new process: the second compiles nothing."""
    folder = tmp_path / "cache"
    env = python_env(T5CLI_CACHE_DIR=str(folder))
    outputs = []
    for _ in range(2):
        proc = subprocess.run([PYTHON, "-m", "t5cli", "infer", "--checkpoint", str(model_dir), "--input", "-"],
                              input="three hundred and twelve\n", capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outputs.append((proc.stdout, entries(folder)))
    (out1, first), (out2, second) = outputs
    assert out1 == out2 and first and sorted(first) == sorted(second)
    assert all(second[k] != first[k] for k in first)



def test_an_unusable_folder_is_one_warning_and_no_cache(tmp_path, monkeypatch, capsys):
    import jax

    from t5cli.runtime import compile_cache

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("T5CLI_CACHE_DIR", str(blocker / "jax"))
    assert compile_cache.enable() is None and jax.config.jax_compilation_cache_dir is None
    err = capsys.readouterr().err
    assert err.startswith(f"warning: compilation cache folder {blocker / 'jax'} is not usable")
    assert len(err.strip().splitlines()) == 1
    assert float(jax.jit(lambda x: x * 3.0)(2.0)) == 6.0  # compiling goes on without it


def test_the_size_limit_evicts_the_least_recently_used(tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    from t5cli.runtime import compile_cache

    folder = tmp_path / "cache"
    monkeypatch.setenv("T5CLI_CACHE_DIR", str(folder))
    monkeypatch.setenv("T5CLI_COMPILE_CACHE_MAX_SIZE", "40K")
    assert compile_cache.enable() == folder
    jax.clear_caches()
    sizes = []
    for n in range(1, 9):  # eight programs of a few KB each
        jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * n))(jnp.ones(n * 7)).block_until_ready()
        sizes.append(sum(p.stat().st_size for p in folder.glob("*-cache")))
    assert max(sizes) <= 40 * 2 ** 10
    assert sizes[0] > 0 and 0 < len(list(folder.glob("jit__lambda-*-cache"))) < 8, sizes
    assert "of 40.0 KB" in compile_cache.describe()
