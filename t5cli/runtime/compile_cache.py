"""The persistent compilation cache: XLA programs compiled once, reused by later commands.

Every command that compiles (``train``, ``eval``, ``infer``, ``export``) calls :func:`enable`
before its first JAX computation. It points JAX's own persistent cache
(``jax_compilation_cache_dir``) at one folder, so the second ``t5 infer`` of a model loads
its decoder from disk instead of compiling it again. Tracing (Python to StableHLO) still
happens in every process; only XLA's compilation is cached.

Settings, read from the environment each time a command starts (an environment variable
rather than a global flag, so library calls, ``make`` targets and worker processes obey
the same switch):

- ``T5CLI_CACHE_DIR``: the cache folder (default ``<platformdirs user cache dir>/jax``,
  e.g. ``~/.cache/t5cli/jax``; ``t5 paths`` shows it with its size).
- ``T5CLI_COMPILE_CACHE=0`` turns the cache off.
- ``T5CLI_COMPILE_CACHE_MAX_SIZE``: the size limit, in bytes or with a K/M/G suffix
  (default 1G). Past it JAX deletes the least recently used entries
  (``jax_compilation_cache_max_size``; JAX needs ``filelock`` for it).

A folder that cannot be created or written is one warning line; the command then compiles
without the cache.

Every compilation is written, however short (``jax_persistent_cache_min_compile_time_secs
= 0``): a small model's programs compile in well under JAX's default threshold of one
second, and they are what a short command waits for.

A user who has set ``jax_compilation_cache_dir`` themselves (``JAX_COMPILATION_CACHE_DIR``
or ``jax.config.update``) keeps their cache and JAX's settings: t5cli then changes nothing.

Why a cache from elsewhere is safe: JAX's cache key (``jax/_src/cache_key.py``) is a
SHA-256 over the StableHLO of the program, the jaxlib version, the backend's platform and
platform version, the XLA flags, the compile options and the topology of the devices, so
an entry written by another JAX version, backend or device set is never looked up. An
XLA:CPU executable also records the CPU features it was compiled for, and XLA refuses to
load it on a CPU that lacks one. An entry that cannot be used (a damaged file, or another
machine's executable under the same key) is deleted with one warning naming the file and
replaced by the fresh compilation; JAX alone would warn and keep it, on every run.
The cache holds executable code: like JAX, treat it as trusted and keep it private.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Optional

ENV_CACHE_DIR = "T5CLI_CACHE_DIR"
ENV_SWITCH = "T5CLI_COMPILE_CACHE"
ENV_MAX_SIZE = "T5CLI_COMPILE_CACHE_MAX_SIZE"
DEFAULT_MAX_SIZE = "1G"

_ENTRY_SUFFIX = "-cache"  # JAX's LRU cache: <key>-cache holds an entry, <key>-atime its last use
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}

#: the folder enable() last gave JAX (None: none, or the user's own cache is in charge)
_ours: Optional[str] = None
#: the folder JAX was last made to (re)open its cache in by enable()
_opened: Optional[str] = None
#: every folder enable() has given JAX (one set back by a caller is still not the user's)
_given: set = set()


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """Where the cache lives, whether it is on, and its size limit in bytes."""

    directory: Path
    enabled: bool
    max_size: int


def default_dir() -> Path:
    """``<platformdirs user cache dir>/jax``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("t5cli")) / "jax"


def parse_size(text: str) -> int:
    """Bytes from ``"1073741824"``, ``"500M"``, ``"2G"`` or ``"1.5GB"``."""
    from t5cli.errors import ConfigError

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{ENV_MAX_SIZE}={text!r} is not a size: write bytes or a number with "
                          f"K, M or G (e.g. {ENV_MAX_SIZE}=2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def settings(environ=os.environ) -> CacheSettings:
    """The cache settings the environment asks for (see the module docstring)."""
    directory = environ.get(ENV_CACHE_DIR, "").strip()
    switch = environ.get(ENV_SWITCH, "1").strip().lower()
    return CacheSettings(
        directory=Path(directory).expanduser().absolute() if directory else default_dir(),
        enabled=switch not in ("0", "false", "off", "no"),
        max_size=parse_size(environ.get(ENV_MAX_SIZE, "").strip() or DEFAULT_MAX_SIZE))


def enable(environ=os.environ) -> Optional[Path]:
    """Point JAX's persistent compilation cache at t5cli's folder; returns it (None: off,
    or the user's own ``jax_compilation_cache_dir`` is in charge). Call it before the
    process's first compilation; later calls with other settings switch folders."""
    global _ours, _opened
    wanted = settings(environ)
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    current = jax.config.jax_compilation_cache_dir
    if current and current != _ours and current not in _given:  # the user's own: only open it
        folder, _ours = current, None
    else:
        folder = _usable(wanted.directory) if wanted.enabled else None
        jax.config.update("jax_compilation_cache_dir", folder)
        if folder:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_compilation_cache_max_size", _size_limit(wanted.max_size))
            _check_entries_when_read()
            _given.add(folder)
        _ours = folder
    if folder != _opened:
        # JAX decides once per process whether, and where, it caches: make it decide again
        jax_cache.reset_cache()
        _opened = folder
    return Path(folder) if _ours else None


def _usable(directory: Path) -> Optional[str]:
    """``directory`` as a string once it exists and is writable; else None, said in one line."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"[Errno 13] Permission denied: {str(directory)!r}")
    except OSError as exc:
        print(f"warning: compilation cache folder {directory} is not usable ({exc}); compiling "
              f"without it (set {ENV_CACHE_DIR} to another folder, or {ENV_SWITCH}=0)",
              file=sys.stderr, flush=True)
        return None
    return str(directory)


def _size_limit(max_size: int) -> int:
    """``max_size``, or -1 (no limit) where ``filelock``, which JAX's limit needs, is missing."""
    import importlib.util

    if importlib.util.find_spec("filelock") is None:
        print("warning: the compilation cache has no size limit without the filelock package "
              "(pip install filelock)", file=sys.stderr, flush=True)
        return -1
    return max_size


def describe(environ=os.environ) -> str:
    """One line for ``t5 paths``: the folder, its entries and size, and the limit."""
    from t5cli.errors import ConfigError

    try:
        wanted = settings(environ)
    except ConfigError as exc:  # a bad size: say so here rather than fail `t5 paths`
        return f"{default_dir()}  ({exc})"
    if not wanted.enabled:
        return f"{wanted.directory}  (off: {ENV_SWITCH}=0)"
    entries = list(wanted.directory.glob(f"*{_ENTRY_SUFFIX}")) if wanted.directory.is_dir() else []
    used = sum(p.stat().st_size for p in entries if p.is_file())
    return (f"{wanted.directory}  ({len(entries)} entries, {_human(used)} of "
            f"{_human(wanted.max_size)})")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# ---- entries that cannot be used ------------------------------------------------------------

def _check_entries_when_read() -> None:
    """Make JAX's file cache (built when it first compiles) a :class:`_CheckedCache`.

    JAX builds its cache in ``jax._src.compilation_cache.get_file_cache``, a private name;
    should a JAX version lose it, entries are simply not checked (JAX then warns about a
    bad entry on every run, and compiles).
    """
    try:
        from jax._src import compilation_cache as internals
    except ImportError:  # pragma: no cover
        return
    make = getattr(internals, "get_file_cache", None)
    if make is None or getattr(make, "_t5cli_checked", False):
        return

    def get_file_cache(path):
        made = make(path)
        return made if made is None else (_CheckedCache(made[0], internals.decompress_executable), made[1])

    get_file_cache._t5cli_checked = True
    internals.get_file_cache = get_file_cache


class _CheckedCache:
    """JAX's file cache, minus entries that cannot be used: an entry that does not
    decompress is deleted when read; one JAX read but then compiled afresh (so could not
    load) is replaced by the new compilation. Each is named in one warning line."""

    def __init__(self, base, decompress):
        self._base, self._decompress = base, decompress
        self._served = set()  # keys whose entry JAX was given in this process

    @property
    def _path(self):  # what JAX's own cache exposes
        return self._base._path

    def get(self, key: str):
        value = self._base.get(key)
        if value is None:
            return None
        try:
            self._decompress(value)
        except Exception as exc:
            self._discard(key, f"it is damaged ({type(exc).__name__}: {exc})")
            return None
        self._served.add(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        if key in self._served:  # JAX had this entry, could not load it, and compiled
            self._served.discard(key)
            self._discard(key, "JAX could not load it (an executable for another machine, or "
                               "damaged)")
        self._base.put(key, value)

    def _discard(self, key: str, why: str) -> None:
        entry = Path(self._base._path) / f"{key}{_ENTRY_SUFFIX}"
        for path in (entry, entry.with_name(f"{key}-atime")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        print(f"warning: compilation cache entry {entry} was not used: {why}; deleted it, the "
              f"program is compiled again", file=sys.stderr, flush=True)
