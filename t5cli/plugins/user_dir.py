"""User directories: plain folders of ``.py`` and ``.gin`` files loaded at start-up.

Each top-level ``.py`` file is imported as ``<package>.<stem>`` where the package name is
derived from the directory's resolved path, so it is the same on every host and run.
The directory is never put on ``sys.path``; instead a finder at the *end* of
``sys.meta_path`` answers bare imports (``import tasks`` in a gin file or a sibling
module) that nothing installed answers, so a user file called ``seqio.py`` cannot
shadow the library. Submodules load through a loader that records which seqio tasks each
file's own code registered, so a task is credited to the file that added it, not to the
sibling that imported that file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Dict, List, Set

from t5cli.errors import DuplicateNameError, PluginLoadError, T5CliError

PACKAGE_PREFIX = "t5cli_user_dir"


def package_name(directory: Path) -> str:
    """The deterministic package name for a resolved user directory."""
    resolved = str(Path(directory).resolve())
    slug = re.sub(r"\W", "_", Path(resolved).name)[:40] or "root"
    digest = hashlib.sha1(resolved.encode("utf-8")).hexdigest()[:10]
    return f"{PACKAGE_PREFIX}_{slug}_{digest}"


@dataclasses.dataclass
class LoadedModule:
    module: types.ModuleType
    path: Path
    seqio_tasks: List[str]  # names this file added to seqio's registries at import time


@dataclasses.dataclass
class UserDir:
    path: Path
    package: str
    modules: List[LoadedModule]


class _BareNameLoader(importlib.abc.Loader):
    """Makes ``import tasks`` return the user-dir module ``<package>.tasks``."""

    def __init__(self, real_name: str):
        self.real_name = real_name

    def create_module(self, spec):
        module = importlib.import_module(self.real_name)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its real name; the import system just overwrote its
        # __spec__ with the bare name's, so put the real one back.
        module.__spec__ = self.real_spec


class _UserDirFinder(importlib.abc.MetaPathFinder):
    """Consulted after every other finder: resolves bare names to loaded user dirs."""

    def __init__(self) -> None:
        self.dirs: Dict[Path, str] = {}

    def find_spec(self, fullname, path=None, target=None):
        if "." in fullname:
            return None
        for directory, package in self.dirs.items():
            if (directory / f"{fullname}.py").is_file() or (directory / fullname / "__init__.py").is_file():
                return importlib.util.spec_from_loader(fullname, _BareNameLoader(f"{package}.{fullname}"))
        return None


def _finder() -> _UserDirFinder:
    for finder in sys.meta_path:
        if isinstance(finder, _UserDirFinder):
            return finder
    finder = _UserDirFinder()
    sys.meta_path.append(finder)
    return finder


def _seqio_names() -> Set[str]:
    seqio = sys.modules.get("seqio")
    if seqio is None:
        return set()
    return set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())


#: user-dir module name -> seqio names its own top-level code added
_ADDED_BY_MODULE: Dict[str, List[str]] = {}
#: one set per user-dir module being executed: names added by modules it imported
_NESTED: List[Set[str]] = []


class _UserFileLoader(importlib.machinery.SourceFileLoader):
    """Records what each user-dir module adds to seqio, apart from the siblings it imports.

    A diff around each top-level file would credit ``z.py``'s tasks to ``a.py`` when
    ``a.py`` does ``from . import z``; diffing around every module execution does not.
    """

    def exec_module(self, module):
        before = _seqio_names()
        _NESTED.append(set())
        try:
            super().exec_module(module)
        finally:
            nested = _NESTED.pop()
            mine = _seqio_names() - before - nested
            _ADDED_BY_MODULE[module.__name__] = sorted(mine)
            if _NESTED:
                _NESTED[-1].update(mine | nested)


def _describe_import_error(exc: BaseException, file: Path) -> str:
    """``file:line: ErrorType: message`` pointing at the user's own line."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    directory = str(file.parent)
    mine = [f for f in frames if f.filename.startswith(directory)]
    frame = mine[-1] if mine else (frames[-1] if frames else None)
    where = f"{frame.filename}:{frame.lineno}" if frame else str(file)
    return f"{where}: {type(exc).__name__}: {exc}"


DUPLICATE_PROVIDER = "Attempting to register duplicate provider: "


def load_user_dir(directory, *, describe_owner=None) -> UserDir:
    """Import every top-level ``.py`` file of ``directory`` (once per process).

    The result lists each module with the seqio tasks it added at import time, so the
    caller can register its hooks and attribute module-level registrations to the file.
    ``describe_owner(task_name)`` names who already holds a task name that a file tries to
    add to seqio again, for the duplicate-name message.
    """
    path = Path(directory).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise T5CliError(f"user dir {str(directory)!r} {what}; pass an existing folder to --user-dir")
    path = path.resolve()
    package = package_name(path)
    existing = sys.modules.get(package)
    if existing is not None and getattr(existing, "__t5cli_user_dir__", None) is not None:
        return existing.__t5cli_user_dir__

    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    spec.submodule_search_locations = [str(path)]
    pkg = importlib.util.module_from_spec(spec)
    pkg.__path__ = [str(path)]
    pkg.__file__ = None
    sys.modules[package] = pkg
    _finder().dirs[path] = package
    # The package's submodules are found through this cache entry: .py files get our loader.
    m = importlib.machinery
    sys.path_importer_cache[str(path)] = m.FileFinder(
        str(path), (m.ExtensionFileLoader, m.EXTENSION_SUFFIXES),
        (_UserFileLoader, m.SOURCE_SUFFIXES), (m.SourcelessFileLoader, m.BYTECODE_SUFFIXES))

    result = UserDir(path=path, package=package, modules=[])
    for file in sorted(path.glob("*.py")):
        if file.name == "__init__.py":
            continue
        name = f"{package}.{file.stem}"
        try:
            module = sys.modules.get(name) or importlib.import_module(name)
        except T5CliError:
            raise
        except Exception as exc:  # the user's code: report file and line, not our stack
            _forget(package)
            if isinstance(exc, ValueError) and str(exc).startswith(DUPLICATE_PROVIDER):
                task = str(exc)[len(DUPLICATE_PROVIDER):]
                owner = (describe_owner(task) if describe_owner else None) or "another module"
                raise DuplicateNameError(
                    f"task {task!r} is registered twice: by {owner} and by "
                    f"{_describe_import_error(exc, file).split(': ')[0]}; rename one of them"
                ) from exc
            raise PluginLoadError(
                f"{_describe_import_error(exc, file)} (while loading user dir {path}; fix the file "
                f"or drop --user-dir)"
            ) from exc
        added = _ADDED_BY_MODULE.get(name, [])
        loaded = LoadedModule(module=module, path=file, seqio_tasks=added)
        result.modules.append(loaded)
    pkg.__t5cli_user_dir__ = result
    return result


def _forget(package: str) -> None:
    """Undo a failed load so a corrected directory can be loaded again in this process."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    finder = _finder()
    for directory, pkg in list(finder.dirs.items()):
        if pkg == package:
            del finder.dirs[directory]
            sys.path_importer_cache.pop(str(directory), None)
