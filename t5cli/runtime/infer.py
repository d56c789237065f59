"""``infer()``: decode a task split, a text file or stdin to JSONL (T5X's infer.py).

Each output line is a JSON object: ``inputs`` (the input text), ``prediction`` (the
decoded output) and ``score`` (summed log-probability of the prediction; length-normalised
for beam search); lines from a task also carry ``target``. Order follows the input. In a
multi-process job each process decodes its contiguous share of the inputs and process 0
writes them all.

Which model a checkpoint holds comes from :mod:`t5cli.runtime.model_loading`; decoding
options and batched decoding from :mod:`t5cli.models.generate`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, TextIO

import numpy as np

from t5cli.errors import ConfigError, DataError
from t5cli.models.generate import DecodeOptions, decode_tokens
from t5cli.runtime import compile_cache, distributed
from t5cli.runtime.data import check_vocabulary, example_text
from t5cli.runtime.model_loading import load_model


# ---- inputs --------------------------------------------------------------------------------

def read_text_inputs(input_file) -> List[str]:
    """One input per line from a file, or from stdin for ``-``; blank lines are skipped."""
    if str(input_file) == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(os.path.expanduser(str(input_file)))
        if not path.is_file():
            raise DataError(f"input file {str(path)!r} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.rstrip("\r") for ln in lines if ln.strip()]


def encode_texts(texts: Sequence[str], vocabulary, *, length: Optional[int] = None,
                 add_eos: bool = True, eos_id: int = 1) -> np.ndarray:
    """Token ids int32[N, length] (right-padded with 0, EOS appended, long inputs cut)."""
    ids = [list(vocabulary.encode(t)) for t in texts]
    if length is None:
        length = max([len(x) + int(add_eos) for x in ids] or [1])
    out = np.zeros((len(ids), length), np.int32)
    for i, x in enumerate(ids):
        x = x[:length - int(add_eos)] + ([eos_id] if add_eos else [])
        out[i, :len(x)] = x
    return out


def task_examples(task, split: str, *, num_examples: Optional[int] = None,
                  use_cached: bool = False) -> List[Dict[str, Any]]:
    """Preprocessed examples of one split, in order, as numpy dicts (not padded)."""
    if split not in task.splits:
        raise DataError(f"task {task.name!r} has no split {split!r} (it has: {', '.join(task.splits)})")
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1,
                          use_cached=use_cached, seed=None)
    if num_examples:
        ds = ds.take(num_examples)
    return list(ds.as_numpy_iterator())


def _pad_rows(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        r = np.asarray(r, np.int32)[:length]
        out[i, :len(r)] = r
    return out


# ---- infer ---------------------------------------------------------------------------------

@dataclasses.dataclass
class InferResult:
    """What ``infer`` returns: the records written and where."""

    records: List[Dict[str, Any]]
    output: Optional[str]
    step: int


def infer(*, checkpoint_path: Optional[str] = None, model_dir: Optional[str] = None,
          mixture_or_task_name: Optional[str] = None, split: str = "test",
          input_file: Optional[str] = None, inputs: Optional[Sequence[str]] = None,
          output: Optional[str] = None, output_dir: Optional[str] = None, model_name: Optional[str] = None, model_config=None,
          model_overrides: Optional[Mapping[str, Any]] = None,
          task_feature_lengths: Optional[Mapping[str, int]] = None, batch_size: int = 32,
          beam_size: int = 1, temperature: Optional[float] = None, top_k: int = 0,
          top_p: float = 1.0, alpha: float = 0.6, seed: int = 0,
          num_examples: Optional[int] = None, step: Optional[int] = None,
          tfds_data_dir: Optional[str] = None, use_cached_tasks: bool = False,
          runtime=None, stream: Optional[TextIO] = None) -> InferResult:
    """Decode inputs with a checkpoint and write JSONL (``inputs``, ``prediction``, ``score``).

    Inputs are ``inputs`` (strings), or ``input_file`` (one per line; ``-`` = stdin), or
    else the ``split`` of the task (default: the task the model was trained on). Text
    inputs are tokenized with the task's input vocabulary (or the model's) and get EOS,
    but no preprocessing: write any prefix the task adds (e.g. ``translate English to
    German: ``) into the text yourself.
    ``task_feature_lengths`` caps input/output lengths (default: inputs as long as the
    longest one, outputs as long as in training). ``output`` defaults to stdout for text
    inputs and to ``OUTPUT_DIR/<task>-<split>-<step>.jsonl`` for a task, where
    ``output_dir`` defaults to ``MODEL_DIR/inference``.
    """
    options = DecodeOptions(beam_size=beam_size, temperature=temperature, top_k=top_k,
                            top_p=top_p, alpha=alpha, seed=seed)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if inputs is not None and input_file is not None:
        raise ConfigError("pass inputs or an input file, not both")
    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime()
    text_mode = inputs is not None or input_file is not None
    compile_cache.enable()
    from t5cli.runtime.head_checkpoints import head_record

    if head_record(checkpoint_path or model_dir) is not None:  # an encoder-only head: labels, tags, spans
        from t5cli.runtime.head_predict import infer_checkpoint

        texts = list(inputs) if inputs is not None else (read_text_inputs(input_file) if input_file else None)
        return infer_checkpoint(runtime, checkpoint_path=checkpoint_path, model_dir=model_dir,
                                mixture_or_task_name=mixture_or_task_name, split=split, texts=texts,
                                output=output, output_dir=output_dir, task_feature_lengths=task_feature_lengths,
                                batch_size=batch_size, num_examples=num_examples, step=step,
                                use_cached_tasks=use_cached_tasks, stream=stream)
    loaded = load_model(runtime, checkpoint_path, model_dir=model_dir, model_name=model_name,
                        model_config=model_config, model_overrides=model_overrides, step=step)
    texts = list(inputs) if inputs is not None else (read_text_inputs(input_file) if input_file else None)
    if text_mode and not texts:
        raise DataError("no inputs to decode (the input is empty)")
    lengths = dict(task_feature_lengths or {})
    task_name = mixture_or_task_name or loaded.task
    task = None
    # text with the run's own vocabularies: rebuilt from its record, without TensorFlow
    recorded = _recorded_vocabularies(loaded) if text_mode and not mixture_or_task_name else None
    if task_name and recorded is None and (mixture_or_task_name or not text_mode
                                           or ("task", task_name) in runtime.registry):
        task = runtime.registry.task(task_name)  # for text: only its vocabularies and EOS
        check_vocabulary(task, loaded.model.config, model_name)
    model = loaded.model
    out_vocab = (recorded["targets"] if recorded else task.output_features["targets"].vocabulary
                 if task is not None and "targets" in task.output_features else model.vocabulary)
    if text_mode:
        encoder_inputs, rows = _text_inputs(texts, task, model, lengths.get("inputs"), recorded=recorded)
        longest_target = None
    else:
        encoder_inputs, rows, longest_target = _task_inputs(
            task, split, lengths.get("inputs"), num_examples=num_examples,
            use_cached=use_cached_tasks, tfds_data_dir=tfds_data_dir)
    max_len = (lengths.get("targets") or (loaded.train_feature_lengths or {}).get("targets")
               or longest_target)
    if not max_len:
        raise ConfigError("how long may outputs be? pass --feature-lengths targets=N")

    batch_size = min(batch_size, len(rows))  # a few lines need no full batch
    primary = distributed.is_primary()
    if primary:
        print(f"decoding {len(rows)} input(s) with {options.describe()}, step {loaded.step}, "
              f"batch {batch_size}, max {max_len} output tokens", file=sys.stderr, flush=True)
    mine = distributed.process_slice(len(rows))  # in a multi-process job: this process's share
    decoded = []
    if mine.stop > mine.start:
        for tokens, scores in decode_tokens(model, distributed.host_local(loaded.params), encoder_inputs[mine],
                                            max_decode_length=int(max_len), batch_size=batch_size,
                                            options=options):
            decoded.extend((out_vocab.decode([int(x) for x in t]), float(s)) for t, s in zip(tokens, scores))
    for row, (prediction, score) in zip(rows, distributed.gather_slices(decoded)):
        row["prediction"], row["score"] = prediction, score

    output = output_path(output, output_dir, text_mode=text_mode, model_dirs=(model_dir, loaded.model_dir),
                         task_name=task.name if task is not None else None, split=split, step=loaded.step)
    if not primary:  # process 0 writes the whole output
        return InferResult(records=rows, output=None if output in (None, "-") else output, step=loaded.step)
    write_jsonl(rows, output, stream=stream)
    if output and output != "-":
        print(f"wrote {len(rows)} predictions to {output}", file=sys.stderr, flush=True)
    return InferResult(records=rows, output=None if output in (None, "-") else output, step=loaded.step)


def output_path(output: Optional[str], output_dir: Optional[str], *, text_mode: bool, model_dirs,
                task_name: Optional[str], split: str, step: int) -> Optional[str]:
    """Where predictions go: ``output`` if given; stdout (None) for text inputs; else
    ``<output_dir or MODEL_DIR/inference>/<task>-<split>-<step>.jsonl``."""
    if output is not None or not (output_dir or not text_mode):
        return output
    base = output_dir or next((Path(d) / "inference" for d in model_dirs if d), None)
    if base is None:
        raise ConfigError("where should the predictions go? pass --output FILE or --output-dir DIR")
    return str(Path(base) / f"{task_name or 'inputs'}-{split if not text_mode else 'text'}-{step}.jsonl")


def _recorded_vocabularies(loaded) -> Optional[Dict[str, Any]]:
    """The training task's vocabularies from the run record (:mod:`t5cli.models.light_vocab`),
    or None when the record has none that can be rebuilt."""
    from t5cli.models import light_vocab

    spec = ((loaded.record or {}).get("train") or {}).get("vocabularies")
    if not spec:
        return None
    inputs, targets = light_vocab.build(spec["inputs"]), light_vocab.build(spec["targets"])
    if inputs is None or targets is None:
        return None
    return {"inputs": inputs, "targets": targets, "add_eos": bool(spec.get("add_eos", True))}


def _text_inputs(texts: Sequence[str], task, model, length: Optional[int], *, recorded=None):
    feature = task.output_features["inputs"] if task is not None else None
    if recorded is not None:
        vocab, add_eos = recorded["inputs"], recorded["add_eos"]
    else:
        vocab = feature.vocabulary if feature is not None else model.vocabulary
        add_eos = feature.add_eos if feature is not None else True
    encoder_inputs = encode_texts(texts, vocab, length=length, add_eos=add_eos,
                                  eos_id=int(model.eos_id))
    return encoder_inputs, [{"inputs": t} for t in texts]


def _task_inputs(task, split: str, length: Optional[int], *, num_examples: Optional[int],
                 use_cached: bool, tfds_data_dir: Optional[str]):
    """Encoder inputs, rows (``inputs``, ``target``) and the longest target of a split."""
    import seqio

    from t5cli.runtime.datasets import ensure_task_data

    if task is None:
        raise ConfigError("nothing to decode: pass --task NAME, --input FILE, or a checkpoint "
                          "whose t5cli_run.json names its task")
    if isinstance(task, seqio.Mixture):
        raise ConfigError(f"{task.name!r} is a mixture; `t5 infer` decodes one task: pass "
                          f"--task with one of {', '.join(t.name for t in task.tasks)}")
    ensure_task_data(task, tfds_data_dir)
    examples = task_examples(task, split, num_examples=num_examples, use_cached=use_cached)
    if not examples:
        raise DataError(f"split {split!r} of task {task.name!r} is empty")
    features = task.output_features
    length = length or max(len(e["inputs"]) for e in examples)
    rows = []
    for e in examples:
        row = {"inputs": example_text(e, "inputs", features["inputs"].vocabulary)}
        if "targets" in features and "targets" in e:
            row["target"] = example_text(e, "targets", features["targets"].vocabulary)
        rows.append(row)
    longest = max((len(e.get("targets", ())) for e in examples), default=0) or None
    return _pad_rows([e["inputs"] for e in examples], length), rows, longest


def json_safe(value: Any, replaced: Optional[List[int]] = None) -> Any:
    """``value`` with every NaN or infinite float (numpy ones too) replaced by None, so
    that ``json.dumps`` writes ``null`` rather than ``NaN``, which is not JSON; each
    replacement appends 1 to ``replaced``."""
    if isinstance(value, Mapping):
        return {k: json_safe(v, replaced) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, replaced) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), replaced)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        if replaced is not None:
            replaced.append(1)
        return None
    return value


def warn_non_finite(count: int, where: str) -> None:
    if count:
        print(f"warning: {count} value(s) in {where} were NaN or infinite and are written as null; "
              f"the checkpoint's parameters may not be finite", file=sys.stderr, flush=True)


def write_jsonl(rows: Iterable[Mapping[str, Any]], output: Optional[str],
                stream: Optional[TextIO] = None) -> None:
    """Write one JSON object per line to ``output`` (atomically), or to ``stream``/stdout.
    NaN and infinite values are written as ``null``, with a warning."""
    replaced: List[int] = []
    text = "".join(json.dumps(json_safe(dict(r), replaced), ensure_ascii=False, allow_nan=False) + "\n"
                   for r in rows)
    warn_non_finite(len(replaced), output if output not in (None, "-") else "the output")
    if output is None or output == "-":
        (stream or sys.stdout).write(text)
        (stream or sys.stdout).flush()
        return
    path = Path(os.path.expanduser(str(output)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
