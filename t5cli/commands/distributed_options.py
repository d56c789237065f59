"""The options by which ``t5 train/finetune/eval/infer`` join a multi-process job.

``@distributed_options`` adds them to a command and calls
:func:`t5cli.runtime.distributed.join` before the command body runs (before any JAX
computation); the command never sees them. T5X's flag names work too. Only click is
imported at module level.
"""

from __future__ import annotations

import functools

import click

_NAMES = ("coordinator_address", "num_processes", "process_id", "initialization_timeout",
          "heartbeat_timeout", "multiprocess_gpu")


def distributed_options(f):
    """Add the job options to a click command and join the job before it runs."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in _NAMES}
        from t5cli.runtime.distributed import JobOptions, ending_on_failure, finish, join

        join(JobOptions(**values))
        with ending_on_failure():
            result = f(*args, **kwargs)
        finish()  # the other processes may outlive this one a little: not a failure
        return result

    options = [
        click.option("--coordinator-address", "--coordinator_address", "coordinator_address", default=None,
                     metavar="HOST:PORT", envvar="T5CLI_COORDINATOR_ADDRESS",
                     help="Multi-process job: process 0's address and a free port (every process "
                          "gets the same). Not needed alone or where JAX detects the cluster "
                          "(SLURM, Open MPI, Kubernetes, Cloud TPU)."),
        click.option("--num-processes", "--process_count", "num_processes", type=int, default=None,
                     metavar="N", envvar="T5CLI_NUM_PROCESSES", help="Multi-process job: the number of processes."),
        click.option("--process-id", "--process_index", "process_id", type=int, default=None, metavar="I",
                     envvar="T5CLI_PROCESS_ID", help="Multi-process job: this process's index, 0..N-1."),
        click.option("--initialization-timeout", "--initialization_timeout", "initialization_timeout",
                     type=int, default=300, show_default=True, metavar="SECONDS",
                     help="Multi-process job: how long to wait for every process to join."),
        click.option("--heartbeat-timeout", "--heartbeat_timeout", "heartbeat_timeout", type=int, default=100,
                     show_default=True, metavar="SECONDS",
                     help="Multi-process job: a process silent this long is taken as dead and the job ends."),
        click.option("--multiprocess-gpu", "--multiprocess_gpu", "multiprocess_gpu", is_flag=True,
                     help="Join the job JAX detects from the cluster environment (T5X's flag)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def precompile_options(f):
    """``t5 train --precompile [--precompile-devices N]``: bind ``train.precompile`` so the
    run only compiles its train step and reports memory and FLOPs per device
    (:mod:`t5cli.runtime.precompile`); MODEL_DIR, TRAIN_STEPS and the task are optional."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        precompile, devices = kwargs.pop("precompile"), kwargs.pop("precompile_devices")
        if precompile or devices is not None:
            placeholders = ["train.precompile = True"]
            if devices is not None:
                placeholders.append(f"train.precompile_devices = {int(devices)}")
            for flag, macro, value in (("model_dir", "MODEL_DIR", "None"), ("steps", "TRAIN_STEPS", "1"),
                                       ("task", "MIXTURE_OR_TASK_NAME", "None")):
                if kwargs.get(flag) is None:
                    placeholders.append(f"{macro} = {value}")
            # before the user's --gin bindings, which win
            kwargs["gin_bindings"] = tuple(placeholders) + tuple(kwargs.get("gin_bindings") or ())
        return f(*args, **kwargs)

    wrapper = click.option(
        "--precompile-devices", "--precompile_devices", "precompile_devices", type=int, default=None, metavar="N",
        help="--precompile for a mesh of N devices (virtual CPU devices when this machine has fewer).")(wrapper)
    wrapper = click.option(
        "--precompile", is_flag=True,
        help="Only compile the train step for this model, batch, lengths and mesh and print the memory "
             "per device (parameters, optimizer state, activations) and FLOPs per step; nothing is "
             "trained or written (T5X's precompile.gin).")(wrapper)
    return wrapper


__all__ = ["distributed_options", "precompile_options"]
