"""``evaluate()``: inference evaluation of a checkpoint with ``seqio.Evaluator`` (T5X's eval.py).

The model decodes each example of a split; seqio decodes the tokens, applies the task's
postprocessor and computes the task's metrics, plus any metric plugins named with
``--metric`` (``fn(targets, predictions) -> {name: value}``, from the registry).
Results go to ``OUTPUT_DIR`` (default ``MODEL_DIR/inference_eval``), as in T5X:

- ``<task>/events.out.tfevents.*``: TensorBoard scalars ``eval/<metric>`` at the
  checkpoint's step (``t5 parse-metrics OUTPUT_DIR --seqio-summaries`` reads them);
- ``<task>-metrics.jsonl``: one line per evaluation, ``{"step": N, <metric>: value}``;
- ``<task>-<step:06d>.jsonl``: one line per example with ``inputs``, ``prediction``
  (postprocessed), ``target`` (postprocessed) and, when the task scores, ``score``.

In a multi-process job each process decodes (and scores) its contiguous share of the
split's batches, every process gets them all back in order and computes the metrics, and
only process 0 writes and prints.

:func:`make_inference_evaluator` builds the same evaluation once (data cached) for use
during training: ``train(on_eval=make_inference_evaluator(...))``; given no ``on_eval``,
``train`` builds one itself with :func:`maybe_inference_evaluator`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from t5cli.errors import ConfigError, T5CliError
from t5cli.models.generate import DecodeOptions, decode_tokens
from t5cli.runtime import compile_cache, distributed
from t5cli.runtime.infer import json_safe, warn_non_finite
from t5cli.runtime.model_loading import load_model

MetricFn = Callable[[Sequence[Any], Sequence[Any]], Mapping[str, float]]


@dataclasses.dataclass
class EvalResult:
    """What ``evaluate`` returns: ``metrics[task][name]`` at ``step``, and the files written."""

    step: int
    metrics: Dict[str, Dict[str, float]]
    output_dir: str
    predictions: Dict[str, str] = dataclasses.field(default_factory=dict)  # task -> JSONL


def _resolve_metrics(metrics: Sequence[Union[str, MetricFn]], runtime) -> Dict[str, MetricFn]:
    out: Dict[str, MetricFn] = {}
    for m in metrics or ():
        if callable(m):
            out[getattr(m, "__name__", repr(m))] = m
        else:
            if runtime is None:
                from t5cli.plugins import load_runtime

                runtime = load_runtime()
            out[m] = runtime.registry.metric(m)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class InferenceEvaluator:
    """``evaluator(step, params) -> {task: {metric: value}}``; the split is read once.

    Build it with :func:`make_inference_evaluator`. Every call decodes the split with
    ``params``, computes the metrics and writes them under ``output_dir`` at ``step``.
    """

    def __init__(self, task, model, feature_lengths: Optional[Mapping[str, int]], output_dir,
                 *, split: str = "validation", batch_size: int = 32,
                 metrics: Mapping[str, MetricFn] = (), options: DecodeOptions = DecodeOptions(),
                 num_examples: Optional[int] = None, use_cached: bool = False,
                 write_predictions: bool = True, verbose: bool = True):
        import seqio

        self.task_name = task if isinstance(task, str) else task.name
        task = seqio.get_mixture_or_task(self.task_name)
        self.model, self.options, self.batch_size = model, options, int(batch_size)
        self.output_dir = Path(output_dir)
        self.split, self.verbose = split, verbose
        self.extra_metrics = dict(metrics or {})
        self.last_extra: Dict[str, Dict[str, float]] = {}
        self.predictions: Dict[str, str] = {}
        self._score_fn = None
        leaves = seqio.get_subtasks(task)
        if not [t for t in leaves if split in t.splits]:
            raise ConfigError(f"task {self.task_name!r} has no split {split!r} "
                              f"(it has: {', '.join(leaves[0].splits)}); pass --split")
        if not [t for t in leaves if t.metric_objs]:
            raise ConfigError(f"task {self.task_name!r} defines no metrics to evaluate; "
                              f"use `t5 infer` to decode it")
        if self.extra_metrics and not any(t.predict_metric_fns for t in leaves if t.metric_objs):
            raise ConfigError(f"--metric needs predictions, but task {self.task_name!r} only has "
                              f"score metrics")
        primary = distributed.is_primary()
        hook = functools.partial(_hook_class(), owner=self, write_predictions=write_predictions and primary)
        loggers = [hook] + ([seqio.PyLoggingLogger, seqio.TensorBoardLogger,
                             functools.partial(seqio.JSONLogger, write_n_results=0,
                                               json_encoder_cls=_json_encoder_class())] if primary else [])
        self.verbose = verbose and primary
        try:  # reads and caches the split; nothing is written before the first call
            self.evaluator = seqio.Evaluator(
                self.task_name, feature_converter=seqio.EncDecFeatureConverter(pack=False),
                eval_split=split, use_cached=use_cached, seed=None,  # eval data is not shuffled
                sequence_length=dict(feature_lengths) if feature_lengths else None,
                num_examples=num_examples,
                logger_cls=loggers,
                log_dir=str(self.output_dir), async_compute_metrics=False)
        except T5CliError:
            raise
        except Exception as exc:
            from t5cli.runtime.data import data_error

            raise data_error(self.task_name, split, exc) from exc

    # -- model functions seqio calls with the cached, enumerated dataset ---------------------
    def _batches(self, dataset):
        """This process's share of the batches (all of them in a one-process run)."""
        batches = list(dataset.batch(self.batch_size).as_numpy_iterator())
        for indices, features in batches[distributed.process_slice(len(batches))]:
            yield [int(i) for i in indices], features

    def _predict_fn(self, params):
        def predict_fn(dataset, model_feature_shapes=None):
            del model_feature_shapes
            out = []
            for indices, features in self._batches(dataset):
                inputs = features["encoder_input_tokens"]
                length = features["decoder_target_tokens"].shape[1]
                # every row has the same length, so seqio can stack them (numpy 2)
                for tokens, _ in decode_tokens(self.model, params, inputs, max_decode_length=length,
                                               batch_size=self.batch_size, options=self.options):
                    out.extend(zip(indices, list(tokens)))
            return distributed.gather_slices(out)
        return predict_fn

    def _score_fn_for(self, params):
        import jax
        import jax.numpy as jnp

        if self._score_fn is None:
            model = self.model

            def score(p, batch):
                logits = model.compute_logits(p, batch)
                logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
                target = batch["decoder_target_tokens"]
                token = jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
                return jnp.sum(token * (target > 0), axis=-1)

            self._score_fn = jax.jit(score)

        def score_fn(dataset, model_feature_shapes=None):
            del model_feature_shapes
            out = []
            for indices, features in self._batches(dataset):
                n = len(indices)
                batch = {k: _pad_to(features[k], self.batch_size) for k in
                         ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")}
                scores = np.asarray(self._score_fn(params, batch))[:n]
                out.extend(zip(indices, [float(s) for s in scores]))
            return distributed.gather_slices(out)
        return score_fn

    def __call__(self, step: int, params) -> Dict[str, Dict[str, float]]:
        import time

        start = time.monotonic()
        self.last_extra = {}
        if distributed.is_primary():
            self.output_dir.mkdir(parents=True, exist_ok=True)
        params = distributed.host_local(params)  # a multi-process job's sharded parameters, whole
        try:
            future, _ = self.evaluator.evaluate(compute_metrics=True, step=int(step),
                                                predict_fn=self._predict_fn(params),
                                                score_fn=self._score_fn_for(params))
            results = future.result() or {}
        except ValueError as exc:  # seqio wraps a failing metric function like this
            if not str(exc).startswith("Failed to evaluate task"):
                raise
            raise T5CliError(f"{exc} (a metric function failed; run with -v for the traceback)") from exc
        out: Dict[str, Dict[str, float]] = {}
        for task_name, values in results.items():
            merged = {k: _scalar(v) for k, v in values.items()}
            merged.update(self.last_extra.get(task_name, {}))
            out[task_name] = merged
        if self.verbose:
            for task_name, values in out.items():
                shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in sorted(values.items()))
                print(f"inference eval {task_name} ({self.split}) step {step}: {shown} "
                      f"[{time.monotonic() - start:.1f}s]", file=sys.stderr, flush=True)
        return out

    def close(self) -> None:
        self.evaluator.close()
        for logger in self.evaluator.loggers:
            for writer in getattr(logger, "_summary_writers", {}).values():
                writer.close()


def _pad_to(x: np.ndarray, rows: int) -> np.ndarray:
    if len(x) >= rows:
        return x
    return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])


def _scalar(value: Any) -> Any:
    value = getattr(value, "value", value)  # seqio.metrics.Scalar
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return value


@functools.lru_cache(maxsize=None)
def _hook_class():
    """A seqio Logger, listed first: it adds the plugin metrics to the dict the loggers
    after it receive (so TensorBoard and JSON record them too) and writes the JSONL."""
    import seqio

    class EvalHook(seqio.loggers.Logger):
        def __init__(self, output_dir, *, owner: InferenceEvaluator, write_predictions: bool = True):
            super().__init__(output_dir)
            self.owner, self.write_predictions = owner, write_predictions

        def __call__(self, task_name, step, metrics, dataset, inferences, targets):
            owner = self.owner
            predictions = (inferences or {}).get("prediction")
            extra: Dict[str, float] = {}
            if owner.extra_metrics and predictions is not None and targets is not None:
                for name, fn in owner.extra_metrics.items():
                    for key, value in dict(fn(list(targets), list(predictions))).items():
                        if key in metrics:
                            print(f"warning: metric {name!r} gives {key!r}, which task {task_name!r} "
                                  f"already reports; kept the task's", file=sys.stderr)
                            continue
                        metrics[key] = seqio.metrics.Scalar(value)
                        extra[key] = float(value)
            owner.last_extra[task_name] = extra
            if self.write_predictions and dataset is not None:
                step = -1 if step is None else int(step)
                path = Path(self.output_dir) / f"{task_name}-{step:06d}.jsonl"
                owner.predictions[task_name] = str(path)
                _write_examples(path, task_name, dataset, inferences or {}, targets)

    return EvalHook


@functools.lru_cache(maxsize=None)
def _json_encoder_class():
    """seqio's JSON encoder, writing NaN and infinite metric values as ``null``."""
    import seqio

    class Encoder(seqio.loggers.TensorAndNumpyEncoder):
        def encode(self, o):
            return super().encode(json_safe(o))

    return Encoder


def _write_examples(path: Path, task_name: str, dataset, inferences, targets) -> None:
    import seqio

    from t5cli.runtime.data import example_text

    task = seqio.get_mixture_or_task(task_name)
    vocab = task.output_features["inputs"].vocabulary if "inputs" in task.output_features else None
    keys = [k for k in ("prediction", "score") if k in inferences]
    tmp = path.with_name(path.name + ".tmp")
    replaced: List[int] = []
    with open(tmp, "w", encoding="utf-8") as f:
        for i, ex in enumerate(dataset.as_numpy_iterator()):
            row: Dict[str, Any] = {}
            if "inputs" in ex or "inputs_pretokenized" in ex:
                row["inputs"] = example_text(ex, "inputs", vocab)
            for k in keys:
                row[k] = _jsonable(inferences[k][i])
            if targets is not None:
                row["target"] = _jsonable(targets[i])
            f.write(json.dumps(json_safe(row, replaced), ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    warn_non_finite(len(replaced), str(path))


def make_inference_evaluator(task, model, feature_lengths: Optional[Mapping[str, int]], model_dir,
                             *, split: str = "validation", batch_size: int = 32,
                             metrics: Sequence[Union[str, MetricFn]] = (), runtime=None,
                             beam_size: int = 1, temperature: Optional[float] = None,
                             top_k: int = 0, top_p: float = 1.0, alpha: float = 0.6, seed: int = 0,
                             num_examples: Optional[int] = None, output_dir=None,
                             use_cached: bool = False, write_predictions: bool = True,
                             verbose: bool = True) -> InferenceEvaluator:
    """An :class:`InferenceEvaluator` writing to ``output_dir`` (default ``MODEL_DIR/inference_eval``).

    ``task`` is a seqio Task/Mixture or its (registered) name, ``model`` an
    ``EncoderDecoderModel``; ``feature_lengths`` None means the longest example of the
    split. ``metrics`` adds metric plugins (names looked up in ``runtime``'s registry, or
    functions). Pass it to ``train(on_eval=...)`` to evaluate every ``infer_eval_period``
    steps.
    """
    from t5cli.quiet import drop_seqio_noise

    drop_seqio_noise()
    options = DecodeOptions(beam_size=beam_size, temperature=temperature, top_k=top_k,
                            top_p=top_p, alpha=alpha, seed=seed)
    if isinstance(task, str):
        task = _registry_task(task, runtime)
    out = Path(output_dir) if output_dir else Path(model_dir) / "inference_eval"
    return InferenceEvaluator(task, model, feature_lengths, out, split=split, batch_size=batch_size,
                              metrics=_resolve_metrics(metrics, runtime), options=options,
                              num_examples=num_examples, use_cached=use_cached,
                              write_predictions=write_predictions, verbose=verbose)


def _registry_task(name: str, runtime):
    """The task called ``name``, joined into seqio's registry by the plugin runtime."""
    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime()
    return runtime.registry.task(name)


def maybe_inference_evaluator(task, model, feature_lengths, model_dir, *, split: str = "validation",
                              **kwargs) -> Optional[InferenceEvaluator]:
    """Like :func:`make_inference_evaluator`, but None when no (sub)task of ``task`` has
    ``split`` and metrics, so training can ask for one unconditionally."""
    import seqio

    if isinstance(task, str):
        task = _registry_task(task, kwargs.get("runtime"))
    if not seqio.evaluation.get_valid_eval_tasks(seqio.get_subtasks(task), split):
        return None
    return make_inference_evaluator(task, model, feature_lengths, model_dir, split=split, **kwargs)


def evaluate(*, checkpoint_path: Optional[str] = None, model_dir: Optional[str] = None,
             mixture_or_task_name: Optional[str] = None, split: str = "test",
             model_name: Optional[str] = None, model_config=None,
             model_overrides: Optional[Mapping[str, Any]] = None,
             task_feature_lengths: Optional[Mapping[str, int]] = None, batch_size: int = 32,
             metrics: Sequence[str] = (), beam_size: int = 1, temperature: Optional[float] = None,
             top_k: int = 0, top_p: float = 1.0, alpha: float = 0.6, seed: int = 0,
             num_examples: Optional[int] = None, output_dir: Optional[str] = None,
             step: Optional[int] = None, tfds_data_dir: Optional[str] = None,
             use_cached_tasks: bool = False, runtime=None) -> EvalResult:
    """Evaluate a checkpoint on a task split; see the module docstring for what is written.

    ``checkpoint_path``: a MODEL_DIR (latest step, or ``step``), a ``checkpoint_<N>``
    directory or an HF directory; default ``model_dir``. The task and the model default to
    those recorded in the MODEL_DIR's ``t5cli_run.json``. ``output_dir`` defaults to
    ``MODEL_DIR/inference_eval``. Nothing else in MODEL_DIR is touched.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    DecodeOptions(beam_size=beam_size, temperature=temperature, top_k=top_k, top_p=top_p,
                  alpha=alpha, seed=seed)  # bad options fail before any loading
    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime()
    _resolve_metrics(metrics, runtime)  # unknown names fail before any loading
    compile_cache.enable()
    from t5cli.runtime.head_checkpoints import head_record

    if head_record(checkpoint_path or model_dir) is not None:  # an encoder-only head's metrics
        from t5cli.runtime.head_eval import evaluate_checkpoint

        return evaluate_checkpoint(runtime, checkpoint_path=checkpoint_path, model_dir=model_dir,
                                   mixture_or_task_name=mixture_or_task_name, split=split,
                                   task_feature_lengths=task_feature_lengths, batch_size=batch_size,
                                   num_examples=num_examples, output_dir=output_dir, step=step,
                                   tfds_data_dir=tfds_data_dir, use_cached_tasks=use_cached_tasks)
    loaded = load_model(runtime, checkpoint_path, model_dir=model_dir, model_name=model_name,
                        model_config=model_config, model_overrides=model_overrides, step=step)
    task_name = mixture_or_task_name or loaded.task
    if not task_name:
        raise ConfigError("which task? pass --task NAME (the checkpoint's run record names none)")
    task = runtime.registry.task(task_name)
    from t5cli.runtime.data import check_vocabulary
    from t5cli.runtime.datasets import ensure_task_data

    check_vocabulary(task, loaded.model.config, model_name)

    ensure_task_data(task, tfds_data_dir)
    base = output_dir or (Path(model_dir) / "inference_eval" if model_dir else None) or (
        Path(loaded.model_dir) / "inference_eval" if loaded.model_dir else None)
    if base is None:
        raise ConfigError("where should results go? pass --model-dir DIR or --output-dir DIR")
    if task_feature_lengths:  # features left out get the split's longest example
        unknown = sorted(set(task_feature_lengths) - set(task.output_features))
        if unknown:
            raise ConfigError(f"--feature-lengths names {unknown[0]!r}, which task {task_name!r} "
                              f"does not have (its features: {', '.join(sorted(task.output_features))})")
    if distributed.is_primary():
        print(f"evaluating {task_name} ({split}) at step {loaded.step} of {loaded.checkpoint_path}",
              file=sys.stderr, flush=True)
    evaluator = make_inference_evaluator(
        task, loaded.model, task_feature_lengths, None, split=split, batch_size=batch_size,
        metrics=list(metrics), runtime=runtime, beam_size=beam_size,
        temperature=temperature, top_k=top_k, top_p=top_p, alpha=alpha, seed=seed,
        num_examples=num_examples, output_dir=base, use_cached=use_cached_tasks)
    try:
        results = evaluator(loaded.step, loaded.params)
    finally:
        evaluator.close()
    return EvalResult(step=loaded.step, metrics=results, output_dir=str(base),
                      predictions=dict(evaluator.predictions))


def format_metrics(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """``task/metric  value`` lines, for printing."""
    lines = []
    for task in sorted(metrics):
        for name in sorted(metrics[task]):
            v = metrics[task][name]
            lines.append(f"{task}/{name}  {v:.4f}" if isinstance(v, float) else f"{task}/{name}  {v}")
    return "\n".join(lines)
