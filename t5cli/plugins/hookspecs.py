"""The hooks a t5cli plugin can implement.

Every hook receives a ``register`` callback (or the click group) and returns nothing.
Hooks are called once per process, in load order: built-ins, then entry points
(group ``t5cli``), then user directories. Arguments are only ever added, never renamed,
so a plugin written today keeps working.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "t5cli"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_tasks(register):
    """Contribute seqio tasks and mixtures.

    Receives ``register(name, factory, *, override=False)``. ``factory`` is a callable
    taking no arguments and returning a ``seqio.Task`` or ``seqio.Mixture`` whose name is
    ``name``; it runs only when the task is first needed, so listing tasks does not import
    seqio. Called when the registry is built, before any command runs. Registering a name
    another origin registered is an error unless ``override=True``.
    """


@hookspec
def register_models(register):
    """Contribute model configurations.

    Receives ``register(name, factory, *, override=False)``. ``factory`` takes no
    arguments and returns a ``t5cli.models.configs.T5Config`` (or a subclass). Called when
    the registry is built; the factory runs when the model is first used.
    """


@hookspec
def register_partitioning_rules(register):
    """Contribute logical-axis partitioning rules.

    Receives ``register(logical_axis, mesh_axis, *, override=False)`` where
    ``mesh_axis`` is ``"data"``, ``"model"`` or ``None`` (replicated). Plugin rules take
    precedence over the built-in T5X-style rules. Called when the registry is built;
    the rules are read when a training or inference mesh is set up.
    """


@hookspec
def register_metrics(register):
    """Contribute evaluation metrics.

    Receives ``register(name, fn, *, override=False)``. ``fn(targets, predictions)``
    takes two equal-length lists (postprocessed targets and predictions) and returns a
    ``dict`` of metric name to float, as seqio metric functions do. ``t5 eval --metric NAME``
    adds it to the task's own metrics. Called when the registry is built.
    """


@hookspec
def register_commands(cli):
    """Add extra commands to the ``t5`` command line.

    Receives the root ``click.Group``; call ``cli.add_command(...)`` or decorate functions
    with ``@cli.command()``. Called once while the command line is built, before argument
    parsing of the subcommand. Keep imports of heavy libraries inside the command body.
    """
