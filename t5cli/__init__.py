"""t5cli: train, fine-tune, evaluate, run and export T5 models on JAX.

The library behind the ``t5`` command. Each subcommand is one function here::

    import t5cli
    t5cli.train(model_dir=..., mixture_or_task_name=..., task_feature_lengths=..., total_steps=...)
    t5cli.evaluate(checkpoint_path=...)
    t5cli.infer(checkpoint_path=..., inputs=["..."])
    t5cli.export(checkpoint_path=..., output_dir=...)
    t5cli.parse_metrics("MODEL_DIR")

This module stays light: importing it must not import JAX, TensorFlow or seqio; the
functions above import their modules when first used.
"""

__version__ = "0.1.0"

from t5cli.plugins.hookspecs import hookimpl  # noqa: E402  (after __version__: plugins reads it)

#: public name -> module that defines it, imported on first use
_LAZY = {
    "train": "t5cli.runtime.train",
    "evaluate": "t5cli.runtime.evaluate",
    "infer": "t5cli.runtime.infer",
    "export": "t5cli.runtime.export",
    "parse_metrics": "t5cli.metrics.parse",
    "load_runtime": "t5cli.plugins.manager",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't5cli' has no attribute {name!r}")


__all__ = ["hookimpl", "__version__", *_LAZY]
