"""Tests for t5cli.models.decoding (toy step functions) and t5cli.models.generate (real model).

The toy step function draws its logits from a fixed random table indexed by the batch
row and a hash of the *whole* prefix (kept in the cache), so beam search is not
trivially greedy and reordering the cache rows matters.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5cli.models import decoding

EOS, PAD, START = 1, 0, 0
MASK = np.uint32(0xFFFFFFFF)


# ------------------------------------------------------------------------ toy model


class PrefixToy:
    """Logits = table[row, hash(prefix) % T]; pad is never generated."""

    def __init__(self, batch, vocab=5, table_size=4099, seed=0, scale=2.0, eos_bias=0.0):
        rs = np.random.RandomState(seed)
        table = rs.randn(batch, table_size, vocab).astype(np.float32) * scale
        table[..., PAD] = -1e9
        table[..., EOS] += eos_bias
        self.table = table
        self.batch, self.vocab, self.size = batch, vocab, table_size

    def init_cache(self):
        b = self.batch
        return {
            "row": jnp.arange(b, dtype=jnp.int32),
            "h": jnp.zeros((b,), jnp.uint32),
            "n": jnp.zeros((b, 1), jnp.int32),  # a counter with a trailing dim
        }

    def step(self, tokens, cache):
        tok = tokens[:, 0].astype(jnp.uint32)
        h = cache["h"] * jnp.uint32(1000003) + tok + jnp.uint32(1)
        table = jnp.asarray(self.table)
        logits = table[cache["row"], (h % jnp.uint32(self.size)).astype(jnp.int32)]
        return logits, {"row": cache["row"], "h": h, "n": cache["n"] + 1}

    # numpy reference ------------------------------------------------------------
    def np_logits(self, row, prefix):
        h = 0
        for t in [START] + list(prefix):
            h = (h * 1000003 + int(t) + 1) & 0xFFFFFFFF
        return self.table[row, h % self.size].astype(np.float64)

    def np_log_probs(self, row, prefix):
        x = self.np_logits(row, prefix)
        x = x - x.max()
        return x - np.log(np.exp(x).sum())

    def sequence_log_prob(self, row, seq):
        seq = [int(t) for t in seq]
        if EOS in seq:
            seq = seq[: seq.index(EOS) + 1]
        else:
            while seq and seq[-1] == PAD:
                seq.pop()
        return sum(self.np_log_probs(row, seq[:j])[seq[j]] for j in range(len(seq))), len(seq)


def bp(n, alpha):
    return ((5.0 + n) / 6.0) ** alpha


def brute_force(toy, row, length, alpha):
    """All hypotheses (EOS-terminated or cut at ``length``) with their penalised scores."""
    out = []

    def rec(prefix, lp):
        log_probs = toy.np_log_probs(row, prefix)
        for t in range(1, toy.vocab):  # pad excluded: its logit is -1e9
            seq, new_lp = prefix + [t], lp + log_probs[t]
            if t == EOS or len(seq) == length:
                out.append((new_lp / bp(len(seq), alpha), seq + [PAD] * (length - len(seq))))
            else:
                rec(seq, new_lp)

    rec([], 0.0)
    return sorted(out, key=lambda x: -x[0])


def greedy_reference(toy, length):
    seqs, scores = np.zeros((toy.batch, length), np.int32), np.zeros(toy.batch)
    for r in range(toy.batch):
        prefix = []
        while len(prefix) < length:
            lp = toy.np_log_probs(r, prefix)
            t = int(np.argmax(lp))
            prefix.append(t)
            scores[r] += lp[t]
            if t == EOS:
                break
        seqs[r, : len(prefix)] = prefix
    return seqs, scores


_JITTED = {}


def run(fn, toy, **kw):
    """Run ``fn`` jitted on the toy; ``rng`` and ``temperature`` are traced (no recompile)."""
    traced = {k: kw.pop(k) for k in ("rng", "temperature") if k in kw}
    key = (fn, id(toy), tuple(sorted(kw.items())), tuple(sorted(traced)))
    if key not in _JITTED:
        _JITTED[key] = (toy, jax.jit(lambda cache, t: fn(toy.step, cache, batch_size=toy.batch,
                                                         **kw, **t)))
    seqs, scores = _JITTED[key][1](toy.init_cache(), traced)
    return np.asarray(seqs), np.asarray(scores)


# ------------------------------------------------------------------- greedy / sample


def test_greedy_matches_python_loop_and_pads_after_eos():
    toy = PrefixToy(batch=6, vocab=7, seed=1)
    seqs, scores = run(decoding.greedy_decode, toy, max_decode_length=6)
    ref_seqs, ref_scores = greedy_reference(toy, 6)
    np.testing.assert_array_equal(seqs, ref_seqs)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert (seqs == EOS).any(axis=1).any() and not (seqs == EOS).any(axis=1).all()


def test_greedy_stops_when_all_finished():
    calls = []
    toy = PrefixToy(batch=3, vocab=6, seed=2, eos_bias=-50.0)
    toy.table[:, :, EOS] = -50.0
    # Force EOS at the 3rd step: the hash after two tokens is unknown, so instead use the
    # counter in the cache to make EOS certain from step 2 on.

    def step(tokens, cache):
        logits, new = toy.step(tokens, cache)
        jax.debug.callback(lambda: calls.append(1))
        return jnp.where(cache["n"] >= 2, jnp.eye(6)[EOS] * 100.0, logits), new

    seqs, _ = jax.jit(
        lambda c: decoding.greedy_decode(step, c, batch_size=3, max_decode_length=10)
    )(toy.init_cache())
    jax.effects_barrier()
    seqs = np.asarray(seqs)
    assert (seqs[:, 2] == EOS).all() and (seqs[:, 3:] == PAD).all()
    assert len(calls) == 3


@pytest.fixture(scope="module")
def sample_toy():
    return PrefixToy(batch=4, vocab=40, seed=3, scale=1.0)


def sample(toy, length=8, **kw):
    kw.setdefault("rng", jax.random.PRNGKey(0))
    return run(decoding.temperature_sample, toy, max_decode_length=length, **kw)


def test_temperature_zero_is_greedy(sample_toy):
    g_seqs, g_scores = run(decoding.greedy_decode, sample_toy, max_decode_length=8)
    for t in (0.0, 1e-4):
        seqs, scores = sample(sample_toy, temperature=t)
        np.testing.assert_array_equal(seqs, g_seqs)
        np.testing.assert_allclose(scores, g_scores, rtol=1e-6)


def test_top_k_one_and_tiny_top_p_are_greedy(sample_toy):
    g_seqs, _ = run(decoding.greedy_decode, sample_toy, max_decode_length=8)
    for kw in ({"top_k": 1}, {"top_p": 1e-6}, {"top_k": 5, "top_p": 1e-6}):
        seqs, _ = sample(sample_toy, temperature=1.0, **kw)
        np.testing.assert_array_equal(seqs, g_seqs)


def test_fixed_seed_reproduces_and_seeds_differ(sample_toy):
    a, sa = sample(sample_toy, rng=jax.random.PRNGKey(7))
    b, sb = sample(sample_toy, rng=jax.random.PRNGKey(7))
    c, _ = sample(sample_toy, rng=jax.random.PRNGKey(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert not np.array_equal(a, c)
    g, _ = run(decoding.greedy_decode, sample_toy, max_decode_length=8)
    assert not np.array_equal(a, g)
    # scores are the model's log-probs of the sampled tokens
    for r in range(sample_toy.batch):
        lp, _ = sample_toy.sequence_log_prob(r, a[r])
        np.testing.assert_allclose(sa[r], lp, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [{"top_k": 3}, {"top_p": 0.5}, {"top_k": 4, "top_p": 0.6}])
def test_samples_stay_inside_top_k_and_nucleus(sample_toy, kw):
    toy = sample_toy
    for seed in range(3):
        seqs, _ = sample(toy, rng=jax.random.PRNGKey(seed), temperature=1.5, **kw)
        for r in range(toy.batch):
            for j, t in enumerate(seqs[r]):
                if j and seqs[r, j - 1] == EOS:
                    break
                logits = toy.np_logits(r, list(seqs[r, :j])) / 1.5
                order = np.argsort(-logits)
                allowed = set(order[: kw.get("top_k", toy.vocab)])
                if "top_p" in kw:
                    p = np.exp(logits[order] - logits.max())
                    p = p[: len(allowed)] / p[: len(allowed)].sum()
                    before = np.cumsum(p) - p
                    allowed = set(order[: len(allowed)][before < kw["top_p"]])
                assert t in allowed


def test_sampling_frequencies_follow_tempered_softmax():
    vocab, batch = 5, 4000
    logits = jnp.array([2.0, 1.0, 0.0, -1.0, 0.5])

    def step(tokens, cache):
        return jnp.broadcast_to(logits, (tokens.shape[0], vocab)), cache

    fn = jax.jit(lambda c, temp: decoding.temperature_sample(
        step, c, batch_size=batch, max_decode_length=1, rng=jax.random.PRNGKey(1),
        temperature=temp, eos_id=-1))
    for temp in (1.0, 2.0):
        seqs, _ = fn({"x": jnp.zeros((batch,))}, temp)
        freq = np.bincount(np.asarray(seqs)[:, 0], minlength=vocab) / batch
        np.testing.assert_allclose(freq, jax.nn.softmax(logits / temp), atol=0.03)


# ------------------------------------------------------------------------ beam search


@pytest.mark.parametrize("alpha", [0.6, 0.0, 2.0])
def test_beam_search_exact_against_brute_force(alpha):
    # 3 non-EOS tokens, length 4: with 27 beams every live prefix is kept, so beam search
    # must return exactly the top hypotheses of the enumeration.
    length, beams = 4, 27
    toy = PrefixToy(batch=3, vocab=5, seed=4, scale=1.5, eos_bias=-0.5)
    seqs, scores = run(
        decoding.beam_search, toy, max_decode_length=length, num_beams=beams, alpha=alpha
    )
    assert seqs.shape == (3, beams, length) and scores.shape == (3, beams)
    saw_early_eos = False
    for r in range(toy.batch):
        ref = brute_force(toy, r, length, alpha)
        assert ref[0][0] - ref[1][0] > 1e-4  # no near-tie at the top
        np.testing.assert_array_equal(seqs[r, 0], ref[0][1])
        np.testing.assert_allclose(scores[r], [s for s, _ in ref[:beams]], rtol=1e-4, atol=1e-4)
        for k in range(beams):  # every returned hypothesis carries its own score
            lp, n = toy.sequence_log_prob(r, seqs[r, k])
            np.testing.assert_allclose(scores[r, k], lp / bp(n, alpha), rtol=1e-4, atol=1e-4)
        saw_early_eos |= any(EOS in s[: length - 1] for _, s in ref[:3])
    assert saw_early_eos


def test_beam_search_small_beam_finds_brute_force_best():
    # 4 beams on a length-5 problem (255 hypotheses): the best is found on these seeds,
    # and every returned hypothesis is a valid one with the right score, best first.
    length, alpha = 5, 0.6
    toy = PrefixToy(batch=4, vocab=5, seed=5, scale=2.0)
    seqs, scores = run(decoding.beam_search, toy, max_decode_length=length, num_beams=4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    for r in range(toy.batch):
        ref = brute_force(toy, r, length, alpha)
        np.testing.assert_array_equal(seqs[r, 0], ref[0][1])
        np.testing.assert_allclose(scores[r, 0], ref[0][0], rtol=1e-4, atol=1e-4)
        for k in range(4):
            lp, n = toy.sequence_log_prob(r, seqs[r, k])
            np.testing.assert_allclose(scores[r, k], lp / bp(n, alpha), rtol=1e-4, atol=1e-4)
            eos_at = np.flatnonzero(seqs[r, k] == EOS)
            if eos_at.size:
                assert (seqs[r, k, eos_at[0] + 1 :] == PAD).all()


def test_beam_search_stops_early():
    calls = []
    toy = PrefixToy(batch=2, vocab=6, seed=6)

    def step(tokens, cache):
        logits, new = toy.step(tokens, cache)
        jax.debug.callback(lambda: calls.append(1))
        # EOS very likely from step 1 on: everything finishes and nothing live can win
        return jnp.where(cache["n"] >= 1, logits + jnp.eye(6)[EOS] * 30.0, logits), new

    seqs, scores = jax.jit(
        lambda c: decoding.beam_search(step, c, batch_size=2, max_decode_length=20, num_beams=3)
    )(toy.init_cache())
    jax.effects_barrier()
    assert (np.asarray(seqs)[:, :, :2] == EOS).any(axis=-1).all()
    assert len(calls) < 6


# ------------------------------------------------------------------ real model (tiny)

MODEL_LEN = 10


@pytest.fixture(scope="module")
def tiny():
    """A random tiny T5 (v1.1 layout) and a batch with a padded row."""
    from t5cli.models.configs import get_config
    from t5cli.models.model import EncoderDecoderModel

    model = EncoderDecoderModel(get_config("t5_1_1_tiny").replace(vocab_size=512))
    params = model.init_params(jax.random.PRNGKey(0), batch_size=1, input_length=8,
                               target_length=8)
    # Peakier logits and a likelier EOS, so that beams reorder and some finish early.
    kernel = params["decoder"]["logits_dense"]["kernel"] * 2.0
    params["decoder"]["logits_dense"]["kernel"] = kernel.at[:, EOS].multiply(2.0)
    inputs = np.random.RandomState(0).randint(2, 100, size=(3, 7)).astype(np.int32)
    inputs[1, 4:] = 0
    return model, params, inputs


def full_recompute_step(model, params, inputs, length):
    """A step function without KV cache: re-runs the whole decoder on the prefix."""

    def step(token_ids, cache):
        i = cache["i"][0]
        prefix = jax.lax.dynamic_update_slice(cache["prefix"], token_ids, (0, i))
        batch = {
            "encoder_input_tokens": inputs,
            "decoder_input_tokens": prefix,
            "decoder_target_tokens": jnp.ones_like(prefix),  # every position is real
        }
        logits = model.compute_logits(params, batch)
        row = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
        return row.astype(jnp.float32), {"prefix": prefix, "i": cache["i"] + 1}

    b = inputs.shape[0]
    cache = {"prefix": jnp.zeros((b, length), jnp.int32), "i": jnp.zeros((b,), jnp.int32)}
    return step, cache


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_kv_cache_decoding_equals_full_recompute(tiny, method):
    from t5cli.models import generate

    model, params, inputs = tiny
    kw = dict(rng=jax.random.PRNGKey(3), temperature=0.8, top_k=20, num_beams=3, alpha=0.6)
    tokens, scores = generate.predict_batch(model, params, {"encoder_input_tokens": inputs},
                                            method=method, max_decode_length=MODEL_LEN, **kw)
    assert tokens.shape == (3, MODEL_LEN) and scores.shape == (3,)

    b = inputs.shape[0]
    if method == "beam":
        rep = decoding.repeat_for_beams(jnp.asarray(inputs), 3)
        step, cache = full_recompute_step(model, params, rep, MODEL_LEN)
        cache = jax.tree_util.tree_map(lambda x: x[::3], cache)  # beam_search repeats it
        ref, ref_scores = jax.jit(lambda c: decoding.beam_search(
            step, c, batch_size=b, max_decode_length=MODEL_LEN, num_beams=3, alpha=0.6))(cache)
        ref, ref_scores = ref[:, 0], ref_scores[:, 0]
    else:
        step, cache = full_recompute_step(model, params, jnp.asarray(inputs), MODEL_LEN)
        fn = decoding.greedy_decode if method == "greedy" else functools.partial(
            decoding.temperature_sample, rng=kw["rng"], temperature=0.8, top_k=20)
        ref, ref_scores = jax.jit(lambda c: fn(step, c, batch_size=b,
                                               max_decode_length=MODEL_LEN))(cache)
    if method == "beam":  # not trivially the greedy path, and some finish early
        greedy, _ = generate.predict_batch(model, params, {"encoder_input_tokens": inputs},
                                           max_decode_length=MODEL_LEN)
        assert not np.array_equal(tokens, greedy) and (tokens == EOS).any()
    np.testing.assert_array_equal(tokens, np.asarray(ref))
    np.testing.assert_allclose(scores, np.asarray(ref_scores), rtol=1e-4, atol=1e-4)


def test_predict_batch_reuses_compiled_function(tiny):
    from t5cli.models import generate

    model, params, inputs = tiny
    batch = {"encoder_input_tokens": inputs, "decoder_target_tokens": np.zeros((3, 6), np.int32)}
    generate.predict_batch(model, params, batch)
    fn = generate.get_decode_fn(model, "greedy", batch_size=3, input_length=7,
                                max_decode_length=6)
    before = fn._cache_size()
    tokens, _ = generate.predict_batch(model, params, {**batch, "encoder_input_tokens": inputs[::-1]})
    assert tokens.shape == (3, 6) and tokens.dtype == np.int32
    assert fn._cache_size() == before == 1


# --------------------------------------------------------------- parity with HF T5


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A random HF T5 (v1.1 layout) saved as safetensors and imported into t5cli."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from t5cli.models.hf import import_hf
    from t5cli.models.model import EncoderDecoderModel

    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    # transformers 5 ties lm_head to the input embedding, so the start token's own
    # embedding dominates its logits and greedy output is all zeros: give T5 1.1 its own
    # (untied) head, and non-trivial layer-norm scales.
    with torch.no_grad():
        hf.lm_head.weight = torch.nn.Parameter(torch.randn(128, 32) * (3.0 / math.sqrt(32)))
        for name, p in hf.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf_t5")
    hf.save_pretrained(path, safe_serialization=True)
    config, params = import_hf(str(path))
    model = EncoderDecoderModel(config)
    rs = np.random.RandomState(1)
    inputs = rs.randint(2, 128, size=(6, 12)).astype(np.int32)
    inputs[2, 5:] = 0
    inputs[4, 9:] = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: extra threads only spin on the shared cores
    yield hf, model, params, inputs
    torch.set_num_threads(threads)


def hf_generate(hf, inputs, length, **kw):
    import torch

    ids = torch.tensor(inputs, dtype=torch.long)
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=(ids != 0).long(), max_new_tokens=length,
                          min_length=0, decoder_start_token_id=0, eos_token_id=1,
                          pad_token_id=0, return_dict_in_generate=True, output_scores=True, **kw)
    seqs = out.sequences[:, 1:].numpy()
    return np.pad(seqs, ((0, 0), (0, length - seqs.shape[1]))), out


def hf_log_prob(hf, inputs, seq):
    """Sum of HF's log-probs of ``seq`` (up to EOS) given one example's inputs."""
    import torch

    seq = until_eos(seq)
    ids = torch.tensor(inputs[None], dtype=torch.long)
    dec = torch.tensor([[START] + seq[:-1]], dtype=torch.long)
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=(ids != 0).long(), decoder_input_ids=dec).logits
    lp = torch.log_softmax(logits[0].double(), dim=-1)
    return float(sum(lp[j, t] for j, t in enumerate(seq)))


def until_eos(row):
    row = list(row)
    return row[: row.index(EOS) + 1] if EOS in row else row


def test_greedy_token_identical_to_hf(hf_pair):
    from t5cli.models import generate

    hf, model, params, inputs = hf_pair
    length = 16
    ours, _ = generate.predict_batch(model, params, {"encoder_input_tokens": inputs},
                                     method="greedy", max_decode_length=length)
    ref, _ = hf_generate(hf, inputs, length, do_sample=False, num_beams=1)
    for r in range(len(inputs)):
        assert until_eos(ours[r]) == until_eos(ref[r]), r
    assert len({tuple(until_eos(row)) for row in ours}) == len(inputs)  # not degenerate
    assert (ours == EOS).any(axis=1).any()  # some end early


def test_beam_search_against_hf_without_length_penalty(hf_pair):
    # HF divides by len**length_penalty, T5X by ((5+len)/6)**alpha: the two agree only
    # with no penalty at all (alpha = length_penalty = 0), so that is what is compared.
    # HF also offers a finished hypothesis only when it ranks in the step's top
    # num_beams, while we offer every beam's EOS extension: our search is a superset, so
    # our best score is >= HF's and equal scores mean equal sequences.
    from t5cli.models import generate

    hf, model, params, inputs = hf_pair
    length = 12
    ours, our_scores = generate.predict_batch(model, params, {"encoder_input_tokens": inputs},
                                              method="beam", num_beams=4, alpha=0.0,
                                              max_decode_length=length)
    ref, out = hf_generate(hf, inputs, length, do_sample=False, num_beams=4,
                           length_penalty=0.0, early_stopping=False)
    hf_scores = out.sequences_scores.numpy()
    same = 0
    for r in range(len(inputs)):
        # our score is the HF model's own log-probability of our sequence
        np.testing.assert_allclose(our_scores[r], hf_log_prob(hf, inputs[r], ours[r]),
                                   rtol=1e-4, atol=1e-4)
        assert our_scores[r] >= hf_scores[r] - 1e-4
        if abs(our_scores[r] - hf_scores[r]) < 1e-4:
            assert until_eos(ours[r]) == until_eos(ref[r]), r
            same += 1
    assert same >= len(inputs) // 2
