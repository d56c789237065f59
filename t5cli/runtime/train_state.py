"""What a training run starts from: the model, its layout on the mesh, and its first state.

- :func:`build_model`: the model config from the registry with overrides, checked against
  the task's vocabulary.
- :func:`make_layout`: the ``(data, model)`` mesh, the optimizer, and the shapes and
  shardings of the parameters and the optimizer state (nothing is allocated).
- :func:`init_or_restore`: the latest ``checkpoint_<N>`` in MODEL_DIR (parameters,
  optimizer state, step, data seed), else the parameters of ``initial_checkpoint_path``
  at that checkpoint's step, else random parameters at step 0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from t5cli.errors import ConfigError
from t5cli.models.model import EncoderDecoderModel
from t5cli.runtime import checkpoints, optim, optimizer_state, partitioning


def build_model(runtime, model_name, model_config, overrides, dropout_rate, task, *,
                head: Optional[str] = None, num_labels: Optional[int] = None):
    """The model to train: ``model_config`` or the registry's ``model_name``, with
    ``overrides`` and ``dropout_rate`` applied; its vocabulary must cover the task's (if any).
    With ``head`` it is the encoder with that head (:class:`t5cli.models.head_models.HeadModel`)."""
    if model_config is None:
        if not model_name:
            raise ConfigError("no model: pass --model NAME (see `t5 models`)")
        model_config = runtime.registry.model(model_name)
    changes = dict(overrides or {})
    if dropout_rate is not None:
        changes["dropout_rate"] = float(dropout_rate)
    model_config = model_config.with_overrides(changes)
    if task is None:  # nothing to check against (e.g. `t5 train --precompile` without a task)
        return EncoderDecoderModel(model_config)
    vocab = (task.output_features.get("targets") or task.output_features["inputs"]).vocabulary
    needed = getattr(vocab, "vocab_size", 0)
    if needed and needed > model_config.vocab_size:
        raise ConfigError(
            f"task {task.name!r} uses a vocabulary of {needed} ids but model "
            f"{model_name or 'config'} has vocab_size {model_config.vocab_size}; pick a model made for "
            f"this vocabulary")
    if head is not None:
        from t5cli.models.head_models import HeadModel
        from t5cli.runtime.head_data import check_head_task, label_names

        check_head_task(task, head)
        names = label_names(task, head, num_labels) if head != "question_answering" else None
        return HeadModel(model_config, head, len(names) if names else None, names)
    return EncoderDecoderModel(model_config)


@dataclasses.dataclass
class Layout:
    """The mesh, the optimizer, and the abstract shapes and shardings of the train state."""

    mesh: Any
    tx: optax.GradientTransformation
    abstract_params: Any
    param_axes: Any
    param_shardings: Any
    abstract_opt: Any
    opt_shardings: Any
    replicated: Any

    @property
    def state_shardings(self) -> Dict[str, Any]:
        return {"params": self.param_shardings, "opt_state": self.opt_shardings, "step": self.replicated}

    @property
    def batch_sharding(self):
        return partitioning.batch_sharding(self.mesh)


def make_layout(model, runtime, optimizer, freeze_parameters: Sequence[str], *, num_partitions: int,
                batch_size: int, mesh=None) -> Layout:
    """Mesh and shardings for ``model`` (logical axis rules from ``runtime``'s registry);
    ``optimizer`` (default: Adafactor) wrapped to keep ``freeze_parameters`` fixed.
    ``mesh`` (default: all devices, ``num_partitions`` model-parallel ways) may be given."""
    mesh = partitioning.create_mesh(num_partitions) if mesh is None else mesh
    partitioning.check_batch_size(batch_size, mesh)
    rules = partitioning.logical_axis_rules(runtime.registry.partitioning_rules())
    abstract_params = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0)))
    param_axes = model.param_axes(abstract_params)
    param_shardings = partitioning.param_shardings(mesh, param_axes, abstract_params, rules)

    tx = optim.adafactor(kernels=model.config.kernels) if optimizer is None else optimizer
    tx = optax.with_extra_args_support(optim.freeze(tx, list(freeze_parameters), abstract_params))
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    return Layout(mesh=mesh, tx=tx, abstract_params=abstract_params, param_axes=param_axes,
                  param_shardings=param_shardings, abstract_opt=abstract_opt,
                  opt_shardings=_opt_shardings(abstract_opt, abstract_params, param_shardings, mesh),
                  replicated=partitioning.replicated(mesh))


def _opt_shardings(abstract_opt, abstract_params, param_shardings, mesh):
    """Optimizer-state leaves shaped like a parameter share its sharding; others replicate."""
    by_path = {}
    for (p, x), s in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                         jax.tree_util.tree_leaves(param_shardings)):
        by_path[optim.path_str(p)] = (x.shape, s)

    def pick(path, leaf):
        name = optim.path_str(path)
        for pname, (shape, sharding) in by_path.items():
            if (name == pname or name.endswith("/" + pname)) and tuple(leaf.shape) == tuple(shape):
                return sharding
        return partitioning.replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, abstract_opt)


@dataclasses.dataclass
class TrainStart:
    """Where a run starts: its (sharded) parameters and optimizer state, its step, and the
    run's checkpointer. ``initial_step`` is the step of the initial checkpoint (the data
    stream counts from it); ``created_dir``: MODEL_DIR did not exist before."""

    params: Any
    opt_state: Any
    step: int
    initial_step: int
    data_seed: int
    checkpointer: checkpoints.TrainCheckpointer
    created_dir: bool

    def device_state(self, layout: Layout) -> Dict[str, Any]:
        """The ``state`` a train step takes, with the step on the devices."""
        return {"params": self.params, "opt_state": self.opt_state,
                "step": jax.device_put(jnp.asarray(self.step, jnp.int32), layout.replicated)}


def init_or_restore(model, layout: Layout, model_dir: str, *, total_steps: int,
                    initial_checkpoint_path: Optional[str], random_seed: int,
                    keep_checkpoints: Optional[int], restore_optimizer_state: bool = False) -> TrainStart:
    """Resume from MODEL_DIR's latest checkpoint, else start from ``initial_checkpoint_path``
    (its optimizer state too with ``restore_optimizer_state``, see
    :mod:`t5cli.runtime.optimizer_state`) or from parameters drawn with ``random_seed``. A
    resumed run may already be at ``total_steps``; an initial checkpoint at or past it is an
    error, raised before MODEL_DIR is created."""
    resume_step = checkpoints.latest_step(model_dir)
    init_params, initial_step, opt_source = None, 0, None
    if resume_step is None and initial_checkpoint_path:
        if restore_optimizer_state:
            init_params, initial_step, opt_source = optimizer_state.load_params_and_state_source(
                initial_checkpoint_path, model=model, shardings=layout.param_shardings)
        else:
            init_params, initial_step = checkpoints.load_params(
                initial_checkpoint_path, model=model, shardings=layout.param_shardings)
        if initial_step >= total_steps:
            raise ConfigError(
                f"TRAIN_STEPS={total_steps} is not past the initial checkpoint's step {initial_step}: "
                f"as in T5X it counts from that step, so pass --steps {initial_step + total_steps} "
                f"to train {total_steps} more steps")

    created_dir = not Path(model_dir).exists()
    ckpt = checkpoints.TrainCheckpointer(model_dir, keep=keep_checkpoints)
    if resume_step is not None:
        params, opt_state, meta = ckpt.restore(resume_step, layout.abstract_params, layout.abstract_opt,
                                               param_shardings=layout.param_shardings,
                                               opt_shardings=layout.opt_shardings)
        return TrainStart(params, opt_state, step=resume_step, initial_step=int(meta.get("initial_step", 0)),
                          data_seed=int(meta.get("data", {}).get("seed", random_seed)), checkpointer=ckpt,
                          created_dir=created_dir)
    if init_params is None:
        init_params = jax.jit(model.init_params, out_shardings=layout.param_shardings)(
            jax.random.PRNGKey(random_seed))
    opt_state = jax.jit(layout.tx.init, out_shardings=layout.opt_shardings)(init_params)
    if opt_source is not None:
        opt_state = optimizer_state.restore(opt_source, opt_state, abstract_opt=layout.abstract_opt,
                                            opt_shardings=layout.opt_shardings, step=initial_step)
    return TrainStart(init_params, opt_state, step=initial_step, initial_step=initial_step,
                      data_seed=random_seed, checkpointer=ckpt, created_dir=created_dir)


__all__ = ["build_model", "Layout", "make_layout", "TrainStart", "init_or_restore"]
