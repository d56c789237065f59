"""Training speed: t5cli (JAX) next to Hugging Face transformers (PyTorch), same work.

T5 1.1 small dimensions (``--model``; ``tiny`` is the 19.6M-parameter T5 1.1 of
:data:`BENCH_MODELS`), batch 8 × 128 input / 128 target tokens, float32 activations
(or --dtype bfloat16), dropout 0.1, Adafactor with T5X-like settings (lr 1e-3 constant,
parameter scaling, update clipping 1.0, decay 0.8), on identical random token ids. Prints
one table: step time, target tokens per second and the peak resident memory of each side's
process. DESIGN.md's reference on this 2-core CPU: T5X 198 target tokens/s, HF 317.

    python bench/bench_train.py [--steps 6] [--warmup 2] [--skip-hf]
                                [--model t5_1_1_small[,tiny,...]] [--dropout 0.1]
                                [--dtype float32|bfloat16] [--hf-malloc] [--rounds 1]

With ``--rounds N`` the two sides run N times, alternating (t5cli, HF, t5cli, HF, ...),
each time in a fresh process; the table gives each side's median over the rounds and the
median, lowest and highest of the per-round ratios. On a shared machine whose speed drifts,
that compares the two under the same conditions more fairly than one run each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: models the bench knows besides t5cli's named configs: name -> (config, field overrides)
BENCH_MODELS = {
    # 19.6M parameters: T5 1.1 (gated-GELU, untied logits) with d_model 256, 4 heads x 64,
    # d_ff 512, 2+2 layers and the 32128-token vocabulary
    "tiny": ("t5_1_1_small", dict(emb_dim=256, num_heads=4, head_dim=64, mlp_dim=512,
                                  num_encoder_layers=2, num_decoder_layers=2)),
}


def bench_config(name: str):
    """The T5Config that ``--model name`` stands for (a BENCH_MODELS name or a t5cli config)."""
    from t5cli.models.configs import get_config

    base, overrides = BENCH_MODELS.get(name, (name, {}))
    return get_config(base).replace(**overrides)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def random_batch(batch_size: int, input_length: int, target_length: int, vocab: int, seed: int = 0):
    """Unpacked encoder-decoder batch, no padding (every target token counts)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    inputs = rng.randint(2, vocab, size=(batch_size, input_length)).astype(np.int32)
    targets = rng.randint(2, vocab, size=(batch_size, target_length)).astype(np.int32)
    decoder_inputs = np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": np.ones_like(targets, dtype=np.float32),
    }


def jax_runner(config, batch):
    """Compile the t5cli train step; returns (run_one_step() -> loss/token, compile seconds)."""
    import jax
    import jax.numpy as jnp
    import optax

    from t5cli.runtime import optim, partitioning
    from t5cli.models.model import EncoderDecoderModel
    from t5cli.runtime.steps import make_train_step

    model = EncoderDecoderModel(config)
    mesh = partitioning.create_mesh(1)
    rules = partitioning.logical_axis_rules()
    abstract = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0)))
    p_shard = partitioning.param_shardings(mesh, model.param_axes(abstract), abstract, rules)
    tx = optax.with_extra_args_support(optim.adafactor())
    params = jax.jit(model.init_params, out_shardings=p_shard)(jax.random.PRNGKey(0))
    state = {"params": params, "opt_state": jax.jit(tx.init)(params),
             "step": jnp.asarray(0, jnp.int32)}
    step_fn = jax.jit(make_train_step(model, tx, optim.constant_schedule(1e-3), z_loss=1e-4,
                                      use_dropout=config.dropout_rate > 0), donate_argnums=(0,))
    rng = jax.random.PRNGKey(1)
    device_batch = partitioning.shard_batch(batch, mesh)
    holder = {"state": state}
    tokens = float(batch["decoder_loss_weights"].sum())

    def run_one():
        holder["state"], metrics = step_fn(holder["state"], device_batch, rng)
        return float(metrics["loss_normalized"]) / tokens  # waits for the step

    t0 = time.perf_counter()
    run_one()
    return run_one, time.perf_counter() - t0


def hf_t5_1_1(config):
    """HF T5 1.1 of the same dims: lm_head untied from the (still shared) token embedding."""
    import torch
    from transformers import T5Config as HFConfig, T5ForConditionalGeneration

    hf_cfg = HFConfig(
        vocab_size=config.vocab_size, d_model=config.emb_dim, d_kv=config.head_dim,
        d_ff=config.mlp_dim, num_layers=config.num_encoder_layers,
        num_decoder_layers=config.num_decoder_layers, num_heads=config.num_heads,
        relative_attention_num_buckets=config.relpos_num_buckets,
        relative_attention_max_distance=config.relpos_max_distance,
        dropout_rate=config.dropout_rate, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, layer_norm_epsilon=config.layer_norm_epsilon,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    model = T5ForConditionalGeneration(hf_cfg)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.encoder.embed_tokens = model.shared
    model.decoder.embed_tokens = model.shared
    model.train()
    return model


def hf_runner(config, batch, dtype="float32"):
    """The same step in HF transformers; returns run_one_step() -> loss/token."""
    import torch
    from transformers.optimization import Adafactor

    torch.manual_seed(0)
    model = hf_t5_1_1(config)
    opt = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False,
                    warmup_init=False, clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                    weight_decay=0.0)
    input_ids = torch.as_tensor(batch["encoder_input_tokens"], dtype=torch.long)
    labels = torch.as_tensor(batch["decoder_target_tokens"], dtype=torch.long)
    decoder_input_ids = torch.as_tensor(batch["decoder_input_tokens"], dtype=torch.long)

    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())

    def run_one():
        with autocast:
            out = model(input_ids=input_ids, decoder_input_ids=decoder_input_ids, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    return run_one


def measure(args, which: str) -> dict:
    """Time one implementation ('jax' or 'hf') in this process; returns its figures."""
    from t5cli.runtime import host_allocator, xla_flags

    if which == "jax":  # what train() does before JAX starts
        xla_flags.apply_defaults(activation_dtype=args.dtype)
    if which == "jax" or args.hf_malloc:
        host_allocator.retain_freed_memory()
    config = bench_config(args.model).replace(dropout_rate=args.dropout, dtype=args.dtype)
    batch = random_batch(args.batch_size, args.input_length, args.target_length, config.vocab_size)
    if which == "jax":
        run, compile_s = jax_runner(config, batch)
        name = "t5cli (JAX)"
        note = f"compile {compile_s:.1f}s"
    else:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        run, name, note = hf_runner(config, batch, args.dtype), "HF transformers (PyTorch)", ""
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = run()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return {"name": name, "step_seconds": statistics.median(times), "loss": loss, "note": note,
            "load": os.getloadavg()[0], "peak_rss": peak_rss_bytes()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="t5_1_1_small",
                    help="a t5cli model config or 'tiny' (19.6M); several, comma-separated, "
                         "give one table")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--input-length", type=int, default=128)
    ap.add_argument("--target-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="activation dtype (ACTIVATION_DTYPE / t5 train --dtype); HF runs under "
                         "torch.autocast to the same dtype; parameters stay float32 on both sides")
    ap.add_argument("--hf-malloc", action="store_true",
                    help="give HF the same glibc malloc settings t5cli uses (t5cli/host_allocator.py)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run both sides this many times, alternating, and report medians")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-jax", action="store_true")
    ap.add_argument("--only", choices=("jax", "hf"), help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    if args.only:
        print("RESULT " + json.dumps(measure(args, args.only)), flush=True)
        return 0

    models = [m.strip() for m in args.model.split(",") if m.strip()]
    for name in models:
        bench_config(name)  # an unknown name stops here, before any child runs
    # Each implementation runs in a process of its own: with torch loaded beside JAX, its
    # OpenMP worker threads took CPU from XLA's and the JAX step ran ~15% slower. The peak
    # RSS is then that process's alone: imports, compilation and the steps.
    sides = [w for w, skip in (("jax", args.skip_jax), ("hf", args.skip_hf)) if not skip]
    child = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--skip-hf", "--skip-jax")]
    tables = {}
    for name in models:
        rounds = []
        for _ in range(max(1, args.rounds)):
            results = []
            for which in sides:
                out = subprocess.run([sys.executable, __file__, *child, "--model", name, "--only", which],
                                     text=True, stdout=subprocess.PIPE, check=True).stdout
                results.append(json.loads(out.rsplit("RESULT ", 1)[1]))
            rounds.append(results)
        tables[name] = rounds
    target_tokens = args.batch_size * args.target_length
    print(f"\nbatch {args.batch_size} x {args.input_length}/{args.target_length}, "
          f"{args.dtype}, dropout {args.dropout}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{os.cpu_count()} CPU(s), one process each"
          + (f", {args.rounds} alternating rounds" if args.rounds > 1 else ""))
    print(f"{'model':<14}{'implementation':<28}{'step s (median)':>16}{'target tok/s':>14}"
          f"{'peak RSS GB':>13}  notes")
    for name, rounds in tables.items():
        for i in range(len(sides)):
            runs = [results[i] for results in rounds]
            step = statistics.median(r["step_seconds"] for r in runs)
            peak = max(r["peak_rss"] for r in runs) / 1e9
            r = runs[-1]
            if len(runs) > 1:
                each = " ".join(f"{x['step_seconds']:.3f}" for x in runs)
                note = f"{r['note'] + ', ' if r['note'] else ''}rounds {each}"
            else:
                note = f"{r['note'] + ', ' if r['note'] else ''}last loss {r['loss']:.3f}, load {r['load']:.1f}"
            print(f"{name:<14}{r['name']:<28}{step:>16.3f}{target_tokens / step:>14.1f}{peak:>13.2f}  {note}")
    if len(sides) == 2:
        for name, rounds in tables.items():
            ratios = [results[1]["step_seconds"] / results[0]["step_seconds"] for results in rounds]
            spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f}x)" if len(ratios) > 1 else ""
            print(f"{name}: speed-up t5cli / HF {statistics.median(ratios):.2f}x{spread} (target >= 1.5x); "
                  f"peak RSS t5cli / HF {max(r[0]['peak_rss'] for r in rounds) / max(r[1]['peak_rss'] for r in rounds):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
