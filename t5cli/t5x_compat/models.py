"""``t5x.models``: T5X's ``EncoderDecoderModel`` and its loss and decoding settings.

``models.EncoderDecoderModel.predict_batch_with_aux.num_decodes`` is the beam size (T5X's
default ``decode_fn`` is beam search); ``decode_fn = @decoding.temperature_sample`` samples.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from t5cli.errors import ConfigError

_SELF = "t5x.models.EncoderDecoderModel."


class EncoderDecoderModel:
    """T5X's encoder-decoder model: network, vocabularies, optimizer and loss settings."""

    def __init__(self, module: Any = None, input_vocabulary: Any = None, output_vocabulary: Any = None,
                 optimizer_def: Any = None, decode_fn: Any = None, feature_converter_cls: Any = None,
                 label_smoothing: float = 0.0, z_loss: float = 0.0,
                 loss_normalizing_factor: Any = None, default_decoder_params: Any = None):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def predict_batch_with_aux(self, params: Any = None, batch: Any = None, rng: Any = None,
                               decoder_params: Any = None, return_all_decodes: bool = False,
                               num_decodes: int = 1, prompt_with_targets: bool = False):
        """Bound in gin only (``num_decodes``, ``decoder_params``); t5cli decodes."""
        raise NotImplementedError

    def score_batch(self, params: Any = None, batch: Any = None, return_intermediates: bool = False):
        """Bound in gin only; t5cli scores predictions itself."""
        raise NotImplementedError

    # ---- translation ---------------------------------------------------------------------

    def vocabulary_name(self, unsupported) -> str:
        """t5cli's ``T5Config.vocabulary`` for the model's output vocabulary."""
        from t5cli.models.configs import VOCABULARIES

        vocab = self.output_vocabulary or self.input_vocabulary
        if vocab is None:
            return "t5"
        if type(vocab).__name__ == "ByteVocabulary":
            return "byte"
        path = getattr(vocab, "sentencepiece_model_file", None) or getattr(vocab, "_sentencepiece_model_file", None)
        for name, (known, _) in VOCABULARIES.items():
            if known and path and (path == known or path.replace(".100extra", "") == known):
                return name
        return str(path) if path else "t5"

    def model_config(self, unsupported):
        from t5cli.t5x_compat import network

        module = self.module
        if module is None or not hasattr(module, "config"):
            raise ConfigError("models.EncoderDecoderModel.module must be @network.Transformer() with "
                              "network.Transformer.config = @network.T5Config()")
        return network.to_t5cli(module.config, self.vocabulary_name(unsupported), unsupported)

    def train_arguments(self, unsupported) -> Dict[str, Any]:
        """t5cli ``train()`` arguments: model config, optimizer and loss settings."""
        p = "models.EncoderDecoderModel."
        out: Dict[str, Any] = {"model_config": self.model_config(unsupported),
                               "z_loss": float(self.z_loss or 0.0),
                               "label_smoothing": float(self.label_smoothing or 0.0),
                               "loss_normalizing_factor": self.loss_normalizing_factor}
        if self.optimizer_def is not None:
            if not hasattr(self.optimizer_def, "to_optax"):
                raise ConfigError(f"{p}optimizer_def: {type(self.optimizer_def).__name__} is not an optimizer "
                                  f"t5cli knows; use @adafactor.Adafactor() or @optimizers.chain()")
            out["optimizer"] = self.optimizer_def.to_optax(unsupported)
        if self.feature_converter_cls is not None:
            unsupported(p + "feature_converter_cls", getattr(self.feature_converter_cls, "__name__", "…"))
        return out

    def decode_arguments(self, unsupported) -> Dict[str, Any]:
        """t5cli decoding options: ``beam_size`` from ``num_decodes``, or sampling options."""
        from t5cli.t5x_compat import decoding, query

        num_decodes = int(query(_SELF + "predict_batch_with_aux.num_decodes", 1) or 1)
        decoder_params = query(_SELF + "predict_batch_with_aux.decoder_params", None)
        decode_fn = self.decode_fn
        name = getattr(decode_fn, "__name__", "beam_search")
        out = decoding.options(decode_fn) if decode_fn is not None else {}
        if name == "beam_search":
            out["beam_size"] = num_decodes
        elif num_decodes > 1:
            unsupported("predict_batch_with_aux.num_decodes", num_decodes,
                        "with temperature_sample t5cli draws one sample per input")
        if decoder_params:
            unsupported("predict_batch_with_aux.decoder_params", decoder_params)
        if self.default_decoder_params is not None:
            unsupported("models.EncoderDecoderModel.default_decoder_params", "set")
        return out


class DecoderOnlyModel:
    """T5X's decoder-only model: t5cli trains encoder-decoder T5 models only."""

    def __init__(self, *args, **kwargs):
        raise ConfigError("models.DecoderOnlyModel: t5cli trains T5 encoder-decoder models; "
                          "use models.EncoderDecoderModel")


def decode_options(model: Optional[EncoderDecoderModel], unsupported) -> Dict[str, Any]:
    return model.decode_arguments(unsupported) if model is not None else {}
