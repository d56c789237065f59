"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

import difflib
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
