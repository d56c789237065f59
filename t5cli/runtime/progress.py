"""One progress line on stderr every K steps or S seconds: step, loss, speed and ETA."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


def _primary() -> bool:
    jax = sys.modules.get("jax")  # never imported for this
    return jax is None or jax.process_index() == 0


def format_duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Decides when a line is due and prints it.

    ``due(step)`` is cheap (no device sync); only when it returns True does the caller
    fetch the loss and call ``report``. Speed is measured between reports.
    """

    def __init__(self, start_step: int, total_steps: int, *, every_steps: int = 100,
                 every_seconds: float = 30.0, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic, prefix: str = "train"):
        self.total_steps = total_steps
        self.every_steps = max(int(every_steps or 0), 0)
        self.every_seconds = every_seconds
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.prefix = prefix
        self._last_step = start_step
        self._last_time = clock()
        self._tokens = 0.0

    def add_tokens(self, n: float) -> None:
        self._tokens += n

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` (spent checkpointing or evaluating) out of the speed."""
        self._last_time += seconds

    def due(self, step: int) -> bool:
        if step >= self.total_steps:
            return True
        if self.every_steps and step - self._last_step >= self.every_steps:
            return True
        return bool(self.every_seconds) and self.clock() - self._last_time >= self.every_seconds

    def report(self, step: int, loss: Optional[float] = None, extra: str = "",
               loss_per_token: Optional[float] = None) -> str:
        """Print one line and start a new measuring interval; returns the line. ``loss`` is
        the optimised loss (a sum over tokens under T5X's default normalisation), shown
        next to ``loss_per_token`` when that is given."""
        now = self.clock()
        dt = max(now - self._last_time, 1e-9)
        steps = step - self._last_step
        sps = steps / dt
        tps = self._tokens / dt
        remaining = self.total_steps - step
        eta = format_duration(remaining / sps) if sps > 0 and remaining > 0 else "-"
        parts = [f"{self.prefix} step {step}/{self.total_steps}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if loss_per_token is not None:
            parts.append(f"{loss_per_token:.4f}/token")
        parts += [f"{sps:.2f} steps/s", f"{tps:,.0f} tokens/s", f"ETA {eta}"]
        if extra:
            parts.append(extra)
        line = " | ".join(parts)
        if _primary():  # in a multi-process job only process 0 reports
            print(line, file=self.stream, flush=True)
        self._last_step, self._last_time, self._tokens = step, now, 0.0
        return line
