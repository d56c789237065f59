"""One process of a tiny training job, for tests/test_distributed.py.

    python distributed_job.py MODEL_DIR STEPS PARTITIONS OUT_NPZ [COORDINATOR NUM_PROCESSES PROCESS_ID]

Trains a 1+1-layer byt5 (d_model 32) on number_words_en_de_999 in order (no shuffling,
no packing, no dropout, so any process count sees the same global batches; the loss in
chunks of positions, as a large vocabulary would have it), checkpoints
every 2 steps, and, in process 0, writes the final parameters (gathered from every
process) to OUT_NPZ and one ``RESULT={...}`` line with the losses.
"""

import json
import sys

TINY = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1, num_decoder_layers=1)


def main(argv):
    model_dir, steps, partitions, out = argv[0], int(argv[1]), int(argv[2]), argv[3]
    from t5cli.runtime import distributed

    if len(argv) > 4:
        distributed.join(distributed.JobOptions(coordinator_address=argv[4], num_processes=int(argv[5]),
                                                process_id=int(argv[6]), initialization_timeout=60,
                                                heartbeat_timeout=int(argv[7]) if len(argv) > 7 else 100))
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from t5cli.runtime import losses
    from t5cli.runtime.optim import path_str
    from t5cli.runtime.train import train

    losses.LOGITS_CHUNK_BYTES = 100_000  # the loss in 4 chunks, on every mesh the tests compare

    with distributed.ending_on_failure():
        r = train(model_dir=model_dir, mixture_or_task_name="number_words_en_de_999",
                  task_feature_lengths={"inputs": 32, "targets": 32}, total_steps=steps, batch_size=8,
                  model_name="byt5_tiny", model_overrides=TINY, dropout_rate=0.0, shuffle=False, pack=False,
                  num_partitions=partitions, checkpoint_period=2, eval_period=0, infer_eval_period=0,
                  log_period=1, random_seed=3)
    params = multihost_utils.process_allgather(r.params, tiled=True)
    distributed.finish()
    if jax.process_index() == 0:
        flat = {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
        np.savez(out, **flat)
        print("RESULT=" + json.dumps({"losses": r.losses, "step": r.step, "processes": jax.process_count(),
                                      "devices": jax.device_count()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
