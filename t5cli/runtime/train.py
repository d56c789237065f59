"""``train()``: the training driver of ``t5 train`` / ``t5 finetune`` (T5X's train.py).

One pure ``train_step(state, batch, dropout_rng)`` is jit-compiled once with explicit
shardings over a ``(data, model)`` mesh; the state is donated. A run resumes from the
latest ``checkpoint_<N>`` in MODEL_DIR on its own (parameters, optimizer state, step and
the data stream's position); otherwise it starts from ``initial_checkpoint_path`` (params
only, step = that checkpoint's step) or from random parameters. ``total_steps`` counts
from step 0 of the initial checkpoint, as in T5X.

MODEL_DIR receives ``config.gin``, ``model-info.txt``, ``t5cli_run.json``,
``checkpoint_<N>/`` (with ``t5cli_checksums.json``), ``train/`` (TensorBoard: loss,
loss_per_nonpadding_target_token, accuracy, learning_rate, timing/…) and
``training_eval/<task>/`` (validation loss every ``eval_period`` steps). While a run
lives it holds ``.t5cli.lock`` (:mod:`t5cli.runtime.run_lock`): a second run on the same
MODEL_DIR stops before touching anything. A non-finite loss or gradient norm stops the
run (``stop_on_nonfinite``) before a checkpoint of it is written; file-system errors end
as one line naming the path and the cause.

Inference evaluation hook: ``on_eval(step, params)`` is called every
``infer_eval_period`` steps (default: ``eval_period``) and after the last step, with the
current (sharded) parameters; whatever it writes is its business (the eval module puts
``inference_eval/<task>/`` there).

The parts: :mod:`t5cli.runtime.train_state` (model, mesh and shardings, initial state),
:mod:`t5cli.runtime.steps` (the pure steps), :mod:`t5cli.runtime.train_loop` (the loop and
its periodic actions), :mod:`t5cli.runtime.summaries` (TensorBoard, ``model-info.txt``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import jax

from t5cli import config as gin_config
from t5cli.errors import ConfigError, T5CliError, storage_error
from t5cli.plugins import load_runtime
from t5cli.runtime import (checkpoints, head_checkpoints, head_data, host_allocator, losses, optim, run_lock,
                           steps, train_loop, train_state, xla_flags)
from t5cli.runtime import compile_cache
from t5cli.models import light_vocab
from t5cli.runtime.data import check_feature_lengths, get_train_iterator
from t5cli.runtime.datasets import ensure_task_data
from t5cli.runtime.evaluate import maybe_inference_evaluator
from t5cli.runtime.progress import Progress
from t5cli.runtime.run_record import write_run_record
from t5cli.runtime.summaries import SummaryWriter, write_model_info

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
          pack: bool = True, shuffle: bool = True, num_partitions: int = 1, precompile: bool = False,
          precompile_devices: Optional[int] = None,
          tfds_data_dir: Optional[str] = None,
          runtime=None, on_eval: Optional[OnEval] = None, infer_eval_period: Optional[int] = None,
          threefry_partitionable: Optional[bool] = None, stop_on_nonfinite: bool = True,
          restore_optimizer_state: bool = False, head: Optional[str] = None,
          num_labels: Optional[int] = None) -> TrainResult:
    """Train a T5 model on a seqio task or mixture; see the module docstring.

    Names follow T5X: ``total_steps`` (``TRAIN_STEPS``), ``eval_period``, ``eval_steps``,
    ``random_seed``, ``shuffle`` (training examples; False reads them in order).
    ``precompile`` only compiles the train step on ``precompile_devices`` devices (virtual
    CPU ones if need be) and returns a :class:`t5cli.runtime.precompile.PrecompileReport`
    of per-device memory and FLOPs; nothing is written.
    ``model_name`` is looked up in the runtime's registry (``model_config``,
    a ``T5Config``, may be given instead); ``model_overrides`` replaces config fields (e.g.
    ``{'num_encoder_layers': 1}``). ``optimizer`` is an optax transformation (default:
    Adafactor with T5X's settings); ``learning_rate_schedule`` maps the global step to a
    rate (default: constant 1e-3). ``freeze_parameters``: regexes of parameter paths kept
    fixed. ``num_microbatches`` splits each batch for gradient accumulation (same update
    as the full batch). ``runtime`` (``t5cli.plugins.Runtime``) defaults to a fresh
    ``load_runtime()``. ``threefry_partitionable`` overrides JAX's
    ``jax_threefry_partitionable`` for the train step (None: JAX's setting, True since
    JAX 0.5); it changes how per-step dropout keys are derived, so keep it the same when
    resuming. ``stop_on_nonfinite`` (default True, T5X's ``TerminateOnNanAction``) ends the
    run with TrainingDivergedError at the first step whose loss or gradient norm is NaN or
    infinite, before any checkpoint of it is written; False only warns. One run at a time
    holds MODEL_DIR (:mod:`t5cli.runtime.run_lock`). ``restore_optimizer_state`` also takes
    the optimizer state from ``initial_checkpoint_path`` (T5X's default; for T5X and
    Mesh-TF checkpoints their Adafactor slots, :mod:`t5cli.runtime.optimizer_state`). Without ``on_eval``, every ``infer_eval_period``
    steps (None: ``eval_period``; 0: never) and after the last step the model decodes the
    task's validation split and writes its seqio metrics to ``inference_eval/<task>/``.
    ``head`` (``sequence_classification``, ``token_classification``, ``question_answering``)
    trains the encoder with that head instead (:mod:`t5cli.models.head_models`, tasks as in
    :mod:`t5cli.runtime.head_data`; ``num_labels`` defaults to the task's label names):
    it starts from the encoder of ``initial_checkpoint_path`` at step 0, with FAT5's AdamW
    at 1e-4 and the loss averaged over examples where ``optimizer``,
    ``learning_rate_schedule`` and ``loss_normalizing_factor`` are not given.
    Returns a :class:`TrainResult`.
    """
    arguments = _arguments(locals())
    if head is not None:  # FAT5's fine-tuning defaults
        optimizer = optim.adamw() if optimizer is None else optimizer
        learning_rate_schedule = learning_rate_schedule or optim.constant_schedule(1e-4)
        loss_normalizing_factor = loss_normalizing_factor or "NUM_REAL_TARGET_TOKENS"
    # before this process's first JAX computation, if it is that
    activation_dtype = (model_overrides or {}).get("dtype", getattr(model_config, "dtype", "float32"))
    xla_flags.apply_defaults(activation_dtype=str(activation_dtype))
    compile_cache.enable()
    host_allocator.retain_freed_memory()
    if precompile:
        from t5cli.runtime.precompile import run_precompile

        return run_precompile(
            runtime=load_runtime() if runtime is None else runtime, model_name=model_name,
            model_config=model_config, model_overrides=model_overrides, dropout_rate=dropout_rate,
            mixture_or_task_name=mixture_or_task_name, batch_size=batch_size,
            feature_lengths=task_feature_lengths, num_partitions=num_partitions, num_devices=precompile_devices,
            optimizer=optimizer, learning_rate_schedule=learning_rate_schedule, z_loss=z_loss,
            label_smoothing=label_smoothing, loss_normalizing_factor=losses.check_loss_normalizing_factor(
                loss_normalizing_factor), num_microbatches=num_microbatches, pack=pack)

    # arguments: all checked before anything is written to MODEL_DIR
    model_dir, loss_normalizing_factor = _checked_arguments(
        model_dir=model_dir, total_steps=total_steps, batch_size=batch_size,
        checkpoint_period=checkpoint_period, eval_period=eval_period, infer_eval_period=infer_eval_period,
        num_microbatches=num_microbatches, label_smoothing=label_smoothing,
        loss_normalizing_factor=loss_normalizing_factor)
    infer_period = eval_period if infer_eval_period is None else infer_eval_period

    # one run per MODEL_DIR: taken before anything there is read or written
    with run_lock.RunLock(model_dir), _storage_errors(model_dir):
        # model and task, and the inference eval unless the caller brings its own
        runtime = load_runtime() if runtime is None else runtime
        task = runtime.registry.task(mixture_or_task_name)
        ensure_task_data(task, tfds_data_dir)
        if head is not None:  # before the lengths: name the missing label feature, not `targets`
            head_data.check_head_task(task, head)
        feature_lengths = check_feature_lengths(task, task_feature_lengths)
        encoder_init = None
        if head is not None:
            model_config, encoder_init = head_checkpoints.start_config(
                runtime, model_dir, model_name=model_name, model_config=model_config,
                initial_checkpoint_path=initial_checkpoint_path)
        heads_args = {"head": head, "num_labels": num_labels} if head is not None else {}
        model = train_state.build_model(runtime, model_name, model_config, model_overrides, dropout_rate, task,
                                        **heads_args)
        if encoder_init is not None:
            head_checkpoints.check_encoder(encoder_init, model.config)
        own_evaluator = None
        if on_eval is None and infer_period:
            own_evaluator = on_eval = _own_inference_evaluator(
                task, model, feature_lengths, model_dir, total_steps, batch_size, runtime, use_cached_tasks)

        # mesh and shardings
        layout = train_state.make_layout(model, runtime, optimizer, freeze_parameters,
                                         num_partitions=num_partitions, batch_size=batch_size)

        # state: resumed from MODEL_DIR, else from the initial checkpoint, else fresh
        start = train_state.init_or_restore(model, layout, model_dir, total_steps=total_steps,
                                            initial_checkpoint_path=None if head else initial_checkpoint_path,
                                            random_seed=random_seed, keep_checkpoints=keep_checkpoints,
                                            restore_optimizer_state=restore_optimizer_state)
        if start.step >= total_steps:
            print(f"MODEL_DIR {model_dir} is already at step {start.step} >= TRAIN_STEPS={total_steps}; "
                  f"nothing to do", flush=True)
            start.checkpointer.close()
            return TrainResult(step=start.step, params=start.params, model_dir=model_dir)

        # data: a task whose pipeline fails stops here, before any record is written
        batches = _train_batches(task, feature_lengths, batch_size, start, model_dir, pack=pack,
                                 use_cached=use_cached_tasks, shuffle=shuffle)
        if head is not None:
            if encoder_init is not None and start.step == 0:  # a fresh head on a trained encoder
                start.params = head_checkpoints.with_encoder(start.params, encoder_init, layout.param_shardings)
            batches = head_data.checked_labels(batches, head, model.num_labels, mixture_or_task_name,
                                               feature_lengths["inputs"])

        # records
        _write_records(model_dir, arguments, runtime, model, layout, task_name=mixture_or_task_name,
                       model_name=model_name, train_record={
                           "total_steps": total_steps, "batch_size": batch_size,
                           "feature_lengths": feature_lengths, "initial_step": start.initial_step,
                           "initial_checkpoint_path": initial_checkpoint_path,
                           # so that `t5 infer --input` can tokenize without TensorFlow
                           "vocabularies": light_vocab.describe_task(task),
                           **({"head": model.describe()} if head is not None else {})})

        # compiled steps
        train_step, eval_step = steps.compile_steps(
            model, layout, learning_rate_schedule or optim.constant_schedule(), z_loss=z_loss,
            label_smoothing=label_smoothing, loss_normalizing_factor=loss_normalizing_factor,
            num_microbatches=num_microbatches)

        # loop: the train steps, each followed by the periodic actions that are due
        clock = train_loop.TrainingClock()
        metrics = train_loop.StepMetrics(on_nonfinite=train_loop.NonFiniteLoss(
            stop=stop_on_nonfinite, model_dir=model_dir, latest_step=start.checkpointer.latest_step))
        writer = SummaryWriter(Path(model_dir) / "train")
        summaries = train_loop.WriteSummaries(log_period, writer, metrics, clock)
        progress = Progress(start.step, total_steps, every_steps=log_period, every_seconds=progress_seconds,
                            clock=clock)
        meta = {"initial_step": start.initial_step, "data": {"seed": start.data_seed}, "model": model_name,
                "task": mixture_or_task_name}
        actions: List[train_loop.PeriodicAction] = [
            summaries, train_loop.ReportProgress(progress, metrics, summaries),
            train_loop.SaveCheckpoint(checkpoint_period, start.checkpointer, meta)]
        training_eval = None
        if eval_period and (tasks := train_loop.eval_tasks(task)):
            training_eval = train_loop.TrainingEval(
                eval_period, eval_step, tasks, feature_lengths=feature_lengths, batch_size=batch_size,
                eval_steps=eval_steps, mesh=layout.mesh, model_dir=model_dir, pack=pack,
                use_cached=use_cached_tasks)
            actions.append(training_eval)
        if on_eval is not None and infer_period:
            actions.append(train_loop.InferenceEval(infer_period, on_eval, owned=own_evaluator is not None))
        _announce(mixture_or_task_name, start.step, total_steps, layout.mesh, model_dir)
        dropout_rng = jax.device_put(jax.random.PRNGKey(random_seed + 1), layout.replicated)
        with _rng_mode(threefry_partitionable):
            step, state = train_loop.run(train_step, start.device_state(layout), batches, step=start.step,
                                         total_steps=total_steps, mesh=layout.mesh, dropout_rng=dropout_rng,
                                         metrics=metrics, actions=actions, clock=clock)
        return TrainResult(step=step, params=state["params"], model_dir=model_dir, train_summary=summaries.last,
                           eval_summaries=training_eval.last if training_eval else {}, losses=summaries.losses)


# ---- the phases' helpers ------------------------------------------------------------------

def _arguments(local_vars: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in local_vars.items() if k not in ("runtime", "on_eval")}


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _checked_arguments(*, model_dir, total_steps, batch_size, checkpoint_period, eval_period,
                       infer_eval_period, num_microbatches, label_smoothing,
                       loss_normalizing_factor) -> Tuple[str, Any]:
    """Raise ConfigError for a bad argument; returns the absolute MODEL_DIR and the checked
    loss normalizing factor."""
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
    return str(Path(model_dir).expanduser().absolute()), loss_normalizing_factor


def _own_inference_evaluator(task, model, feature_lengths, model_dir, total_steps, batch_size, runtime,
                             use_cached):
    """The task's metrics on its validation split, to ``inference_eval/<task>/``; None when
    the task has none or MODEL_DIR is already done. It writes nothing before its first call."""
    latest = checkpoints.latest_step(model_dir)
    if latest is not None and latest >= total_steps:
        return None
    if hasattr(model, "head"):
        from t5cli.runtime.head_eval import HeadEvaluator

        return HeadEvaluator(task, model, feature_lengths, model_dir, split="validation",
                             batch_size=batch_size, use_cached=use_cached)
    return maybe_inference_evaluator(task, model, feature_lengths, model_dir, batch_size=batch_size,
                                     runtime=runtime, use_cached=use_cached)


def _train_batches(task, feature_lengths, batch_size, start: train_state.TrainStart, model_dir: str, *,
                   pack: bool, use_cached: bool, shuffle: bool = True) -> Iterator[Mapping[str, Any]]:
    """The training batches from ``start``'s position in the data stream. If the pipeline
    fails, the checkpointer is closed and a MODEL_DIR it has just created is removed."""
    try:
        return get_train_iterator(task, feature_lengths, batch_size, seed=start.data_seed,
                                  start_step=start.step - start.initial_step, pack=pack, shuffle=shuffle,
                                  use_cached=use_cached)
    except BaseException:
        start.checkpointer.close()
        if start.created_dir:
            with contextlib.suppress(OSError):  # only while still empty
                Path(model_dir).rmdir()
        raise


def _write_records(model_dir: str, arguments: Mapping[str, Any], runtime, model,
                   layout: train_state.Layout, *, task_name: str, model_name: Optional[str],
                   train_record: Mapping[str, Any]) -> None:
    """``config.gin``, ``model-info.txt`` and ``t5cli_run.json`` in MODEL_DIR (process 0 only;
    the run record names the processes and the mesh)."""
    from t5cli.runtime import distributed

    if not distributed.is_primary():
        return
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    gin_text = gin_config.operative_config() or gin_config.bindings_from_arguments("train", arguments)
    gin_config.write_config_gin(model_dir, gin_text)
    write_model_info(Path(model_dir) / "model-info.txt", layout.abstract_params, layout.param_axes,
                     layout.param_shardings, layout.abstract_opt, layout.opt_shardings)
    write_run_record(model_dir, runtime, task=task_name,
                     model=model_name or getattr(model.config, "name", None),
                     extra={"train": dict(train_record), "distributed": {
                         "process_count": jax.process_count(), "devices": jax.device_count(),
                         "mesh": {name: int(size) for name, size in layout.mesh.shape.items()}}})


def _announce(task_name: str, step: int, total_steps: int, mesh, model_dir: str) -> None:
    if jax.process_index() != 0:
        return
    procs = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    print(f"training {task_name} from step {step} to {total_steps} on {mesh.devices.size} "
          f"device(s){procs} (mesh data={mesh.shape['data']}, model={mesh.shape['model']}); MODEL_DIR {model_dir}",
          flush=True)


@contextlib.contextmanager
def _storage_errors(model_dir: str):
    """A file-system error (read-only, not a directory, disk full…) as one line naming the
    path and the cause; checkpoints already written stay."""
    try:
        yield
    except T5CliError:
        raise
    except Exception as exc:
        err = storage_error(exc, "training stopped", path=model_dir,
                            hint="checkpoints already written are kept; fix this and run the same "
                                 "command to resume")
        if err is None:
            raise
        raise err from exc


def _rng_mode(threefry_partitionable: Optional[bool]):
    if threefry_partitionable is None:
        return contextlib.nullcontext()
    return jax.threefry_partitionable(bool(threefry_partitionable))


__all__ = ["train", "TrainResult", "T5CliError"]
