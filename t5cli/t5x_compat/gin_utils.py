"""``t5x.gin_utils``: the config summary T5X writes (t5cli always writes MODEL_DIR/config.gin)."""

from __future__ import annotations


def summarize_gin_config(model_dir=None, summary_writer=None, step=None):
    """T5X writes config.gin here; t5cli writes it itself, in T5X's names."""
    del model_dir, summary_writer, step


def get_gin_config_str(show_provenance: bool = False) -> str:
    from t5cli import config

    del show_provenance
    return config.operative_config()
