"""`t5 cache-tasks`: seqio's Beam pipeline writes a cache whose stats match the task, and
training with `--use-cached-tasks` sees the uncached pipeline's examples in seqio's cached
order, and resumes that stream deterministically."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from conftest import EXAMPLE_USER_DIR, SHARED_DATA

TASK = "number_words_en_de_999"
LENGTHS = {"inputs": 32, "targets": 32}
TINY = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
            num_decoder_layers=1)
SEED = 7
BATCH = 8
SHARDS = 4

HAVE_BEAM = importlib.util.find_spec("apache_beam") is not None
needs_beam = pytest.mark.skipif(
    not HAVE_BEAM, reason="apache-beam is not installed: pip install 't5cli[beam]' "
                          "(`make test` installs it)")


def test_without_beam_the_command_says_how_to_install(t5, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if not installed
    r = t5("cache-tasks", "--task", TASK, "--output-cache-dir", tmp_path / "cache")
    assert r.exit_code == 1
    assert r.err.strip().count("\n") == 0, r.err
    assert "pip install 't5cli[beam]'" in r.err
    assert not (tmp_path / "cache").exists()


def test_use_cached_tasks_without_a_cache_names_the_command(t5, tmp_path):
    task = "number_words_en_de"  # never cached here, whatever ran before
    r = t5("train", "--model", "byt5_tiny", "--task", task, "--model-dir", tmp_path / "m",
           "--steps", "2", "--batch-size", "8", "--feature-lengths", "inputs=32,targets=32",
           "--use-cached-tasks", "--cache-dir", tmp_path / "nowhere")
    assert r.exit_code == 1
    assert r.err.strip().count("\n") == 0, r.err
    assert f"t5 cache-tasks --task {task} --output-cache-dir DIR" in r.err
    assert str(tmp_path / "nowhere") in r.err
    assert not (tmp_path / "m").exists()


# --- with apache-beam ------------------------------------------------------------------------

def _forget_cache(cache_dir):
    """seqio keeps its global cache dirs for the process."""
    import seqio

    seqio.set_global_cache_dirs([d for d in seqio.get_global_cache_dirs()
                                 if not d.startswith(str(cache_dir))])


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """TASK cached with DirectRunner (in process) into a fresh folder, through the CLI."""
    from t5cli.cli import main

    cache_dir = tmp_path_factory.mktemp("task_cache")
    try:
        main(["cache-tasks", "--task", TASK, "--output-cache-dir", str(cache_dir),
              "--min-shards", str(SHARDS)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    yield cache_dir
    _forget_cache(cache_dir)


@pytest.fixture(scope="module")
def runtime(cached):
    from t5cli.plugins import load_runtime
    from t5cli.runtime.task_cache import add_cache_dirs

    add_cache_dirs([cached])
    return load_runtime()


@needs_beam
def test_a_task_without_placeholder_cannot_be_cached(t5, make_user_dir, tmp_path):
    d = make_user_dir({"plain.py": textwrap.dedent("""
        import seqio
        import tensorflow as tf

        def rows(split, shuffle_files=False, seed=None):
            return tf.data.Dataset.from_tensor_slices({"inputs": ["a"], "targets": ["b"]})

        seqio.TaskRegistry.add(
            "plain_words", source=seqio.FunctionDataSource(rows, splits=["train"]),
            preprocessors=[seqio.preprocessors.tokenize],
            output_features={k: seqio.Feature(seqio.ByteVocabulary()) for k in ("inputs", "targets")})
    """)})
    r = t5("--user-dir", d, "cache-tasks", "--task", "plain_words", "--output-cache-dir", tmp_path / "c")
    assert r.exit_code == 1
    assert "task 'plain_words' cannot be cached" in r.err and "CacheDatasetPlaceholder" in r.err
    assert not (tmp_path / "c").exists()


def _examples(task, *, use_cached, split="train", **kwargs):
    ds = task.get_dataset(LENGTHS, split=split, use_cached=use_cached, **kwargs)
    return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in ex.items()}
            for ex in ds.as_numpy_iterator()]


def _key(ex):
    return tuple(ex["inputs"]), tuple(ex["targets"])


@needs_beam
def test_cache_layout_and_stats_match_the_task(cached, runtime):
    from builtin_tasks.tasks import SPLITS, number_word_pairs

    task_dir = cached / TASK
    assert (task_dir / "COMPLETED").is_file()
    task = runtime.registry.task(TASK)
    assert task.cache_dir == str(task_dir)
    for split in SPLITS:
        info = json.loads((task_dir / f"info.{split}.json").read_text())
        stats = json.loads((task_dir / f"stats.{split}.json").read_text())
        assert info["num_shards"] == SHARDS
        assert sorted(p.name for p in task_dir.glob(f"{split}.tfrecord-*")) == [
            f"{split}.tfrecord-{i:05d}-of-{SHARDS:05d}" for i in range(SHARDS)]
        assert set(info["features"]) >= {"inputs", "targets", "inputs_pretokenized"}
        assert stats["examples"] == len(number_word_pairs(split, 0, 999))
        assert stats["examples"] == task.source.num_input_examples(split)
        # token counts up to the placeholder: tokenized, no EOS yet
        precache = list(task.preprocess_precache(task.source.get_dataset(split, shuffle=False))
                        .as_numpy_iterator())
        assert stats["inputs_tokens"] == sum(len(ex["inputs"]) for ex in precache)
        assert stats["targets_max_tokens"] == max(len(ex["targets"]) for ex in precache)


@needs_beam
def test_cached_examples_equal_the_uncached_pipeline(runtime):
    task = runtime.registry.task(TASK)
    for split in ("train", "validation"):
        cached = _examples(task, use_cached=True, split=split, shuffle=False)
        uncached = _examples(task, use_cached=False, split=split, shuffle=False)
        assert sorted(map(_key, cached)) == sorted(map(_key, uncached))
        by_input = {tuple(ex["inputs"]): ex for ex in uncached}
        assert all(ex == by_input[tuple(ex["inputs"])] for ex in cached)  # every feature
    # Beam's global reshuffle: the cache's order is its own, not the source's
    assert [_key(e) for e in cached] != [_key(e) for e in uncached]


def _unpack(batch):
    """The (inputs, targets) token tuples of each example packed into a batch, in order."""
    out = []
    for row in range(len(batch["encoder_input_tokens"])):
        for seg in sorted(set(batch["encoder_segment_ids"][row].tolist()) - {0}):
            enc = batch["encoder_input_tokens"][row][batch["encoder_segment_ids"][row] == seg]
            dec = batch["decoder_target_tokens"][row][batch["decoder_segment_ids"][row] == seg]
            out.append((tuple(enc.tolist()), tuple(dec.tolist())))
    return out


@pytest.fixture
def seen(monkeypatch):
    """Records the arguments and the batches of every get_train_iterator call train() makes."""
    import t5cli.runtime.train  # noqa: F401  (its helpers import get_train_iterator by name)
    from t5cli.runtime import data

    calls = []
    real = data.get_train_iterator

    def recording(*args, **kwargs):
        bound = inspect.signature(real).bind(*args, **kwargs)
        bound.apply_defaults()
        call = {"kwargs": dict(bound.arguments), "batches": []}
        calls.append(call)
        batches = real(*args, **kwargs)

        def record():
            for batch in batches:
                call["batches"].append(batch)
                yield batch

        return record()

    for name, module in list(sys.modules.items()):
        if name.startswith("t5cli.runtime") and getattr(module, "get_train_iterator", None) is real:
            monkeypatch.setattr(module, "get_train_iterator", recording)
    return calls


def _train(runtime, model_dir, steps):
    from t5cli.runtime.train import train

    return train(model_dir=str(model_dir), mixture_or_task_name=TASK, task_feature_lengths=LENGTHS,
                 total_steps=steps, batch_size=BATCH, model_name="byt5_tiny", model_overrides=TINY,
                 checkpoint_period=2, eval_period=None, infer_eval_period=0, log_period=2,
                 random_seed=SEED, use_cached_tasks=True, runtime=runtime)


@needs_beam
def test_training_sees_the_cached_stream_and_resumes_it(runtime, seen, tmp_path, t5, cached):
    import seqio

    from t5cli.runtime.data import get_train_iterator

    task = runtime.registry.task(TASK)
    uncached = {tuple(ex["inputs"]): tuple(ex["targets"])
                for ex in _examples(task, use_cached=False, shuffle=False)}

    assert _train(runtime, tmp_path / "m", 2).step == 2  # "stopped" after its checkpoint
    first = seen[-1]
    assert first["kwargs"]["use_cached"] is True and first["kwargs"]["start_step"] == 0
    assert _train(runtime, tmp_path / "m", 4).step == 4  # resumed
    resumed = seen[-1]
    assert resumed["kwargs"]["start_step"] == 2
    model_saw = first["batches"][:2] + resumed["batches"][:2]

    # the uninterrupted stream: batches 0..3 of a fresh iterator
    fresh = get_train_iterator(task, LENGTHS, BATCH, seed=SEED, use_cached=True)
    whole = [next(fresh) for _ in range(4)]
    for got, want in zip(model_saw, whole):
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])

    # every example the model saw is the uncached pipeline's, token for token ...
    examples = [ex for batch in model_saw for ex in _unpack(batch)]
    assert examples and all(uncached[inputs] == targets for inputs, targets in examples)
    # ... in the order seqio's cached reader gives with the run's seed
    order = task.get_dataset(LENGTHS, split="train", use_cached=True, shuffle=True, seed=SEED,
                             num_epochs=None, shard_info=seqio.ShardInfo(0, 1))
    want = [_key({k: v.tolist() for k, v in ex.items() if k in ("inputs", "targets")})
            for ex in order.take(len(examples)).as_numpy_iterator()]
    assert examples == want

    # infer reads the cached split too, in seqio's cached (unshuffled) order
    out = tmp_path / "predictions.jsonl"
    r = t5("infer", "--checkpoint", tmp_path / "m", "--split", "validation", "--num-examples", "3",
           "--batch-size", "4", "--use-cached-tasks", "--cache-dir", cached, "-o", out)
    assert r.exit_code == 0, r.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    first = _examples(task, use_cached=True, split="validation", shuffle=False)[:3]
    assert [row["inputs"] for row in rows] == [ex["inputs_pretokenized"].decode() for ex in first]


@needs_beam
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "toy-ende" / "src-train.txt").is_file(),
                    reason="toy-ende data not present")
def test_user_dir_task_on_fresh_worker_processes(t5, tmp_path):
    """multi_processing workers are new interpreters: they load the user dir themselves."""
    cache = tmp_path / "cache"
    r = t5("--user-dir", EXAMPLE_USER_DIR, "cache-tasks", "--task", "toy_ende",
           "--output-cache-dir", cache, "--min-shards", "2", "--",
           "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert r.exit_code == 0, r.err
    lines = sum(1 for _ in open(SHARED_DATA / "toy-ende" / "src-train.txt", encoding="utf-8"))
    stats = json.loads((cache / "toy_ende" / "stats.train.json").read_text())
    assert stats["examples"] == lines
    assert os.path.isfile(cache / "toy_ende" / "COMPLETED")
