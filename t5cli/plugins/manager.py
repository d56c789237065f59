"""Plugin discovery: built-ins, then entry points (group ``t5cli``), then user directories.

``load_runtime()`` is the one factory: it builds a fresh pluggy manager and registry each
time (no module-level singleton), so tests and library callers build their own.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pluggy

from t5cli.plugins import hookspecs
from t5cli.errors import PluginLoadError, T5CliError
from t5cli.plugins.registry import Origin, Registry

ENTRY_POINT_GROUP = "t5cli"
#: comma-separated entry-point plugin names: load only these (built-ins always load)
ENV_LOAD_PLUGINS = "T5CLI_LOAD_PLUGINS"
#: os.pathsep-separated user directories, loaded after --user-dir ones
ENV_USER_DIR = "T5CLI_USER_DIR"
#: set to 1 to skip the default user folder from platformdirs
ENV_NO_DEFAULT_USER_DIR = "T5CLI_NO_DEFAULT_USER_DIR"

BUILTIN_PLUGINS = (
    ("builtin_tasks", "builtin_tasks.plugin"),
    ("builtin_models", "t5cli.models.plugin"),
)

# hook name -> registry kind, for the hooks that take a ``register`` callback
REGISTER_HOOKS = {
    "register_tasks": "task",
    "register_models": "model",
    "register_partitioning_rules": "partitioning_rule",
    "register_metrics": "metric",
}


@dataclasses.dataclass
class PluginInfo:
    """What ``t5 plugins`` reports for one plugin."""

    name: str
    source: str  # builtin / entrypoint / user-dir
    version: Optional[str] = None
    distribution: Optional[str] = None
    path: Optional[str] = None
    hooks: List[str] = dataclasses.field(default_factory=list)
    provides: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    error: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Runtime:
    """A loaded plugin manager, the registry it filled and what was loaded."""

    pm: pluggy.PluginManager
    registry: Registry
    plugins: List[PluginInfo]
    user_dirs: List[Path]

    def gin_search_paths(self) -> List[str]:
        """User directories, in load order, for gin's search path."""
        return [str(p) for p in self.user_dirs]

    def describe(self) -> Dict[str, Any]:
        """Plugins and user dirs of this runtime, as recorded in ``t5cli_run.json``."""
        from t5cli import __version__

        return {
            "t5cli_version": __version__,
            "plugins": [
                {k: p.as_dict()[k] for k in ("name", "source", "version", "distribution", "path")}
                for p in self.plugins
                if p.error is None
            ],
            "user_dirs": [str(p) for p in self.user_dirs],
        }


def default_user_dir() -> Path:
    """The folder loaded as a user dir when it exists: t5cli's user config dir itself."""
    import platformdirs

    return Path(platformdirs.user_config_dir("t5cli"))


def resolve_user_dirs(user_dirs: Iterable = (), *, include_env: bool = True,
                      include_default: bool = True) -> List[Path]:
    """Flag dirs, then ``$T5CLI_USER_DIR``, then the default folder; each once, resolved."""
    candidates: List[Path] = [Path(d).expanduser() for d in user_dirs]
    for d in candidates:
        if not d.is_dir():
            what = "is not a directory" if d.exists() else "does not exist"
            raise T5CliError(f"user dir {str(d)!r} {what}; pass an existing folder to --user-dir")
    if include_env:
        for part in os.environ.get(ENV_USER_DIR, "").split(os.pathsep):
            if part.strip():
                d = Path(part.strip()).expanduser()
                if not d.is_dir():
                    raise T5CliError(
                        f"user dir {part!r} from ${ENV_USER_DIR} does not exist; fix or unset the variable"
                    )
                candidates.append(d)
    if include_default and os.environ.get(ENV_NO_DEFAULT_USER_DIR, "") in ("", "0"):
        d = default_user_dir()
        if d.is_dir():
            candidates.append(d)
    out: List[Path] = []
    for d in candidates:
        r = d.resolve()
        if r not in out:
            out.append(r)
    return out


def user_dirs_have_code(user_dirs: Iterable = ()) -> bool:
    """Whether any user dir that will load holds a ``.py`` file."""
    return any(next(d.glob("*.py"), None) for d in resolve_user_dirs(user_dirs))


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _hooks_of(pm: pluggy.PluginManager, plugin: Any) -> List[str]:
    return sorted(c.name for c in (pm.get_hookcallers(plugin) or []))


def _source_file(obj: Any) -> Optional[str]:
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


def _collect(pm: pluggy.PluginManager, registry: Registry, plugin: Any, info: PluginInfo) -> None:
    """Call each register hook of one plugin with callbacks that record its origin."""
    for caller in pm.get_hookcallers(plugin) or []:
        kind = REGISTER_HOOKS.get(caller.name)
        if kind is None:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            path = _source_file(impl.function) or info.path
            origin = Origin(plugin=info.name, source=info.source, path=path)
            try:
                impl.function(register=registry.registrar(kind, origin))
            except T5CliError:
                raise
            except Exception as exc:
                if info.source != "user-dir":  # an installed plugin's failure: the caller decides
                    raise
                from t5cli.plugins.user_dir import _describe_import_error

                raise PluginLoadError(
                    f"{_describe_import_error(exc, Path(path))} (in hook {caller.name} of "
                    f"user-dir plugin {info.name!r}; fix the file or drop --user-dir)"
                ) from exc
    info.provides = registry.provided_by(info.name)


def _check_pending(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
        raise PluginLoadError(f"{exc} (known hooks: {known}; check the spelling)") from None


def load_runtime(user_dirs: Sequence = (), *, blocked: Sequence[str] = (), strict: bool = False,
                 load_entrypoints: bool = True, include_env: bool = True,
                 include_default_user_dir: bool = True) -> Runtime:
    """Build a fresh plugin manager and registry.

    ``blocked`` lists plugin names not to load (``-p no:NAME``). A broken installed plugin
    warns and is skipped unless ``strict``; a broken user-dir file always raises.
    """
    pm = _new_manager()
    registry = Registry()
    infos: List[PluginInfo] = []
    blocked = set(blocked)
    for name in blocked:
        pm.set_blocked(name)

    for name, module_name in BUILTIN_PLUGINS:
        if name in blocked:
            continue
        module = importlib.import_module(module_name)
        info = PluginInfo(name=name, source="builtin", path=_source_file(module),
                          version=_own_version())
        pm.register(module, name=name)
        info.hooks = _hooks_of(pm, module)
        _collect(pm, registry, module, info)
        infos.append(info)

    if load_entrypoints:
        for info in _load_entrypoints(pm, registry, blocked, strict):
            infos.append(info)

    dirs = resolve_user_dirs(user_dirs, include_env=include_env,
                             include_default=include_default_user_dir)
    for directory in dirs:
        infos.extend(_load_one_user_dir(pm, registry, directory, blocked))

    _check_pending(pm)
    return Runtime(pm=pm, registry=registry, plugins=infos, user_dirs=dirs)


def _own_version() -> str:
    from t5cli import __version__

    return __version__


def _load_entrypoints(pm, registry: Registry, blocked: set, strict: bool) -> List[PluginInfo]:
    only = {n.strip() for n in os.environ.get(ENV_LOAD_PLUGINS, "").split(",") if n.strip()}
    infos = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in blocked or (only and ep.name not in only) or pm.has_plugin(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        info = PluginInfo(name=ep.name, source="entrypoint",
                          distribution=dist.name if dist else None,
                          version=dist.version if dist else None)
        try:
            plugin = ep.load()
            info.path = _source_file(plugin)
            pm.register(plugin, name=ep.name)
            info.hooks = _hooks_of(pm, plugin)
            _collect(pm, registry, plugin, info)
        except T5CliError:
            raise
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            message = (
                f"plugin {ep.name!r} from distribution {info.distribution or '?'} "
                f"{info.version or ''} failed to load: {info.error}"
            )
            if strict:
                raise PluginLoadError(message + " (--strict-plugins is set)") from exc
            warnings.warn(message + f"; skipped (uninstall it, or block it with -p no:{ep.name})",
                          PluginWarning, stacklevel=2)
        infos.append(info)
    return infos


class PluginWarning(UserWarning):
    """A plugin that failed to load and was skipped."""


def _load_one_user_dir(pm, registry: Registry, directory: Path, blocked: set) -> List[PluginInfo]:
    from t5cli.plugins.user_dir import load_user_dir

    infos: List[PluginInfo] = []
    def describe_owner(task: str):
        return registry.origin("task", task).describe() if ("task", task) in registry else None

    for loaded in load_user_dir(directory, describe_owner=describe_owner).modules:
        name = f"{directory.name}/{loaded.path.name}"
        if name in blocked:
            continue
        info = PluginInfo(name=name, source="user-dir", path=str(loaded.path))
        origin = Origin(plugin=name, source="user-dir", path=str(loaded.path))
        for task in loaded.seqio_tasks:
            registry.add("task", task, None, origin)
        if not pm.is_registered(loaded.module):
            pm.register(loaded.module, name=name)
        info.hooks = _hooks_of(pm, loaded.module)
        _collect(pm, registry, loaded.module, info)
        infos.append(info)
    return infos


def plugin_report(runtime: Runtime) -> List[Dict[str, Any]]:
    """The JSON-able list ``t5 plugins`` prints."""
    return [p.as_dict() for p in runtime.plugins]
