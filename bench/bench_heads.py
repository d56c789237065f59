"""SST-2 from scratch with t5cli's encoder-only sequence classifier, beside Hugging Face's
encoder-decoder ``T5ForSequenceClassification`` of the same size (FAT5's comparison).

Both train a byte-level T5 (``--emb-dim``, ``--layers`` encoder and decoder layers, gated
GELU) from random weights on ``sst2``'s train split (the ALPS ``dev.tsv``: 6,735 GLUE
train phrases) for ``--steps`` steps of ``--batch-size`` examples cut to ``--length``
bytes, AdamW at ``--lr`` constant, no dropout, and are scored on its test split (GLUE's
872-sentence dev set). Prints parameters, training time, steps/s and test accuracy of
each, and the majority baseline; also the parameter counts at T5 1.1 small/base sizes.

    python bench/bench_heads.py [--steps 1500] [--skip-hf] [--hf-steps N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_config(emb_dim: int, layers: int):
    from t5cli.models.configs import get_config

    return get_config("byt5_tiny").replace(emb_dim=emb_dim, num_heads=max(emb_dim // 64, 2),
                                           head_dim=64 if emb_dim >= 128 else emb_dim // 2,
                                           mlp_dim=emb_dim * 2, num_encoder_layers=layers,
                                           num_decoder_layers=layers, dropout_rate=0.0)


def encode(texts, length):
    import numpy as np

    out = np.zeros((len(texts), length), np.int64)
    for i, t in enumerate(texts):
        ids = [b + 3 for b in t.encode("utf-8")][:length - 1] + [1]
        out[i, :len(ids)] = ids
    return out


def run_t5cli(args, config):
    from builtin_tasks.head_tasks import read_sst2
    from t5cli.runtime import optim
    from t5cli.runtime.head_checkpoints import load_head
    from t5cli.runtime.head_eval import evaluate_head
    from t5cli.plugins import load_runtime
    from t5cli.runtime.train import train

    runtime = load_runtime()
    model_dir = tempfile.mkdtemp(prefix="bench_heads_")
    start = time.monotonic()
    result = train(model_dir=model_dir, mixture_or_task_name="sst2", task_feature_lengths={"inputs": args.length},
                   total_steps=args.steps, model_config=config, batch_size=args.batch_size,
                   head="sequence_classification", learning_rate_schedule=optim.constant_schedule(args.lr),
                   checkpoint_period=args.steps, eval_period=None, infer_eval_period=0,
                   log_period=max(args.steps // 5, 1), runtime=runtime)
    seconds = time.monotonic() - start
    loaded = load_head(runtime, model_dir)
    metrics, _ = evaluate_head(loaded, task=runtime.registry.task("sst2"), split="test",
                               feature_lengths={"inputs": args.length}, batch_size=64,
                               output_dir=os.path.join(model_dir, "inference_eval"))
    params = sum(x.size for x in __import__("jax").tree_util.tree_leaves(result.params))
    del read_sst2
    return {"params": params, "seconds": seconds, "steps_per_s": result.train_summary.get("timing/steps_per_second"),
            "accuracy": metrics["sst2"]["accuracy"], "f1": metrics["sst2"]["f1"],
            "mcc": metrics["sst2"]["matthews_corrcoef"]}


def run_hf(args, config, steps):
    import numpy as np
    import torch
    import transformers

    from builtin_tasks.head_tasks import read_sst2
    from t5cli.models.hf import config_to_hf

    torch.manual_seed(0)
    torch.set_num_threads(args.torch_threads)
    hf = config_to_hf(config)
    hf.update(num_labels=2, classifier_dropout=0.0, dropout_rate=0.0)
    model = transformers.T5ForSequenceClassification(transformers.T5Config(**hf)).train()
    params = sum(p.numel() for p in model.parameters())
    train_rows, test_rows = read_sst2("train"), read_sst2("test")
    x = encode([r[0] for r in train_rows], args.length)
    y = np.array([r[1] for r in train_rows])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(steps * args.batch_size // len(x) + 1)])
    start = time.monotonic()
    for step in range(steps):
        idx = order[step * args.batch_size:(step + 1) * args.batch_size]
        ids = torch.tensor(x[idx])
        out = model(input_ids=ids, attention_mask=ids > 0, labels=torch.tensor(y[idx]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if (step + 1) % max(steps // 5, 1) == 0:
            print(f"HF step {step + 1}/{steps} loss {out.loss.item():.4f}", file=sys.stderr, flush=True)
    seconds = time.monotonic() - start
    model.eval()
    tx = encode([r[0] for r in test_rows], args.length)
    preds = []
    with torch.no_grad():
        for i in range(0, len(tx), 64):
            ids = torch.tensor(tx[i:i + 64])
            preds.append(model(input_ids=ids, attention_mask=ids > 0).logits.argmax(-1).numpy())
    acc = 100 * float(np.mean(np.concatenate(preds) == np.array([r[1] for r in test_rows])))
    return {"params": params, "seconds": seconds, "steps_per_s": steps / seconds, "accuracy": acc}


def param_counts(name: str):
    """(encoder-only head, HF T5ForSequenceClassification) parameters at a T5 1.1 size."""
    import transformers

    from t5cli.models.configs import get_config
    from t5cli.models.head_models import HeadModel
    from t5cli.models.hf import config_to_hf

    config = get_config(name)
    ours = sum(x.size for x in __import__("jax").tree_util.tree_leaves(
        HeadModel(config, "sequence_classification", 2).param_shapes()))
    hf = config_to_hf(config)
    hf.update(num_labels=2)
    with __import__("torch").device("meta"):
        theirs = sum(p.numel() for p in transformers.T5ForSequenceClassification(
            transformers.T5Config(**hf)).parameters())
    return ours, theirs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--hf-steps", type=int, default=None, help="HF's steps (default: --steps)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=192)
    parser.add_argument("--emb-dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads (1: steadiest on a shared CPU)")
    args = parser.parse_args(argv)
    config = bench_config(args.emb_dim, args.layers)
    from builtin_tasks.head_tasks import read_sst2

    test = read_sst2("test")
    majority = 100 * max(sum(r[1] for r in test), sum(1 - r[1] for r in test)) / len(test)
    print(f"sst2 from scratch: byte-level T5 d_model {config.emb_dim}, {args.layers} layers, batch "
          f"{args.batch_size} x {args.length} bytes, {args.steps} steps, AdamW {args.lr:g}, {os.cpu_count()} CPUs",
          flush=True)
    rows = [("t5cli encoder + head (JAX)", run_t5cli(args, config))]
    if not args.skip_hf:
        rows.append(("HF T5ForSequenceClassification (enc-dec)", run_hf(args, config, args.hf_steps or args.steps)))
    print(f"{'model':44s} {'params':>10s} {'train s':>8s} {'steps/s':>8s} {'test acc':>8s}")
    for name, r in rows:
        print(f"{name:44s} {r['params']:>10,d} {r['seconds']:>8.1f} {r['steps_per_s'] or 0:>8.2f} "
              f"{r['accuracy']:>8.2f}")
    print(f"{'majority baseline (always positive)':44s} {'':>10s} {'':>8s} {'':>8s} {majority:>8.2f}")
    if "f1" in rows[0][1]:
        print(f"t5cli test F1 {rows[0][1]['f1']:.2f}, Matthews {rows[0][1]['mcc']:.2f}")
    for size in ("t5_1_1_small", "t5_1_1_base"):
        ours, theirs = param_counts(size)
        print(f"parameters at {size}: encoder + head {ours / 1e6:.1f}M, HF T5ForSequenceClassification "
              f"{theirs / 1e6:.1f}M")


if __name__ == "__main__":
    main()
