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
        if kind not in self._entries:
            raise ValueError(f"unknown registry kind {kind!r}")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{origin.describe()} registered a {kind} with a bad name: {name!r}")
        table = self._entries[kind]
        old = table.get(name)
        if old is not None and not override:
            raise DuplicateNameError(
                f"{kind.replace('_', ' ')} {name!r} is registered twice: by {old.origin.describe()} "
                f"and by {origin.describe()}; rename one, or pass override=True to replace it on purpose"
            )
        table[name] = Entry(name, value, origin)
        if kind == "task":
            self._materialized_tasks.discard(name)

    def registrar(self, kind: str, origin: Origin) -> Callable[..., None]:
        """The ``register`` callback handed to one plugin's hook for ``kind``."""

        def register(name, value, *, override: bool = False) -> None:
            # Attribute the item to the file that defines it when we can tell.
            where = _defining_file(value) or origin.path
            item_origin = dataclasses.replace(origin, path=where) if where != origin.path else origin
            self.add(kind, name, value, item_origin, override=override)

        register.__doc__ = f"Register a {kind} from {origin.describe()}."
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
                raise ValueError(
                    f"{entry.origin.describe()} registered task {entry.name!r} but its factory "
                    f"built {provider.name!r}"
                )
            registry = seqio.MixtureRegistry if isinstance(provider, seqio.Mixture) else seqio.TaskRegistry
            registry.remove(entry.name)
            registry.add_provider(entry.name, provider)
        else:
            raise TypeError(
                f"{entry.origin.describe()}: the factory for task {entry.name!r} returned "
                f"{type(provider).__name__}, not a seqio.Task or seqio.Mixture"
            )
        self._materialized_tasks.add(entry.name)

    def materialize_all_tasks(self) -> None:
        """Build every registered task (mixtures need their member tasks in seqio)."""
        for entry in self.entries("task"):
            if entry.name not in self._materialized_tasks:
                self._materialize(entry)

    def model(self, name: str):
        """The model configuration called ``name``."""
        entry = self.entry("model", name)
        return entry.value() if callable(entry.value) else entry.value

    def metric(self, name: str) -> Callable:
        return self.entry("metric", name).value

    def partitioning_rules(self) -> List[Tuple[str, Optional[str]]]:
        """Plugin rules as (logical axis, mesh axis) pairs, in name order."""
        return [(e.name, e.value) for e in self.entries("partitioning_rule")]


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
