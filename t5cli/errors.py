"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

import difflib
import errno
import os
from typing import Iterable


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


class T5CliError(Exception):
    """An error caused by user input: its message names the thing and the fix."""

    exit_code = 1


class UnknownNameError(T5CliError, KeyError):
    """A task, model, metric or rule name that nobody registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = ""):
        self.kind, self.name = kind, name
        known = sorted(k for k in known if k != name)  # a stale global entry is no suggestion
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        elif known:
            msg += f" (run `t5 {kind}s` to list the {len(known)} known)"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DuplicateNameError(T5CliError):
    """The same name registered by two origins without `override=True`."""


class PluginLoadError(T5CliError):
    """An installed plugin or a user-dir file failed to load."""


class ConfigError(T5CliError):
    """A bad gin file, binding or command-line override."""


class DataError(T5CliError):
    """A dataset that is absent or unreadable."""


class CheckpointError(T5CliError):
    """A checkpoint that is missing, corrupt or does not match the model."""


class StorageError(T5CliError):
    """A file-system error (read-only, not a directory, permission denied, disk full)."""


class RunLockedError(T5CliError):
    """Another live process is training in the same MODEL_DIR."""


class TrainingDivergedError(T5CliError):
    """The loss or the gradient norm became NaN or infinite."""


#: errno values that are about the storage, not about t5cli: reported as one line
STORAGE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EROFS", "ENOTDIR", "EACCES", "EPERM", "ENOSPC", "EDQUOT",
                                      "EISDIR", "EEXIST", "ENOENT", "EIO", "EFBIG", "ENAMETOOLONG",
                                      "ELOOP", "EMFILE", "ENFILE") if hasattr(errno, name))

#: how an error message names a full disk when the OSError itself was lost (TensorStore)
_NO_SPACE = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def os_error_in(exc: BaseException):
    """The first OSError with a storage errno in ``exc``'s cause/context chain, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def storage_error(exc: BaseException, doing: str = "", path=None, hint: str = ""):
    """A one-line StorageError for a file-system failure in ``exc`` (its chain searched), or
    None when ``exc`` is not one. ``doing`` says what failed ("writing checkpoint_20"),
    ``path`` is used when the OSError names none; ``hint`` is appended."""
    if isinstance(exc, StorageError):
        return exc
    found = os_error_in(exc)
    if found is not None:
        where = found.filename or path
        cause = found.strerror or os.strerror(found.errno)
        code = errno.errorcode.get(found.errno, str(found.errno))
    else:
        text = str(exc)
        cause = next((c for c in _NO_SPACE if c in text), None)
        if cause is None:
            return None
        where, code = path, {"No space left on device": "ENOSPC", "Disk quota exceeded": "EDQUOT",
                             "Read-only file system": "EROFS"}[cause]
    msg = f"{doing + ': ' if doing else ''}{cause} ({code})"
    if where is not None and str(where) not in doing:
        msg = f"{msg}: {where}"
        if getattr(found, "filename2", None):
            msg += f" -> {found.filename2}"
    if hint:
        msg += f"; {hint}"
    return StorageError(msg)
