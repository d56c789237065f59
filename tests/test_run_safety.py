"""Runs that protect their own results: a diverging run stops, one writer per MODEL_DIR,
file-system errors as one line, checksummed checkpoints, vocabulary and feature checks,
and no autograph files left in /tmp."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import PYTHON, python_env

TASK = "number_words_en_de_999"
TINY = ("{'emb_dim': 32, 'num_heads': 2, 'head_dim': 16, 'mlp_dim': 64, "
        "'num_encoder_layers': 1, 'num_decoder_layers': 1, 'dtype': %ACTIVATION_DTYPE}")
LENGTHS = "inputs=32,targets=32"
LOCK = ".t5cli.lock"


def train_args(model_dir, *extra, steps=4, lr="0.01"):
    return ["train", "--model", "byt5_tiny", "--task", TASK, "--model-dir", str(model_dir),
            "--steps", str(steps), "--batch-size", "8", "--feature-lengths", LENGTHS,
            "--gin", f"train.model_overrides = {TINY}",
            "--gin", "train.learning_rate_schedule = @constant_schedule()",
            "--gin", f"constant_schedule.base_learning_rate = {lr}",
            "--gin", "train.checkpoint_period = 2", "--gin", "train.eval_period = 0",
            "--gin", "train.infer_eval_period = 0", "--gin", "train.log_period = 2", *extra]


def run_cli(*args):
    from t5cli.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"t5 {args[0]} exited with {exc.code}"


def listing(path: Path):
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None
            for p in sorted(path.rglob("*"))}


def one_line(r):
    """The one error line of a failed command; nothing else but its progress lines."""
    lines = [ln for ln in r.err.strip().splitlines() if not ln.startswith("WARNING:absl:Using an uncached")]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], r.err
    assert all(ln.startswith(("train step ", "training ", "note: ", "decoding ", "evaluating "))
               for ln in lines[:-1]), r.err
    return errors[0]


def leaves(step_dir: Path):
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointHandler().restore(step_dir / "params")
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real 4-step run: checkpoint_2 and checkpoint_4, each with its checksums."""
    model_dir = tmp_path_factory.mktemp("run") / "model"
    run_cli(*train_args(model_dir))
    return model_dir


def copy_of(trained, tmp_path) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(trained, model_dir)
    return model_dir


# ---- non-finite loss ----------------------------------------------------------------------

def test_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path, t5):
    model_dir = tmp_path / "nan"
    r = t5(*train_args(model_dir, "--gin", "train.checkpoint_period = 1", "--gin", "train.log_period = 10",
                       steps=20, lr="1e6"))
    assert r.exit_code == 1, r.err
    line = one_line(r)
    assert line.startswith("error: training diverged: the loss or gradient norm is NaN or infinite at step 2;")
    assert "checkpoint_1 in" in line and "lower the learning rate" in line and "float32" in line, line
    assert "stop_on_nonfinite=False" in line
    steps = sorted(p.name for p in model_dir.glob("checkpoint_*"))
    assert steps == ["checkpoint_1"], steps  # nothing from step 2 on, no tmp dir left
    assert all(np.isfinite(x).all() for x in leaves(model_dir / "checkpoint_1"))
    assert not (model_dir / LOCK).exists()


@pytest.mark.slow
def test_nonfinite_check_can_be_turned_off_and_infer_writes_null(tmp_path, t5):
    model_dir = tmp_path / "nan"
    r = t5(*train_args(model_dir, "--gin", "train.stop_on_nonfinite = False", steps=4, lr="1e6"))
    assert r.exit_code == 0, r.err
    assert "warning: the loss or gradient norm is not finite at step 2" in r.err
    assert not all(np.isfinite(x).all() for x in leaves(model_dir / "checkpoint_4"))
    out = tmp_path / "pred.jsonl"
    inputs = tmp_path / "in.txt"
    inputs.write_text("12\n345\n")
    r = t5("infer", "--checkpoint", model_dir, "--input", inputs, "--output", out,
           "--feature-lengths", "targets=4")
    assert r.exit_code == 0, r.err
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 2 and all(row["score"] is None for row in rows), rows
    assert "were NaN or infinite and are written as null" in r.err


# ---- one writer per MODEL_DIR ---------------------------------------------------------------

def test_second_run_is_refused_and_touches_nothing(trained, tmp_path, t5):
    from t5cli.runtime.run_lock import RunLock

    model_dir = copy_of(trained, tmp_path)
    in_progress = model_dir / "checkpoint_6.orbax-checkpoint-tmp"  # the first run's save under way
    (in_progress / "params").mkdir(parents=True)
    (in_progress / "params" / "part").write_text("half written")
    first = RunLock(model_dir, enabled=True).acquire()
    try:
        record = json.loads((model_dir / LOCK).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        before = listing(model_dir)
        r = t5(*train_args(model_dir, steps=8))
        assert r.exit_code == 1
        line = one_line(r)
        assert line.startswith(f"error: MODEL_DIR {model_dir} is in use by another training run, "
                               f"pid {os.getpid()} on host {socket.gethostname()}"), line
        assert "wait for it to finish or stop it, or pass another --model-dir" in line
        assert listing(model_dir) == before  # no tmp dir removed, no record or event rewritten
    finally:
        first.release()
    assert not (model_dir / LOCK).exists()
    shutil.rmtree(in_progress)
    r = t5(*train_args(model_dir, steps=6))  # once the first is done, the same command resumes
    assert r.exit_code == 0, r.err
    assert (model_dir / "checkpoint_6").is_dir() and not (model_dir / LOCK).exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_is_taken_over_and_old_checkpoints_resume(trained, tmp_path, t5):
    model_dir = copy_of(trained, tmp_path)
    (model_dir / "checkpoint_4" / "t5cli_checksums.json").unlink()  # as written before checksums
    pid = _dead_pid()
    (model_dir / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                              "started": "2026-12-01T00:00:00Z"}))
    r = t5(*train_args(model_dir, steps=6))
    assert r.exit_code == 0, r.err
    assert (f"note: took over the lock of MODEL_DIR {model_dir} from pid {pid} on host "
            f"{socket.gethostname()} (started 2026-12-01T00:00:00Z), which no longer runs") in r.err
    assert (model_dir / "checkpoint_6").is_dir() and not (model_dir / LOCK).exists()
    assert "checksum" not in r.err and (model_dir / "checkpoint_6" / "t5cli_checksums.json").is_file()

    (model_dir / LOCK).write_text(json.dumps({"host": "other-host", "pid": 4242}))
    before = listing(model_dir)
    r = t5(*train_args(model_dir, steps=8))
    assert r.exit_code == 1
    line = one_line(r)
    assert "is locked by pid 4242 on host other-host" in line and f"delete {model_dir / LOCK}" in line
    assert listing(model_dir) == before


@pytest.mark.slow
def test_two_concurrent_cli_runs_on_one_model_dir(tmp_path):
    """Two real `t5 train` processes: the second is refused while the first completes."""
    import time

    model_dir = tmp_path / "model"
    cmd = [PYTHON, "-m", "t5cli", *train_args(model_dir, "--gin", "train.checkpoint_period = 5", steps=30)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())
    deadline = time.monotonic() + 120
    while not (model_dir / LOCK).exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert (model_dir / LOCK).exists(), "the first run never took the lock"
    second = subprocess.run(cmd, capture_output=True, text=True, env=python_env(),
                            timeout=300)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 1
    lines = [ln for ln in second.stderr.strip().splitlines() if "uncached FunctionDataset" not in ln]
    assert len(lines) == 1 and f"pid {first.pid} on host" in lines[0], second.stderr
    assert first.returncode == 0, err
    assert "done: step 30" in out
    assert sorted(p.name for p in model_dir.glob("checkpoint_*")) == [f"checkpoint_{n}" for n in
                                                                     (10, 15, 20, 25, 30, 5)]
    assert len(list((model_dir / "train").iterdir())) == 1  # one events file: one writer
    assert not (model_dir / LOCK).exists()


# ---- file-system errors -------------------------------------------------------------------

def test_model_dir_under_a_file_or_a_file_is_one_line(tmp_path, t5):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for model_dir in (blocker / "model", blocker):
        r = t5(*train_args(model_dir))
        assert r.exit_code == 1
        line = one_line(r)
        assert "Not a directory (ENOTDIR)" in line and str(blocker) in line, line
        assert "Traceback" not in r.err
    assert blocker.read_text() == "not a directory"


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs (root only); yields a function mount(path, options)."""
    mounted = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], capture_output=True)


def test_read_only_model_dir_is_one_line(tmp_path, t5, tmpfs):
    ro = tmpfs(tmp_path / "ro", "ro,size=1m")
    r = t5(*train_args(ro / "model"))
    assert r.exit_code == 1
    line = one_line(r)
    assert "Read-only file system (EROFS)" in line and str(ro / "model") in line, line


@pytest.mark.slow
def test_full_disk_is_one_line_and_a_later_run_resumes(tmp_path, t5, tmpfs):
    """A real full disk: a small tmpfs, filled after the first checkpoint."""
    disk = tmpfs(tmp_path / "disk", "size=3m")
    model_dir = disk / "model"
    r = t5(*train_args(model_dir, steps=2))
    assert r.exit_code == 0, r.err
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - 100_000, 0))
    r = t5(*train_args(model_dir, steps=4))
    assert r.exit_code == 1
    line = one_line(r)
    assert line.startswith(f"error: cannot write {model_dir / 'checkpoint_4'}: No space left on device "
                           f"(ENOSPC); checkpoint_2 and those before it are kept"), line
    assert "Event loop is closed" not in r.err and "Traceback" not in r.err
    assert (model_dir / "checkpoint_2" / "params").is_dir()
    filler.unlink()
    r = t5(*train_args(model_dir, steps=4))
    assert r.exit_code == 0, r.err
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith("checkpoint")) == \
        ["checkpoint_2", "checkpoint_4"]  # the partial save was cleaned up, never read


def test_enospc_while_saving_is_one_line(trained, tmp_path, t5, monkeypatch):
    """The same with a monkeypatched writer, where no tmpfs can be mounted."""
    import orbax.checkpoint as ocp

    model_dir = copy_of(trained, tmp_path)
    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        partial = Path(str(self.directory)) / f"checkpoint_{step}.orbax-checkpoint-tmp"
        partial.mkdir()
        (partial / "half").write_bytes(b"\0" * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial / "half"))

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    r = t5(*train_args(model_dir, steps=6))
    assert r.exit_code == 1
    line = one_line(r)
    assert "No space left on device (ENOSPC)" in line and "checkpoint_4 and those before it are kept" in line
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    r = t5(*train_args(model_dir, steps=6))
    assert r.exit_code == 0, r.err
    assert (model_dir / "checkpoint_6").is_dir()
    assert not list(model_dir.glob("*orbax-checkpoint-tmp*"))


# ---- damaged checkpoints ------------------------------------------------------------------

def _largest_data_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def test_flipped_byte_is_detected_on_restore_and_load(trained, tmp_path, t5, monkeypatch):
    model_dir = copy_of(trained, tmp_path)
    manifest = json.loads((model_dir / "checkpoint_4" / "t5cli_checksums.json").read_text())
    assert any(name.startswith("params/") for name in manifest["files"])
    data = _largest_data_file(model_dir / "checkpoint_4")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    rel = data.relative_to(model_dir / "checkpoint_4").as_posix()
    before = listing(model_dir)
    resume = t5(*train_args(model_dir, steps=6))
    evaluate = t5("eval", "--checkpoint", model_dir / "checkpoint_4", "--task", TASK, "--feature-lengths",
                  LENGTHS, "--output-dir", tmp_path / "eval", "--num-examples", "4")
    for r in (resume, evaluate):
        assert r.exit_code == 1
        line = one_line(r)
        assert f"file {rel} changed since it was saved (checksum mismatch)" in line, line
        assert "damaged or incomplete" in line and "move checkpoint_4 out of" in line
    assert listing(model_dir) == before
    # the switch skips the check (and the damage is then read silently)
    monkeypatch.setenv("T5CLI_VERIFY_CHECKPOINTS", "0")
    from t5cli.runtime.checkpoint_integrity import find_damage

    assert find_damage(model_dir / "checkpoint_4" / "params") is None


def test_missing_data_file_is_one_short_line(trained, tmp_path, t5, monkeypatch):
    model_dir = copy_of(trained, tmp_path)
    data = _largest_data_file(model_dir / "checkpoint_4")
    data.unlink()
    r = t5(*train_args(model_dir, steps=6))
    assert r.exit_code == 1
    line = one_line(r)
    rel = data.relative_to(model_dir / "checkpoint_4").as_posix()
    assert f"file {rel} is missing" in line and "tensorstore" not in line.lower(), line
    # without checksums (an older checkpoint) orbax's own error is cut to the file it names
    (model_dir / "checkpoint_4" / "t5cli_checksums.json").unlink()
    r = t5("eval", "--checkpoint", model_dir / "checkpoint_4", "--task", TASK, "--feature-lengths",
           LENGTHS, "--output-dir", tmp_path / "eval", "--num-examples", "4")
    assert r.exit_code == 1
    line = one_line(r)
    assert "Event loop is closed" not in r.err and "tensorstore_spec" not in line, line
    assert len(line.replace(str(model_dir), "M")) < 320, line  # short but for the paths
    assert "damaged or incomplete" in line and str(model_dir / "checkpoint_4" / "params") in line, line


# ---- vocabulary and feature checks ----------------------------------------------------------

BIG_VOCAB_TASK = textwrap.dedent('''
    import seqio

    from builtin_tasks.tasks import number_word_pairs


    def _rows(split, shuffle_files=False, seed=None):
        import tensorflow as tf

        pairs = number_word_pairs("validation")[:8]
        return tf.data.Dataset.from_tensor_slices({"inputs": [a for a, _ in pairs],
                                                   "targets": [b for _, b in pairs]})


    vocab = seqio.ByteVocabulary(extra_ids=1000)  # 1259 ids
    seqio.TaskRegistry.add(
        "numbers_big_vocab", source=seqio.FunctionDataSource(_rows, splits=["validation"]),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)},
        metric_fns=[lambda targets, predictions: {"n": len(targets)}])
''')


def test_eval_refuses_a_task_with_a_larger_vocabulary(trained, tmp_path, t5, make_user_dir):
    user_dir = make_user_dir({"big_vocab.py": BIG_VOCAB_TASK})
    r = t5("--user-dir", user_dir, "eval", "--checkpoint", trained, "--task", "numbers_big_vocab",
           "--split", "validation", "--output-dir", tmp_path / "eval")
    assert r.exit_code == 1
    line = one_line(r)
    assert ("task 'numbers_big_vocab' uses a vocabulary of 1259 ids but model byt5_tiny has vocab_size "
            "384") in line, line
    assert not (tmp_path / "eval").exists()


def test_unknown_feature_length_is_named(tmp_path, t5):
    r = t5(*train_args(tmp_path / "m"), "--feature-lengths", "inputs=32,foo=32")
    assert r.exit_code == 1
    line = one_line(r)
    assert "names feature 'foo', which task 'number_words_en_de_999' does not have" in line, line
    assert "did you mean targets=32?" in line
    assert not (tmp_path / "m").exists()


# ---- TensorFlow's autograph files -----------------------------------------------------------

AUTOGRAPH_SCRIPT = textwrap.dedent('''
    import glob, os, sys, tempfile
    from t5cli.quiet import import_tensorflow_quietly, keep_autograph_files_private
    import_tensorflow_quietly()
    import tensorflow as tf

    folder = keep_autograph_files_private()

    def f(x):
        if x > 0:
            x = x * 2
        return x

    print(float(tf.function(f)(tf.constant(3.0))))
    ds = tf.data.Dataset.range(3).map(lambda x: x * 2 if x > 0 else x)
    print(list(ds.as_numpy_iterator()))
    print(folder)
    print(len(glob.glob(os.path.join(folder, "__autograph_generated_file*.py"))))
''')


def test_autograph_files_are_removed_at_exit(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    stale = tmp / "t5cli-autograph-999999999-abc"  # a killed process's folder
    stale.mkdir()
    (stale / "__autograph_generated_fileold.py").write_text("")
    script = tmp_path / "autograph_script.py"  # autograph needs the source in a file
    script.write_text(AUTOGRAPH_SCRIPT)
    r = subprocess.run([PYTHON, str(script)], capture_output=True, text=True, timeout=300,
                       env=python_env(TMPDIR=str(tmp), TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "6.0"
    folder = Path(lines[-2])
    assert folder.parent == tmp and int(lines[-1]) >= 1  # autograph wrote into the private folder
    assert not folder.exists() and not stale.exists()
    assert list(tmp.iterdir()) == [], list(tmp.iterdir())


# ---- helpers ------------------------------------------------------------------------------

def test_storage_error_finds_the_cause_in_the_chain():
    from t5cli.errors import storage_error

    try:
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/data/m/config.gin")
        except OSError as exc:
            raise RuntimeError("writing failed") from exc
    except RuntimeError as exc:
        err = storage_error(exc, "training stopped")
    assert str(err) == "training stopped: Read-only file system (EROFS): /data/m/config.gin"
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing local file "/x": No space left on device')
    assert "No space left on device (ENOSPC)" in str(storage_error(tensorstore, path="/x"))
    assert storage_error(ValueError("something else")) is None
