"""Commands that describe the runtime: ``plugins``, ``tasks``, ``models``, ``paths``.

Only click is imported here; ``t5 plugins`` must not import JAX, TensorFlow or seqio.
"""

from __future__ import annotations

import json

import click


@click.command("plugins")
@click.pass_context
def plugins_command(ctx):
    """Print the loaded plugins as JSON: source, version, path, hooks, what each provides."""
    from t5cli.plugins import plugin_report

    click.echo(json.dumps(plugin_report(ctx.obj.runtime), indent=2))


@click.group("tasks", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def tasks_command(ctx, as_json):
    """List seqio tasks and mixtures with their origin; `t5 tasks show NAME` previews one."""
    if ctx.invoked_subcommand is not None:
        return
    _list_entries(ctx.obj.runtime.registry, "task", as_json)


@tasks_command.command("show")
@click.argument("name")
@click.option("--split", default="validation", show_default=True, help="Split to read.")
@click.option("-n", "--num-examples", default=3, show_default=True, help="How many examples.")
@click.option("--tfds-data-dir", "--tfds_data_dir", default=None, help="Local TFDS data dir.")
@click.pass_context
def show_task_command(ctx, name, split, num_examples, tfds_data_dir):
    """Print a few preprocessed examples of a task: text and token ids."""
    from t5cli.runtime.task_examples import format_examples, preview_examples

    examples = preview_examples(ctx.obj.runtime.registry, name, split=split, n=num_examples,
                                tfds_data_dir=tfds_data_dir)
    click.echo(format_examples(name, split, examples))


@click.command("models")
@click.option("--details", is_flag=True, help="Show dimensions and parameter counts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def models_command(ctx, details, as_json):
    """List registered model configurations with their origin."""
    registry = ctx.obj.runtime.registry
    if not details:
        _list_entries(registry, "model", as_json)
        return
    rows = []
    for entry in registry.entries("model"):
        cfg = registry.model(entry.name)
        rows.append({
            "name": entry.name, "origin": entry.origin.describe(),
            "vocab": cfg.vocab_size, "d_model": cfg.emb_dim, "heads": cfg.num_heads,
            "layers": f"{cfg.num_encoder_layers}/{cfg.num_decoder_layers}", "d_ff": cfg.mlp_dim,
            "params": cfg.param_count(),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("name", "params", "d_model", "d_ff", "heads", "layers", "vocab")
    table = [header] + [
        (r["name"], _human(r["params"]), str(r["d_model"]), str(r["d_ff"]), str(r["heads"]),
         r["layers"], str(r["vocab"])) for r in rows
    ]
    click.echo(_format_table(table))


@click.command("paths")
def paths_command():
    """Show the folders t5cli uses (platformdirs), the compilation cache's size, and the
    environment variables t5cli reads."""
    from t5cli.paths import describe_paths

    paths = describe_paths()
    width = max(map(len, paths))
    for key, value in paths.items():
        click.echo(f"{key:<{width}} {value}")


def _list_entries(registry, kind: str, as_json: bool) -> None:
    entries = list(registry.entries(kind))
    if as_json:
        click.echo(json.dumps([
            {"name": e.name, "plugin": e.origin.plugin, "source": e.origin.source, "path": e.origin.path}
            for e in entries
        ], indent=2))
        return
    if not entries:
        click.echo(f"no {kind}s registered")
        return
    table = [("name", "plugin", "source", "file")] + [
        (e.name, e.origin.plugin, e.origin.source, e.origin.path or "") for e in entries
    ]
    click.echo(_format_table(table))


def _format_table(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
