"""``train()``: the training loop of ``t5 train`` / ``t5 finetune`` (T5X's train.py).

One pure ``train_step(state, batch, dropout_rng)`` is jit-compiled once with explicit
shardings over a ``(data, model)`` mesh; the state is donated. A run resumes from the
latest ``checkpoint_<N>`` in MODEL_DIR on its own (parameters, optimizer state, step and
the data stream's position); otherwise it starts from ``initial_checkpoint_path`` (params
only, step = that checkpoint's step) or from random parameters. ``total_steps`` counts
from step 0 of the initial checkpoint, as in T5X.

MODEL_DIR receives ``config.gin``, ``model-info.txt``, ``t5cli_run.json``,
``checkpoint_<N>/``, ``train/`` (TensorBoard: loss, loss_per_nonpadding_target_token,
accuracy, learning_rate, timing/…) and ``training_eval/<task>/`` (validation loss every
``eval_period`` steps).

Inference evaluation hook: ``on_eval(step, params)`` is called every
``infer_eval_period`` steps (default: ``eval_period``) and after the last step, with the
current (sharded) parameters; whatever it writes is its business (the eval module puts
``inference_eval/<task>/`` there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from t5cli.errors import ConfigError, T5CliError

OnEval = Callable[[int, Any], None]


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the final step, parameters and last written summaries."""

    step: int
    params: Any
    model_dir: str
    train_summary: Dict[str, float] = dataclasses.field(default_factory=dict)
    eval_summaries: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    losses: List[float] = dataclasses.field(default_factory=list)


def _arguments(local_vars: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in local_vars.items() if k not in ("runtime", "on_eval")}


def train(*, model_dir: str, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
          total_steps: int, model_name: Optional[str] = None, model_config: Any = None,
          model_overrides: Optional[Mapping[str, Any]] = None, batch_size: int = 128,
          dropout_rate: Optional[float] = None, initial_checkpoint_path: Optional[str] = None,
          optimizer: Any = None, learning_rate_schedule: Optional[Callable] = None,
          loss_normalizing_factor: Any = None, z_loss: float = 1e-4, label_smoothing: float = 0.0,
          num_microbatches: Optional[int] = None, freeze_parameters: Sequence[str] = (),
          checkpoint_period: Optional[int] = 1000, keep_checkpoints: Optional[int] = None,
          eval_period: Optional[int] = 1000, eval_steps: int = 20, log_period: int = 100,
          progress_seconds: float = 30.0, random_seed: int = 0, use_cached_tasks: bool = False,
          pack: bool = True, num_partitions: int = 1, tfds_data_dir: Optional[str] = None,
          runtime=None, on_eval: Optional[OnEval] = None, infer_eval_period: Optional[int] = None,
          threefry_partitionable: Optional[bool] = None) -> TrainResult:
    """Train a T5 model on a seqio task or mixture; see the module docstring.

    Names follow T5X: ``total_steps`` (``TRAIN_STEPS``), ``eval_period``, ``eval_steps``,
    ``random_seed``. ``model_name`` is looked up in the runtime's registry (``model_config``,
    a ``T5Config``, may be given instead); ``model_overrides`` replaces config fields (e.g.
    ``{'num_encoder_layers': 1}``). ``optimizer`` is an optax transformation (default:
    Adafactor with T5X's settings); ``learning_rate_schedule`` maps the global step to a
    rate (default: constant 1e-3). ``freeze_parameters``: regexes of parameter paths kept
    fixed. ``num_microbatches`` splits each batch for gradient accumulation (same update
    as the full batch). ``runtime`` (``t5cli.plugins.Runtime``) defaults to a fresh
    ``load_runtime()``. ``threefry_partitionable`` overrides JAX's
    ``jax_threefry_partitionable`` for the train step (None: JAX's setting, True since
    JAX 0.5); it changes how per-step dropout keys are derived, so keep it the same when
    resuming. Without ``on_eval``, every ``infer_eval_period``
    steps (None: ``eval_period``; 0: never) and after the last step the model decodes the
    task's validation split and writes its seqio metrics to ``inference_eval/<task>/``.
    Returns a :class:`TrainResult`.
    """
    arguments = _arguments(locals())
    from t5cli import config as gin_config
    from t5cli.runtime import checkpoints, host_allocator, losses, optim, xla_flags

    # before this process's first JAX computation, if it is that
    activation_dtype = (model_overrides or {}).get("dtype", getattr(model_config, "dtype", "float32"))
    xla_flags.apply_defaults(activation_dtype=str(activation_dtype))
    host_allocator.retain_freed_memory()

    # ---- validate everything before anything is written to MODEL_DIR ----------------------
    if not model_dir:
        raise ConfigError("MODEL_DIR is not set: pass --model-dir DIR")
    _positive("TRAIN_STEPS (--steps)", total_steps)
    _positive("BATCH_SIZE (--batch-size)", batch_size)
    for name, value in (("checkpoint_period", checkpoint_period), ("eval_period", eval_period),
                        ("infer_eval_period", infer_eval_period)):
        if value is not None and value != 0:
            _positive(name, value)
    if num_microbatches and batch_size % num_microbatches:
        raise ConfigError(f"BATCH_SIZE={batch_size} is not divisible by num_microbatches={num_microbatches}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing={label_smoothing} must be in [0, 1)")
    loss_normalizing_factor = losses.check_loss_normalizing_factor(loss_normalizing_factor)
    model_dir = str(Path(model_dir).expanduser().absolute())

    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime()
    task = runtime.registry.task(mixture_or_task_name)
    from t5cli.runtime.datasets import ensure_task_data
    from t5cli.runtime.data import check_feature_lengths

    ensure_task_data(task, tfds_data_dir)
    feature_lengths = check_feature_lengths(task, task_feature_lengths)
    model = _build_model(runtime, model_name, model_config, model_overrides, dropout_rate, task)

    # ---- inference eval (T5X's infer_eval_period; 0 turns it off) ------------------------
    # Unless the caller brings its own on_eval, the task's metrics on its validation split go
    # to inference_eval/<task>/. The evaluator writes nothing until its first call, and
    # train() closes the one it made when the loop ends.
    own_evaluator = None
    if on_eval is None and infer_eval_period != 0 and (infer_eval_period or eval_period):
        latest = checkpoints.latest_step(model_dir)
        if latest is None or latest < total_steps:
            from t5cli.runtime.evaluate import maybe_inference_evaluator

            own_evaluator = on_eval = maybe_inference_evaluator(
                task, model, feature_lengths, model_dir, batch_size=batch_size, runtime=runtime,
                use_cached=use_cached_tasks)

    import jax
    import jax.numpy as jnp
    import optax

    from t5cli.runtime import partitioning

    mesh = partitioning.create_mesh(num_partitions)
    partitioning.check_batch_size(batch_size, mesh)
    rules = partitioning.logical_axis_rules(runtime.registry.partitioning_rules())
    abstract_params = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0)))
    param_axes = model.param_axes(abstract_params)
    param_shardings = partitioning.param_shardings(mesh, param_axes, abstract_params, rules)

    tx = optim.adafactor() if optimizer is None else optimizer
    tx = optax.with_extra_args_support(optim.freeze(tx, list(freeze_parameters), abstract_params))
    schedule = learning_rate_schedule or optim.constant_schedule()
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = _opt_shardings(abstract_opt, abstract_params, param_shardings, mesh)
    replicated = partitioning.replicated(mesh)

    resume_step = checkpoints.latest_step(model_dir)
    init_params, initial_step = None, 0
    if resume_step is None and initial_checkpoint_path:
        init_params, initial_step = checkpoints.load_params(
            initial_checkpoint_path, model=model, shardings=param_shardings)
        if initial_step >= total_steps:
            raise ConfigError(
                f"TRAIN_STEPS={total_steps} is not past the initial checkpoint's step {initial_step}: "
                f"as in T5X it counts from that step, so pass --steps {initial_step + total_steps} "
                f"to train {total_steps} more steps")

    # ---- state ---------------------------------------------------------------------------
    fresh_dir = not Path(model_dir).exists()
    ckpt = checkpoints.TrainCheckpointer(model_dir, keep=keep_checkpoints)
    data_seed = random_seed
    if resume_step is not None:
        params, opt_state, meta = ckpt.restore(resume_step, abstract_params, abstract_opt,
                                               param_shardings=param_shardings, opt_shardings=opt_shardings)
        step, initial_step = resume_step, int(meta.get("initial_step", 0))
        data_seed = int(meta.get("data", {}).get("seed", random_seed))
        if step >= total_steps:
            print(f"MODEL_DIR {model_dir} is already at step {step} >= TRAIN_STEPS={total_steps}; nothing to do",
                  flush=True)
            ckpt.close()
            return TrainResult(step=step, params=params, model_dir=model_dir)
    else:
        step = initial_step
        if init_params is not None:
            params = init_params
        else:
            init_rng = jax.random.PRNGKey(random_seed)
            params = jax.jit(model.init_params, out_shardings=param_shardings)(init_rng)
        opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)

    # ---- data: a task whose pipeline fails stops here, before any record is written ------
    from t5cli.runtime.data import get_train_iterator

    try:
        batches = get_train_iterator(task, feature_lengths, batch_size, seed=data_seed,
                                     start_step=step - initial_step, pack=pack,
                                     use_cached=use_cached_tasks)
    except BaseException:
        ckpt.close()
        if fresh_dir:
            with contextlib.suppress(OSError):  # only while still empty
                Path(model_dir).rmdir()  # the checkpointer made it just now
        raise

    # ---- records -------------------------------------------------------------------------
    from t5cli.runtime.run_record import write_run_record

    Path(model_dir).mkdir(parents=True, exist_ok=True)
    gin_text = gin_config.operative_config() or gin_config.bindings_from_arguments("train", arguments)
    gin_config.write_config_gin(model_dir, gin_text)
    write_model_info(Path(model_dir) / "model-info.txt", abstract_params, param_axes,
                     param_shardings, abstract_opt)
    write_run_record(model_dir, runtime, task=mixture_or_task_name,
                     model=model_name or getattr(model.config, "name", None),
                     extra={"train": {"total_steps": total_steps, "batch_size": batch_size,
                                      "feature_lengths": feature_lengths, "initial_step": initial_step,
                                      "initial_checkpoint_path": initial_checkpoint_path}})

    # ---- compiled steps ------------------------------------------------------------------
    use_dropout = bool(getattr(model.config, "dropout_rate", 0.0))
    train_step = make_train_step(model, tx, schedule, z_loss=z_loss, label_smoothing=label_smoothing,
                                 loss_normalizing_factor=loss_normalizing_factor,
                                 num_microbatches=num_microbatches, use_dropout=use_dropout)
    eval_step = make_eval_step(model, z_loss=z_loss, label_smoothing=label_smoothing,
                               loss_normalizing_factor=loss_normalizing_factor)
    state_shardings = {"params": param_shardings, "opt_state": opt_shardings, "step": replicated}
    batch_sharding = partitioning.batch_sharding(mesh)
    p_train_step = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding, replicated),
                           out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    p_eval_step = jax.jit(eval_step,
                          in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)

    state = {"params": params, "opt_state": opt_state,
             "step": jax.device_put(jnp.asarray(step, jnp.int32), replicated)}
    dropout_rng = jax.device_put(jax.random.PRNGKey(random_seed + 1), replicated)

    # ---- loop ----------------------------------------------------------------------------
    from t5cli.runtime.progress import Progress

    writer = SummaryWriter(Path(model_dir) / "train")
    eval_tasks = _eval_tasks(task)
    result = TrainResult(step=step, params=None, model_dir=model_dir)
    progress = Progress(step, total_steps, every_steps=log_period, every_seconds=progress_seconds)
    meta = {"initial_step": initial_step, "data": {"seed": data_seed}, "model": model_name,
            "task": mixture_or_task_name}
    infer_period = infer_eval_period or eval_period
    pending: List[Any] = []
    interval_start, interval_tokens = time.monotonic(), 0.0
    print(f"training {mixture_or_task_name} from step {step} to {total_steps} on {mesh.devices.size} "
          f"device(s) (mesh data={mesh.shape['data']}, model={mesh.shape['model']}); MODEL_DIR {model_dir}",
          flush=True)
    rng_mode = (contextlib.nullcontext() if threefry_partitionable is None
                else jax.threefry_partitionable(bool(threefry_partitionable)))
    try:
        with rng_mode:
            while step < total_steps:
                batch = next(batches)
                tokens = float(batch["decoder_loss_weights"].sum()) * jax.process_count()
                state, metrics = p_train_step(state, partitioning.shard_batch(batch, mesh), dropout_rng)
                step += 1
                pending.append(metrics)
                interval_tokens += tokens
                progress.add_tokens(tokens)
                last = step >= total_steps
                if (log_period and step % log_period == 0) or last:
                    summary = _summarize(jax.device_get(pending))  # the only host sync
                    dt = max(time.monotonic() - interval_start, 1e-9)
                    summary["timing/steps_per_second"] = len(pending) / dt
                    summary["timing/target_tokens_per_second"] = interval_tokens / dt
                    summary["timing/seconds"] = dt
                    writer.write(step, summary)
                    result.train_summary = summary
                    result.losses.append(summary["loss"])
                    pending, interval_start, interval_tokens = [], time.monotonic(), 0.0
                    if progress.due(step):
                        _report(progress, step, summary)
                elif progress.due(step):
                    _report(progress, step, _summarize(jax.device_get([metrics])))
                save_now = bool(checkpoint_period and step % checkpoint_period == 0) or last
                eval_now = bool(eval_tasks and eval_period and (step % eval_period == 0 or last))
                infer_now = bool(on_eval is not None and infer_period and (step % infer_period == 0 or last))
                if not (save_now or eval_now or infer_now):
                    continue
                # Checkpoints and evals do not count as training time; the steps dispatched
                # before them (JAX runs asynchronously) do.
                jax.block_until_ready(state["params"])
                paused = time.monotonic()
                if save_now:
                    ckpt.save(step, state["params"], state["opt_state"], meta)
                if eval_now:
                    result.eval_summaries = _training_eval(
                        p_eval_step, state["params"], eval_tasks, feature_lengths, batch_size,
                        eval_steps, mesh, model_dir, step, pack, use_cached_tasks)
                if infer_now:
                    on_eval(step, state["params"])
                paused = time.monotonic() - paused
                interval_start += paused
                progress.pause(paused)
    finally:
        writer.close()
        ckpt.close()
        if own_evaluator is not None:
            own_evaluator.close()
    result.step, result.params = step, state["params"]
    return result


# ---- pure steps ---------------------------------------------------------------------------

def make_eval_step(model, *, z_loss: float = 1e-4, label_smoothing: float = 0.0,
                   loss_normalizing_factor=None) -> Callable:
    """``eval_step(params, batch) -> sums`` (see :func:`t5cli.runtime.losses.loss_sums`), no dropout."""
    from t5cli.runtime import losses

    def eval_step(params, batch):
        logits = model.compute_logits(params, batch)
        return losses.loss_sums(logits, batch, label_smoothing=label_smoothing, z_loss=z_loss,
                                loss_normalizing_factor=loss_normalizing_factor)

    return eval_step


def make_train_step(model, tx, schedule: Callable, *, z_loss: float = 1e-4,
                    label_smoothing: float = 0.0, loss_normalizing_factor=None,
                    num_microbatches: Optional[int] = None, use_dropout: bool = True) -> Callable:
    """The pure ``train_step(state, batch, dropout_rng) -> (state, metrics)``.

    ``state`` is ``{"params", "opt_state", "step"}``; the dropout rng of a step is
    ``fold_in(dropout_rng, step)``, so a resumed run draws the same masks. ``tx.update``
    receives ``learning_rate=schedule(step)``. ``metrics`` are sums (see
    :func:`t5cli.runtime.losses.loss_sums`) plus ``loss_normalized`` and ``learning_rate``.
    """
    import jax
    import optax

    from t5cli.runtime import losses, optim

    def grad_fn(params, batch, rng):
        def f(p):
            logits = model.compute_logits(p, batch, dropout_rng=rng)
            sums = losses.loss_sums(logits, batch, label_smoothing=label_smoothing, z_loss=z_loss,
                                    loss_normalizing_factor=loss_normalizing_factor)
            return sums["loss"], sums
        return jax.grad(f, has_aux=True)(params)

    def train_step(state, batch, dropout_rng):
        params, step = state["params"], state["step"]
        rng = jax.random.fold_in(dropout_rng, step) if use_dropout else None
        grads, sums = optim.accumulate_gradients(grad_fn, params, batch, num_microbatches, rng)
        norm = losses.batch_normalizer(loss_normalizing_factor, sums)
        grads = jax.tree_util.tree_map(lambda g: g / norm, grads)
        lr = schedule(step)
        updates, opt_state = tx.update(grads, state["opt_state"], params, learning_rate=lr)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
                     "step": step + 1}
        return new_state, dict(sums, loss_normalized=sums["loss"] / norm, learning_rate=lr)

    return train_step


# ---- helpers ------------------------------------------------------------------------------

def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _build_model(runtime, model_name, model_config, overrides, dropout_rate, task):
    from t5cli.models.model import EncoderDecoderModel

    if model_config is None:
        if not model_name:
            raise ConfigError("no model: pass --model NAME (see `t5 models`)")
        model_config = runtime.registry.model(model_name)
    changes = dict(overrides or {})
    if dropout_rate is not None:
        changes["dropout_rate"] = float(dropout_rate)
    if changes:
        known = {f.name for f in dataclasses.fields(model_config)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"model_overrides: {unknown[0]!r} is not a field of the model config "
                              f"(fields: {', '.join(sorted(known))})")
        model_config = model_config.replace(**changes)
    vocab = task.output_features["targets"].vocabulary
    needed = getattr(vocab, "vocab_size", 0)
    if needed and needed > model_config.vocab_size:
        raise ConfigError(
            f"task {task.name!r} uses a vocabulary of {needed} ids but model "
            f"{model_name or 'config'} has vocab_size {model_config.vocab_size}; pick a model made for "
            f"this vocabulary")
    return EncoderDecoderModel(model_config)


def _opt_shardings(abstract_opt, abstract_params, param_shardings, mesh):
    """Optimizer-state leaves shaped like a parameter share its sharding; others replicate."""
    import jax

    from t5cli.runtime.optim import path_str
    from t5cli.runtime.partitioning import replicated

    by_path = {}
    for (p, x), s in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                         jax.tree_util.tree_leaves(param_shardings)):
        by_path[path_str(p)] = (x.shape, s)

    def pick(path, leaf):
        name = path_str(path)
        for pname, (shape, sharding) in by_path.items():
            if (name == pname or name.endswith("/" + pname)) and tuple(leaf.shape) == tuple(shape):
                return sharding
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def _report(progress, step: int, summary: Mapping[str, float]) -> None:
    progress.report(step, summary["loss"], loss_per_token=summary["loss_per_nonpadding_target_token"])


def _summarize(pending: List[Dict[str, Any]]) -> Dict[str, float]:
    from t5cli.runtime.losses import summarize

    sums = {k: sum(float(m[k]) for m in pending) for k in pending[0]}
    out = summarize(sums, num_steps=len(pending))
    out["learning_rate"] = float(pending[-1]["learning_rate"])
    return out


def _eval_tasks(task) -> List[Any]:
    """Leaf tasks with a validation split (T5X evaluates each task of a mixture)."""
    import seqio

    leaves = list(task.tasks) if isinstance(task, seqio.Mixture) else [task]
    return [t for t in leaves if "validation" in t.splits]


def _training_eval(p_eval_step, params, tasks, feature_lengths, batch_size, eval_steps, mesh,
                   model_dir, step, pack, use_cached) -> Dict[str, Dict[str, float]]:
    import jax

    from t5cli.runtime.data import get_eval_batches
    from t5cli.runtime.losses import summarize
    from t5cli.runtime.partitioning import shard_batch

    out = {}
    for t in tasks:
        total, n = None, 0
        for batch, _mask in get_eval_batches(t, "validation", feature_lengths, batch_size, pack=pack,
                                             max_batches=eval_steps, use_cached=use_cached):
            sums = p_eval_step(params, shard_batch(batch, mesh))
            total = sums if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
            n += 1
        if total is None:
            continue
        total = {k: float(v) for k, v in jax.device_get(total).items()}
        total["loss_normalized"] = total["loss"] / max(total["normalizer"], 1e-9) * n
        summary = summarize(total, num_steps=n)  # loss: per batch, like the train loss
        with SummaryWriter(Path(model_dir) / "training_eval" / t.name) as w:
            w.write(step, summary)
        out[t.name] = summary
    return out


class SummaryWriter:
    """TensorBoard scalars (``simple_value`` events, read by every TensorBoard loader and
    by ``t5 parse-metrics``) in one directory; only process 0 writes."""

    def __init__(self, logdir: Path):
        import jax

        self._writer = None
        if jax.process_index() == 0:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            Path(logdir).mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(str(logdir))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2

        values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary_pb2.Summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_model_info(path: Path, abstract_params, param_axes, param_shardings, abstract_opt) -> None:
    """One line per variable (path, size, shape with axis names, partition spec), as T5X."""
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec

    from t5cli.runtime.optim import path_str
    from t5cli.runtime.partitioning import describe_spec

    leaves = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    axes = jax.tree_util.tree_leaves(param_axes, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)
    shardings = jax.tree_util.tree_leaves(param_shardings)
    lines, total = [], 0
    for (p, x), ax, sh in zip(leaves, axes, shardings):
        size = int(np.prod(x.shape))
        total += size
        names = list(ax) if ax is not None else [None] * len(x.shape)
        shape = ", ".join(f"{n}={d}" if n else str(d) for n, d in zip(names, x.shape))
        lines.append(f"Variable {path_str(p):<60} size {size:<10} shape ({shape}) "
                     f"partition spec {describe_spec(sh.spec)}")
    lines.append(f"Total number of parameters: {total}")
    lines.append("")
    opt_total = 0
    for p, x in jax.tree_util.tree_flatten_with_path(abstract_opt)[0]:
        size = int(np.prod(x.shape)) if x.shape else 1
        opt_total += size
        lines.append(f"Optimizer state {path_str(p):<52} size {size:<10} shape {tuple(x.shape)}")
    lines.append(f"Total number of optimizer state values: {opt_total}")
    path.write_text("\n".join(lines) + "\n")


__all__ = ["train", "TrainResult", "T5CliError"]
