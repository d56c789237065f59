"""``t5x.partitioning`` as T5X's gin files use it: the partitioner's mesh settings.

``num_partitions`` is t5cli's ``num_partitions`` (the ``model`` axis of the (data, model)
mesh); the logical axis rules are t5cli's own (built in plus plugins'), which follow T5X's
standard rules.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence


def standard_logical_axis_rules(activation_partitioning_dims: int = 1,
                                parameter_partitioning_dims: int = 1,
                                additional_rules: Optional[Sequence[Any]] = None):
    """A marker for T5X's standard rules: t5cli applies its own equivalent rules."""
    return StandardRules(activation_partitioning_dims, parameter_partitioning_dims,
                         tuple(additional_rules or ()))


class StandardRules(tuple):
    """What ``standard_logical_axis_rules()`` returns here; t5cli's rules replace it."""

    def __new__(cls, activation_dims: int = 1, parameter_dims: int = 1, additional=()):
        self = super().__new__(cls, additional)
        self.activation_dims, self.parameter_dims, self.additional = activation_dims, parameter_dims, additional
        return self


class PjitPartitioner:
    """T5X's partitioner: ``num_partitions`` model-parallel devices per replica."""

    def __init__(self, num_partitions: Optional[int] = None, model_parallel_submesh: Any = None,
                 params_on_devices: bool = True, backend: Optional[str] = None,
                 ici_mesh_shape: Any = None, dcn_mesh_shape: Any = None,
                 logical_axis_rules: Any = None, use_cpu_pjit: bool = False):
        self.num_partitions = num_partitions
        self.model_parallel_submesh = model_parallel_submesh
        self.params_on_devices = params_on_devices
        self.backend = backend
        self.ici_mesh_shape = ici_mesh_shape
        self.dcn_mesh_shape = dcn_mesh_shape
        self.logical_axis_rules = logical_axis_rules
        self.use_cpu_pjit = use_cpu_pjit

    def t5cli_arguments(self, unsupported) -> dict:
        """``num_partitions`` for t5cli; the rest that has no effect goes to ``unsupported``."""
        prefix = "partitioning.PjitPartitioner."
        if self.model_parallel_submesh is not None:
            unsupported(prefix + "model_parallel_submesh", self.model_parallel_submesh,
                        "use num_partitions")
        for name in ("ici_mesh_shape", "dcn_mesh_shape", "backend"):
            if getattr(self, name) is not None:
                unsupported(prefix + name, getattr(self, name))
        rules = self.logical_axis_rules
        if rules is not None and not isinstance(rules, StandardRules):
            unsupported(prefix + "logical_axis_rules", "custom rules",
                        "t5cli uses its standard rules; add rules with a register_partitioning_rules plugin")
        elif isinstance(rules, StandardRules) and (rules.additional or rules.activation_dims != 1
                                                   or rules.parameter_dims != 1):
            unsupported("partitioning.standard_logical_axis_rules", "non-default arguments")
        return {"num_partitions": int(self.num_partitions or 1)}


