"""``t5x.trainer``: the trainer's settings (microbatches, learning rate) and its actions."""

from __future__ import annotations

import enum
from typing import Any, Optional


class Trainer:
    """T5X's trainer; here it only carries ``num_microbatches`` and ``learning_rate_fn``."""

    def __init__(self, model: Any = None, train_state: Any = None, partitioner: Any = None,
                 eval_names: Any = None, summary_dir: Optional[str] = None, train_state_axes: Any = None,
                 rng: Any = None, learning_rate_fn: Any = None, num_microbatches: Optional[int] = None,
                 weight_metrics_computer: Any = None):
        self.learning_rate_fn = learning_rate_fn
        self.num_microbatches = num_microbatches
        self.weight_metrics_computer = weight_metrics_computer


class ActionMode(enum.Enum):
    """When an action runs (T5X's names)."""

    TRAIN = 1
    TRAIN_EVAL = 2
    INFER_EVAL = 3


class BaseAction:
    """T5X's action interface."""


class TerminateOnNanAction(BaseAction):
    """Stop training when the loss is NaN (checked every ``period`` steps)."""

    def __init__(self, task: str = "", metric: str = "loss", mode: Any = ActionMode.TRAIN):
        self.task, self.metric, self.mode = task, metric, mode


class EarlyStoppingAction(BaseAction):
    """T5X's early stopping on a metric; t5cli names it in the warning line."""

    def __init__(self, metric: Any = None, mode: Any = None, patience: int = 3, atol: float = 0.0,
                 rtol: float = 0.0):
        self.metric, self.mode, self.patience = metric, mode, patience
