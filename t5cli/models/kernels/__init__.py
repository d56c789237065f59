"""Backend kernels: the few functions of the model and optimizer a backend may do its own way.

``network.py`` and Adafactor are written once in plain JAX and call every function that a
backend can replace through ``ops(choice)``. Two implementations exist:

* :mod:`~t5cli.models.kernels.plain` — plain JAX; what any backend compiles well.
* :mod:`~t5cli.models.kernels.cpu` — the same values, written the way XLA on CPU runs
  fastest (hand-written gradients, hashed dropout bits, attention in two batch halves);
  each function's docstring gives the measurement behind it.

The choice is made here and nowhere else. ``"plain"`` and ``"cpu"`` name one; ``"auto"``
(the default of ``T5Config.kernels`` and of ``optim.adafactor``) follows the environment
variable ``T5CLI_KERNELS`` when it says ``plain`` or ``cpu``, and otherwise takes the cpu
kernels when JAX's default backend is the CPU, plain ones elsewhere. ``T5CLI_KERNELS=plain``
so puts a whole process (a test run, say) on the plain path.

Every kernel set provides the functions named in :data:`OPS`, with the same signatures.
"""

from __future__ import annotations

import os
from types import ModuleType

from t5cli.models.configs import KERNELS
from t5cli.models.kernels import cpu, plain

#: the accepted values of ``T5Config.kernels`` / ``adafactor(kernels=...)``
CHOICES = KERNELS

#: environment variable that decides what ``"auto"`` means for the whole process
ENV_VAR = "T5CLI_KERNELS"

#: the functions every kernel set provides
OPS = ("dense", "gate", "lookup", "scale_features", "add_bias", "attention_scores", "attend",
       "random_bits", "mean_over_axis")

_SETS = {"plain": plain, "cpu": cpu}


def check(choice: str) -> str:
    """``choice`` if it is one of :data:`CHOICES`, else a ValueError that lists them."""
    if choice not in CHOICES:
        raise ValueError(f"kernels must be one of {', '.join(map(repr, CHOICES))}, not {choice!r}")
    return choice


def resolve(choice: str = "auto", environ=os.environ) -> str:
    """The kernel set ``choice`` stands for: ``"plain"`` or ``"cpu"``.

    Resolving ``"auto"`` without ``T5CLI_KERNELS`` asks JAX for its default backend, which
    starts it: call this when tracing, not at import or construction time.
    """
    check(choice)
    if choice != "auto":
        return choice
    forced = environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if forced not in CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(CHOICES)}, not {forced!r}")
    if forced != "auto":
        return forced
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "plain"


def ops(choice: str = "auto") -> ModuleType:
    """The kernel module for ``choice`` (see :func:`resolve`); call its functions, e.g.
    ``ops(config.kernels).dense(x, kernel)``."""
    return _SETS[resolve(choice)]
