"""The training loop and what it does between steps, as a list of periodic actions.

:func:`run` dispatches train steps (JAX runs them asynchronously) and, after each, the
actions that are due, in the spirit of clu's periodic actions:

- :class:`WriteSummaries`: train metrics to ``MODEL_DIR/train`` every ``log_period``
  steps, the loop's one regular wait for the device;
- :class:`ReportProgress`: the progress line, every ``log_period`` steps or
  ``progress_seconds`` (between summaries it fetches the loss of that step alone);
- :class:`SaveCheckpoint`, :class:`TrainingEval` (validation loss per task to
  ``training_eval/<task>/``) and :class:`InferenceEval` (``on_eval(step, params)``).

Each step also returns a ``finite`` flag (loss and gradient norm); :class:`StepMetrics`
reads the flags only where the loop waits for the device anyway (a summary, a progress
line, before the off-the-clock actions), so a run stops at the first non-finite step
(:class:`NonFiniteLoss`) without a wait per step, and never saves or evaluates it.

Every action also runs after the last step. The last three are *off the clock*: the loop
first waits for the steps dispatched so far, which count as training time, and the time
the actions take is left out of steps/s, tokens/s and the ETA (:class:`TrainingClock`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from t5cli.errors import DataError, TrainingDivergedError
from t5cli.runtime import host_allocator
from t5cli.runtime.data import get_eval_batches
from t5cli.runtime.losses import summarize
from t5cli.runtime.partitioning import shard_batch
from t5cli.runtime.progress import Progress
from t5cli.runtime.summaries import SummaryWriter, summarize_steps

State = Mapping[str, Any]


class TrainingClock:
    """``time.monotonic()`` less the time spent in off-the-clock actions."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._paused = 0.0

    def __call__(self) -> float:
        return self._clock() - self._paused

    @contextlib.contextmanager
    def paused(self):
        start = self._clock()
        try:
            yield
        finally:
            self._paused += self._clock() - start


class StepMetrics:
    """The metrics of the dispatched steps, left on the device until an action reads them.

    ``on_nonfinite(step)`` is called by :meth:`check_finite` for the first step whose
    ``finite`` flag is 0; the flags are only read where the loop waits for the device
    anyway (summaries, progress lines, before the off-the-clock actions)."""

    def __init__(self, on_nonfinite: Optional[Callable[[int], None]] = None):
        self.pending: List[Any] = []  # since the last summary
        self.latest: Any = None
        self.tokens = 0.0  # target tokens of every step so far
        self.on_nonfinite = on_nonfinite
        self._unchecked: List[Tuple[int, Any]] = []

    def add(self, metrics: Any, tokens: float, step: Optional[int] = None) -> None:
        self.pending.append(metrics)
        self.latest = metrics
        self.tokens += tokens
        if self.on_nonfinite is not None and step is not None and "finite" in metrics:
            self._unchecked.append((step, metrics["finite"]))

    def check_finite(self) -> None:
        """Read the ``finite`` flags of the steps not yet checked; ``on_nonfinite`` the first bad one."""
        if not self._unchecked:
            return
        unchecked, self._unchecked = self._unchecked, []
        flags = jax.device_get([flag for _, flag in unchecked])
        for (step, _), ok in zip(unchecked, flags):
            if not int(ok):
                self.on_nonfinite(step)
                return

    def take(self) -> List[Any]:
        pending, self.pending = self.pending, []
        return pending


class PeriodicAction:
    """Something the loop does every ``every_steps`` steps (None or 0: never on a period)
    and after the last step. ``off_clock`` actions run after the on-clock ones, and their
    time does not count as training time."""

    every_steps: Optional[int] = None
    off_clock: bool = False

    def due(self, step: int, last: bool) -> bool:
        return last or bool(self.every_steps and step % self.every_steps == 0)

    def __call__(self, step: int, state: State, last: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the action holds; called once when the loop ends, however it ends."""


class WriteSummaries(PeriodicAction):
    """Train metrics (``loss``, ``accuracy``, ``learning_rate``, ``timing/…``) to TensorBoard."""

    def __init__(self, every_steps: Optional[int], writer: SummaryWriter, metrics: StepMetrics,
                 clock: TrainingClock):
        self.every_steps, self.writer, self.metrics, self.clock = every_steps, writer, metrics, clock
        self._start, self._tokens = clock(), metrics.tokens
        self.last_step: Optional[int] = None
        self.last: Dict[str, float] = {}
        self.losses: List[float] = []

    def __call__(self, step: int, state: State, last: bool) -> None:
        self.metrics.check_finite()
        pending = self.metrics.take()
        summary = summarize_steps(jax.device_get(pending))
        dt = max(self.clock() - self._start, 1e-9)
        summary["timing/steps_per_second"] = len(pending) / dt
        summary["timing/target_tokens_per_second"] = (self.metrics.tokens - self._tokens) / dt
        summary["timing/seconds"] = dt
        self.writer.write(step, summary)
        self.last_step, self.last = step, summary
        self.losses.append(summary["loss"])
        self._start, self._tokens = self.clock(), self.metrics.tokens

    def close(self) -> None:
        self.writer.close()


class ReportProgress(PeriodicAction):
    """The progress line, with the summary just written at this step if there is one, else
    the loss of this step alone."""

    def __init__(self, progress: Progress, metrics: StepMetrics, summaries: WriteSummaries):
        self.progress, self.metrics, self.summaries = progress, metrics, summaries
        self._tokens = metrics.tokens

    def due(self, step: int, last: bool) -> bool:
        return self.progress.due(step)

    def __call__(self, step: int, state: State, last: bool) -> None:
        if self.summaries.last_step == step:
            summary = self.summaries.last
        else:
            self.metrics.check_finite()
            summary = summarize_steps(jax.device_get([self.metrics.latest]))
        self.progress.add_tokens(self.metrics.tokens - self._tokens)
        self._tokens = self.metrics.tokens
        self.progress.report(step, summary["loss"],
                             loss_per_token=summary["loss_per_nonpadding_target_token"])


class SaveCheckpoint(PeriodicAction):
    """``checkpoint_<step>`` in MODEL_DIR: parameters, optimizer state and ``meta``."""

    off_clock = True

    def __init__(self, every_steps: Optional[int], checkpointer, meta: Mapping[str, Any]):
        self.every_steps, self.checkpointer, self.meta = every_steps, checkpointer, meta

    def __call__(self, step: int, state: State, last: bool) -> None:
        self.checkpointer.save(step, state["params"], state["opt_state"], self.meta)

    def close(self) -> None:
        self.checkpointer.close()


class NonFiniteLoss:
    """What :class:`StepMetrics` does at the first non-finite step: ``stop`` raises
    TrainingDivergedError (nothing of that step or later is saved); otherwise one warning."""

    def __init__(self, *, stop: bool, model_dir: str, latest_step: Callable[[], Optional[int]]):
        self.stop, self.model_dir, self.latest_step = stop, model_dir, latest_step
        self.first_step: Optional[int] = None

    def __call__(self, step: int) -> None:
        if self.first_step is not None:
            return
        self.first_step = step
        advice = ("lower the learning rate (or warm it up), train with --dtype float32, or raise "
                  "z_loss (--gin train.z_loss=1e-3)")
        if not self.stop:
            print(f"warning: the loss or gradient norm is not finite at step {step}; training goes "
                  f"on because train.stop_on_nonfinite=False", file=sys.stderr, flush=True)
            return
        latest = self.latest_step()
        kept = (f"checkpoint_{latest} in {self.model_dir} is the last good one" if latest is not None
                else "no checkpoint was written")
        raise TrainingDivergedError(
            f"training diverged: the loss or gradient norm is NaN or infinite at step {step}; stopped "
            f"without saving, {kept}. Try: {advice}; train.stop_on_nonfinite=False turns this check off")


def eval_tasks(task) -> List[Any]:
    """Leaf tasks with a validation split (T5X evaluates each task of a mixture)."""
    import seqio  # imports TensorFlow

    leaves = list(task.tasks) if isinstance(task, seqio.Mixture) else [task]
    return [t for t in leaves if "validation" in t.splits]


class TrainingEval(PeriodicAction):
    """The loss on up to ``eval_steps`` validation batches of each task, written to
    ``MODEL_DIR/training_eval/<task>/``."""

    off_clock = True

    def __init__(self, every_steps: Optional[int], eval_step: Callable, tasks: Sequence[Any], *,
                 feature_lengths: Mapping[str, int], batch_size: int, eval_steps: int, mesh,
                 model_dir: str, pack: bool, use_cached: bool):
        self.every_steps, self.eval_step, self.tasks = every_steps, eval_step, list(tasks)
        self.feature_lengths, self.batch_size, self.eval_steps = feature_lengths, batch_size, eval_steps
        self.mesh, self.model_dir, self.pack, self.use_cached = mesh, model_dir, pack, use_cached
        self.last: Dict[str, Dict[str, float]] = {}

    def __call__(self, step: int, state: State, last: bool) -> None:
        out = {}
        for t in self.tasks:
            total, n = None, 0
            for batch in _same_count_everywhere(
                    batch for batch, _mask in get_eval_batches(t, "validation", self.feature_lengths,
                                                               self.batch_size, pack=self.pack,
                                                               max_batches=self.eval_steps,
                                                               use_cached=self.use_cached)):
                sums = self.eval_step(state["params"], shard_batch(batch, self.mesh))
                total = sums if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
                n += 1
            if total is None:
                continue
            total = {k: float(v) for k, v in jax.device_get(total).items()}
            total["loss_normalized"] = total["loss"] / max(total["normalizer"], 1e-9) * n
            summary = summarize(total, num_steps=n)  # loss: per batch, like the train loss
            with SummaryWriter(Path(self.model_dir) / "training_eval" / t.name) as w:
                w.write(step, summary)
            out[t.name] = summary
        self.last = out


def _same_count_everywhere(batches: Iterator[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The batches, and in a multi-process job all-zero ones (zero loss weights: they add
    nothing) until every process has as many as the one with most: each process reads its
    own shard, and every eval step needs them all."""
    batches = list(batches)
    if jax.process_count() == 1:
        return batches
    from t5cli.runtime.distributed import gather_objects

    most = max(gather_objects(len(batches)))
    if batches and len(batches) < most:
        empty = {k: np.zeros_like(v) for k, v in batches[0].items()}
        batches += [empty] * (most - len(batches))
    elif not batches and most:
        raise DataError("a process has no validation examples while others do; use fewer processes "
                        "or a larger validation split")
    return batches


class InferenceEval(PeriodicAction):
    """``on_eval(step, params)``; ``owned``: close ``on_eval`` when the loop ends."""

    off_clock = True

    def __init__(self, every_steps: Optional[int], on_eval: Callable[[int, Any], Any], *,
                 owned: bool = False):
        self.every_steps, self.on_eval, self.owned = every_steps, on_eval, owned

    def __call__(self, step: int, state: State, last: bool) -> None:
        self.on_eval(step, state["params"])

    def close(self) -> None:
        if self.owned:
            self.on_eval.close()


def run(train_step: Callable, state: Dict[str, Any], batches: Iterator[Mapping[str, Any]], *,
        step: int, total_steps: int, mesh, dropout_rng, metrics: StepMetrics,
        actions: Sequence[PeriodicAction], clock: TrainingClock) -> Tuple[int, Dict[str, Any]]:
    """Train from ``step`` to ``total_steps``, running the ``actions`` that are due after
    each step; returns the final step and state. The actions are closed at the end."""
    on_clock = [a for a in actions if not a.off_clock]
    off_clock = [a for a in actions if a.off_clock]
    first_step = step
    try:
        while step < total_steps:
            batch = next(batches)
            weights = batch.get("decoder_loss_weights")
            if weights is None:  # an encoder-only head's batch: its input tokens
                weights = batch["encoder_input_tokens"] > 0
            tokens = float(weights.sum()) * jax.process_count()
            state, step_metrics = train_step(state, shard_batch(batch, mesh), dropout_rng)
            if step == first_step:  # compiled by now: what the compiler freed can go
                host_allocator.release_free_memory()
            step += 1
            metrics.add(step_metrics, tokens, step)
            last = step >= total_steps
            for action in on_clock:
                if action.due(step, last):
                    action(step, state, last)
            due = [a for a in off_clock if a.due(step, last)]
            if due:
                metrics.check_finite()  # never save or evaluate non-finite parameters
                jax.block_until_ready(state["params"])
                with clock.paused():
                    for action in due:
                        action(step, state, last)
                    host_allocator.release_free_memory()
    finally:
        for action in actions:
            action.close()
    return step, state


__all__ = ["NonFiniteLoss", "PeriodicAction", "WriteSummaries", "ReportProgress", "SaveCheckpoint", "TrainingEval",
           "InferenceEval", "StepMetrics", "TrainingClock", "eval_tasks", "run"]
