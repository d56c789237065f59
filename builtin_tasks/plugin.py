"""Hook implementations of the built-in tasks plugin (no seqio import at module level)."""

from __future__ import annotations


from t5cli.plugins.hookspecs import hookimpl

from builtin_tasks import head_tasks, metrics, tasks


@hookimpl
def register_tasks(register):
    for name, factory in tasks.TASK_FACTORIES.items():
        register(name, factory)
    for name, factory in head_tasks.TASK_FACTORIES.items():
        register(name, factory)


@hookimpl
def register_metrics(register):
    register("sequence_accuracy", metrics.sequence_accuracy)
    register("bleu", metrics.bleu)
    register("chrf", metrics.chrf)


