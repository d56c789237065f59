"""What plugins contributed: tasks, models, partitioning rules and metrics, each with its origin.

The registry stores factories, not objects, so listing names imports nothing heavy.
Tasks are joined into seqio's registries the first time they are asked for.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from t5cli.errors import DuplicateNameError, PluginLoadError, T5CliError, UnknownNameError

KINDS = ("task", "model", "partitioning_rule", "metric")


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where an item came from: the plugin's name, its source kind and the file."""

    plugin: str
    source: str  # "builtin", "entrypoint" or "user-dir"
    path: Optional[str] = None

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.source} plugin {self.plugin!r}{where}"


@dataclasses.dataclass
class Entry:
    name: str
    value: Any  # a factory for tasks and models, the function for metrics, mesh axis for rules
    origin: Origin


class Registry:
    """Names of each kind, mapped to their value and origin."""

    def __init__(self) -> None:
        self._entries: Dict[str, Dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._materialized_tasks: set = set()
        #: hints for names that are unknown now, e.g. "pass --user-dir X" (filled by run records)
        self.hints: Dict[Tuple[str, str], str] = {}

    # --- adding -------------------------------------------------------------------------
    def add(self, kind: str, name: str, value: Any, origin: Origin, override: bool = False) -> None:
        """Add one item; a name another origin already holds is an error unless ``override``."""
        if kind not in self._entries:  # t5cli's own bug: kinds come from the hook table
            raise ValueError(f"unknown registry kind {kind!r}; expected one of {KINDS}")
        if not isinstance(name, str) or not name:
            raise PluginLoadError(
                f"{origin.describe()} registered a {_kind_words(kind)} named {name!r}; "
                f"the name must be a non-empty string"
            )
        table = self._entries[kind]
        old = table.get(name)
        if old is not None and not override:
            raise DuplicateNameError(
                f"{_kind_words(kind)} {name!r} is registered twice: by {old.origin.describe()} "
                f"and by {origin.describe()}; rename one, or pass override=True to replace it on purpose"
            )
        table[name] = Entry(name, value, origin)
        if kind == "task":
            self._materialized_tasks.discard(name)

    def registrar(self, kind: str, origin: Origin) -> Callable[..., None]:
        """The ``register`` callback handed to one plugin's hook for ``kind``.

        Mistakes in the call (a missing or extra argument, a value of the wrong kind) are
        ``PluginLoadError``s that name the plugin, its file and the expected call.
        """
        arg_names = _ARG_NAMES[kind]
        usage = f"register({', '.join(arg_names)}, *, override=False)"

        def register(*args, override: bool = False, **kwargs) -> None:
            values = list(args)
            for key in arg_names[len(values):]:  # the documented names work as keywords too
                if key not in kwargs:
                    break
                values.append(kwargs.pop(key))
            if len(values) != 2 or kwargs:
                extra = f" and the keyword(s) {', '.join(sorted(kwargs))}" if kwargs else ""
                raise PluginLoadError(
                    f"{origin.describe()} called its {_kind_words(kind)} register callback with "
                    f"{len(values)} argument(s){extra}; call {usage}"
                )
            name, value = values
            # Attribute the item to the file that defines it when we can tell.
            where = _defining_file(value) or origin.path
            item_origin = dataclasses.replace(origin, path=where) if where != origin.path else origin
            problem = _check_value(kind, value)
            if problem:
                raise PluginLoadError(
                    f"{item_origin.describe()} registered {_kind_words(kind)} {name!r} as "
                    f"{_short_repr(value)}: {problem} ({usage})"
                )
            self.add(kind, name, value, item_origin, override=override)

        register.__doc__ = f"Register a {_kind_words(kind)} from {origin.describe()}: {usage}."
        return register

    # --- reading ------------------------------------------------------------------------
    def names(self, kind: str) -> List[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> Iterator[Entry]:
        for name in self.names(kind):
            yield self._entries[kind][name]

    def __contains__(self, item: Tuple[str, str]) -> bool:
        kind, name = item
        return name in self._entries[kind]

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[kind][name]
        except KeyError:
            known = list(self._entries[kind])
            if kind == "task":
                known += _seqio_names_if_loaded()
            raise UnknownNameError(kind, name, known, self.hints.get((kind, name), "")) from None

    def origin(self, kind: str, name: str) -> Origin:
        return self.entry(kind, name).origin

    def provided_by(self, plugin: str) -> Dict[str, List[str]]:
        """Names each kind received from ``plugin``."""
        out: Dict[str, List[str]] = {}
        for kind, table in self._entries.items():
            names = sorted(n for n, e in table.items() if e.origin.plugin == plugin)
            if names:
                out[kind + "s"] = names
        return out

    # --- typed accessors ----------------------------------------------------------------
    def task(self, name: str):
        """The seqio Task or Mixture called ``name``, joined into seqio's registries."""
        from t5cli.quiet import import_tensorflow_quietly

        import_tensorflow_quietly()  # seqio imports TensorFlow, whose start-up is chatty
        import seqio

        self.entry("task", name)  # unknown names fail here, with close matches
        # A mixture's factory looks its member tasks up in seqio, so join every task first.
        self.materialize_all_tasks()
        if name in seqio.MixtureRegistry.names():
            return seqio.get_mixture_or_task(name)
        return seqio.TaskRegistry.get(name)

    def _materialize(self, entry: Entry) -> None:
        import seqio

        if entry.value is None:  # registered straight into seqio by a user-dir module
            self._materialized_tasks.add(entry.name)
            return
        try:
            provider = entry.value()
        except T5CliError:
            raise
        except Exception as exc:
            raise PluginLoadError(
                f"{entry.origin.describe()} failed to build task {entry.name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if provider is None:  # the factory added it to seqio itself
            pass
        elif isinstance(provider, (seqio.Task, seqio.Mixture)):
            if provider.name != entry.name:
                raise PluginLoadError(
                    f"{entry.origin.describe()} registered task {entry.name!r} but its factory "
                    f"built one named {provider.name!r}; give both the same name"
                )
            registry = seqio.MixtureRegistry if isinstance(provider, seqio.Mixture) else seqio.TaskRegistry
            registry.remove(entry.name)
            registry.add_provider(entry.name, provider)
        else:
            raise PluginLoadError(
                f"{entry.origin.describe()}: the factory for task {entry.name!r} returned "
                f"{type(provider).__name__}, not a seqio.Task or seqio.Mixture; return the task "
                f"(or add it to seqio yourself and return None)"
            )
        self._materialized_tasks.add(entry.name)

    def materialize_all_tasks(self) -> None:
        """Build every registered task (mixtures need their member tasks in seqio)."""
        for entry in self.entries("task"):
            if entry.name not in self._materialized_tasks:
                self._materialize(entry)

    def model(self, name: str):
        """The model configuration called ``name``."""
        from t5cli.models.configs import T5Config

        entry = self.entry("model", name)
        if not callable(entry.value):
            return entry.value
        try:
            config = entry.value()
        except T5CliError:
            raise
        except Exception as exc:
            raise PluginLoadError(
                f"{entry.origin.describe()} failed to build model {name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(config, T5Config):
            raise PluginLoadError(
                f"{entry.origin.describe()}: the factory for model {name!r} returned "
                f"{type(config).__name__}, not a t5cli.models.configs.T5Config; return a config "
                f"(e.g. get_config('t5_1_1_small').replace(...))"
            )
        return config

    def metric(self, name: str) -> Callable:
        return self.entry("metric", name).value

    def partitioning_rules(self) -> List[Tuple[str, Optional[str]]]:
        """Plugin rules as (logical axis, mesh axis) pairs, in name order."""
        return [(e.name, e.value) for e in self.entries("partitioning_rule")]


#: the names of each kind's two ``register`` arguments, as the hook specs document them
_ARG_NAMES = {"task": ("name", "factory"), "model": ("name", "factory"),
              "partitioning_rule": ("logical_axis", "mesh_axis"), "metric": ("name", "fn")}
#: mesh axes a partitioning rule may name (``t5cli.runtime.partitioning`` builds this mesh)
MESH_AXES = ("data", "model")


def _kind_words(kind: str) -> str:
    return kind.replace("_", " ")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_value(kind: str, value: Any) -> str:
    """What a ``kind`` must be, when ``value`` is not that ('' when it can be registered)."""
    if kind == "partitioning_rule":
        if value is None or (isinstance(value, str) and value in MESH_AXES):
            return ""
        return "expected the mesh axis 'data' or 'model', or None (replicated)"
    if callable(value):
        return ""
    if kind == "model":
        from t5cli.models.configs import T5Config

        if isinstance(value, T5Config):
            return ""
        return "expected a function that returns a t5cli.models.configs.T5Config"
    if kind == "task":
        return ("expected a function that takes no arguments and returns the seqio.Task "
                "or seqio.Mixture")
    return "expected a function fn(targets, predictions) that returns a dict of floats"


def _defining_file(value: Any) -> Optional[str]:
    import inspect

    if not (inspect.isfunction(value) or inspect.isclass(value)) or value.__name__ == "<lambda>":
        return None
    try:
        return inspect.getsourcefile(value)
    except TypeError:
        return None


def _seqio_names_if_loaded() -> List[str]:
    import sys

    seqio = sys.modules.get("seqio")
    if seqio is None:
        return []
    return list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
