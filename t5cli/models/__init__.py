"""T5-family models: configs (no JAX), the Flax network, the model wrapper, HF import/export.

Importing this package does not import JAX; import the submodules you need:
``t5cli.models.configs`` (names and sizes), ``t5cli.models.model`` (``EncoderDecoderModel``),
``t5cli.models.network`` (linen ``Transformer``, decode API), ``t5cli.models.heads``
(encoder-only models) and ``t5cli.models.hf`` (Hugging Face checkpoints).
"""

from t5cli.models.configs import CONFIGS, T5Config, get_config

__all__ = ["CONFIGS", "T5Config", "get_config"]
