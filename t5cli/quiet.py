"""Keep TensorFlow's native start-up chatter (oneDNN, CUDA stubs, absl) off the user's terminal.

Those lines are written by C++ straight to file descriptor 2 while TensorFlow is imported,
before any Python logging setting applies, so the import runs with fd 2 pointed at
/dev/null. Python exceptions raised by the import still reach the user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Send fd 2 to /dev/null inside the block (Python's sys.stderr is flushed first)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def absl_warnings_silenced():
    """Only absl errors are logged inside the block (TFDS warns about half-built data dirs)."""
    from absl import logging as absl_logging

    saved = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once, silently, if it is installed and not yet imported."""
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import tensorflow  # noqa: F401

        # TensorFlow must never grab an accelerator that JAX should have.
        tensorflow.config.set_visible_devices([], "GPU")


class _DropMessages:
    """A logging filter that drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes):
        self.prefixes = tuple(prefixes)

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefixes)


#: seqio notices that say nothing to a t5cli user: the feature converters drop the
#: ``*_pretokenized`` features on purpose, at every evaluation.
SEQIO_NOISE = ("Features not in `features_length` will be removed during packing",)


def drop_seqio_noise() -> None:
    """Keep :data:`SEQIO_NOISE` off stderr (absl logs through the ``absl`` logger); idempotent."""
    import logging

    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(SEQIO_NOISE))
