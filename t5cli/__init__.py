"""t5cli: train, fine-tune, evaluate, run and export T5 models on JAX.

This module stays light: importing it must not import JAX, TensorFlow or seqio.
"""

from t5cli.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
