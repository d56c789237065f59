"""``infer()``: decode a task split, a text file or stdin to JSONL (T5X's infer.py).

Each output line is a JSON object: ``inputs`` (the input text), ``prediction`` (the
decoded output) and ``score`` (summed log-probability of the prediction; length-normalised
for beam search); lines from a task also carry ``target``. Order follows the input.

This module also holds what ``evaluate`` and ``export`` share with it:
:func:`load_model` (which model a checkpoint holds, and its parameters) and
:class:`DecodeOptions` with :func:`decode_tokens` (batched decoding at fixed shapes, so
each shape compiles once).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np

from t5cli.errors import CheckpointError, ConfigError, DataError


# ---- decoding options ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How to decode. ``beam_size`` > 1: beam search (brevity penalty ``alpha``);
    ``temperature`` > 0 (or ``top_k``/``top_p`` set): sampling; otherwise greedy."""

    beam_size: int = 1
    temperature: Optional[float] = None
    top_k: int = 0
    top_p: float = 1.0
    alpha: float = 0.6
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ConfigError(f"--beam-size must be a positive integer, got {self.beam_size!r}")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.beam_size > 1 and self.method_is_sampling():
            raise ConfigError("--beam-size cannot be combined with --temperature/--top-k/--top-p; "
                              "pick beam search or sampling")

    def method_is_sampling(self) -> bool:
        return bool(self.temperature) or self.top_k > 0 or self.top_p < 1.0

    @property
    def method(self) -> str:
        if self.beam_size > 1:
            return "beam"
        return "sample" if self.method_is_sampling() else "greedy"

    def describe(self) -> str:
        if self.method == "beam":
            return f"beam search (beams={self.beam_size}, alpha={self.alpha})"
        if self.method == "sample":
            return (f"sampling (temperature={self.temperature or 1.0}, top_k={self.top_k}, "
                    f"top_p={self.top_p}, seed={self.seed})")
        return "greedy"


def decode_tokens(model, params, encoder_inputs: np.ndarray, *, max_decode_length: int,
                  batch_size: int, options: DecodeOptions = DecodeOptions()
                  ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Decode ``encoder_inputs`` int[N, S] in batches of ``batch_size`` rows.

    Yields ``(tokens int32[n, max_decode_length], scores float32[n])`` per batch; the last
    batch is padded with empty rows to ``batch_size`` (and trimmed again), so every batch
    has the same shape and the decoder compiles once.
    """
    import jax

    from t5cli.models.generate import predict_batch

    encoder_inputs = np.asarray(encoder_inputs, np.int32)
    base_rng = jax.random.PRNGKey(options.seed)
    for b, start in enumerate(range(0, len(encoder_inputs), batch_size)):
        rows = encoder_inputs[start:start + batch_size]
        n = len(rows)
        if n < batch_size:
            rows = np.concatenate([rows, np.zeros((batch_size - n, rows.shape[1]), np.int32)])
        tokens, scores = predict_batch(
            model, params, {"encoder_input_tokens": rows}, method=options.method,
            num_beams=options.beam_size, alpha=options.alpha,
            temperature=float(options.temperature or 1.0), top_k=options.top_k,
            top_p=options.top_p, rng=jax.random.fold_in(base_rng, b),
            max_decode_length=int(max_decode_length))
        yield tokens[:n], scores[:n]


# ---- which model, which parameters --------------------------------------------------------

@dataclasses.dataclass
class LoadedModel:
    """A model, its parameters and what is known of the run that made them."""

    model: Any
    params: Any
    step: int
    checkpoint_path: str
    model_dir: Optional[str]  # the training MODEL_DIR, when the checkpoint lies in one
    record: Optional[Dict[str, Any]]  # its t5cli_run.json

    @property
    def task(self) -> Optional[str]:
        return (self.record or {}).get("task")

    @property
    def train_feature_lengths(self) -> Optional[Dict[str, int]]:
        return ((self.record or {}).get("train") or {}).get("feature_lengths")


def run_dir_of(path) -> Optional[Path]:
    """The MODEL_DIR a checkpoint path belongs to (None for an HF directory)."""
    from t5cli import checkpoints

    p = Path(os.path.expanduser(str(path))).absolute()
    if checkpoints.is_checkpoint_dir(p):
        return p.parent
    if checkpoints.is_hf_dir(p):
        return p if (p / "t5cli_run.json").is_file() else None
    return p


_MACRO_LINE = re.compile(r"^([A-Z][A-Z0-9_]*) = (.+)$")  # gin writes macros like this
_MACRO_REF = re.compile(r"%([A-Z][A-Z0-9_]*)\b")


def recorded_model_overrides(model_dir) -> Optional[Dict[str, Any]]:
    """``train.model_overrides`` as written to ``MODEL_DIR/config.gin`` (None if absent),
    with gin macro references such as ``%ACTIVATION_DTYPE`` replaced by their values."""
    path = Path(model_dir) / "config.gin"
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    macros = dict(m.groups() for m in map(_MACRO_LINE.match, lines) if m)
    lines = [_MACRO_REF.sub(lambda r: macros.get(r.group(1), r.group(0)), line) for line in lines]
    for i, line in enumerate(lines):
        name, eq, value = line.partition("=")
        if not eq or name.strip() not in ("train.model_overrides", "MODEL_OVERRIDES"):
            continue
        text = value.strip().rstrip("\\")
        for more in [None] + lines[i + 1:i + 60]:  # gin wraps long values over lines
            if more is not None:
                text += " " + more.strip().rstrip("\\")
            try:
                found = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                continue
            return dict(found) if isinstance(found, Mapping) else None
    return None


def resolve_model_config(runtime, *, model_name: Optional[str] = None, model_config=None,
                         model_overrides: Optional[Mapping[str, Any]] = None,
                         record: Optional[Dict[str, Any]] = None, run_dir=None):
    """The T5Config to build: explicit config > ``--model`` > the run record (+ overrides)."""
    from t5cli.models.configs import T5Config

    if model_config is None and model_name:
        model_config = runtime.registry.model(model_name)
        if model_overrides is None and run_dir is not None and (record or {}).get("model") == model_name:
            model_overrides = recorded_model_overrides(run_dir)  # same model as trained
    elif model_config is None and record and record.get("model_config"):
        model_config = T5Config.from_dict(record["model_config"])
    elif model_config is None and record and record.get("model"):
        model_config = runtime.registry.model(record["model"])  # unknown: "pass --user-dir X"
        if model_overrides is None and run_dir is not None:
            model_overrides = recorded_model_overrides(run_dir)
    if model_config is None:
        raise ConfigError("cannot tell which model the checkpoint holds (no t5cli_run.json beside "
                          "it): pass --model NAME (see `t5 models`)")
    if model_overrides:
        known = {f.name for f in dataclasses.fields(model_config)}
        unknown = sorted(set(model_overrides) - known)
        if unknown:
            raise ConfigError(f"model override {unknown[0]!r} is not a field of the model config")
        model_config = model_config.replace(**dict(model_overrides))
    return model_config


def load_model(runtime, checkpoint_path=None, *, model_dir=None, model_name: Optional[str] = None,
               model_config=None, model_overrides: Optional[Mapping[str, Any]] = None,
               step: Optional[int] = None) -> LoadedModel:
    """Find the model a checkpoint holds and restore its parameters.

    ``checkpoint_path`` is a MODEL_DIR (latest step, or ``step``), one ``checkpoint_<N>``
    directory or a Hugging Face directory; without it ``model_dir`` is used. The model
    comes from ``model_config``/``model_name`` or else from the run record beside the
    checkpoint (``t5cli_run.json`` + ``config.gin``), or from an HF ``config.json``.
    Nothing is written.
    """
    from t5cli import checkpoints
    from t5cli.models.model import model_for
    from t5cli.run_record import add_hints

    path = checkpoint_path or model_dir
    if not path:
        raise ConfigError("no checkpoint: pass --checkpoint PATH (a MODEL_DIR, a checkpoint_<N> "
                          "directory or a Hugging Face directory) or --model-dir DIR")
    path = Path(os.path.expanduser(str(path))).absolute()
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check --checkpoint / --model-dir")
    run_dir = run_dir_of(path)
    record = add_hints(runtime, run_dir) if run_dir is not None and run_dir.is_dir() else None
    if checkpoints.is_hf_dir(path) and model_config is None and not model_name and not record:
        from t5cli.models.hf import import_hf

        try:
            config, np_params = import_hf(str(path))
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"cannot import Hugging Face checkpoint {path}: "
                                  f"{type(exc).__name__}: {exc}") from None
        if model_overrides:
            config = config.replace(**dict(model_overrides))
        import jax

        params = jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, np.float32), np_params)
        return LoadedModel(model_for(config), params, 0, str(path), None, None)
    config = resolve_model_config(runtime, model_name=model_name, model_config=model_config,
                                  model_overrides=model_overrides, record=record, run_dir=run_dir)
    model = model_for(config)  # one model object per config: compiled decoders are reused
    try:
        params, found_step = checkpoints.load_params(str(path), model=model, step=step)
    except CheckpointError as exc:
        # The run record names the model but lost its overrides: read the sizes from the
        # checkpoint itself (only when the user did not name the model).
        adapted = None
        if "does not match the model" in str(exc) and model_config is None and not model_name:
            adapted = config_from_checkpoint(config, path, step)
        if adapted is None or adapted == config:
            raise
        print(f"note: {config.name} with sizes read from the checkpoint "
              f"({_describe_change(config, adapted)})", file=sys.stderr, flush=True)
        model = model_for(adapted)
        params, found_step = checkpoints.load_params(str(path), model=model, step=step)
    owner = str(run_dir) if run_dir is not None and not checkpoints.is_hf_dir(path) else None
    return LoadedModel(model, params, int(found_step), str(path), owner, record)


def config_from_checkpoint(config, path, step: Optional[int] = None):
    """``config`` with the sizes (widths, heads, layers, vocabulary) a checkpoint of this
    tool was saved with, read from its parameter shapes; None if they cannot be read."""
    from t5cli import checkpoints

    path = Path(path)
    if not checkpoints.is_checkpoint_dir(path):
        found = step if step is not None else checkpoints.latest_step(path)
        if found is None:
            return None
        path = path / f"{checkpoints.STEP_PREFIX}_{found}"
    try:
        shapes = checkpoints._flat_shapes(checkpoints._tree_metadata(path / checkpoints.PARAMS))
    except Exception:  # not readable: let the original error speak
        return None

    def layers(stack: str) -> int:
        return len({k.split("/")[1] for k in shapes if k.startswith(f"{stack}/layers_")})

    try:
        vocab, emb = shapes["token_embedder/embedding"]
        heads, buckets = shapes["encoder/relpos_bias/rel_embedding"]
        inner = shapes["encoder/layers_0/attention/query/kernel"][1]
        mlp = shapes["encoder/layers_0/mlp/wo/kernel"][0]
    except (KeyError, ValueError):
        return None
    gated = "encoder/layers_0/mlp/wi_1/kernel" in shapes
    acts = config.mlp_activations
    if gated != (len(acts) == 2):
        return None  # another architecture, not just other sizes
    return config.replace(vocab_size=vocab, emb_dim=emb, num_heads=heads, head_dim=inner // heads,
                          mlp_dim=mlp, num_encoder_layers=layers("encoder"),
                          num_decoder_layers=layers("decoder"), relpos_num_buckets=buckets,
                          logits_via_embedding="decoder/logits_dense/kernel" not in shapes)


def _describe_change(old, new) -> str:
    changed = [f"{f.name}={getattr(new, f.name)}" for f in dataclasses.fields(new)
               if getattr(old, f.name) != getattr(new, f.name)]
    return ", ".join(changed) or "unchanged"


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


def _text(example: Mapping[str, Any], key: str, vocabulary) -> str:
    raw = example.get(f"{key}_pretokenized")
    if raw is None:
        raw = vocabulary.decode([int(t) for t in example[key]])
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


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
    loaded = load_model(runtime, checkpoint_path, model_dir=model_dir, model_name=model_name,
                        model_config=model_config, model_overrides=model_overrides, step=step)
    texts = list(inputs) if inputs is not None else (read_text_inputs(input_file) if input_file else None)
    if text_mode and not texts:
        raise DataError("no inputs to decode (the input is empty)")
    lengths = dict(task_feature_lengths or {})
    task_name = mixture_or_task_name or loaded.task
    task = None
    if task_name and (mixture_or_task_name or not text_mode or ("task", task_name) in runtime.registry):
        task = runtime.registry.task(task_name)  # for text: only its vocabularies and EOS
    model = loaded.model
    out_vocab = (task.output_features["targets"].vocabulary
                 if task is not None and "targets" in task.output_features else model.vocabulary)
    if text_mode:
        encoder_inputs, rows = _text_inputs(texts, task, model, lengths.get("inputs"))
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
    print(f"decoding {len(rows)} input(s) with {options.describe()}, step {loaded.step}, "
          f"batch {batch_size}, max {max_len} output tokens", file=sys.stderr, flush=True)
    i = 0
    for tokens, scores in decode_tokens(model, loaded.params, encoder_inputs,
                                        max_decode_length=int(max_len), batch_size=batch_size,
                                        options=options):
        for t, s in zip(tokens, scores):
            rows[i]["prediction"] = out_vocab.decode([int(x) for x in t])
            rows[i]["score"] = float(s)
            i += 1

    if output is None and (output_dir or not text_mode):
        base = output_dir or next((Path(d) / "inference" for d in (model_dir, loaded.model_dir) if d), None)
        if base is None:
            raise ConfigError("where should the predictions go? pass --output FILE or --output-dir DIR")
        name = task.name if task is not None else "inputs"
        output = str(Path(base) / f"{name}-{split if not text_mode else 'text'}-{loaded.step}.jsonl")
    write_jsonl(rows, output, stream=stream)
    if output and output != "-":
        print(f"wrote {len(rows)} predictions to {output}", file=sys.stderr, flush=True)
    return InferResult(records=rows, output=None if output in (None, "-") else output, step=loaded.step)


def _text_inputs(texts: Sequence[str], task, model, length: Optional[int]):
    feature = task.output_features["inputs"] if task is not None else None
    vocab = feature.vocabulary if feature is not None else model.vocabulary
    add_eos = feature.add_eos if feature is not None else True
    encoder_inputs = encode_texts(texts, vocab, length=length, add_eos=add_eos,
                                  eos_id=int(model.eos_id))
    return encoder_inputs, [{"inputs": t} for t in texts]


def _task_inputs(task, split: str, length: Optional[int], *, num_examples: Optional[int],
                 use_cached: bool, tfds_data_dir: Optional[str]):
    """Encoder inputs, rows (``inputs``, ``target``) and the longest target of a split."""
    import seqio

    from t5cli.datasets import ensure_task_data

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
        row = {"inputs": _text(e, "inputs", features["inputs"].vocabulary)}
        if "targets" in features and "targets" in e:
            row["target"] = _text(e, "targets", features["targets"].vocabulary)
        rows.append(row)
    longest = max((len(e.get("targets", ())) for e in examples), default=0) or None
    return _pad_rows([e["inputs"] for e in examples], length), rows, longest


def write_jsonl(rows: Iterable[Mapping[str, Any]], output: Optional[str],
                stream: Optional[TextIO] = None) -> None:
    """Write one JSON object per line to ``output`` (atomically), or to ``stream``/stdout."""
    text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)
    if output is None or output == "-":
        (stream or sys.stdout).write(text)
        (stream or sys.stdout).flush()
        return
    path = Path(os.path.expanduser(str(output)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
