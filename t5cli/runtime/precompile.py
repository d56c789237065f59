"""``t5 train --precompile``: plan a run before buying hardware (T5X's ``precompile.gin``).

:func:`precompile` lowers and compiles the train step of a model for a global batch,
feature lengths and a ``(data, model)`` mesh of ``num_devices`` devices without
allocating any of it (abstract arrays only), and reports what one device needs:
parameters and optimizer state (from their shardings), the compiled step's temporary
memory (activations, gradients: ``compiled.memory_analysis()``), and the FLOPs of one
step (XLA's cost analysis of the whole step before partitioning, divided among the
devices).

When this machine has fewer devices than asked for, the step is compiled for virtual
CPU devices (``jax_num_cpu_devices``, like ``--xla_force_host_platform_device_count``);
that only works before the process's first JAX computation, which is the case under
``t5 train``. CPU figures are XLA's CPU compiler's: TPU and GPU compilers fuse and
schedule differently, so take activations as an estimate, parameters as exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional

from t5cli.errors import ConfigError


@dataclasses.dataclass
class PrecompileReport:
    """Per-device bytes and FLOPs of one train step (see the module docstring)."""

    model: str
    devices: int
    platform: str
    mesh: Dict[str, int]
    batch_size: int
    feature_lengths: Dict[str, int]
    num_parameters: int
    param_bytes: int
    opt_state_bytes: int
    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    code_bytes: int
    flops_per_device: float

    @property
    def total_bytes(self) -> int:
        """Peak estimate for one device: its parameters, optimizer state, the batch shard
        and the step's temporaries (outputs alias the donated state)."""
        return self.argument_bytes + self.temp_bytes + max(self.output_bytes - self.alias_bytes, 0) + self.code_bytes

    def lines(self) -> list:
        gib = lambda n: f"{n / 2**30:,.2f} GiB" if n >= 2**28 else f"{n / 2**20:,.1f} MiB"  # noqa: E731
        lengths = ",".join(f"{k}={v}" for k, v in self.feature_lengths.items())
        mesh = ", ".join(f"{k}={v}" for k, v in self.mesh.items())
        return [
            f"precompiled the train step of {self.model} ({self.num_parameters:,} parameters) for batch "
            f"{self.batch_size} ({lengths}) on {self.devices} {self.platform} device(s), mesh {mesh}",
            f"per device: parameters         {gib(self.param_bytes)}",
            f"            optimizer state    {gib(self.opt_state_bytes)}",
            f"            activations/temp   {gib(self.temp_bytes)}",
            f"            total (peak est.)  {gib(self.total_bytes)}",
            f"FLOPs per step: {self.flops_per_device:.3e} per device, {self.flops_per_device * self.devices:.3e} in all",
        ]


def _ensure_devices(num_devices: Optional[int]):
    """``num_devices`` devices of the default backend, else virtual CPU devices."""
    import jax

    from t5cli.runtime.xla_flags import _backend_started

    if num_devices is not None and num_devices < 1:
        raise ConfigError(f"--precompile-devices {num_devices} must be at least 1")
    if num_devices is not None and not _backend_started():
        # only the CPU backend reads this; a GPU or TPU backend keeps its real devices
        jax.config.update("jax_num_cpu_devices", max(num_devices, 1))
    devices = jax.devices()
    if num_devices is None:
        return devices
    if len(devices) >= num_devices:
        return devices[:num_devices]
    cpus = jax.devices("cpu")
    if len(cpus) >= num_devices:
        return cpus[:num_devices]
    raise ConfigError(
        f"--precompile-devices {num_devices}: this process has only {len(devices)} device(s) and its JAX "
        f"backend is already started; run it as a command of its own (t5 train --precompile ...)")


def _abstract_batch(batch_size: int, lengths: Mapping[str, int], pack: bool, sharding) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp

    enc = (batch_size, int(lengths["inputs"]))
    dec = (batch_size, int(lengths["targets"]))
    shapes = {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": dec,
              "decoder_loss_weights": dec}
    if pack:
        shapes.update(encoder_segment_ids=enc, encoder_positions=enc, decoder_segment_ids=dec,
                      decoder_positions=dec)
    return {k: jax.ShapeDtypeStruct(s, jnp.int32, sharding=sharding) for k, s in shapes.items()}


def run_precompile(*, runtime, model_name: Optional[str], model_config: Any, model_overrides, dropout_rate,
                   mixture_or_task_name: Optional[str], **kwargs) -> PrecompileReport:
    """:func:`precompile` for ``train()``'s arguments: the model from the registry with its
    overrides (checked against the task's vocabulary when a task is named)."""
    from t5cli.runtime import train_state

    task = runtime.registry.task(mixture_or_task_name) if mixture_or_task_name else None
    model = train_state.build_model(runtime, model_name, model_config, model_overrides, dropout_rate, task)
    return precompile(model, runtime, model_name=model_name, **kwargs)


def precompile(model, runtime, *, batch_size: int, feature_lengths: Mapping[str, int], num_partitions: int = 1,
               num_devices: Optional[int] = None, optimizer=None, learning_rate_schedule: Optional[Callable] = None,
               z_loss: float = 1e-4, label_smoothing: float = 0.0, loss_normalizing_factor=None,
               num_microbatches: Optional[int] = None, pack: bool = True,
               model_name: Optional[str] = None) -> PrecompileReport:
    """Compile ``model``'s train step on a mesh of ``num_devices`` (default: all) devices
    with ``num_partitions`` model-parallel ways; nothing is allocated. Returns the report."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from t5cli.runtime import losses, optim, partitioning, steps, train_state

    missing = [k for k in ("inputs", "targets") if k not in feature_lengths]
    if missing:
        raise ConfigError(f"--precompile needs --feature-lengths inputs=N,targets=N (missing {missing[0]})")
    devices = _ensure_devices(num_devices)
    mesh = partitioning.create_mesh(num_partitions, devices)
    layout = train_state.make_layout(model, runtime, optimizer, (), num_partitions=num_partitions,
                                     batch_size=batch_size, mesh=mesh)
    abstract = lambda tree, shardings: jax.tree_util.tree_map(  # noqa: E731
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
    state = {"params": abstract(layout.abstract_params, layout.param_shardings),
             "opt_state": abstract(layout.abstract_opt, layout.opt_shardings),
             "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=layout.replicated)}
    batch = _abstract_batch(batch_size, feature_lengths, pack, layout.batch_sharding)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=layout.replicated)

    def lower(microbatches):
        train_step, _ = steps.compile_steps(model, layout, learning_rate_schedule or optim.constant_schedule(),
                                            z_loss=z_loss, label_smoothing=label_smoothing,
                                            loss_normalizing_factor=loss_normalizing_factor,
                                            num_microbatches=microbatches)
        return train_step.lower(state, batch, rng)

    memory = lower(num_microbatches).compile().memory_analysis()
    # FLOPs of the whole step before it is partitioned, with the loss in one piece and no
    # microbatches (the same products): XLA counts the body of a loop once, not once per
    # iteration. Each device does its share.
    with losses.whole_logits():
        cost = lower(None).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(layout.abstract_params))
    get = lambda name: int(getattr(memory, name, 0) or 0) if memory is not None else 0  # noqa: E731
    return PrecompileReport(
        model=model_name or getattr(model.config, "name", None) or "model", devices=len(devices),
        platform=devices[0].platform, mesh={k: int(v) for k, v in mesh.shape.items()}, batch_size=batch_size,
        feature_lengths={k: int(v) for k, v in feature_lengths.items()}, num_parameters=num_params,
        param_bytes=partitioning.per_device_bytes(layout.abstract_params, layout.param_shardings),
        opt_state_bytes=partitioning.per_device_bytes(layout.abstract_opt, layout.opt_shardings),
        temp_bytes=get("temp_size_in_bytes"), argument_bytes=get("argument_size_in_bytes"),
        output_bytes=get("output_size_in_bytes"), alias_bytes=get("alias_size_in_bytes"),
        code_bytes=get("generated_code_size_in_bytes"),
        flops_per_device=float((cost or {}).get("flops", 0.0)) / len(devices))


__all__ = ["PrecompileReport", "precompile", "run_precompile"]
