"""T5X's run scripts (``import __main__ as train_script/eval_script/infer_script``).

``train``, ``evaluate`` and ``infer`` take T5X's parameters (the configs of
:mod:`t5cli.t5x_compat.utils`, the model of :mod:`t5cli.t5x_compat.models` …) and call
t5cli's library functions with the equivalent arguments. Whatever has no equivalent is
named in one warning line (:func:`t5cli.t5x_compat.flush_warnings`).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from t5cli.errors import ConfigError
from t5cli.t5x_compat import flush_warnings, query, unsupported


# ---- shared pieces ------------------------------------------------------------------------------

def _given(value: Any, macro: str, example: str) -> Any:
    """``value``, unless it is gin's REQUIRED marker (a macro a run file left unset)."""
    import gin

    if value is gin.REQUIRED:
        raise ConfigError(f"{macro} is not set: pass --gin.{macro}={example}")
    return value


def _task_name(cfg, where: str) -> str:
    from t5cli.t5x_compat.utils import import_module

    name = _given(cfg.mixture_or_task_name, "MIXTURE_OR_TASK_NAME", "\"'<task>'\" (see `t5 tasks`)")
    name = getattr(name, "name", name)
    if not name:
        raise ConfigError(f"{where}.mixture_or_task_name is not set: pass "
                          f"--gin.MIXTURE_OR_TASK_NAME=\"'<task>'\" (see `t5 tasks`)")
    module = cfg.module
    if module and (module == "t5" or str(module).startswith("t5.")):
        pass  # T5's task modules are not available offline; the task comes from t5cli
    else:
        import_module(module)
    return str(name)


def _dataset_extras(cfg, where: str) -> None:
    """The DatasetConfig fields t5cli has no equivalent for, when they ask for something."""
    if cfg.use_custom_packing_ops:
        unsupported(f"{where}.use_custom_packing_ops", True)
    if cfg.runtime_preprocessors:
        unsupported(f"{where}.runtime_preprocessors", "set")
    if not cfg.trim_output_features:
        unsupported(f"{where}.trim_output_features", False)


def _lengths(value) -> Optional[Dict[str, int]]:
    return None if value is None else {k: int(v) for k, v in dict(value).items()}


def _not_gcs(path: str, what: str) -> None:
    if str(path).startswith(("gs://", "s3://", "http://", "https://")):
        raise ConfigError(f"{what} {path!r} is remote and t5cli works offline: copy it to a local folder "
                          f"(e.g. `gsutil -m cp -r {path} .`) and pass --gin.{what}=\"'<local path>'\"")


def _step_of(path: str) -> Optional[int]:
    """The step of a checkpoint path: ``checkpoint_<N>`` or a MODEL_DIR's latest."""
    from t5cli.runtime import checkpoints

    m = re.search(r"checkpoint_(\d+)/?$", str(path))
    if m:
        return int(m.group(1))
    try:
        return checkpoints.latest_step(path)
    except Exception:  # pragma: no cover - not a t5cli MODEL_DIR
        return None


def _restore_path(cfg, *, model_dir: Optional[str], for_training: bool) -> Optional[str]:
    """The checkpoint a RestoreCheckpointConfig names, as a t5cli checkpoint path (None: none)."""
    if cfg is None:
        return None
    p = "utils.RestoreCheckpointConfig."
    if cfg.dtype not in (None, "float32"):
        unsupported(p + "dtype", cfg.dtype, "parameters are restored in float32")
    if cfg.restore_dataset:
        unsupported(p + "restore_dataset", True, "a resumed t5cli run continues its data stream itself")
    other = [rule for rule in (cfg.assignment_map or ()) if not _drops_optimizer_state(rule)]
    if other:
        unsupported(p + "assignment_map", other, "only ((r'state.*', None),) is understood")
    if for_training and cfg.mode == "all":
        raise ConfigError("utils.RestoreCheckpointConfig.mode='all' is for evaluation; training restores "
                          "'specific' or 'latest'")
    _given(cfg.path, "INITIAL_CHECKPOINT_PATH" if for_training else "CHECKPOINT_PATH", "\"'/path'\"")
    for path in cfg.paths():
        path = str(path)
        _not_gcs(path, "INITIAL_CHECKPOINT_PATH" if for_training else "CHECKPOINT_PATH")
        path = os.path.abspath(os.path.expanduser(path))
        if os.path.exists(path):
            if for_training and model_dir and Path(path) == Path(model_dir).absolute():
                return None  # t5cli resumes from MODEL_DIR's latest checkpoint by itself
            return path
    if cfg.paths() and not cfg.fallback_to_scratch:
        raise ConfigError(f"{p}path: no checkpoint at {', '.join(map(str, cfg.paths()))} (set "
                          f"{p}fallback_to_scratch = True to start from random parameters)")
    return None


def _drops_optimizer_state(rule) -> bool:
    """An assignment-map rule ``(pattern, None)`` that skips T5X's optimizer state."""
    try:
        pattern, target = rule
        return target is None and re.fullmatch(pattern, "state/param_states/x/v_row") is not None
    except (TypeError, ValueError, re.error):
        return False


def restores_optimizer_state(cfg) -> bool:
    """T5X restores the initial checkpoint's optimizer state unless the restore config's
    assignment map drops ``state/…``."""
    return cfg is not None and not any(_drops_optimizer_state(r) for r in (cfg.assignment_map or ()))


def _evaluator_arguments(evaluator_cls) -> Dict[str, Any]:
    """``seqio.Evaluator`` bindings: ``num_examples``; the loggers t5cli writes anyway."""
    if evaluator_cls is None:
        return {}
    honoured = {"PyLoggingLogger", "TensorBoardLogger", "JSONLogger"}
    for logger in query("seqio.Evaluator.logger_cls", None) or ():
        name = getattr(logger, "__name__", None) or str(logger).lstrip("@").split("(")[0].split(".")[-1]
        if name not in honoured:
            unsupported("seqio.Evaluator.logger_cls", name, "t5cli writes TensorBoard and JSONL results")
    write_n = query("seqio.JSONLogger.write_n_results", None)
    if write_n is not None:
        unsupported("seqio.JSONLogger.write_n_results", write_n)
    num_examples = query("seqio.Evaluator.num_examples", None)
    return {"num_examples": None if num_examples is None else int(num_examples)}


def _summarize(fn, name: str) -> None:
    if fn is None:
        unsupported(f"{name}.summarize_config_fn", None, "t5cli always writes config.gin")
    elif getattr(fn, "__name__", "") != "summarize_gin_config":
        unsupported(f"{name}.summarize_config_fn", getattr(fn, "__name__", "…"))


def _runtime(runtime):
    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime()
    return runtime


# ---- train_script.train ---------------------------------------------------------------------------

def train(*, model: Any = None, train_dataset_cfg: Any = None, train_eval_dataset_cfg: Any = None,
          infer_eval_dataset_cfg: Any = None, checkpoint_cfg: Any = None, partitioner: Any = None,
          trainer_cls: Any = None, model_dir: Optional[str] = None, total_steps: Optional[int] = None,
          eval_steps: int = 20, eval_period: int = 1000, relative_steps: Optional[int] = None,
          stats_period: Optional[int] = None, random_seed: Optional[int] = None,
          use_hardware_rng: bool = False, summarize_config_fn: Any = None,
          inference_evaluator_cls: Any = None, get_dataset_fn: Any = None,
          concurrent_metrics: bool = True, actions: Optional[Mapping[str, Any]] = None,
          train_eval_get_dataset_fn: Any = None, run_eval_before_training: bool = False,
          train_state_initializer_cls: Any = None, use_orbax: bool = True,
          verify_matching_vocabs_fn: Any = None, gc_period: int = 0,
          runtime: Any = None, tfds_data_dir: Optional[str] = None,
          precompile: bool = False, precompile_devices: Optional[int] = None):
    """T5X's ``train.py`` ``train()``: translated into :func:`t5cli.runtime.train.train`.
    ``precompile`` (t5cli's ``--precompile``, not a T5X argument) only plans the run:
    MODEL_DIR, TRAIN_STEPS and the task may then be unset."""
    kwargs = train_arguments(**{k: v for k, v in locals().items()
                                if k not in ("runtime", "tfds_data_dir", "precompile_devices")})
    from t5cli.runtime import train as runtime_train

    runtime = _runtime(runtime)
    evaluator = kwargs.pop("_infer_eval")
    if precompile:
        flush_warnings()
        return runtime_train.train(runtime=runtime, precompile=True, precompile_devices=precompile_devices,
                                   **kwargs)
    if evaluator is not None:
        kwargs["on_eval"] = _inference_evaluator(runtime, kwargs, evaluator, tfds_data_dir)
    flush_warnings()
    try:
        return runtime_train.train(runtime=runtime, tfds_data_dir=tfds_data_dir, **kwargs)
    finally:
        close = getattr(kwargs.get("on_eval"), "close", None)
        if close is not None:
            close()


# ---- train_script.precompile (T5X's precompile.py, run by its precompile.gin) -----------------

def precompile(*, model: Any = None, train_dataset_cfg: Any = None, partitioner: Any = None,
               model_dir: Optional[str] = None, random_seed: Optional[int] = None,
               get_dataset_fn: Any = None, verify_matching_vocabs_fn: Any = None,
               runtime: Any = None, tfds_data_dir: Optional[str] = None,
               precompile_devices: Optional[int] = None):
    """T5X's ``precompile()``: where T5X compiles the train step and dumps its HLO to
    MODEL_DIR, t5cli compiles it and returns the per-device report of ``--precompile``."""
    del verify_matching_vocabs_fn  # t5cli checks the model's vocabulary against the task's itself
    if get_dataset_fn is not None:
        unsupported("train_script.precompile.get_dataset_fn", getattr(get_dataset_fn, "__name__", "set"))
    if precompile_devices is None:  # --precompile-devices binds t5cli's train.precompile_devices
        precompile_devices = query("train.precompile_devices")
    return train(model=model, train_dataset_cfg=train_dataset_cfg, partitioner=partitioner,
                 model_dir=model_dir, random_seed=random_seed, runtime=runtime, tfds_data_dir=tfds_data_dir,
                 precompile=True, precompile_devices=precompile_devices)


def train_arguments(*, model, train_dataset_cfg, train_eval_dataset_cfg, infer_eval_dataset_cfg,
                    checkpoint_cfg, partitioner, trainer_cls, model_dir, total_steps, eval_steps,
                    eval_period, relative_steps, stats_period, random_seed, use_hardware_rng,
                    summarize_config_fn, inference_evaluator_cls, get_dataset_fn, concurrent_metrics,
                    actions, train_eval_get_dataset_fn, run_eval_before_training,
                    train_state_initializer_cls, use_orbax, verify_matching_vocabs_fn, gc_period,
                    precompile: bool = False) -> Dict[str, Any]:
    """t5cli ``train()`` keyword arguments for T5X's ``train()`` arguments (plus
    ``_infer_eval``: what the inference evaluation needs, or None)."""
    from t5cli.runtime import train as runtime_train

    ts = "train_script.train."
    if model is None:
        raise ConfigError("train_script.train.model is not set: include a T5X model gin file "
                          "(e.g. t5x/examples/t5/t5_1_1/small.gin), which sets MODEL")
    if train_dataset_cfg is None:
        raise ConfigError("train_script.train.train_dataset_cfg is not set: bind it to "
                          "@train/utils.DatasetConfig() (include t5x/configs/runs/pretrain.gin)")
    ds = train_dataset_cfg
    if precompile:  # planning: no MODEL_DIR, steps or data needed
        import gin

        model_dir = None if model_dir is gin.REQUIRED else model_dir
        total_steps = 1 if total_steps is None or total_steps is gin.REQUIRED else total_steps
        relative_steps = None
        if ds.mixture_or_task_name is None or ds.mixture_or_task_name is gin.REQUIRED:
            ds = dataclasses.replace(ds, mixture_or_task_name=None)
    else:
        model_dir = _given(model_dir, "MODEL_DIR", "\"'/path'\" or --model-dir DIR")
        if not model_dir:
            raise ConfigError("MODEL_DIR is not set: pass --gin.MODEL_DIR=\"'/path'\" or --model-dir DIR")
    model_dir = str(Path(os.path.expanduser(model_dir)).absolute()) if model_dir else None
    out: Dict[str, Any] = dict(model.train_arguments(unsupported))
    task_name = None if precompile and ds.mixture_or_task_name is None else _task_name(ds, "train/utils.DatasetConfig")
    out.update(model_dir=model_dir, mixture_or_task_name=task_name,
               task_feature_lengths=_lengths(ds.task_feature_lengths), batch_size=int(ds.batch_size),
               pack=bool(ds.pack), use_cached_tasks=bool(ds.use_cached), shuffle=bool(ds.shuffle))
    if ds.task_feature_lengths is None:
        raise ConfigError("TASK_FEATURE_LENGTHS is not set: pass "
                          "--gin.TASK_FEATURE_LENGTHS=\"{'inputs': 256, 'targets': 256}\"")
    if ds.split != "train":
        unsupported("train/utils.DatasetConfig.split", ds.split, "t5cli trains on 'train'")
    _dataset_extras(ds, "train/utils.DatasetConfig")
    seed = random_seed if random_seed is not None else ds.seed
    if random_seed is not None and ds.seed is not None and ds.seed != random_seed:
        unsupported("train/utils.DatasetConfig.seed", ds.seed, "t5cli orders data by random_seed")
    out["random_seed"] = int(seed or 0)

    # training eval (loss on the validation split) and inference eval (decoding + metrics)
    out["eval_period"] = int(eval_period) if eval_period else None
    out["eval_steps"] = int(eval_steps)
    tev = train_eval_dataset_cfg
    if tev is not None:
        if tev.split != "validation":
            unsupported("train_eval/utils.DatasetConfig.split", tev.split, "t5cli's training eval reads 'validation'")
        for field in ("batch_size", "task_feature_lengths", "pack"):
            if getattr(tev, field) != getattr(ds, field):
                unsupported(f"train_eval/utils.DatasetConfig.{field}", getattr(tev, field),
                            f"t5cli's training eval uses train/'s {field}")
        _dataset_extras(tev, "train_eval/utils.DatasetConfig")
    elif infer_eval_dataset_cfg is None:
        out["eval_period"] = None
    else:
        unsupported(ts + "train_eval_dataset_cfg", None, "t5cli's training eval runs every eval_period")
    out["_infer_eval"] = None
    out["infer_eval_period"] = 0
    if infer_eval_dataset_cfg is not None and inference_evaluator_cls is not None and out["eval_period"]:
        iev = infer_eval_dataset_cfg
        _dataset_extras(iev, "infer_eval/utils.DatasetConfig")
        if iev.pack:
            unsupported("infer_eval/utils.DatasetConfig.pack", True, "decoding never packs")
        out["infer_eval_period"] = out["eval_period"]
        out["_infer_eval"] = dict(
            task=_task_name(iev, "infer_eval/utils.DatasetConfig"), split=iev.split,
            feature_lengths=_lengths(iev.task_feature_lengths), batch_size=int(iev.batch_size),
            use_cached=bool(iev.use_cached), **_evaluator_arguments(inference_evaluator_cls),
            **model.decode_arguments(unsupported))

    # checkpoints
    save = getattr(checkpoint_cfg, "save", None)
    restore = getattr(checkpoint_cfg, "restore", None)
    if save is not None:
        p = "utils.SaveCheckpointConfig."
        out["checkpoint_period"] = int(save.period) if save.period else None
        out["keep_checkpoints"] = save.keep
        if save.dtype not in (None, "float32"):
            unsupported(p + "dtype", save.dtype, "t5cli saves float32")
        if save.checkpoint_steps:
            unsupported(p + "checkpoint_steps", list(save.checkpoint_steps))
        if save.keep_dataset_checkpoints is not None:
            unsupported(p + "keep_dataset_checkpoints", save.keep_dataset_checkpoints)
    initial = _restore_path(restore, model_dir=model_dir, for_training=True)
    out["initial_checkpoint_path"] = initial
    out["restore_optimizer_state"] = bool(initial) and restores_optimizer_state(restore)

    # steps
    if relative_steps:
        from t5cli.runtime import checkpoints

        start = checkpoints.latest_step(model_dir) if Path(model_dir).is_dir() else None
        if start is None:
            start = (_step_of(initial) if initial else 0) or 0
        out["total_steps"] = int(start) + int(relative_steps)
    else:
        if total_steps is None:
            raise ConfigError("TRAIN_STEPS is not set: pass --gin.TRAIN_STEPS=N or --steps N")
        out["total_steps"] = int(total_steps)
    out["log_period"] = int(stats_period or eval_period or 100)

    # partitioning, trainer
    if partitioner is not None:
        out.update(partitioner.t5cli_arguments(unsupported))
    trainer = trainer_cls() if trainer_cls is not None else None
    if trainer is not None:
        if trainer.learning_rate_fn is not None:
            out["learning_rate_schedule"] = trainer.learning_rate_fn
        out["num_microbatches"] = trainer.num_microbatches
        if trainer.weight_metrics_computer is not None:
            unsupported("trainer.Trainer.weight_metrics_computer", "set")

    # the rest
    params = inspect.signature(runtime_train.train).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    _actions(actions, out, set(params) | ({"stop_on_nonfinite"} if takes_any else set()))
    if use_hardware_rng:
        unsupported(ts + "use_hardware_rng", True, "t5cli draws with JAX's threefry RNG")
    if gc_period:
        unsupported(ts + "gc_period", gc_period)
    if run_eval_before_training:
        unsupported(ts + "run_eval_before_training", True)
    if not use_orbax:
        unsupported(ts + "use_orbax", False, "t5cli checkpoints with orbax")
    for name, value in (("get_dataset_fn", get_dataset_fn), ("train_eval_get_dataset_fn", train_eval_get_dataset_fn),
                        ("train_state_initializer_cls", train_state_initializer_cls),
                        ("verify_matching_vocabs_fn", verify_matching_vocabs_fn)):
        if value is not None:
            unsupported(ts + name, getattr(value, "__name__", "set"))
    del concurrent_metrics  # metrics are computed as in T5X either way
    if not precompile:  # a plan writes no config
        _summarize(summarize_config_fn, "train_script.train")
    return out


def _actions(actions, out: Dict[str, Any], accepted: set) -> None:
    """``TerminateOnNanAction`` → ``stop_on_nonfinite=True`` (t5cli's default anyway)."""
    for mode, items in dict(actions or {}).items():
        for action in items or ():
            name = type(action).__name__
            if name == "TerminateOnNanAction":
                flag = "stop_on_nonfinite" if "stop_on_nonfinite" in accepted else None
                if flag:
                    out[flag] = True
                    continue
            unsupported(f"train_script.train.actions[{mode!r}]", name)


def _inference_evaluator(runtime, kwargs: Dict[str, Any], spec: Dict[str, Any], tfds_data_dir):
    """The inference evaluation T5X's infer_eval dataset and ``seqio.Evaluator`` describe."""
    from t5cli.runtime import train_state
    from t5cli.runtime.datasets import ensure_task_data
    from t5cli.runtime.evaluate import maybe_inference_evaluator

    task = runtime.registry.task(spec["task"])
    ensure_task_data(task, tfds_data_dir)
    model = train_state.build_model(runtime, None, kwargs["model_config"], None, None, task)
    decode = {k: spec[k] for k in ("beam_size", "temperature", "top_k", "top_p", "alpha") if k in spec}
    return maybe_inference_evaluator(task, model, spec["feature_lengths"], kwargs["model_dir"],
                                     split=spec["split"], batch_size=spec["batch_size"], runtime=runtime,
                                     use_cached=spec["use_cached"], num_examples=spec.get("num_examples"),
                                     **decode)


# ---- eval_script.evaluate and infer_script.infer ---------------------------------------------------

def _load_arguments(model, dataset_cfg, restore_checkpoint_cfg, partitioner, where: str) -> Dict[str, Any]:
    if dataset_cfg is None:
        raise ConfigError(f"{where}.dataset_cfg is not set: bind it to @utils.DatasetConfig()")
    out: Dict[str, Any] = {"mixture_or_task_name": _task_name(dataset_cfg, "utils.DatasetConfig"),
                           "split": dataset_cfg.split, "batch_size": int(dataset_cfg.batch_size),
                           "task_feature_lengths": _lengths(dataset_cfg.task_feature_lengths),
                           "use_cached_tasks": bool(dataset_cfg.use_cached)}
    _dataset_extras(dataset_cfg, "utils.DatasetConfig")
    if dataset_cfg.pack:
        unsupported("utils.DatasetConfig.pack", True, "decoding never packs")
    if model is not None:
        out["model_config"] = model.model_config(unsupported)
        out.update(model.decode_arguments(unsupported))
    if restore_checkpoint_cfg is None:
        raise ConfigError(f"{where}.restore_checkpoint_cfg is not set: bind it to "
                          f"@utils.RestoreCheckpointConfig() with path = %CHECKPOINT_PATH")
    out["checkpoint_path"] = _restore_path(restore_checkpoint_cfg, model_dir=None, for_training=False)
    if out["checkpoint_path"] is None:
        raise ConfigError("CHECKPOINT_PATH is not set: pass --gin.CHECKPOINT_PATH=\"'/path'\" or --checkpoint")
    if partitioner is not None:
        parts = partitioner.t5cli_arguments(unsupported)["num_partitions"]
        if parts != 1:
            unsupported("partitioning.PjitPartitioner.num_partitions", parts,
                        "t5 eval/infer keep the whole model on each device")
    return out


def _steps(restore_checkpoint_cfg, path: str) -> List[Optional[int]]:
    """mode 'all': every step of a MODEL_DIR; else the one checkpoint (None: as the path says)."""
    from t5cli.runtime import checkpoints

    if restore_checkpoint_cfg.mode == "all" and not checkpoints.is_checkpoint_dir(path):
        return list(checkpoints.all_steps(path)) or [None]
    return [None]


def evaluate(*, model: Any = None, dataset_cfg: Any = None, restore_checkpoint_cfg: Any = None,
             partitioner: Any = None, output_dir: Optional[str] = None, inference_evaluator_cls: Any = None,
             training_evaluator_cls: Any = None, summarize_config_fn: Any = None,
             train_state_initializer_cls: Any = None, train_eval_get_dataset_fn: Any = None,
             fallback_init_rng: Optional[int] = None, use_orbax: bool = True,
             runtime: Any = None, explicit: Optional[Mapping[str, Any]] = None):
    """T5X's ``eval.py`` ``evaluate()``: translated into :func:`t5cli.runtime.evaluate.evaluate`
    (once per checkpoint for ``RestoreCheckpointConfig.mode = 'all'``); ``explicit`` holds
    the command's flags, which win."""
    from t5cli.runtime.evaluate import evaluate as runtime_evaluate

    es = "eval_script.evaluate."
    kwargs = _load_arguments(model, dataset_cfg, restore_checkpoint_cfg, partitioner, "eval_script.evaluate")
    kwargs.update(_evaluator_arguments(inference_evaluator_cls or object))
    kwargs["output_dir"] = _given(output_dir, "EVAL_OUTPUT_DIR", "\"'/path'\" or --output-dir DIR")
    for name, value in (("training_evaluator_cls", training_evaluator_cls),
                        ("train_state_initializer_cls", train_state_initializer_cls),
                        ("train_eval_get_dataset_fn", train_eval_get_dataset_fn),
                        ("fallback_init_rng", fallback_init_rng)):
        if value is not None:
            unsupported(es + name, getattr(value, "__name__", value))
    if not use_orbax:
        unsupported(es + "use_orbax", False)
    kwargs.update({k: v for k, v in dict(explicit or {}).items() if v is not None})
    flush_warnings()
    runtime = _runtime(runtime)
    result = None
    for step in _steps(restore_checkpoint_cfg, kwargs["checkpoint_path"]):
        result = runtime_evaluate(runtime=runtime, **dict(kwargs, step=kwargs.get("step", step)))
    _write_config(result.output_dir if result is not None else output_dir)
    return result


def infer(*, mode: str = "predict", model: Any = None, dataset_cfg: Any = None,
          restore_checkpoint_cfg: Any = None, partitioner: Any = None, output_dir: Optional[str] = None,
          checkpoint_period: int = 100, shard_id: int = 0, num_shards: int = 1,
          merge_chunked_results: bool = True, write_fn: Any = None, checkpoint_ds_iter: bool = True,
          train_state_initializer_cls: Any = None, fallback_init_rng: Optional[int] = None,
          merge_fn: Any = None, summarize_config_fn: Any = None, verify_matching_vocabs_fn: Any = None,
          output_vocab_feature_name: str = "targets", file_extension: str = "jsonl",
          keep_aux_as_numpy: bool = False, use_orbax: bool = True,
          runtime: Any = None, explicit: Optional[Mapping[str, Any]] = None):
    """T5X's ``infer.py`` ``infer()``: translated into :func:`t5cli.runtime.infer.infer`."""
    from t5cli.runtime.infer import infer as runtime_infer

    si = "infer_script.infer."
    if mode not in ("predict", "predict_with_aux", "score"):
        raise ConfigError(f"{si}mode={mode!r}: T5X's modes are 'predict', 'predict_with_aux' and 'score'")
    if mode == "score":
        raise ConfigError(f"{si}mode='score' is not available in t5cli: its `t5 infer` decodes "
                          f"(mode 'predict'; every line carries the prediction's score)")
    kwargs = _load_arguments(model, dataset_cfg, restore_checkpoint_cfg, partitioner, "infer_script.infer")
    kwargs["output_dir"] = _given(output_dir, "INFER_OUTPUT_DIR", "\"'/path'\" or --output-dir DIR")
    if num_shards != 1 or shard_id != 0:
        unsupported(si + "shard_id/num_shards", f"{shard_id}/{num_shards}", "t5cli decodes the whole split")
    if checkpoint_period != 100:
        unsupported(si + "checkpoint_period", checkpoint_period)
    for name, value in (("write_fn", write_fn), ("merge_fn", merge_fn),
                        ("train_state_initializer_cls", train_state_initializer_cls),
                        ("verify_matching_vocabs_fn", verify_matching_vocabs_fn),
                        ("fallback_init_rng", fallback_init_rng)):
        if value is not None:
            unsupported(si + name, getattr(value, "__name__", value))
    if output_vocab_feature_name != "targets":
        unsupported(si + "output_vocab_feature_name", output_vocab_feature_name)
    if file_extension != "jsonl":
        unsupported(si + "file_extension", file_extension)
    if keep_aux_as_numpy or not merge_chunked_results or not checkpoint_ds_iter or not use_orbax:
        unsupported(si + "keep_aux_as_numpy/merge_chunked_results/checkpoint_ds_iter/use_orbax", "non-default")
    kwargs.update({k: v for k, v in dict(explicit or {}).items() if v is not None})
    flush_warnings()
    result = runtime_infer(runtime=_runtime(runtime), **kwargs)
    if output_dir:
        _write_config(output_dir)
    return result


def _write_config(directory: Optional[str]) -> None:
    """T5X writes the run's config.gin beside its results; so does t5cli."""
    if not directory:
        return
    from t5cli import config

    text = config.operative_config()
    if text:
        config.write_config_gin(directory, text)
