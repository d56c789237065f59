"""``t5 eval``: inference evaluation of a checkpoint (see :mod:`t5cli.runtime.evaluate`).

Only click is imported at module level; ``t5 --help`` must not import JAX or TensorFlow.
The helpers here (shared options, gin wiring) are reused by ``t5 infer`` and ``t5 export``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import click

from t5cli.commands.distributed_options import distributed_options


def _runtime(ctx):
    obj = ctx.find_root().obj
    if obj is not None and hasattr(obj, "runtime"):
        return obj.runtime
    from t5cli.plugins import load_runtime

    return load_runtime()


def gin_options(f):
    """``--gin-file``, ``--gin``, ``--gin-search-path`` (T5X spellings too)."""
    f = click.option("--gin-search-path", "--gin_search_paths", "gin_search_paths", multiple=True,
                     metavar="DIRS", help="Folder(s) to look for gin files in (repeatable).")(f)
    f = click.option("--gin", "gin_bindings", multiple=True, metavar="NAME=VALUE",
                     help="gin binding, e.g. --gin BATCH_SIZE=8 (T5X's --gin.NAME=VALUE works too).")(f)
    f = click.option("--gin-file", "--gin_file", "gin_files", multiple=True, metavar="FILE",
                     help="gin file to parse (repeatable).")(f)
    return f


def checkpoint_options(f):
    """Where the model comes from: ``--checkpoint``, ``--model-dir``, ``--model``, ``--step``."""
    f = click.option("--step", type=int, default=None,
                     help="Checkpoint step to load from a MODEL_DIR (default: the latest).")(f)
    f = click.option("--model", default=None,
                     help="Model name (default: the one recorded in the checkpoint's MODEL_DIR).")(f)
    f = click.option("--model-dir", "--model_dir", "model_dir", default=None, metavar="DIR",
                     help="MODEL_DIR: the checkpoint to load when --checkpoint is not given, "
                          "and where results go.")(f)
    f = click.option("--checkpoint", "--checkpoint_path", "checkpoint", default=None, metavar="PATH",
                     help="A MODEL_DIR (latest step), a checkpoint_<N> directory, a Hugging "
                          "Face directory, a T5X checkpoint or a Mesh-TF model.ckpt-N "
                          "(CHECKPOINT_PATH).")(f)
    return f


def data_options(f):
    """``--task``, ``--split``, ``--feature-lengths``, ``--batch-size``, ``--tfds-data-dir``."""
    f = click.option("--num-examples", "--num_examples", "num_examples", type=int, default=None,
                     help="Only the first N examples of the split.")(f)
    f = click.option("--tfds-data-dir", "--tfds_data_dir", default=None, metavar="DIR",
                     help="Folder with prepared TFDS datasets (default: $TFDS_DATA_DIR).")(f)
    f = click.option("--batch-size", "--batch_size", "batch_size", type=int, default=None,
                     help="Examples per batch (BATCH_SIZE, default 32).")(f)
    f = click.option("--feature-lengths", "--feature_lengths", "feature_lengths", default=None,
                     metavar="inputs=N,targets=N",
                     help="TASK_FEATURE_LENGTHS (default: the longest example of the split).")(f)
    f = click.option("--split", default=None, help="Split to use (MIXTURE_OR_TASK_SPLIT, default test).")(f)
    f = click.option("--task", default=None,
                     help="seqio task or mixture (default: the one the model was trained on).")(f)
    return f


def cache_options(f):
    """``--use-cached-tasks`` and ``--cache-dir`` (seqio's preprocessed caches, `t5 cache-tasks`)."""
    f = click.option("--cache-dir", "--seqio_additional_cache_dirs", "cache_dirs", multiple=True,
                     metavar="DIR", help="Folder made by `t5 cache-tasks` to look for cached tasks "
                                         "in (repeatable or comma-separated).")(f)
    f = click.option("--use-cached-tasks", "--use_cached_tasks", "use_cached_tasks", is_flag=True,
                     help="Read the task from its seqio cache (USE_CACHED_TASKS = True).")(f)
    return f


def use_cache_dirs(cache_dirs) -> None:
    """Join ``--cache-dir`` folders and the default task cache to seqio's search list."""
    from t5cli.runtime.task_cache import add_cache_dirs

    add_cache_dirs(cache_dirs)


def decode_options(f):
    """``--beam-size``, ``--temperature``, ``--top-k``, ``--top-p``, ``--seed``."""
    f = click.option("--seed", type=int, default=None, help="Random seed for sampling.")(f)
    f = click.option("--top-p", "--top_p", "top_p", type=float, default=None,
                     help="Nucleus sampling: keep the smallest set of tokens with this much mass.")(f)
    f = click.option("--top-k", "--top_k", "top_k", type=int, default=None,
                     help="Sample among the K most likely tokens.")(f)
    f = click.option("--temperature", type=float, default=None,
                     help="Sample at this temperature (default: greedy decoding).")(f)
    f = click.option("--alpha", type=float, default=None, help="Beam search brevity penalty (0.6).")(f)
    f = click.option("--beam-size", "--beam_size", "beam_size", type=int, default=None,
                     help="Beam search with N beams (default 1: greedy).")(f)
    return f


def _is_bound(name: str) -> bool:
    import gin

    try:
        gin.query_parameter(name)
        return True
    except ValueError:
        return False


def run_configured(ctx, name: str, *, run_file: Optional[str], gin_files: Sequence[str],
                   gin_bindings: Sequence[str], gin_search_paths: Sequence[str],
                   shortcuts: Sequence[str] = (), model: Optional[str] = None,
                   macros: Mapping[str, str] = (), explicit: Mapping[str, Any] = ()) -> Any:
    """Parse gin, then call the library function ``name``.

    Precedence: flags given on the command line (``explicit``) > ``name.param`` gin
    bindings > gin macros (``macros`` maps parameters to macro names, e.g.
    ``{"batch_size": "BATCH_SIZE"}``) > the function's defaults.
    """
    from t5cli import config

    runtime = _runtime(ctx)
    base = [run_file] if run_file else []
    model_file = config.model_gin_file(model)
    if model_file:
        base.append(model_file)
    # Parsed but not finalized: the run files mark MIXTURE_OR_TASK_NAME, CHECKPOINT_PATH …
    # %gin.REQUIRED, yet here they default to what the checkpoint's run record says.
    config.parse_gin(base_files=base, gin_files=gin_files, bindings=gin_bindings,
                     search_paths=gin_search_paths, shortcuts=shortcuts,
                     user_dirs=runtime.gin_search_paths())
    script = config.t5x_script(name)
    if script is not None:  # T5X's gin files: eval_script.evaluate / infer_script.infer
        return config.call(script, runtime=runtime,
                           explicit={k: v for k, v in dict(explicit).items() if v is not None})
    kwargs: Dict[str, Any] = {}
    for param, macro in dict(macros).items():
        if _is_bound(f"{name}.{param}"):
            continue
        value = config.macro_value(macro, None)
        if value is not None and not config.is_required_marker(value):
            kwargs[param] = value
    kwargs.update({k: v for k, v in dict(explicit).items() if v is not None})
    return config.call(name, runtime=runtime, **kwargs)


def shortcut_bindings(*, task=None, model=None, model_dir=None, batch_size=None,
                      feature_lengths=None, checkpoint=None, split=None, output_dir=None,
                      output_macro: str = "EVAL_OUTPUT_DIR"):
    """Macro bindings for the flags given (so gin files can refer to them)."""
    import os

    from t5cli import config

    out = config.shortcut_bindings(task=task, model=model, model_dir=model_dir,
                                   batch_size=batch_size, feature_lengths=feature_lengths)
    if checkpoint is not None:
        out.append(f"CHECKPOINT_PATH = {os.path.abspath(os.path.expanduser(checkpoint))!r}")
    if split is not None:
        out.append(f"MIXTURE_OR_TASK_SPLIT = {split!r}")
    if output_dir is not None:
        out.append(f"{output_macro} = {os.path.abspath(os.path.expanduser(output_dir))!r}")
    return out


COMMON_MACROS = {
    "checkpoint_path": "CHECKPOINT_PATH",
    "model_dir": "MODEL_DIR",
    "mixture_or_task_name": "MIXTURE_OR_TASK_NAME",
    "split": "MIXTURE_OR_TASK_SPLIT",
    "task_feature_lengths": "TASK_FEATURE_LENGTHS",
    "batch_size": "BATCH_SIZE",
    "model_name": "MODEL_NAME",
    "use_cached_tasks": "USE_CACHED_TASKS",
}


def parse_lengths(text: Optional[str]):
    if text is None:
        return None
    from t5cli.runtime.data import parse_feature_lengths

    return parse_feature_lengths(text)


@click.command("eval")
@checkpoint_options
@data_options
@decode_options
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Also compute this registered metric (repeatable; see `t5 plugins`).")
@click.option("--output-dir", "--output_dir", "output_dir", default=None, metavar="DIR",
              help="Where results go (EVAL_OUTPUT_DIR; default MODEL_DIR/inference_eval).")
@cache_options
@gin_options
@distributed_options
@click.pass_context
def command(ctx, checkpoint, model_dir, model, step, task, split, feature_lengths, batch_size,
            tfds_data_dir, num_examples, beam_size, alpha, temperature, top_k, top_p, seed,
            metrics, output_dir, use_cached_tasks, cache_dirs, gin_files, gin_bindings,
            gin_search_paths):
    """Evaluate a checkpoint on a task split with seqio's metrics.

    Writes TensorBoard summaries to OUTPUT_DIR/<task>/ (read them with `t5 parse-metrics
    OUTPUT_DIR --seqio-summaries`), OUTPUT_DIR/<task>-metrics.jsonl and the predictions
    as OUTPUT_DIR/<task>-<step>.jsonl. The task and model default to the ones the
    checkpoint was trained with.

    \b
    t5 eval --checkpoint /tmp/m --split test
    t5 eval --checkpoint /tmp/m/checkpoint_2000 --beam-size 4 --metric bleu
    """
    from t5cli.runtime.evaluate import format_metrics
    from t5cli.runtime.task_cache import explain_missing_cache

    use_cache_dirs(cache_dirs)
    with explain_missing_cache():
        result = run_configured(
            ctx, "evaluate", run_file="runs/eval.gin", gin_files=gin_files, gin_bindings=gin_bindings,
            gin_search_paths=gin_search_paths, model=model,
            shortcuts=shortcut_bindings(task=task, model=model, model_dir=model_dir,
                                        batch_size=batch_size, feature_lengths=feature_lengths,
                                        checkpoint=checkpoint, split=split, output_dir=output_dir),
            macros=dict(COMMON_MACROS, output_dir="EVAL_OUTPUT_DIR"),
            explicit=dict(checkpoint_path=checkpoint, model_dir=model_dir, model_name=model, step=step,
                          mixture_or_task_name=task, split=split,
                          task_feature_lengths=parse_lengths(feature_lengths), batch_size=batch_size,
                          tfds_data_dir=tfds_data_dir, num_examples=num_examples,
                          beam_size=beam_size, alpha=alpha, temperature=temperature, top_k=top_k,
                          top_p=top_p, seed=seed, metrics=tuple(metrics) or None,
                          output_dir=output_dir, use_cached_tasks=use_cached_tasks or None))
    click.echo(format_metrics(result.metrics))
    click.echo(f"step {result.step}; results in {result.output_dir}")
