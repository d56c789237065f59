"""Our Flax T5 against Hugging Face's PyTorch T5, on small random models (no downloads)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from t5cli.errors import CheckpointError  # noqa: E402
from t5cli.models import hf as hfio  # noqa: E402
from t5cli.models.model import EncoderDecoderModel  # noqa: E402
from t5cli.models.network import relative_position_bucket  # noqa: E402

TOL = 1e-4
DIMS = dict(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
            decoder_start_token_id=0, dropout_rate=0.1)

# Encoder length 40 reaches the log-spaced relative-position buckets (and the n=16, 32
# boundaries); padding (id 0) in the second row exercises the masks.
ENC = np.zeros((2, 40), np.int64)
ENC[0, :39] = np.arange(39) % 97 + 2
ENC[0, 39] = 1
ENC[1, :10] = [5, 9, 14, 3, 77, 21, 8, 44, 2, 1]
TGT = np.zeros((2, 20), np.int64)
TGT[0, :19] = (np.arange(19) * 7) % 97 + 2
TGT[0, 19] = 1
TGT[1, :6] = [12, 13, 14, 15, 16, 1]
DEC = np.concatenate([np.zeros((2, 1), np.int64), TGT[:, :-1]], axis=1)  # shift right


def _randomize_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))


def _make_hf(kind: str):
    torch.manual_seed(0 if kind == "1.0" else 1)
    if kind == "1.0":  # ReLU, tied embedding, decoder output scaled
        cfg = transformers.T5Config(**DIMS, feed_forward_proj="relu")
        model = transformers.T5ForConditionalGeneration(cfg)
    else:  # gated-GELU, separate lm_head, no scaling, unequal depths (as ByT5), and
        # heads x d_kv != d_model (as T5 1.1: 6 x 64 = 384 against 512)
        dims = {**DIMS, "num_heads": 6, "d_kv": 8}
        cfg = transformers.T5Config(**dims, feed_forward_proj="gated-gelu",
                                    tie_word_embeddings=False, num_decoder_layers=3)
        model = transformers.T5ForConditionalGeneration(cfg)
        # transformers 5 keeps lm_head tied to `shared` regardless of the flag: untie it.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(100, 64) * 0.5)
    _randomize_norms(model)
    return model.eval()


def _hf_logits(model, enc=ENC, dec=DEC):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc != 0),
                    decoder_input_ids=torch.tensor(dec))
    return out.logits.numpy()


def _batch(enc=ENC, dec=DEC, tgt=TGT):
    return {"encoder_input_tokens": jnp.asarray(enc, jnp.int32),
            "decoder_input_tokens": jnp.asarray(dec, jnp.int32),
            "decoder_target_tokens": jnp.asarray(tgt, jnp.int32)}


def _max_diff_where(a, b, valid):
    return float(np.abs(np.asarray(a) - np.asarray(b))[valid].max())


@pytest.fixture(scope="module", params=["1.0", "1.1"])
def saved(request, tmp_path_factory):
    """(kind, hf model, directory it was saved to with safetensors)."""
    model = _make_hf(request.param)
    directory = str(tmp_path_factory.mktemp(f"hf_{request.param}"))
    model.save_pretrained(directory, safe_serialization=True)
    return request.param, model, directory


@pytest.fixture(scope="module")
def imported(saved):
    kind, model, directory = saved
    config, params = hfio.import_hf(directory)
    return kind, model, directory, config, jax.tree_util.tree_map(jnp.asarray, params)


@pytest.fixture(params=["plain", "cpu"])
def kernels(request):
    """The backend kernel set a parity test runs on: the plain one and the cpu fast paths."""
    return request.param


_LOGITS_FNS = {}


def _logits_fn(config):
    """One jitted compute_logits per config, so tests share compilations."""
    if config not in _LOGITS_FNS:
        _LOGITS_FNS[config] = jax.jit(EncoderDecoderModel(config).compute_logits)
    return _LOGITS_FNS[config]


def test_config_mapping(imported):
    kind, _, _, config, params = imported
    if kind == "1.0":
        assert config.mlp_activations == ("relu",) and config.logits_via_embedding
        assert "logits_dense" not in params["decoder"]
    else:
        assert config.mlp_activations == ("gelu", "linear") and not config.logits_via_embedding
        assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 3)
    heads, head_dim = (4, 16) if kind == "1.0" else (6, 8)
    assert (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (64, heads, head_dim, 128)


def test_logits_match_hf(imported, kernels):
    kind, model, _, config, params = imported
    config = config.replace(kernels=kernels)
    ours = _logits_fn(config)(params, _batch())
    assert ours.dtype == jnp.float32 and ours.shape == (2, 20, 100)
    assert _max_diff_where(ours, _hf_logits(model), TGT != 0) < TOL


def test_encoder_matches_hf_encoder_model(imported, kernels):
    _, _, directory, config, params = imported
    encoder = transformers.T5EncoderModel.from_pretrained(directory).eval()
    with torch.no_grad():
        theirs = encoder(input_ids=torch.tensor(ENC),
                         attention_mask=torch.tensor(ENC != 0)).last_hidden_state.numpy()
    model = EncoderDecoderModel(config.replace(kernels=kernels))
    ours = jax.jit(model.encode)(params, jnp.asarray(ENC, jnp.int32))
    assert _max_diff_where(ours, theirs, ENC != 0) < TOL
    # encoder-only import reads the same encoder tensors
    enc_config, enc_params = hfio.import_hf(directory, encoder_only=True)
    assert set(enc_params) == {"token_embedder", "encoder"}
    np.testing.assert_array_equal(enc_params["encoder"]["encoder_norm"]["scale"],
                                  params["encoder"]["encoder_norm"]["scale"])


def test_export_reloads_in_hf(imported, tmp_path):
    kind, model, _, config, params = imported
    hfio.export_hf(config, params, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        written = json.load(f)
    assert written["tie_word_embeddings"] is (kind == "1.0")
    assert "kernels" not in written  # a t5cli runtime choice, not part of the model
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    if kind == "1.1":  # must come back untied and unscaled
        assert reloaded.lm_head.weight.data_ptr() != reloaded.shared.weight.data_ptr()
        assert not torch.equal(reloaded.lm_head.weight, reloaded.shared.weight)
        assert not getattr(reloaded.config, "scale_decoder_outputs", False)
    assert _max_diff_where(_hf_logits(reloaded), _hf_logits(model), TGT != 0) < TOL
    ours = _logits_fn(config)(params, _batch())
    assert _max_diff_where(ours, _hf_logits(reloaded), TGT != 0) < TOL
    # and our own import of the export is exact
    config2, params2 = hfio.import_hf(str(tmp_path))
    assert config2.replace(name=config.name) == config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2,
                           jax.tree_util.tree_map(np.asarray, params))


def test_kv_cache_steps_equal_full_decoder(imported, kernels):
    _, _, _, config, params = imported
    config = config.replace(kernels=kernels)
    model = EncoderDecoderModel(config)
    enc = jnp.asarray(ENC, jnp.int32)
    tgt = np.where(TGT == 0, 3, TGT)  # no padding: every position is a real query
    dec = np.concatenate([np.zeros((2, 1), np.int64), tgt[:, :-1]], axis=1)
    full = _logits_fn(config)(params, _batch(ENC, dec, tgt))
    encoded = model.encode(params, enc)
    cache = model.init_cache(2, dec.shape[1])
    for leaf in jax.tree_util.tree_leaves(cache):
        assert leaf.shape[0] == 2  # batch-leading, so beams can gather along axis 0
    step = jax.jit(model.decode_step)
    for i in range(dec.shape[1]):
        logits, cache = step(params, cache, encoded, enc, jnp.asarray(dec[:, i:i + 1], jnp.int32))
        np.testing.assert_allclose(logits, full[:, i], atol=TOL, rtol=0)
    assert np.asarray(cache["decoder"]["cache_index"]).tolist() == [20, 20]


def test_packed_equals_separate(imported, kernels):
    _, _, _, config, params = imported
    config = config.replace(kernels=kernels)
    examples = [([5, 6, 7, 8, 1], [9, 10, 11, 1]), ([20, 21, 22, 23, 24, 25, 1], [30, 31, 1])]
    length_in, length_out = 16, 10
    packed = {k: np.zeros((1, n), np.int32) for k, n in [
        ("encoder_input_tokens", length_in), ("encoder_segment_ids", length_in),
        ("encoder_positions", length_in), ("decoder_target_tokens", length_out),
        ("decoder_input_tokens", length_out), ("decoder_segment_ids", length_out),
        ("decoder_positions", length_out)]}
    e = d = 0
    spans = []
    for seg, (inp, tgt) in enumerate(examples, start=1):
        packed["encoder_input_tokens"][0, e:e + len(inp)] = inp
        packed["encoder_segment_ids"][0, e:e + len(inp)] = seg
        packed["encoder_positions"][0, e:e + len(inp)] = np.arange(len(inp))
        packed["decoder_target_tokens"][0, d:d + len(tgt)] = tgt
        packed["decoder_input_tokens"][0, d:d + len(tgt)] = [0] + tgt[:-1]
        packed["decoder_segment_ids"][0, d:d + len(tgt)] = seg
        packed["decoder_positions"][0, d:d + len(tgt)] = np.arange(len(tgt))
        spans.append((d, len(tgt)))
        e, d = e + len(inp), d + len(tgt)
    logits_fn = _logits_fn(config)
    packed_logits = logits_fn(params, {k: jnp.asarray(v) for k, v in packed.items()})
    for (inp, tgt), (start, n) in zip(examples, spans):
        alone = logits_fn(params, _batch(np.array([inp]), np.array([[0] + tgt[:-1]]),
                                                    np.array([tgt])))
        np.testing.assert_allclose(packed_logits[0, start:start + n], alone[0], atol=TOL, rtol=0)


def test_loss_gradients_match_hf(imported, kernels, tmp_path):
    """The whole backward pass against PyTorch autograd: the summed token cross entropy
    of the padded batch (row 2 is mostly padding, so the attention masks' gradients
    matter), every parameter's gradient compared after mapping HF's names to ours."""
    import copy

    from t5cli.runtime import losses

    _, model, _, config, params = imported
    config = config.replace(kernels=kernels)
    labels = torch.tensor(np.where(TGT > 0, TGT, -100))
    model.zero_grad(set_to_none=True)
    out = model(input_ids=torch.tensor(ENC), attention_mask=torch.tensor(ENC != 0),
                decoder_input_ids=torch.tensor(DEC))
    torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]),
                                      labels.reshape(-1), ignore_index=-100,
                                      reduction="sum").backward()
    # An HF model whose weights are the gradients, read back through the importer.
    grads_model = copy.deepcopy(model)
    with torch.no_grad():
        for (_, p), (_, g) in zip(model.named_parameters(), grads_model.named_parameters()):
            g.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    model.zero_grad(set_to_none=True)  # the fixture's model is shared with other tests
    grads_model.save_pretrained(str(tmp_path), safe_serialization=True)
    _, theirs = hfio.import_hf(str(tmp_path))

    def loss_sum(p):
        logits = EncoderDecoderModel(config).compute_logits(p, _batch())
        token_loss, _, _ = losses.token_losses(logits, jnp.asarray(TGT, jnp.int32))
        return jnp.sum(token_loss * (TGT > 0))

    ours = jax.jit(jax.grad(loss_sum))(params)
    flat_ours = dict(jax.tree_util.tree_flatten_with_path(ours)[0])
    flat_theirs = dict(jax.tree_util.tree_flatten_with_path(theirs)[0])
    assert flat_ours.keys() == flat_theirs.keys()
    for path, g in flat_ours.items():
        expected = np.asarray(flat_theirs[path])
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(np.asarray(g), expected, rtol=0, atol=2e-4 * scale,
                                   err_msg=jax.tree_util.keystr(path))


def test_sharded_checkpoint(saved, tmp_path):
    kind, model, directory = saved
    model.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size="100KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    config, params = hfio.import_hf(str(tmp_path))
    _, reference = hfio.import_hf(directory)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, reference)


def test_relative_position_buckets_match_hf():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-600, 600)[None, :]
    for bidirectional in (True, False):
        theirs = T5Attention._relative_position_bucket(
            torch.tensor(rel), bidirectional=bidirectional, num_buckets=32, max_distance=128)
        ours = relative_position_bucket(jnp.asarray(rel), bidirectional, 32, 128)
        np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


# ------------------------------------------------------------------------------ errors
def test_pytorch_bin_only_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*safe_serialization=True"):
        hfio.import_hf(str(tmp_path))


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        hfio.import_hf(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="config.json"):
        hfio.import_hf(str(tmp_path))


def test_missing_and_mismatched_tensors(saved, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, _, directory = saved
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    config = json.load(open(os.path.join(directory, "config.json")))
    missing = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    broken = dict(tensors)
    del broken[missing]
    (tmp_path / "a").mkdir()
    save_file(broken, str(tmp_path / "a" / "model.safetensors"))
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        hfio.import_hf(str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    save_file(tensors, str(tmp_path / "b" / "model.safetensors"))
    (tmp_path / "b" / "config.json").write_text(json.dumps(dict(config, d_ff=256)))
    with pytest.raises(CheckpointError, match="mlp/wi.*shape"):
        hfio.import_hf(str(tmp_path / "b"))


def test_convert_command_roundtrip(imported, tmp_path):
    from click.testing import CliRunner

    from t5cli.commands.convert import command
    from t5cli.models.flax_dir import read_flax_dir

    _, model, directory, config, params = imported
    runner = CliRunner()
    result = runner.invoke(command, [directory, str(tmp_path / "flax")])
    assert result.exit_code == 0, result.output
    config2, params2 = read_flax_dir(str(tmp_path / "flax"))
    assert config2 == config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2,
                           jax.tree_util.tree_map(np.asarray, params))
    result = runner.invoke(command, [str(tmp_path / "flax"), str(tmp_path / "hf"), "--to-hf"])
    assert result.exit_code == 0, result.output
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval()
    assert _max_diff_where(_hf_logits(reloaded), _hf_logits(model), TGT != 0) < TOL
    result = runner.invoke(command, [str(tmp_path / "nothing"), str(tmp_path / "x")])
    assert result.exit_code != 0 and isinstance(result.exception, CheckpointError)
