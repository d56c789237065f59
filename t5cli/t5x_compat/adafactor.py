"""``t5x.adafactor``: T5X's Adafactor fields → t5cli's Adafactor (``t5cli.runtime.optim``)."""

from __future__ import annotations

from typing import Any, Optional


def standard_logical_factor_rules(rules: Any = None):
    """T5X's factoring of each logical axis; t5cli factors the two largest axes, which is
    what these rules give for T5's parameters."""
    return StandardFactorRules(rules or {})


class StandardFactorRules(dict):
    """What ``standard_logical_factor_rules()`` returns here."""


class Adafactor:
    """The optimizer definition of T5X's model gin files (``OPTIMIZER``)."""

    def __init__(self, learning_rate: Optional[float] = None, factored: bool = True,
                 multiply_by_parameter_scale: Any = True, beta1: Optional[float] = None,
                 decay_rate: float = 0.8, step_offset: int = 0,
                 clipping_threshold: Optional[float] = 1.0, weight_decay_rate: Optional[float] = None,
                 min_dim_size_to_factor: int = 128, epsilon1: float = 1e-30, epsilon2: float = 1e-3,
                 dtype_momentum: Any = "float32", factor_map: Any = None,
                 logical_factor_rules: Any = None, weight_decay_rate_lr_exponent: Optional[float] = None,
                 global_norm_clip_threshold: Optional[float] = None,
                 max_parameter_scale: Optional[float] = None, skip_nan_updates: Optional[bool] = False):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def to_optax(self, unsupported):
        """t5cli's Adafactor with these settings; what it cannot do goes to ``unsupported``."""
        from t5cli.runtime import optim

        p = "adafactor.Adafactor."
        if self.learning_rate is not None:
            unsupported(p + "learning_rate", self.learning_rate,
                        "the rate comes from trainer.Trainer.learning_rate_fn")
        if self.step_offset:
            unsupported(p + "step_offset", self.step_offset,
                        "t5cli's Adafactor statistics always start at the run's first step")
        if self.epsilon2 != 1e-3:
            unsupported(p + "epsilon2", self.epsilon2)
        if not isinstance(self.multiply_by_parameter_scale, bool):
            unsupported(p + "multiply_by_parameter_scale", "a per-parameter map")
        for name in ("factor_map", "weight_decay_rate_lr_exponent", "global_norm_clip_threshold",
                     "max_parameter_scale"):
            if getattr(self, name) is not None:
                unsupported(p + name, getattr(self, name))
        if self.skip_nan_updates:
            unsupported(p + "skip_nan_updates", True)
        rules = self.logical_factor_rules
        if rules is not None and not isinstance(rules, StandardFactorRules):
            unsupported(p + "logical_factor_rules", "custom rules")
        if str(getattr(self.dtype_momentum, "__name__", self.dtype_momentum)) not in ("float32",):
            unsupported(p + "dtype_momentum", str(self.dtype_momentum))
        return optim.adafactor(decay_rate=self.decay_rate, clipping_threshold=self.clipping_threshold,
                               multiply_by_parameter_scale=bool(self.multiply_by_parameter_scale),
                               factored=self.factored, min_dim_size_to_factor=self.min_dim_size_to_factor,
                               epsilon1=self.epsilon1, momentum=self.beta1,
                               weight_decay_rate=self.weight_decay_rate)
