"""``t5 cache-tasks``: preprocess tasks into seqio's cache with Apache Beam
(see :mod:`t5cli.runtime.task_cache`).

Only click is imported at module level; apache-beam is an optional extra.
"""

from __future__ import annotations

import click


def _app(ctx):
    obj = ctx.find_root().obj
    return obj if obj is not None and hasattr(obj, "runtime") else None


@click.command("cache-tasks")
@click.option("--task", "tasks", multiple=True, required=True, metavar="NAME",
              help="Task or mixture to cache (repeatable; a mixture caches its tasks).")
@click.option("--output-cache-dir", "--output_cache_dir", "output_cache_dir", default=None,
              metavar="DIR", help="Where the cache goes (default: the task cache of `t5 paths`, "
                                  "$T5CLI_TASK_CACHE_DIR).")
@click.option("--min-shards", "--min_shards", "min_shards", type=int, default=64, show_default=True,
              help="At least this many TFRecord files per split (more shuffle better on read).")
@click.option("--max-shards", "--max_shards", "max_shards", type=int, default=0,
              help="At most this many files per split (0: no limit).")
@click.option("--overwrite", is_flag=True, help="Build a task again even if DIR already has it.")
@click.option("--tfds-data-dir", "--tfds_data_dir", default=None, metavar="DIR",
              help="Folder with prepared TFDS datasets (default: $TFDS_DATA_DIR).")
@click.option("--base-seed", "--base_seed", "base_seed", type=int, default=None,
              help="Seed for random preprocessors before the cache placeholder (as seqio's).")
@click.argument("beam_options", nargs=-1, type=click.UNPROCESSED, metavar="[-- BEAM_OPTIONS...]")
@click.pass_context
def command(ctx, tasks, output_cache_dir, min_shards, max_shards, overwrite, tfds_data_dir,
            base_seed, beam_options):
    """Preprocess tasks up to their CacheDatasetPlaceholder with seqio's Beam pipeline.

    Writes seqio's cache layout (TFRecords, info.*.json, stats.*.json, COMPLETED) under
    DIR/<task>/; train from it with `t5 train --use-cached-tasks --cache-dir DIR`.
    Beam pipeline options go after `--` (default: --runner=DirectRunner).

    \b
    t5 cache-tasks --task number_words_en_de --output-cache-dir /data/cache
    t5 --user-dir examples/user_dir cache-tasks --task toy_ende --output-cache-dir /data/cache \\
        -- --direct_num_workers=2 --direct_running_mode=multi_processing
    """
    from t5cli.runtime.task_cache import cache_tasks, import_beam

    app = _app(ctx)
    verbose = app is not None and app.options.verbose
    import_beam(quiet=not verbose)  # a missing extra is one line, before any other work
    runtime = app.runtime if app is not None else None
    blocked = list(app.options.blocked) if app is not None else []
    results = cache_tasks(list(tasks), output_cache_dir, runtime=runtime, blocked=blocked,
                          min_shards=min_shards, max_shards=max_shards,
                          beam_options=list(beam_options), overwrite=overwrite,
                          tfds_data_dir=tfds_data_dir, base_seed=base_seed, verbose=verbose)
    for result in results:
        click.echo(result.describe())
    ran = [r for r in results if not r.skipped]
    if ran:
        click.echo(f"Beam pipeline: {ran[0].seconds:.1f} s")
    user_dirs = "".join(f" --user-dir {d}" for d in (runtime.user_dirs if runtime else []))
    cache_dir = f" --cache-dir {output_cache_dir}" if output_cache_dir else ""
    click.echo(f"train from it: t5{user_dirs} train --use-cached-tasks{cache_dir} "
               f"--task {tasks[0]} ...")
