"""Multi-process jobs on JAX's distributed runtime, on this machine: 2 processes × 2 CPU
devices on loopback (gloo collectives), each process a subprocess with a hard timeout."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import PYTHON, REPO, python_env

JOB = str(REPO / "tests" / "distributed_job.py")
T5 = [PYTHON, "-m", "t5cli"]
TIMEOUT = 240


def _env(devices: int):
    return python_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                      CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", T5CLI_CLUSTER_DETECTION="0")


def _free_port() -> int:
    from t5cli.runtime.distributed import free_port

    return free_port()


def _start(args, devices: int):
    return subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(devices), cwd=REPO)


def _finish(procs, timeout=TIMEOUT):
    """(returncode, stdout, stderr) of each process; all are killed at the timeout."""
    deadline = time.monotonic() + timeout
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            o, e = p.communicate()
            pytest.fail(f"a process ran past {timeout}s: {e[-2000:]}")
        out.append((p.returncode, o, e))
    return out


def _job(model_dir, steps, partitions, npz, processes=2, devices=2, heartbeat=None):
    port = _free_port()
    extra = [] if heartbeat is None else [heartbeat]
    return [_start([PYTHON, JOB, model_dir, steps, partitions, npz, f"127.0.0.1:{port}", processes, i, *extra],
                   devices) for i in range(processes)]


def _result(run):
    code, out, err = run
    assert code == 0, err[-3000:]
    return json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT=")][-1][len("RESULT="):])


def _close(a, b, rel=1e-4):
    assert len(a) == len(b) and a, (a, b)
    for x, y in zip(a, b):
        assert abs(x - y) <= rel * abs(x), (a, b)


def _params(npz):
    with np.load(npz) as f:
        return {k: f[k] for k in f.files}


def _train_here(model_dir, steps, partitions):
    """The job's training in this process, on its devices (one in the default run)."""
    sys.path.insert(0, str(REPO / "tests"))
    from distributed_job import TINY

    from t5cli.runtime.optim import path_str
    from t5cli.runtime.train import train

    r = train(model_dir=str(model_dir), mixture_or_task_name="number_words_en_de_999",
              task_feature_lengths={"inputs": 32, "targets": 32}, total_steps=steps, batch_size=8,
              model_name="byt5_tiny", model_overrides=TINY, dropout_rate=0.0, shuffle=False, pack=False,
              num_partitions=partitions, checkpoint_period=None, eval_period=0, infer_eval_period=0,
              log_period=1, random_seed=3)
    import jax

    return r.losses, {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(r.params)[0]}


def test_two_processes_train_like_one(tmp_path):
    """2 processes × 2 devices on a (data=2, model=2) mesh: the losses and parameters of one
    process; process 1 logs nothing; the record names the job."""
    job = _job(tmp_path / "job", 4, 2, tmp_path / "job.npz")
    try:
        losses, params = _train_here(tmp_path / "here", 4, 1)
    finally:
        runs = _finish(job)
    r_job = _result(runs[0])
    assert (r_job["processes"], r_job["devices"]) == (2, 4)
    _close(r_job["losses"], losses)
    p_job = _params(tmp_path / "job.npz")
    assert p_job.keys() == params.keys()
    for k in p_job:
        np.testing.assert_allclose(p_job[k], params[k], rtol=1e-3, atol=1e-5, err_msg=k)

    # process 1 logs nothing but errors: no progress lines, no stdout
    code1, out1, err1 = runs[1]
    assert code1 == 0 and out1 == "" and "train step" not in err1, (out1, err1[-2000:])
    assert "train step 4/4" in runs[0][2]
    record = json.loads((tmp_path / "job" / "t5cli_run.json").read_text())
    assert record["distributed"] == {"process_count": 2, "devices": 4, "mesh": {"data": 2, "model": 2}}
    assert sorted(p.name for p in (tmp_path / "job").glob("checkpoint_*")) == ["checkpoint_2", "checkpoint_4"]
    info = (tmp_path / "job" / "model-info.txt").read_text().splitlines()
    assert "Mesh: 4 device(s), data=2, model=2" in info
    per_device = int(next(ln for ln in info if ln.startswith("Per-device parameter bytes:")).split(":")[1]
                     .replace(",", ""))
    total = sum(x.nbytes for x in p_job.values())
    assert total / 2 <= per_device < total * 0.6, (per_device, total)  # the model axis halves most of it


RESTORE = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from distributed_job import TINY
    from t5cli.plugins import load_runtime
    from t5cli.models.model import EncoderDecoderModel
    from t5cli.runtime import checkpoints
    from t5cli.runtime.optim import path_str
    import jax

    config = load_runtime().registry.model("byt5_tiny").with_overrides(TINY)
    params, step = checkpoints.load_params(sys.argv[1], model=EncoderDecoderModel(config))
    if sys.argv[2] == "-":  # only: does it restore?
        finite = all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(params))
        print(f"STEP={step} FINITE={finite}")
        sys.exit(0)
    want = np.load(sys.argv[2])
    flat = {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert sorted(flat) == sorted(want.files), (sorted(flat), want.files)
    bad = [k for k in flat if not np.array_equal(flat[k], want[k])]
    print(f"STEP={step} DEVICES={jax.device_count()} DIFFERENT={bad}")
""")


@pytest.mark.slow
def test_checkpoint_moves_between_process_counts(tmp_path):
    """A 2-process checkpoint restores in one process with identical parameters; a
    restarted 2-process job resumes from it; a 1-process checkpoint resumes as 2 processes."""
    job = _job(tmp_path / "job", 2, 2, tmp_path / "job2.npz")
    four = _start([PYTHON, JOB, tmp_path / "four", 2, 2, tmp_path / "four.npz"], 4)
    runs = _finish(job + [four])
    _close(_result(runs[0])["losses"], _result(runs[2])["losses"])  # one process, 4 devices
    restore = _finish([subprocess.Popen([PYTHON, "-c", RESTORE, tmp_path / "job", tmp_path / "job2.npz",
                                         REPO / "tests"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=_env(1), cwd=REPO)])[0]
    assert restore[0] == 0, restore[2][-3000:]
    assert "STEP=2 DEVICES=1 DIFFERENT=[]" in restore[1]

    # the restarted job resumes at step 2 and ends where an uninterrupted one-device run ends
    resumed = _finish(_job(tmp_path / "job", 4, 2, tmp_path / "job4.npz"))
    assert "from step 2 to 4" in resumed[0][1], resumed[0][1]
    r_resumed = _result(resumed[0])
    one = _result(_finish([_start([PYTHON, JOB, tmp_path / "one", 4, 1, tmp_path / "one.npz"], 1)])[0])
    _close(r_resumed["losses"], one["losses"][2:])

    # and the other way: the one-device run's checkpoint_4 continues as 2 processes
    more = _result(_finish(_job(tmp_path / "one", 6, 2, tmp_path / "one6.npz"))[0])
    assert more["step"] == 6 and len(more["losses"]) == 2


def test_coordinator_that_never_answers_is_one_line(tmp_path):
    """Process 1 of a job whose process 0 never starts ends after the timeout with one
    line naming the address and the timeout: no hang, no abort without a message."""
    port = _free_port()
    t0 = time.monotonic()
    p = _start(T5 + ["train", "--model-dir", tmp_path / "m", "--coordinator_address", f"127.0.0.1:{port}",
                     "--process_count", "2", "--process_index", "1", "--initialization_timeout", "3"], 2)
    code, out, err = _finish([p], timeout=120)[0]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 3, err[-2000:]
    assert lines[-1].startswith("error: the job's coordinator at 127.0.0.1:") and "within 3s" in lines[-1], lines
    assert str(port) in lines[-1]
    assert not (tmp_path / "m").exists()
    assert time.monotonic() - t0 < 100


def test_incomplete_job_flags_are_one_line(t5, tmp_path):
    r = t5("train", "--model-dir", str(tmp_path / "m"), "--coordinator-address", "127.0.0.1:1", "--num-processes", "2")
    assert r.exit_code == 3
    assert "missing: --process-id" in r.err.strip().splitlines()[-1]


PER_DEVICE = textwrap.dedent("""
    import json, sys
    import jax
    sys.path.insert(0, sys.argv[1])
    from distributed_job import TINY
    from t5cli.models.model import EncoderDecoderModel
    from t5cli.plugins import load_runtime
    from t5cli.runtime import partitioning, train_state

    runtime = load_runtime()
    model = EncoderDecoderModel(runtime.registry.model("byt5_tiny").with_overrides(dict(TINY, mlp_dim=256)))
    out = {}
    for partitions in (1, 2):
        layout = train_state.make_layout(model, runtime, None, [], num_partitions=partitions, batch_size=8)
        params = jax.jit(model.init_params, out_shardings=layout.param_shardings)(jax.random.PRNGKey(0))
        opt = jax.jit(layout.tx.init, out_shardings=layout.opt_shardings)(params)
        dev = jax.devices()[0]
        def held(tree):
            return sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree) for s in x.addressable_shards
                       if s.device == dev)
        out[partitions] = {"params": held(params), "opt": held(opt),
                           "computed": partitioning.per_device_bytes(layout.abstract_params, layout.param_shardings),
                           "total": sum(x.nbytes for x in jax.tree_util.tree_leaves(params))}
    print("RESULT=" + json.dumps(out))
""")


def test_model_parallel_halves_per_device_parameter_bytes(tmp_path):
    """num_partitions=2 on 4 devices: each device holds about half the parameter (and
    optimizer-state) bytes it holds with num_partitions=1, read from the arrays' shards."""
    p = subprocess.Popen([PYTHON, "-c", PER_DEVICE, REPO / "tests"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env(4), cwd=REPO)
    r = _result(_finish([p], timeout=180)[0])
    one, two = r["1"], r["2"]
    assert one["params"] == one["total"] == one["computed"]  # data parallel: all of it
    assert two["params"] == two["computed"]
    assert 0.5 <= two["params"] / one["params"] <= 0.56, r
    assert 0.5 <= two["opt"] / one["opt"] <= 0.6, r


def _restore(model_dir, npz="-"):
    p = subprocess.Popen([PYTHON, "-c", RESTORE, model_dir, npz, REPO / "tests"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env(1), cwd=REPO)
    code, out, err = _finish([p])[0]
    assert code == 0, err[-3000:]
    return out


TINY_GIN = ["--gin", "DROPOUT_RATE=0.0", "--gin", "train.model_overrides={'emb_dim': 32, 'num_heads': 2, "
            "'head_dim': 16, 'mlp_dim': 64, 'num_encoder_layers': 1, 'num_decoder_layers': 1}"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_killing_one_process_ends_the_other_with_one_line(tmp_path, sig):
    """SIGKILL (its collectives fail) or SIGSTOP (it falls silent) to process 1 of a running
    `t5 train` job: process 0 ends non-zero with one line within the heartbeat timeout; the
    latest complete checkpoint restores."""
    port, model_dir = _free_port(), tmp_path / "m"
    procs = [_start(T5 + ["train", "--task", "number_words_en_de_999", "--model", "byt5_tiny", "--model-dir",
                          model_dir, "--steps", 5000, "--batch-size", 8, "--feature-lengths",
                          "inputs=32,targets=32", *TINY_GIN, "--gin", "train.checkpoint_period=2",
                          "--gin", "train.eval_period=0", "--gin", "train.infer_eval_period=0",
                          "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", 2,
                          "--process-id", i, "--heartbeat-timeout", 10], 2) for i in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (model_dir / "checkpoint_4").is_dir():
            assert time.monotonic() < deadline and procs[0].poll() is None, "the job did not reach step 4"
            time.sleep(0.5)
        procs[1].send_signal(sig)
        killed = time.monotonic()
        code, _, err = _finish([procs[0]], timeout=60)[0]
        took = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 3 and len(lines) == 1, err[-3000:]
    expected = ("another process of the job failed or was stopped" if sig == signal.SIGKILL
                else "process 1 of the job stopped answering (silent for more than 10s")
    assert expected in lines[0], lines
    assert took < 10 + 15, took
    steps = sorted(int(p.name.split("_")[1]) for p in model_dir.glob("checkpoint_*") if p.name[11:].isdigit())
    out = _restore(model_dir)
    assert f"STEP={steps[-1]} FINITE=True" in out, (steps, out)


@pytest.mark.slow
def _run_as_two_and_as_one(args, out_two, out_one):
    """``t5 *args OUT`` as a 2-process job writing ``out_two`` (2 devices each) and alone
    writing ``out_one``, side by side; all succeed and process 1 prints nothing."""
    port = _free_port()
    two = [_start(T5 + [*args, out_two, "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", 2,
                        "--process-id", i], 2) for i in range(2)]
    runs = _finish(two + [_start(T5 + [*args, out_one], 1)])
    assert all(code == 0 for code, _, _ in runs), [e[-2000:] for _, _, e in runs]
    assert runs[1][1] == "" and runs[1][2].strip() == "", runs[1]


def test_eval_and_infer_as_two_processes_write_what_one_writes(tmp_path):
    """`t5 eval` and `t5 infer` as 2 processes: one complete output, in input order, the
    same bytes as the one-process output; process 1 writes and prints nothing."""
    _train_here(tmp_path / "m", 4, 1)
    common = ["--checkpoint", tmp_path / "m", "--split", "validation", "--num-examples", 11, "--batch-size", 4,
              "--feature-lengths", "targets=16"]
    _run_as_two_and_as_one(["infer", *common, "-o"], tmp_path / "infer2.jsonl", tmp_path / "infer1.jsonl")
    rows = [json.loads(ln) for ln in (tmp_path / "infer2.jsonl").read_text().splitlines()]
    assert len(rows) == 11 and all("prediction" in r for r in rows)
    assert (tmp_path / "infer2.jsonl").read_bytes() == (tmp_path / "infer1.jsonl").read_bytes()

    _run_as_two_and_as_one(["eval", *common, "--output-dir"], tmp_path / "eval2", tmp_path / "eval1")
    task = "number_words_en_de_999"
    for name in (f"{task}-000004.jsonl", f"{task}-metrics.jsonl"):
        assert (tmp_path / "eval2" / name).read_bytes() == (tmp_path / "eval1" / name).read_bytes(), name
    assert len((tmp_path / "eval2" / f"{task}-000004.jsonl").read_text().splitlines()) == 11
    assert len(list((tmp_path / "eval2" / task).glob("events.out.tfevents.*"))) == 1



@pytest.mark.slow
def test_head_eval_and_infer_as_two_processes_write_what_one_writes(tmp_path):
    """An encoder-only head (token classification) the same way: each process predicts its
    share, process 0 writes one complete output, byte for byte the one-process output."""
    head = "{'num_encoder_layers': 1, 'num_decoder_layers': 1, 'emb_dim': 32, 'num_heads': 2, 'head_dim': 16, " \
           "'mlp_dim': 64, 'dropout_rate': 0.0}"
    train = _start(T5 + ["train", "--head", "token_classification", "--task", "number_tags", "--model", "byt5_tiny",
                         "--model-dir", tmp_path / "m", "--steps", 2, "--batch-size", 8, "--feature-lengths",
                         "inputs=64", "--gin", f"train.model_overrides={head}", "--gin", "train.eval_period=0",
                         "--gin", "train.infer_eval_period=0"], 1)
    code, _, err = _finish([train])[0]
    assert code == 0, err[-2000:]
    common = ["--checkpoint", tmp_path / "m", "--split", "test", "--num-examples", 11, "--batch-size", 4]
    for command, target in (("infer", "-o"), ("eval", "--output-dir")):
        _run_as_two_and_as_one([command, *common, target], tmp_path / f"{command}2", tmp_path / f"{command}1")
    assert (tmp_path / "infer2").read_bytes() == (tmp_path / "infer1").read_bytes()
    assert len((tmp_path / "infer2").read_text().splitlines()) == 11
    for name in ("number_tags-000002.jsonl", "number_tags-metrics.jsonl"):
        assert (tmp_path / "eval2" / name).read_bytes() == (tmp_path / "eval1" / name).read_bytes(), name
    assert len((tmp_path / "eval2" / "number_tags-000002.jsonl").read_text().splitlines()) == 11


def _precompile(*args, timeout=TIMEOUT):
    import resource

    p = subprocess.Popen([str(a) for a in T5 + ["train", "--precompile", *args]], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env(1), cwd=REPO)
    code, out, err = _finish([p], timeout=timeout)[0]
    assert code == 0, err[-3000:]
    return out, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def _report_bytes(out, what):
    import re

    line = next(ln for ln in out.splitlines() if what in ln)
    value, unit = re.search(r"([\d,.]+) (MiB|GiB)", line).groups()
    return float(value.replace(",", "")) * (2**20 if unit == "MiB" else 2**30)


def test_precompile_reports_per_device_memory_and_flops():
    """`t5 train --precompile` on 4 virtual CPU devices (the process has 1 real one): with
    the model axis of 2, each device holds half the parameters; nothing is written."""
    out, _ = _precompile("--model", "t5_1_1_tiny", "--batch-size", 8, "--feature-lengths", "inputs=64,targets=32",
                         "--precompile-devices", 4, "--gin", "train.num_partitions=2")
    assert "on 4 cpu device(s), mesh data=2, model=2" in out, out
    assert "(4,310,016 parameters)" in out
    params = _report_bytes(out, "parameters  ")
    assert abs(params - 4_310_016 * 4 / 2) / (4_310_016 * 4 / 2) < 0.05, out
    assert _report_bytes(out, "activations/temp") > 0
    flops = float(next(ln for ln in out.splitlines() if ln.startswith("FLOPs")).split()[3])
    one, _ = _precompile("--model", "t5_1_1_tiny", "--batch-size", 8, "--feature-lengths", "inputs=64,targets=32")
    alone = float(next(ln for ln in one.splitlines() if ln.startswith("FLOPs")).split()[3])
    # ~6 FLOPs per parameter and token; each of the 4 devices does a quarter of them
    assert 1e8 < alone < 1e10, one
    assert flops == pytest.approx(alone / 4, rel=0.02), (out, one)


@pytest.mark.slow
def test_precompile_a_model_too_large_for_this_machine():
    """T5 1.1 XL (2.85B parameters: 11.4 GB in float32, twice that with its gradients)
    compiles for 16 virtual devices, model axis 4, without being allocated (14 minutes on
    a loaded 2-core machine)."""
    out, peak = _precompile("--model", "t5_1_1_xl", "--batch-size", 16, "--feature-lengths",
                            "inputs=32,targets=32", "--precompile-devices", 16, "--gin", "train.num_partitions=4",
                            timeout=1800)
    assert "(2,849,757,184 parameters)" in out and "on 16 cpu device(s), mesh data=4, model=4" in out, out
    params = _report_bytes(out, "parameters  ")
    assert 0.2 < params / (2_849_757_184 * 4) < 0.3, out  # a quarter on each device
    assert peak < 2_849_757_184 * 4 / 2, peak  # the parameters were never in memory


def test_a_locked_model_dir_stops_every_process(tmp_path):
    """Only process 0 takes MODEL_DIR's lock; when another run holds it, process 0 says so
    and process 1 names process 0's failure, both in one line, before any training."""
    holder = subprocess.Popen([PYTHON, "-c", "import sys, time\nfrom t5cli.runtime.run_lock import RunLock\n"
                               "RunLock(sys.argv[1], enabled=True).acquire(); print('held', flush=True); "
                               "time.sleep(300)", tmp_path / "m"], stdout=subprocess.PIPE, text=True,
                              env=_env(1), cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        port = _free_port()
        runs = _finish([_start(T5 + ["train", "--task", "number_words_en_de_999", "--model", "byt5_tiny",
                                     "--model-dir", tmp_path / "m", "--steps", 2, "--batch-size", 8,
                                     "--feature-lengths", "inputs=32,targets=32", "--coordinator-address",
                                     f"127.0.0.1:{port}", "--num-processes", 2, "--process-id", i], 2)
                        for i in range(2)])
    finally:
        holder.kill()
        holder.communicate()
    (code0, _, err0), (code1, _, err1) = runs
    assert code0 != 0 and err0.strip().splitlines()[-1].startswith(f"error: MODEL_DIR {tmp_path / 'm'} is in use")
    assert code1 != 0 and err1.strip().splitlines() == [
        f"error: process 0 could not take the lock of MODEL_DIR {tmp_path / 'm'}: MODEL_DIR {tmp_path / 'm'} "
        f"is in use by another training run, " + err0.strip().splitlines()[-1].split("another training run, ")[1]]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [".t5cli.lock"]


def test_cluster_detection_reads_what_jax_reads(monkeypatch):
    """A SLURM step or an mpirun of several tasks is a job; one task, or a bare sbatch
    script, is not; T5CLI_CLUSTER_DETECTION=0 turns detection off."""
    from t5cli.runtime.distributed import detected_cluster

    for var in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX",
                "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "T5CLI_CLUSTER_DETECTION"):
        monkeypatch.delenv(var, raising=False)
    assert detected_cluster() is None
    slurm = dict(SLURM_JOB_ID="7", SLURM_NTASKS="4", SLURM_PROCID="1", SLURM_LOCALID="0")
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    assert detected_cluster() is None  # no step: the batch script itself
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[1-4]")
    assert detected_cluster() == "SlurmCluster"
    monkeypatch.setenv("T5CLI_CLUSTER_DETECTION", "0")
    assert detected_cluster() is None
    monkeypatch.delenv("T5CLI_CLUSTER_DETECTION")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert detected_cluster() is None
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1.0;tcp://10.0.0.1:4000")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert detected_cluster() == "OmpiCluster"


SAVE_SCALAR = textwrap.dedent("""
    import sys
    import numpy as np
    from t5cli.runtime import distributed
    distributed.join(distributed.JobOptions(coordinator_address=sys.argv[2], num_processes=2,
                                            process_id=int(sys.argv[3]), initialization_timeout=60))
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec
    from t5cli.runtime import checkpoints, partitioning

    mesh = partitioning.create_mesh(1)
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)[jax.process_index() * 2:][:2]
    w = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), rows)
    count = jnp.asarray(7, jnp.int32)  # on this process's first device only
    with distributed.ending_on_failure():
        ckpt = checkpoints.TrainCheckpointer(sys.argv[1])
        ckpt.save(1, {"w": w}, {"count": count}, {"note": "scalar"})
        ckpt.close()
    distributed.finish()
""")


def test_a_host_local_scalar_is_saved_by_two_processes(tmp_path):
    """A single-device scalar in the optimizer state (orbax refuses it in a multi-process
    save) is replicated on the mesh first; the checkpoint restores in one process."""
    port = _free_port()
    runs = _finish([_start([PYTHON, "-c", SAVE_SCALAR, tmp_path / "m", f"127.0.0.1:{port}", i], 2)
                    for i in range(2)], timeout=180)
    assert all(code == 0 for code, _, _ in runs), [e[-3000:] for _, _, e in runs]
    import jax

    from t5cli.runtime import checkpoints

    ckpt = checkpoints.TrainCheckpointer(tmp_path / "m")
    params, opt, meta = ckpt.restore(1, {"w": jax.ShapeDtypeStruct((4, 2), np.float32)},
                                     {"count": jax.ShapeDtypeStruct((), np.int32)})
    ckpt.close()
    np.testing.assert_array_equal(np.asarray(params["w"]), np.arange(8, dtype=np.float32).reshape(4, 2))
    assert int(opt["count"]) == 7 and meta["note"] == "scalar"
