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
        if "tensorflow" in sys.modules:
            keep_autograph_files_private()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import tensorflow  # noqa: F401

        # TensorFlow must never grab an accelerator that JAX should have.
        tensorflow.config.set_visible_devices([], "GPU")
    keep_autograph_files_private()


#: prefix of the folder that holds this process's autograph files
AUTOGRAPH_DIR_PREFIX = "t5cli-autograph-"
_autograph_dir = None


def keep_autograph_files_private():
    """Make TensorFlow's autograph write its ``__autograph_generated_file*.py`` modules into
    a folder of this process (``$TMPDIR/t5cli-autograph-<pid>-*``), removed when the process
    exits; the folders of dead processes (killed before they could clean up) are removed
    here. Autograph itself only deletes its files at exit, one by one, and not when the
    process is killed. Idempotent; returns the folder (None without TensorFlow)."""
    global _autograph_dir
    if _autograph_dir is not None:
        return _autograph_dir
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.autograph.pyct import loader
    except ImportError:  # another TensorFlow layout: leave it alone
        return None
    import atexit
    import functools
    import shutil
    import tempfile
    import types

    _remove_dead_autograph_dirs(tempfile.gettempdir())
    folder = tempfile.mkdtemp(prefix=f"{AUTOGRAPH_DIR_PREFIX}{os.getpid()}-")
    loader.tempfile = types.SimpleNamespace(
        NamedTemporaryFile=functools.partial(tempfile.NamedTemporaryFile, dir=folder))
    atexit.register(shutil.rmtree, folder, True)
    _autograph_dir = folder
    return folder


def _remove_dead_autograph_dirs(tmp: str) -> None:
    import shutil

    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        if not name.startswith(AUTOGRAPH_DIR_PREFIX):
            continue
        pid = name[len(AUTOGRAPH_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's: not ours to judge)
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


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
    """Keep :data:`SEQIO_NOISE` off stderr (absl logs through the ``absl`` logger), and
    autograph's files in a private folder (:func:`keep_autograph_files_private`); idempotent."""
    import logging

    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(SEQIO_NOISE))
    keep_autograph_files_private()  # seqio brings TensorFlow, whose autograph writes to /tmp


class _DropOrbaxErrors:
    """Drops orbax's error records: the exception behind them reaches the caller, which
    reports it as one line."""

    def filter(self, record) -> bool:
        return not (record.levelno >= 40 and "orbax" in str(getattr(record, "pathname", "")))


@contextlib.contextmanager
def orbax_errors_as_exceptions():
    """Inside the block, orbax's worker threads do not log the errors that the block's
    call raises anyway (a full disk logs each failed write with its traceback); if the
    block fails, :func:`silence_async_leftovers` is called too."""
    import logging

    _drop_closed_loop_tracebacks()
    loggers = [logging.getLogger("absl"), logging.getLogger()]
    drop = _DropOrbaxErrors()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    except BaseException:
        silence_async_leftovers()
        raise
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


_silenced = False


def silence_async_leftovers() -> None:
    """After a failed orbax/TensorStore save or restore, keep its leftovers off stderr:
    asyncio's "Task exception was never retrieved" (one per failed write, when the tasks
    are collected) and the "Event loop is closed" tracebacks of TensorStore callbacks that
    finish after orbax closed its loop. Idempotent; for the rest of the process."""
    global _silenced
    if _silenced:
        return
    import logging

    _silenced = True
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    _drop_closed_loop_tracebacks()


def _drop_closed_loop_tracebacks() -> None:
    """``sys.excepthook`` and ``sys.unraisablehook`` drop ``RuntimeError: Event loop is
    closed`` (TensorStore reports exceptions of its callbacks through them) and, once
    :func:`silence_async_leftovers` ran, the exceptions of orbax's abandoned coroutines
    (collected later, each with a TensorStore spec); idempotent."""
    previous = sys.excepthook
    if not getattr(previous, "_t5cli_drops_closed_loop", False):
        def excepthook(exc_type, exc, tb):
            if exc_type is RuntimeError and str(exc) == "Event loop is closed":
                return
            previous(exc_type, exc, tb)

        excepthook._t5cli_drops_closed_loop = True
        sys.excepthook = excepthook
    previous_unraisable = sys.unraisablehook
    if not getattr(previous_unraisable, "_t5cli_drops_closed_loop", False):
        def unraisablehook(unraisable):
            exc = unraisable.exc_value
            if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
                return
            if _silenced and _from_orbax(unraisable.exc_traceback):
                return
            previous_unraisable(unraisable)

        unraisablehook._t5cli_drops_closed_loop = True
        sys.unraisablehook = unraisablehook


def _from_orbax(tb) -> bool:
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False
