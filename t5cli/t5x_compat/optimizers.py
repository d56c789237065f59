"""``t5x.optimizers``: ``chain`` and T5X's wrappers of optax's optimizers.

``optimizers.chain(transformations=[@optax.clip(), @optax.adamw()])`` and
``optimizers.adamw(...)`` (any optax optimizer by its optax name) become the optax
transformation t5cli trains with. Schedules given to optax run on optax's own step count,
as in T5X; t5cli's logged ``learning_rate`` then is ``trainer.Trainer.learning_rate_fn``'s.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Sequence


class OptaxOptimizer:
    """An optax transformation standing where T5X puts an optimizer definition."""

    def __init__(self, transformation: Any, description: str):
        self.transformation, self.description = transformation, description

    def to_optax(self, unsupported):
        del unsupported
        return self.transformation


def chain(transformations: Sequence[Any] = ()) -> OptaxOptimizer:
    """``optax.chain`` of the transformations, in order."""
    import optax

    return OptaxOptimizer(optax.chain(*transformations), "chain")


_WRAPPERS: Dict[str, Any] = {}


def __getattr__(name: str):
    """``optimizers.adamw`` & co.: the optax function of that name, returning an optimizer."""
    if name.startswith("__"):
        raise AttributeError(name)
    if name not in _WRAPPERS:
        import optax

        fn = getattr(optax, name, None)
        if fn is None or not callable(fn):
            raise AttributeError(f"module 't5x.optimizers' has no attribute {name!r}")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return OptaxOptimizer(fn(*args, **kwargs), name)

        wrapper.__module__ = __name__
        _WRAPPERS[name] = wrapper
    return _WRAPPERS[name]
