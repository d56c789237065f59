"""4-way data-parallel (and 2×2 data×model) training gives the losses of one device."""

from __future__ import annotations

import json
import subprocess
import textwrap

from conftest import PYTHON, REPO, python_env

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from t5cli.runtime.train import train

    tiny = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
                num_decoder_layers=1)
    out = {"devices": jax.device_count()}
    for partitions in [int(p) for p in sys.argv[2].split(",")]:
        r = train(model_dir=sys.argv[1] + f"/p{partitions}", mixture_or_task_name="number_words_en_de_999",
                  task_feature_lengths={"inputs": 32, "targets": 32}, total_steps=4, batch_size=8,
                  model_name="byt5_tiny", model_overrides=tiny, dropout_rate=0.1,
                  checkpoint_period=None, eval_period=None, log_period=1, random_seed=3)
        out[str(partitions)] = r.losses
    print("RESULT=" + json.dumps(out))
""")


def _start(tmp_path, devices: int, partitions: str):
    env = python_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                     JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([PYTHON, "-c", SCRIPT, str(tmp_path / f"d{devices}"), partitions],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)


def _result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT=")][-1]
    return json.loads(line[len("RESULT="):])


def test_four_devices_match_one(tmp_path):
    one, four = _start(tmp_path, 1, "1"), _start(tmp_path, 4, "1,2")
    r1, r4 = _result(one), _result(four)
    assert r1["devices"] == 1 and r4["devices"] == 4
    base = r1["1"]
    assert len(base) == 4
    for partitions in ("1", "2"):
        for a, b in zip(base, r4[partitions]):
            assert abs(a - b) <= 1e-4 * abs(a), (partitions, base, r4[partitions])
