"""T5X (legacy msgpack + tensorstore, and orbax) and Mesh-TensorFlow checkpoints in.

Every fixture is written here in the real on-disk format: the legacy T5X checkpoint with
tensorstore zarr folders and a msgpack file laid out as T5X's ``checkpoints.py`` writes it,
the T5X orbax one with orbax's PyTree checkpointer under ``checkpoint_<N>/state``, the MTF
one with ``tf.raw_ops.SaveV2`` under Mesh-TensorFlow's raw variable names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest


STEP = 100
TASK = "number_words_en_de_999"
# byte vocabulary (384) so that the imported models fine-tune on a builtin task
STYLES = {
    "1.0": dict(vocab_size=384, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                num_encoder_layers=2, num_decoder_layers=2, mlp_activations=("relu",),
                logits_via_embedding=True),
    "1.1": dict(vocab_size=384, emb_dim=32, num_heads=3, head_dim=8, mlp_dim=48,
                num_encoder_layers=2, num_decoder_layers=1, mlp_activations=("gelu", "linear"),
                logits_via_embedding=False),
}
GIN = {"1.0": "d_model = 32\nnum_heads = 2\nd_kv = 16\nd_ff = 64\nnum_layers = 2\n"
              "DenseReluDense.activation = 'relu'\n",
       "1.1": "from __gin__ import dynamic_registration\nfrom t5x.examples.t5 import network\n"
              "EMBED_DIM = 32\nNUM_HEADS = 3\nHEAD_DIM = 8\nMLP_DIM = 48\n"
              "network.T5Config.emb_dim = %EMBED_DIM\nnetwork.T5Config.mlp_activations = "
              "(\n    'gelu',\n    'linear',\n)\nnetwork.T5Config.logits_via_embedding = False\n"}


def _config(style):
    from t5cli.models.configs import get_config

    return get_config("byt5_tiny").replace(dropout_rate=0.0, **STYLES[style])


def _params(style):
    import jax

    from t5cli.models.model import EncoderDecoderModel

    model = EncoderDecoderModel(_config(style))
    params = jax.tree_util.tree_map(np.asarray, model.init_params(jax.random.PRNGKey(3)))
    rng = np.random.default_rng(1)

    def jitter(path, x):  # norms away from 1, so a swapped scale shows in the logits
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        return (x * rng.uniform(0.5, 1.5, x.shape)).astype(np.float32) if name.endswith("scale") else x

    return jax.tree_util.tree_map_with_path(jitter, params)


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else k
        out.update(_flat(v, name) if isinstance(v, dict) else {name: v})
    return out


# --- writers in the real formats --------------------------------------------------------------

def write_t5x_legacy(model_dir: Path, params, step=STEP, gin=None, param_states=None):
    """checkpoint_<step>/checkpoint (msgpack) + one zarr folder per 2-D array, as T5X does;
    ``param_states`` (nested like params, Adafactor slots per leaf) replaces the default slots."""
    import tensorstore as ts
    from flax import serialization

    ckpt = model_dir / f"checkpoint_{step}"
    ckpt.mkdir(parents=True)

    def store(name, arr, gcs_style=False):
        if arr.ndim < 2:
            return arr  # small leaves stay in the msgpack
        folder = name.replace("/", ".")
        meta = {"compressor": {"id": "gzip"}, "shape": list(arr.shape),
                "chunks": [max(1, arr.shape[0] // 2)] + list(arr.shape[1:])}
        t = ts.open({"driver": "zarr", "dtype": "float32",
                     "kvstore": {"driver": "file", "path": str(ckpt / folder)},
                     "metadata": meta}, create=True, open=True).result()
        t.write(arr).result()
        if gcs_style:  # as written to gs://: dummy bucket, path on the top level
            return {"driver": "zarr", "dtype": "float32", "path": folder, "metadata": meta,
                    "kvstore": {"driver": "gcs", "bucket": "t5x-dummy-bucket"}}
        return {"driver": "zarr", "dtype": "float32", "metadata": meta,
                "kvstore": {"driver": "file", "path": folder}}

    def tree(prefix, node):
        out = {}
        for k, v in node.items():
            name = f"{prefix}/{k}"
            out[k] = tree(name, v) if isinstance(v, dict) else store(
                name, v, gcs_style=name.endswith("wo/kernel"))
        return out

    def slots(node, prefix):
        out = {}
        for k, v in node.items():
            if isinstance(v, dict):
                out[k] = slots(v, f"{prefix}/{k}")
            elif v.ndim == 2:
                out[k] = {"m": np.zeros((1,), np.float32), "v": np.zeros((1,), np.float32),
                          "v_row": np.full(v.shape[:1], 0.5, np.float32),
                          "v_col": np.full(v.shape[1:], 0.25, np.float32)}
            else:
                out[k] = {"m": np.zeros((1,), np.float32), "v": np.full(v.shape, 0.5, np.float32),
                          "v_row": np.zeros((1,), np.float32), "v_col": np.zeros((1,), np.float32)}
        return out

    state = {"version": 3, "optimizer": {
        "target": tree("target", params),
        "state": {"step": np.int32(step),
                  "param_states": param_states or slots(params, "state/param_states")}}}
    # T5X's to_bytes turns its ts.Spec leaves into spec dicts (lists kept as lists)
    (ckpt / "checkpoint").write_bytes(serialization.msgpack_serialize(state))
    if gin:
        (model_dir / "config.gin").write_text(gin)
    return ckpt


def write_t5x_orbax(model_dir: Path, params, step=STEP):
    import orbax.checkpoint as ocp

    path = model_dir / f"checkpoint_{step}" / "state"
    state = {"target": params, "state": {"step": np.int32(step), "param_states": {}}}
    ocp.PyTreeCheckpointer().save(str(path), state)
    return path.parent


def mtf_names(config, params):
    """``{MTF variable name: array}`` for t5cli params (independent of the reader's rules)."""
    flat, out = _flat(params), {}
    norm = "layer_norm" if config.logits_via_embedding else "rms_norm"
    out["shared/embedding"] = flat["token_embedder/embedding"]
    for stack in ("encoder", "decoder"):
        out[f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias"] = \
            flat[f"{stack}/relpos_bias/rel_embedding"]
        out[f"{stack}/{'final_layer_norm' if norm == 'layer_norm' else 'rms_norm'}/scale"] = \
            flat[f"{stack}/{stack}_norm/scale"]
        n = config.num_encoder_layers if stack == "encoder" else config.num_decoder_layers
        subs = (["attention", "mlp"] if stack == "encoder"
                else ["self_attention", "encoder_decoder_attention", "mlp"])
        norms = (["pre_attention_layer_norm", "pre_mlp_layer_norm"] if stack == "encoder" else
                 ["pre_self_attention_layer_norm", "pre_cross_attention_layer_norm", "pre_mlp_layer_norm"])
        for i in range(n):
            for j, sub in enumerate(subs):
                base = f"{stack}/block_{i:03d}/layer_{j:03d}"
                out[f"{base}/{norm}/scale"] = flat[f"{stack}/layers_{i}/{norms[j]}/scale"]
                if sub == "mlp":
                    for w in ("wi", "wi_0", "wi_1", "wo"):
                        key = f"{stack}/layers_{i}/mlp/{w}/kernel"
                        if key in flat:
                            out[f"{base}/DenseReluDense/{w}/kernel"] = flat[key]
                else:
                    kind = "EncDecAttention" if sub == "encoder_decoder_attention" else "SelfAttention"
                    for short, long in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
                        out[f"{base}/{kind}/{short}"] = flat[f"{stack}/layers_{i}/{sub}/{long}/kernel"]
    if not config.logits_via_embedding:
        out["decoder/logits/kernel"] = flat["decoder/logits_dense/kernel"]
    return out


def write_mtf(directory: Path, variables, step=STEP, gin=None):
    """Raw-name TF checkpoint ``model.ckpt-<step>`` (+ the ``checkpoint`` state file)."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    variables = dict(variables)
    variables.setdefault("global_step", np.int64(step))
    names = sorted(variables)
    prefix = str(directory / f"model.ckpt-{step}")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n]) for n in names])
    (directory / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{step}"\n'
                                          f'all_model_checkpoint_paths: "model.ckpt-{step}"\n')
    if gin:
        (directory / "operative_config.gin").write_text(gin)
    return directory


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["1.0", "1.1"])
def written(request, tmp_path_factory):
    """(style, params, {format: path}) for one configuration in all three formats."""
    style = request.param
    params = _params(style)
    root = tmp_path_factory.mktemp(f"ckpt_{style}")
    variables = mtf_names(_config(style), params)
    for name in list(variables):
        if name.endswith("/q") and "block_000" in name:  # Adafactor slots ride along
            variables[name + "_slot_vr"] = np.ones(variables[name].shape[:1], np.float32)
            variables[name + "_slot_vc"] = np.ones(variables[name].shape[1:], np.float32)
    paths = {"t5x": write_t5x_legacy(root / "t5x", params, gin=GIN[style]),
             "t5x-orbax": write_t5x_orbax(root / "orbax", params),
             "mtf": write_mtf(root / "mtf", variables, gin=GIN[style])}
    return style, params, paths


_LOGITS = {}


def _logits(config, params):
    import jax
    import jax.numpy as jnp

    from t5cli.models.model import EncoderDecoderModel

    config = config.replace(dropout_rate=0.0)
    if config not in _LOGITS:
        _LOGITS[config] = jax.jit(EncoderDecoderModel(config).compute_logits)
    rng = np.random.default_rng(0)
    enc = rng.integers(3, 300, (2, 12)).astype(np.int32)
    enc[1, 7:] = 0
    tgt = rng.integers(3, 300, (2, 6)).astype(np.int32)
    dec = np.concatenate([np.zeros((2, 1), np.int32), tgt[:, :-1]], 1)
    batch = {"encoder_input_tokens": jnp.asarray(enc), "decoder_input_tokens": jnp.asarray(dec),
             "decoder_target_tokens": jnp.asarray(tgt)}
    return np.asarray(_LOGITS[config](params, batch)), (enc, dec)


# --- import → same logits -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["t5x", "t5x-orbax", "mtf"])
def test_import_gives_same_model(written, kind, capsys):
    from t5cli.runtime import checkpoints
    from t5cli.runtime.model_loading import load_foreign

    style, params, paths = written
    assert checkpoints.checkpoint_format(paths[kind]) == kind
    config, imported, step = load_foreign(paths[kind])
    err = capsys.readouterr().err
    assert step == STEP
    want = _config(style)
    for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
                  "num_encoder_layers", "num_decoder_layers", "mlp_activations",
                  "logits_via_embedding"):
        assert getattr(config, field) == getattr(want, field), field
    assert err.count("note: model config of") == 1, err
    if kind != "t5x-orbax":  # a gin file lies beside those two
        assert "mlp_activations" in err.split("note: model config of")[1].split("\n")[0].split(";")[0]
    ours, _ = _logits(want, params)
    theirs, _ = _logits(config, imported)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_mtf_slots_and_notes(written):
    from t5cli.runtime import checkpoint_formats

    style, params, paths = written
    out = checkpoint_formats.read(paths["mtf"], with_slots=True)
    slots = out.slots["encoder/layers_0/attention/query/kernel"]
    assert set(slots) == {"v_row", "v_col"}
    assert any("global_step" in n for n in out.notes)
    plain = checkpoint_formats.read(paths["mtf"])
    assert plain.slots is None and any("skipped 6 Adafactor slot" in n for n in plain.notes)
    legacy = checkpoint_formats.read(paths["t5x"], with_slots=True)
    wo = legacy.slots["encoder/layers_0/mlp/wo/kernel"]
    assert wo["v_row"].shape == params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"].shape[:1]


def test_eval_infer_loading_and_model_dir(written, capsys):
    from t5cli.plugins import load_runtime
    from t5cli.runtime.model_loading import load_model

    style, params, paths = written
    runtime = load_runtime()
    # a T5X MODEL_DIR (latest step), its checkpoint file, and an MTF model.ckpt-N prefix
    for path in (paths["t5x"].parent, paths["t5x"] / "checkpoint", paths["mtf"] / f"model.ckpt-{STEP}"):
        loaded = load_model(runtime, str(path), model_name="byt5_tiny")
        assert loaded.step == STEP and loaded.model.config.vocabulary == "byte"
        np.testing.assert_array_equal(np.asarray(loaded.params["token_embedder"]["embedding"]),
                                      params["token_embedder"]["embedding"])


# --- fine-tune from it, convert to HF -------------------------------------------------------

def _overrides(style):
    d = {k: v for k, v in STYLES[style].items() if k != "vocab_size"}
    return repr(d)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["t5x", "t5x-orbax", "mtf"])
def test_finetune_three_steps(written, kind, tmp_path, t5):
    style, params, paths = written
    model_dir = tmp_path / "ft"
    r = t5("train", "--model", "byt5_tiny", "--task", TASK, "--model-dir", model_dir,
           "--init-checkpoint", paths[kind], "--steps", STEP + 3, "--batch-size", "4",
           "--feature-lengths", "inputs=16,targets=16",
           "--gin", f"train.model_overrides = {_overrides(style)}",
           "--gin", "train.checkpoint_period = None", "--gin", "train.eval_period = None",
           "--gin", "train.infer_eval_period = 0", "--gin", "DROPOUT_RATE = 0.0")
    assert r.exit_code == 0, r.err
    assert f"checkpoint_{STEP + 3}" in os.listdir(model_dir)
    record = json.loads((model_dir / "t5cli_run.json").read_text())
    assert record["train"]["initial_step"] == STEP


def test_finetune_with_the_wrong_model_names_the_tensor(written, tmp_path, t5):
    style, params, paths = written
    if style != "1.1":
        pytest.skip("error cases run on one configuration")
    r = t5("train", "--model", "byt5_tiny", "--task", TASK, "--model-dir", tmp_path / "ft",
           "--init-checkpoint", paths["t5x"], "--steps", STEP + 3, "--batch-size", "4",
           "--feature-lengths", "inputs=16,targets=16")
    assert r.exit_code != 0
    assert "does not match the model" in r.err and "check --model" in r.err
    assert not (tmp_path / "ft").exists()


def _hf_logits(directory, enc, dec):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    model = transformers.T5ForConditionalGeneration.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc, dtype=torch.long),
                    attention_mask=torch.tensor(enc != 0), decoder_input_ids=torch.tensor(dec, dtype=torch.long))
    return out.logits.numpy()


@pytest.mark.parametrize("kind", ["t5x", "mtf"])
def test_convert_to_hf_same_logits(written, kind, tmp_path, t5):
    style, params, paths = written
    r = t5("convert", paths[kind], tmp_path / "hf", "--to-hf")
    assert r.exit_code == 0, r.err
    ours, (enc, dec) = _logits(_config(style), params)
    theirs = _hf_logits(tmp_path / "hf", enc, dec)
    assert np.abs(ours - theirs).max() < 1e-4
    r = t5("convert", paths[kind], tmp_path / "flax")
    assert r.exit_code == 0, r.err
    assert (tmp_path / "flax" / "params.msgpack").is_file()


# --- one-line errors, nothing written ----------------------------------------------------------

def _one_line_error(t5, tmp_path, src, *needles):
    dst = tmp_path / "out"
    r = t5("convert", src, dst)
    assert r.exit_code != 0
    lines = [ln for ln in r.err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1, r.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not dst.exists()
    return lines[0]


@pytest.fixture
def legacy_copy(written, tmp_path):
    style, params, paths = written
    if style != "1.1":
        pytest.skip("error cases run on one configuration")
    dst = tmp_path / "copy"
    shutil.copytree(paths["t5x"].parent, dst)
    return dst / f"checkpoint_{STEP}", params


def test_gs_path_says_copy_it(t5, tmp_path):
    _one_line_error(t5, tmp_path, "gs://t5-data/pretrained_models/t5x/t5_1_1_small/checkpoint_1000000",
                    "gsutil -m cp -r gs://t5-data/pretrained_models/t5x/t5_1_1_small/checkpoint_1000000")


def test_missing_zarr_folder(legacy_copy, t5, tmp_path):
    ckpt, _ = legacy_copy
    shutil.rmtree(ckpt / "target.encoder.layers_1.attention.key.kernel")
    _one_line_error(t5, tmp_path, ckpt, "target.encoder.layers_1.attention.key.kernel", "missing")


def test_corrupt_zarr_chunk(legacy_copy, t5, tmp_path):
    ckpt, _ = legacy_copy
    folder = ckpt / "target.decoder.layers_0.mlp.wi_0.kernel"
    chunk = sorted(p for p in folder.iterdir() if not p.name.startswith("."))[0]
    chunk.write_bytes(b"\x1f\x8b not really gzip")
    _one_line_error(t5, tmp_path, ckpt, "target.decoder.layers_0.mlp.wi_0.kernel", "damaged")


def test_gin_contradicting_a_shape(legacy_copy, t5, tmp_path):
    ckpt, _ = legacy_copy
    gin = ckpt.parent / "config.gin"
    gin.write_text(gin.read_text().replace("MLP_DIM = 48", "MLP_DIM = 256") + "network.T5Config.mlp_dim = %MLP_DIM\n")
    _one_line_error(t5, tmp_path, ckpt, "encoder/layers_0/mlp/wo/kernel", "mlp_dim = 256", "config.gin")


def test_legacy_extra_and_missing_parameter(written, tmp_path, t5):
    style, params, paths = written
    if style != "1.0":
        pytest.skip("error cases run on one configuration")
    extra = {**params, "encoder": {**params["encoder"], "adapter": {"kernel": np.ones((32, 4), np.float32)}}}
    write_t5x_legacy(tmp_path / "extra", extra)
    _one_line_error(t5, tmp_path, tmp_path / "extra", "encoder/adapter/kernel")
    layer = dict(params["encoder"]["layers_1"])
    del layer["pre_mlp_layer_norm"]
    missing = {**params, "encoder": {**params["encoder"], "layers_1": layer}}
    write_t5x_legacy(tmp_path / "missing", missing)
    _one_line_error(t5, tmp_path, tmp_path / "missing", "encoder/layers_1/pre_mlp_layer_norm/scale")


def test_mtf_unknown_and_missing_variable(written, tmp_path, t5):
    style, params, paths = written
    if style != "1.0":
        pytest.skip("error cases run on one configuration")
    variables = mtf_names(_config(style), params)
    write_mtf(tmp_path / "unknown", {**variables, "encoder/block_000/layer_000/SelfAttention/gate": np.ones((2,), np.float32)})
    _one_line_error(t5, tmp_path, tmp_path / "unknown", "encoder/block_000/layer_000/SelfAttention/gate")
    del variables["decoder/block_001/layer_002/DenseReluDense/wo/kernel"]
    write_mtf(tmp_path / "missing", variables)
    _one_line_error(t5, tmp_path, tmp_path / "missing", "decoder/layers_1/mlp/wo/kernel")


# --- optimizer state: Adafactor slots into training (--restore-optimizer-state) -----------------

MIN_DIM = 8  # small enough that the tiny model's matrices are factored


def _t5x_slots(params, swapped=()):
    """``{param path: slots}`` as T5X's Adafactor writes them: a matrix whose second largest
    dimension reaches MIN_DIM is factored (row statistic = mean over the largest axis);
    ``swapped`` parameters get v_row and v_col the other way round."""
    rng = np.random.default_rng(5)
    one = np.zeros((1,), np.float32)
    out = {}
    for name, x in _flat(params).items():
        order = np.argsort(x.shape)
        if x.ndim == 2 and x.shape[order[-2]] >= MIN_DIM:
            d1, d0 = int(order[-2]), int(order[-1])
            row = rng.uniform(0.1, 1.0, np.delete(x.shape, d0)).astype(np.float32)
            col = rng.uniform(0.1, 1.0, np.delete(x.shape, d1)).astype(np.float32)
            out[name] = {"m": one, "v": one, "v_row": row, "v_col": col}
            if name in swapped:
                out[name] = {**out[name], "v_row": col, "v_col": row}
        else:
            out[name] = {"m": one, "v": rng.uniform(0.1, 1.0, x.shape).astype(np.float32),
                         "v_row": one, "v_col": one}
    return out


def _nest(flat):
    tree = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _factored_state(opt_state):
    import jax
    import optax

    found = [x for x in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda x: isinstance(x, optax.FactoredState)) if isinstance(x, optax.FactoredState)]
    assert len(found) == 1
    return found[0]


def _start(tmp_path, init, *, restore=True, optimizer=None):
    from t5cli.models.model import EncoderDecoderModel
    from t5cli.plugins import load_runtime
    from t5cli.runtime import optim, train_state

    model = EncoderDecoderModel(_config("1.1"))
    layout = train_state.make_layout(model, load_runtime(), optimizer or optim.adafactor(min_dim_size_to_factor=MIN_DIM),
                                     [], num_partitions=1, batch_size=4)
    start = train_state.init_or_restore(model, layout, str(tmp_path / "run"), total_steps=STEP + 5,
                                        initial_checkpoint_path=str(init), random_seed=0,
                                        keep_checkpoints=None, restore_optimizer_state=restore)
    start.checkpointer.close()
    return start


def test_restore_adafactor_slots_from_t5x(tmp_path, capsys):
    from t5cli.runtime.optim import path_str

    params = _params("1.1")
    wi = "encoder/layers_0/mlp/wi_0/kernel"  # 32 x 48: the swapped pair is told apart by shapes
    slots = _t5x_slots(params, swapped=(wi,))
    ckpt = write_t5x_legacy(tmp_path / "t5x", params, param_states=_nest(slots))
    state = _factored_state(_start(tmp_path, ckpt).opt_state)
    assert int(state.count) == STEP  # the second-moment decay goes on from the checkpoint's step
    import jax

    factored = 0
    for kind in ("v_row", "v_col", "v"):
        for p, got in jax.tree_util.tree_flatten_with_path(getattr(state, kind))[0]:
            name, want = path_str(p), slots[path_str(p)]
            if got.shape == (1,):
                continue  # optax's placeholder: the other kind of slot holds this parameter
            if name == wi and kind != "v":
                want = {"v_row": want["v_col"], "v_col": want["v_row"]}
            np.testing.assert_array_equal(np.asarray(got), want[kind], err_msg=f"{name} {kind}")
            factored += kind == "v_row"
    assert factored >= 5
    assert "restored Adafactor state for" in capsys.readouterr().err

    # without the flag: a fresh optimizer at the checkpoint's step count 0
    fresh = _factored_state(_start(tmp_path / "b", ckpt, restore=False).opt_state)
    assert int(fresh.count) == 0 and float(np.abs(np.asarray(jax.tree_util.tree_leaves(fresh.v)[0])).max()) == 0.0


def test_restore_slots_errors(written, tmp_path):
    from t5cli.errors import CheckpointError, ConfigError
    from t5cli.runtime import optim

    style, params, paths = written
    if style != "1.1":
        pytest.skip("one configuration is enough")
    # MTF slots for a few parameters only: those start from zeros and a line says so
    state = _factored_state(_start(tmp_path / "m", paths["mtf"]).opt_state)
    assert int(state.count) == STEP
    # an HF directory holds no optimizer state
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        _start(tmp_path / "h", hf)
    # T5X's slots are Adafactor's: AdamW cannot take them
    slots = _t5x_slots(params)
    ckpt = write_t5x_legacy(tmp_path / "t5x", params, param_states=_nest(slots))
    with pytest.raises(ConfigError, match="needs Adafactor"):
        _start(tmp_path / "a", ckpt, optimizer=optim.adamw())
    # slots whose shapes fit no factoring of the parameter: named
    bad = dict(slots)
    name = "decoder/logits_dense/kernel"
    bad[name] = {**bad[name], "v_row": np.ones((7,), np.float32)}
    ckpt = write_t5x_legacy(tmp_path / "bad", params, param_states=_nest(bad))
    with pytest.raises(CheckpointError, match="logits_dense/kernel"):
        _start(tmp_path / "c", ckpt)


def test_finetune_restores_own_optimizer_state(tmp_path, t5):
    """--restore-optimizer-state from a checkpoint of this tool: the saved state, as T5X does."""
    from t5cli.runtime import checkpoints

    common = ["--model", "byt5_tiny", "--task", TASK, "--batch-size", "4",
              "--feature-lengths", "inputs=16,targets=16", "--gin", f"train.model_overrides = {_overrides('1.1')}",
              "--gin", "train.eval_period = None", "--gin", "train.infer_eval_period = 0"]
    r = t5("train", *common, "--model-dir", tmp_path / "a", "--steps", "2")
    assert r.exit_code == 0, r.err
    for name, flag in (("b", ["--restore-optimizer-state"]), ("c", [])):
        r = t5("train", *common, "--model-dir", tmp_path / name, "--steps", "3",
               "--init-checkpoint", tmp_path / "a" / "checkpoint_2", *flag)
        assert r.exit_code == 0, r.err

    def count(model_dir, step):  # Adafactor's step count, read from the saved optimizer state
        import orbax.checkpoint as ocp

        step_dir = tmp_path / model_dir / f"checkpoint_{step}"
        paths = checkpoints.TrainCheckpointer.read_step_meta(step_dir)["opt_state_paths"]
        (i,) = [k for k, path in enumerate(paths) if path.endswith("count")]
        restored = ocp.StandardCheckpointHandler().restore(step_dir / checkpoints.OPT_STATE)
        return int(np.asarray(restored[f"{i:06d}"]))

    assert count("a", 2) == 2
    assert count("b", 3) == 3  # restored at 2, one more step
    assert count("c", 3) == 1  # a fresh optimizer: one step


def test_t5x_assignment_map_drops_optimizer_state():
    from t5cli.t5x_compat.scripts import restores_optimizer_state
    from t5cli.t5x_compat.utils import RestoreCheckpointConfig

    assert restores_optimizer_state(RestoreCheckpointConfig(path="/x", mode="specific"))
    assert not restores_optimizer_state(RestoreCheckpointConfig(path="/x", assignment_map=((r"state.*", None),)))
    assert restores_optimizer_state(RestoreCheckpointConfig(path="/x", assignment_map=((r"target/x", None),)))
