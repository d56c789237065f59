"""``t5x.utils`` as T5X's gin files use it: dataset and checkpoint configs, the LR scheduler.

The classes hold T5X's fields under T5X's names; :mod:`t5cli.t5x_compat.scripts` reads
them and turns them into t5cli's ``train()``/``evaluate()``/``infer()`` arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Union

from t5cli.errors import ConfigError


@dataclasses.dataclass
class DatasetConfig:
    """A seqio task or mixture, its split and batching (T5X's field names)."""

    mixture_or_task_name: Any = None
    task_feature_lengths: Optional[Mapping[str, int]] = None  # None: the longest example
    split: str = "train"
    batch_size: int = 128
    shuffle: bool = True
    seed: Optional[int] = None
    use_cached: bool = False
    pack: bool = False
    use_custom_packing_ops: bool = False
    module: Optional[str] = None
    use_memory_cache: bool = True
    trim_output_features: bool = True
    runtime_preprocessors: Optional[Sequence[Any]] = None
    num_prefetch_threads: Optional[int] = None
    num_workers: Optional[int] = 0


@dataclasses.dataclass
class SaveCheckpointConfig:
    """When and how checkpoints are written."""

    dtype: str = "float32"
    period: Optional[int] = None
    checkpoint_steps: Optional[Sequence[int]] = None
    keep: Optional[int] = None
    keep_dataset_checkpoints: Optional[int] = None
    save_dataset: bool = False
    checkpointer_cls: Any = None
    state_transformation_fns: Sequence[Any] = ()
    checkpoint_manager_cls: Any = None


@dataclasses.dataclass
class RestoreCheckpointConfig:
    """Which checkpoint to start from (``mode``: ``specific``, ``latest`` or ``all``)."""

    path: Union[str, Sequence[str]] = ()
    mode: str = "latest"
    assignment_map: Optional[Sequence[Any]] = None
    strict: bool = True
    fallback_to_scratch: bool = False
    dtype: Optional[str] = None
    restore_dataset: bool = False
    checkpointer_cls: Any = None
    state_transformation_fns: Sequence[Any] = ()
    checkpoint_manager_cls: Any = None
    use_gda: bool = True

    def __post_init__(self):
        if self.mode not in ("specific", "latest", "all"):
            raise ConfigError(f"utils.RestoreCheckpointConfig.mode={self.mode!r}: T5X's modes are "
                              f"'specific', 'latest' and 'all'")

    def paths(self):
        """``path`` as a list ('' and None mean none)."""
        if not self.path:
            return []
        return [self.path] if isinstance(self.path, str) else [p for p in self.path if p]


@dataclasses.dataclass
class CheckpointConfig:
    """``save`` and ``restore`` together."""

    save: Optional[SaveCheckpointConfig] = None
    restore: Optional[RestoreCheckpointConfig] = None


#: the factors create_learning_rate_scheduler understands
FACTORS = ("constant", "linear_warmup", "linear_decay", "rsqrt_decay", "rsqrt_normalized_decay",
           "decay_every", "cosine_decay")


def create_learning_rate_scheduler(factors: str = "constant * linear_warmup * rsqrt_decay",
                                   base_learning_rate: float = 0.5, warmup_steps: int = 1000,
                                   decay_factor: float = 0.5, steps_per_decay: int = 20000,
                                   steps_per_cycle: int = 100000, step_offset: int = 0,
                                   min_learning_rate: float = 1e-8):
    """A step → learning rate function: the product of the ``*``-separated ``factors``.

    ``constant``: base_learning_rate; ``linear_warmup``: min(1, step/warmup_steps);
    ``rsqrt_decay``: 1/sqrt(max(step, warmup_steps)); ``rsqrt_normalized_decay``: the same
    times sqrt(warmup_steps); ``decay_every``: decay_factor ** (step // steps_per_decay);
    ``cosine_decay``: a cosine from 1 to 0 over steps_per_cycle steps after the warmup,
    repeating; ``linear_decay``: base * min(step/warmup, 1 + decay_factor*(warmup - step)).
    The result is at least ``min_learning_rate``; ``step`` counts from ``step_offset``.
    """
    names = [n.strip() for n in factors.split("*") if n.strip()]
    unknown = [n for n in names if n not in FACTORS]
    if unknown:
        raise ConfigError(f"utils.create_learning_rate_scheduler.factors: unknown factor {unknown[0]!r} "
                          f"(T5X's factors: {', '.join(FACTORS)})")

    def schedule(step):
        import jax.numpy as jnp

        s = jnp.maximum(0.0, jnp.asarray(step, jnp.float32) - step_offset)
        warm = float(warmup_steps)
        rate = jnp.asarray(1.0, jnp.float32)
        for name in names:
            if name == "constant":
                rate = rate * base_learning_rate
            elif name == "linear_warmup":
                rate = rate * jnp.minimum(1.0, s / warm)
            elif name == "linear_decay":
                rate = rate * base_learning_rate * jnp.minimum(s / warm, 1.0 + decay_factor * (warm - s))
            elif name == "rsqrt_decay":
                rate = rate / jnp.sqrt(jnp.maximum(s, warm))
            elif name == "rsqrt_normalized_decay":
                rate = rate * jnp.sqrt(warm) / jnp.sqrt(jnp.maximum(s, warm))
            elif name == "decay_every":
                rate = rate * decay_factor ** jnp.floor(s / steps_per_decay)
            elif name == "cosine_decay":
                progress = jnp.maximum(0.0, (s - warm) / float(steps_per_cycle))
                rate = rate * jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
        return jnp.maximum(rate, min_learning_rate).astype(jnp.float32)

    schedule.t5x_factors = factors
    return schedule


def import_module(module: Optional[str]) -> None:
    """T5X's ``DatasetConfig.module``: import a module that registers tasks (None: nothing)."""
    if not module:
        return
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"DatasetConfig.module={module!r} cannot be imported ({exc}); "
                          f"pass its folder with --user-dir, or drop MIXTURE_OR_TASK_MODULE") from None
