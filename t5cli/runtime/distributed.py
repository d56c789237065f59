"""Joining a multi-process job on JAX's distributed runtime (``jax.distributed``).

There is no launcher here: every process of a job runs the same ``t5`` command, and
:func:`join` connects it to the others before its first JAX computation, either

- explicitly: ``coordinator_address`` (``HOST:PORT`` of process 0), ``num_processes`` and
  ``process_id``, as ``--coordinator-address/--num-processes/--process-id`` or T5X's
  ``--coordinator_address/--process_count/--process_index``; or
- from the cluster environment JAX detects on its own (SLURM, Open MPI, Kubernetes,
  Cloud TPU): :func:`detected_cluster` names it, ``jax.distributed.initialize()`` reads it.

One process alone needs nothing and joins nothing. ``T5CLI_CLUSTER_DETECTION=0`` switches
detection off (e.g. a one-process command inside a SLURM allocation).

A coordinator that does not answer within ``initialization_timeout`` seconds ends the
process with one line (:class:`DistributedError`) naming the address and the timeout:
JAX itself would abort the process (SIGABRT) without a readable message, so a watchdog
thread ends it just before. A process that dies mid-run is noticed by the others: their
next collective fails (:func:`ending_on_failure` turns that into one line and exit 3), or
a watch thread finds its heartbeat in the coordination service's key-value store silent
for ``heartbeat_timeout`` seconds (:class:`_PeerWatch`; JAX's own heartbeat timeout is set
later, since it aborts with a stack trace).

On CPU the cross-process collectives are gloo (JAX's default, set explicitly here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
from typing import Any, Dict, List, Optional

from t5cli.errors import T5CliError

#: seconds JAX's own timeout is set past ours, so our one-line message comes first
_JAX_TIMEOUT_MARGIN = 30
EXIT_CODE = 3


class DistributedError(T5CliError):
    """A multi-process job that cannot start or lost one of its processes."""

    exit_code = EXIT_CODE


@dataclasses.dataclass
class JobOptions:
    """How this process joins a job; all None/False: alone, or whatever the cluster says."""

    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    initialization_timeout: int = 300
    heartbeat_timeout: int = 100
    multiprocess_gpu: bool = False

    @property
    def explicit(self) -> bool:
        return any(v is not None for v in (self.coordinator_address, self.num_processes, self.process_id))


def detected_cluster() -> Optional[str]:
    """The name of the cluster environment JAX would read (``SlurmCluster``,
    ``OmpiCluster``, ``K8sCluster``, a Cloud TPU one), or None. Only environment
    variables are looked at (no metadata server is queried)."""
    if os.environ.get("T5CLI_CLUSTER_DETECTION", "1").lower() in ("0", "false", "no", "off"):
        return None
    # the variables JAX's own detectors read (jax/_src/clusters), inside an srun step / mpirun
    if all(v in os.environ for v in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                                     "SLURM_LOCALID")):
        return "SlurmCluster" if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 else None
    if "OMPI_MCA_orte_hnp_uri" in os.environ:
        return "OmpiCluster" if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "2") or 2) > 1 else None
    if "KUBERNETES_SERVICE_HOST" in os.environ and "JOB_COMPLETION_INDEX" in os.environ:
        return "K8sCluster"
    if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "GkeTpuCluster"
    return None


def _check(options: JobOptions) -> None:
    given = {"--coordinator-address": options.coordinator_address, "--num-processes": options.num_processes,
             "--process-id": options.process_id}
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise DistributedError(
            f"a multi-process job needs --coordinator-address HOST:PORT, --num-processes N and "
            f"--process-id I together; missing: {', '.join(missing)}")
    host, _, port = str(options.coordinator_address).rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator-address {options.coordinator_address!r} must be HOST:PORT, "
                               f"e.g. 10.0.0.1:1234 (process 0's host)")
    if options.num_processes < 1 or not 0 <= options.process_id < options.num_processes:
        raise DistributedError(f"--process-id {options.process_id} must be in 0..{options.num_processes - 1} "
                               f"for --num-processes {options.num_processes}")
    if options.initialization_timeout < 1:
        raise DistributedError(f"--initialization-timeout {options.initialization_timeout} must be at least 1 second")


def join(options: Optional[JobOptions] = None) -> bool:
    """Connect this process to its job (see the module docstring); a no-op for one process
    (no JAX backend is started then) or when already joined. True when this call joined."""
    import jax

    options = options or JobOptions()
    if _joined():
        return False
    cluster = None if options.explicit else detected_cluster()
    if options.explicit:
        _check(options)
        if options.num_processes == 1:
            return False
    elif cluster is None and options.multiprocess_gpu:
        cluster = "cluster"  # T5X's --multiprocess_gpu: let JAX detect it
    elif cluster is None:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = options.coordinator_address or f"the {cluster} coordinator"
    kwargs: Dict[str, Any] = dict(initialization_timeout=options.initialization_timeout + _JAX_TIMEOUT_MARGIN,
                                  # JAX aborts with a stack trace: our peer watch says it first
                                  heartbeat_timeout_seconds=options.heartbeat_timeout + _JAX_TIMEOUT_MARGIN)
    if options.explicit:
        kwargs.update(coordinator_address=options.coordinator_address, num_processes=options.num_processes,
                      process_id=options.process_id, cluster_detection_method="deactivate")
        if options.coordinator_address.startswith(("127.", "localhost:")):
            kwargs["coordinator_bind_address"] = options.coordinator_address
    watchdog = _Watchdog(options.initialization_timeout, address)
    watchdog.start()
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as exc:
        raise DistributedError(
            f"cannot join the job at {address} within {options.initialization_timeout}s: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; check that every "
            f"process got the same --coordinator-address and --num-processes and can reach process 0")
    finally:
        watchdog.cancel()
    if jax.process_index() != 0:
        _quiet()
    _PeerWatch.start_for(options.heartbeat_timeout)
    return True


#: what a collective says when a process of the job is gone
_PEER_LOST = ("gloo", "connection closed by peer", "connection reset", "heartbeat", "coordination",
              "unavailable", "barrier")


def failure_line(exc: BaseException) -> str:
    """The one line an exception ends a process of a job with."""
    from t5cli.errors import first_line

    if isinstance(exc, T5CliError):
        return f"error: {exc}"
    text = first_line(exc)
    if type(exc).__name__ in ("JaxRuntimeError", "XlaRuntimeError") and any(
            word in text.lower() for word in _PEER_LOST):
        return (f"error: another process of the job failed or was stopped ({text[:200]}); this process "
                f"stops too: run the same command on every process to resume from the latest complete "
                f"checkpoint")
    return f"error: {type(exc).__name__}: {text}"


@contextlib.contextmanager
def ending_on_failure():
    """In a multi-process job, an exception ends this process at once with one line
    (:func:`failure_line`; a traceback too when it is not a user error) and a non-zero
    exit, instead of waiting in JAX's shutdown for processes that may be stuck in a
    collective (JAX would abort with a stack trace after its heartbeat timeout).
    The other processes' next collective fails, and they end the same way."""
    try:
        yield
    except BaseException as exc:
        if not _joined() or (isinstance(exc, SystemExit) and not exc.code):
            raise
        line = failure_line(exc)
        if not isinstance(exc, (T5CliError, KeyboardInterrupt, SystemExit)) and not line.startswith(
                "error: another process"):
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__)
        code = getattr(exc, "exit_code", None) or (exc.code if isinstance(exc, SystemExit)
                                                   and isinstance(exc.code, int) else EXIT_CODE)
        if not isinstance(exc, SystemExit):
            sys.stderr.write(line + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def finish() -> None:
    """Tell the other processes that this one is done (so its silence is no failure);
    the CLI calls it when a command succeeds. A no-op outside a job."""
    if _PeerWatch.current is not None:
        _PeerWatch.current.stop(done=True)


class _PeerWatch(threading.Thread):
    """Each process bumps a counter in the coordination service's key-value store every
    few seconds and watches the others'. A process whose counter has not moved for
    ``timeout`` seconds (and that has not said it is done), or a coordinator that no
    longer answers, ends this process with one line: a job that lost a process would
    otherwise wait in its next collective forever."""

    current: Optional["_PeerWatch"] = None
    PREFIX = "t5cli/alive/"

    def __init__(self, timeout: float):
        super().__init__(name="t5cli-peer-watch", daemon=True)
        import jax
        from jax._src import distributed as jd

        self.client, self.timeout = jd.global_state.client, float(timeout)
        self.me, self.count = jax.process_index(), jax.process_count()
        self.interval = max(min(self.timeout / 5, 5.0), 0.2)
        self._stop_event = threading.Event()

    @classmethod
    def start_for(cls, timeout: float) -> None:
        import atexit

        cls.current = cls(timeout)
        cls.current.start()
        atexit.register(cls.current.stop)  # at exit without finish(): only stop beating

    def stop(self, done: bool = False) -> None:
        if done and not self._stop_event.is_set():
            try:
                self.client.key_value_set(f"{self.PREFIX}{self.me}", "done", allow_overwrite=True)
            except Exception:
                pass
        self._stop_event.set()

    def run(self) -> None:
        import time

        beat, seen = 0, {}
        start = time.monotonic()
        while not self._stop_event.is_set():
            beat += 1
            try:
                self.client.key_value_set(f"{self.PREFIX}{self.me}", str(beat), allow_overwrite=True)
                values = dict(self.client.key_value_dir_get(self.PREFIX))
            except Exception as exc:
                if self._stop_event.is_set():
                    return
                _fail(f"the job's coordinator (process 0) no longer answers ({type(exc).__name__}): it "
                      f"stopped or its host is unreachable; this process stops too")
                return
            now = time.monotonic()
            for p in range(self.count):
                if p == self.me:
                    continue
                value = values.get(f"{self.PREFIX}{p}")
                if value == "done":
                    continue
                if value is not None and seen.get(p, (None,))[0] != value:
                    seen[p] = (value, now)
                last = seen.get(p, (None, start))[1]
                if now - last > self.timeout and not self._stop_event.is_set():
                    _fail(f"process {p} of the job stopped answering (silent for more than {self.timeout:g}s, "
                          f"--heartbeat-timeout): this process stops too")
                    return
            self._stop_event.wait(self.interval)


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {message}; run the same command on every process to resume from the "
                     f"latest complete checkpoint\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)


def _quiet() -> None:
    """A process other than 0 logs nothing but errors: its stdout (Python's and the C
    libraries') goes to /dev/null, logging and warnings below ERROR are dropped."""
    import logging
    import warnings

    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    warnings.simplefilter("ignore")


def _joined() -> bool:
    import jax

    return jax.distributed.is_initialized()


class _Watchdog:
    """Ends the process with one line if ``jax.distributed.initialize`` has not returned
    after ``timeout`` seconds (JAX would abort without a message a little later)."""

    def __init__(self, timeout: float, address: str):
        self.timeout, self.address = timeout, address
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        sys.stderr.write(
            f"error: the job's coordinator at {self.address} did not bring all processes together within "
            f"{self.timeout}s (--initialization-timeout): check that process 0 runs, that every process "
            f"got the same --coordinator-address and --num-processes, and that the port is reachable\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def describe() -> Dict[str, Any]:
    """``process_index``, ``process_count``, ``local_devices`` and ``devices`` of this process."""
    import jax

    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "devices": jax.device_count()}


def is_primary() -> bool:
    """True in process 0 (the one that writes logs and records), and when alone."""
    import jax

    return jax.process_index() == 0


def process_count() -> int:
    import jax

    return jax.process_count()


def sync(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op alone)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_outcome(error: Optional[BaseException], what: str) -> None:
    """Process 0 tells the others whether ``what`` succeeded there: process 0 re-raises
    its own ``error``; the others raise a DistributedError naming process 0's failure."""
    import jax

    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    import numpy as np
    from jax.experimental import multihost_utils

    message = "" if error is None else str(error)
    encoded = np.zeros(1024, dtype=np.uint8)
    raw = message.encode("utf-8")[:1023]
    encoded[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(1 if error is not None else 0)))
    text = bytes(np.asarray(multihost_utils.broadcast_one_to_all(encoded))).rstrip(b"\0").decode("utf-8", "replace")
    if jax.process_index() == 0:
        if error is not None:
            raise error
        return
    if failed:
        raise DistributedError(f"process 0 could not {what}: {text}")


def gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj`` (picklable), in process order, on every process."""
    import jax

    if jax.process_count() == 1:
        return [obj]
    import pickle

    import numpy as np
    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), dtype=np.uint8)
    padded[:data.size] = data
    everything = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [pickle.loads(everything[i, :int(n)].tobytes()) for i, n in enumerate(sizes)]


def process_slice(n: int) -> slice:
    """This process's contiguous share of ``n`` items (process 0 first; shares differ by
    at most one), so that gathering the shares in process order restores the order."""
    import jax

    count, index = jax.process_count(), jax.process_index()
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return slice(start, start + base + (1 if index < extra else 0))


def gather_slices(items: List[Any]) -> List[Any]:
    """Every process's :func:`process_slice` results, joined in order (on every process)."""
    import jax

    if jax.process_count() == 1:
        return list(items)
    return [x for part in gather_objects(list(items)) for x in part]


def host_local(tree: Any) -> Any:
    """``tree`` with every array spread over several processes copied whole onto this
    process's first device (for decoding on one process); other leaves as they are."""
    import jax

    leaves = jax.tree_util.tree_leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return tree
    from jax.experimental import multihost_utils

    device = jax.local_devices()[0]
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x if getattr(x, "is_fully_addressable", True)
                                 else multihost_utils.process_allgather(x, tiled=True), device), tree)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for jobs started on one machine)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


__all__ = ["DistributedError", "JobOptions", "join", "finish", "ending_on_failure", "failure_line", "detected_cluster", "describe", "is_primary",
           "process_count", "sync", "broadcast_outcome", "gather_objects", "process_slice", "gather_slices",
           "host_local", "free_port"]
