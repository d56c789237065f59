"""Decode throughput: t5cli (JAX, jit + KV cache) vs Hugging Face ``generate`` (PyTorch).

Both run on identical weights (a random ``t5_1_1_small``-sized model exported with
``export_hf``) on this machine's CPU. EOS is suppressed in both so every sequence
decodes exactly ``--new-tokens`` tokens; tokens/s counts the tokens of the returned
sequences (``batch * new_tokens``), for beam search too (the beams do ``num_beams``
times the work). Compile / warm-up time is measured separately from the steady state.

    python bench/bench_decode.py [--batch 8 --input-len 64 --new-tokens 32 --beams 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


class NoEOS:
    """Wrap a model so that its decode step can never emit EOS (forces full length)."""

    def __init__(self, model):
        self._model = model
        self.eos_id, self.pad_id = model.eos_id, model.pad_id

    def encode(self, *a, **kw):
        return self._model.encode(*a, **kw)

    def init_cache(self, *a, **kw):
        return self._model.init_cache(*a, **kw)

    def decode_step(self, *a, **kw):
        logits, cache = self._model.decode_step(*a, **kw)
        return logits.at[:, self.eos_id].set(-jnp.inf), cache


def timed_interleaved(fns, repeats):
    """Per named callable: (output, first-call s, best s, median s) over ``repeats`` calls.

    The callables take turns within each repeat so that the load of a shared machine
    drifts over all of them alike.
    """
    outs, first, times = {}, {}, {name: [] for name in fns}
    for name, fn in fns.items():
        start = time.perf_counter()
        outs[name] = fn()
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (outs[name], first[name], min(times[name]), statistics.median(times[name]))
            for name in fns}


def with_threads(torch, threads, fn):
    def run():
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(saved)

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="t5_1_1_small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.6)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default="greedy,beam")
    p.add_argument("--torch-threads", default="1",
                   help="extra torch thread counts to time besides torch's default")
    args = p.parse_args(argv)

    import torch
    import transformers

    from t5cli.models import generate
    from t5cli.models.configs import get_config
    from t5cli.models.hf import export_hf
    from t5cli.models.model import EncoderDecoderModel

    config = get_config(args.model)
    model = EncoderDecoderModel(config)
    params = model.init_params(jax.random.PRNGKey(0), batch_size=1, input_length=8,
                               target_length=8)
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(config, params, tmp)
        hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp, dtype=torch.float32)
    hf.eval()

    b, s, n = args.batch, args.input_len, args.new_tokens
    vocab = int(hf.config.vocab_size)
    inputs = np.random.RandomState(0).randint(2, min(vocab, 32000), size=(b, s)).astype(np.int32)
    batch = {"encoder_input_tokens": inputs}
    ours = NoEOS(model)
    tokens_out = b * n

    print(f"model={args.model} batch={b} input_len={s} new_tokens={n} beams={args.beams} "
          f"alpha={args.alpha}")
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
          f"{os.cpu_count()} CPUs")
    extra = {int(t) for t in args.torch_threads.split(",") if t}
    thread_settings = sorted({torch.get_num_threads()} | extra, reverse=True)
    rows = []
    ids = torch.tensor(inputs, dtype=torch.long)
    for method in args.methods.split(","):
        kw = dict(method=method, num_beams=args.beams, alpha=args.alpha, max_decode_length=n)
        hf_kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False,
                     num_beams=1 if method == "greedy" else args.beams,
                     decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
        if method == "beam":
            hf_kw.update(length_penalty=args.alpha, early_stopping=False)

        def run_hf(hf_kw=hf_kw):
            with torch.inference_mode():
                return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **hf_kw)

        fns = {"t5cli (jax, jit)": lambda kw=kw: generate.predict_batch(ours, params, batch, **kw)}
        for threads in thread_settings:
            fns[f"HF generate (torch, {threads} thr)"] = with_threads(torch, threads, run_hf)
        results = timed_interleaved(fns, args.repeats)
        for name, (out, first, best, median) in results.items():
            rows.append((method, name, first, best, median))
        our_tok = results["t5cli (jax, jit)"][0][0]
        hf_tok = results[f"HF generate (torch, {thread_settings[-1]} thr)"][0][:, 1:].numpy()
        same = float(np.mean(hf_tok == our_tok)) if hf_tok.shape == our_tok.shape else 0.0
        print(f"{method}: tokens identical to HF: {same:.1%}")

    print()
    print(f"tokens/s = batch * new_tokens / best seconds per batch ({tokens_out} tokens)")
    print("compile = first call - best call (JAX: trace + XLA compile; HF: warm-up)")
    print("| method | implementation | first call s | compile s | best s/batch "
          "| median s/batch | tokens/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for method, impl, first, best, median in rows:
        print(f"| {method} | {impl} | {first:.2f} | {max(first - best, 0.0):.2f} | {best:.3f} "
              f"| {median:.3f} | {tokens_out / best:.0f} |")


if __name__ == "__main__":
    main()
