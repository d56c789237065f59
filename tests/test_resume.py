"""A run stopped after a checkpoint and restarted ends bitwise where an uninterrupted run ends."""

from __future__ import annotations

import numpy as np

TASK = "number_words_en_de_999"
TINY = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
            num_decoder_layers=1)


def _train(model_dir, steps):
    from t5cli.runtime.train import train

    return train(model_dir=str(model_dir), mixture_or_task_name=TASK,
                 task_feature_lengths={"inputs": 32, "targets": 32}, total_steps=steps,
                 batch_size=8, model_name="byt5_tiny", model_overrides=TINY, dropout_rate=0.1,
                 checkpoint_period=3, eval_period=None, log_period=3, random_seed=7)


def _leaves(params):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def test_resumed_run_matches_uninterrupted_run_bitwise(tmp_path):
    from t5cli.runtime.checkpoints import load_params
    from t5cli.models.configs import get_config
    from t5cli.models.model import EncoderDecoderModel

    whole = _train(tmp_path / "whole", 6)
    first = _train(tmp_path / "split", 3)  # "stopped" after its checkpoint at step 3
    assert first.step == 3
    resumed = _train(tmp_path / "split", 6)
    assert resumed.step == 6
    for a, b in zip(_leaves(whole.params), _leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    # the written checkpoints agree too, and load_params reads a MODEL_DIR's latest step
    model = EncoderDecoderModel(get_config("byt5_tiny").replace(**TINY))
    p_whole, step = load_params(tmp_path / "whole", model=model)
    p_split, _ = load_params(tmp_path / "split" / "checkpoint_6", model=model)
    assert step == 6
    for a, b in zip(_leaves(p_whole), _leaves(p_split)):
        np.testing.assert_array_equal(a, b)
    # and training moved the parameters (dropout on, so the check is not vacuous)
    p3, _ = load_params(tmp_path / "whole", model=model, step=3)
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(p3), _leaves(p_whole)))
