"""``t5 train`` and its alias ``t5 finetune``: gin config → :func:`t5cli.runtime.train.train`.

The same click command serves both names; the name it was invoked under picks the run
defaults: ``runs/pretrain.gin`` for ``train``, ``runs/finetune.gin`` for ``finetune``.
The plugin runtime comes from ``ctx.obj.runtime`` (the CLI's ``App``); without one (a
bare click invocation) a fresh ``t5cli.plugins.load_runtime()`` is built.

Only click is imported at module level: ``t5 --help`` must not import JAX or TensorFlow.
"""

from __future__ import annotations

import click

from t5cli.commands.distributed_options import distributed_options, precompile_options

RUN_FILES = {"train": "runs/pretrain.gin", "finetune": "runs/finetune.gin"}
#: ``--head`` choices (t5cli.runtime.head_data.HEAD_NAMES, without importing it)
HEADS = ("sequence_classification", "token_classification", "question_answering")
REQUIRED = ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "MODEL_NAME")
#: with T5X's gin files (``train_script.train``): the model comes from MODEL in the model file
T5X_REQUIRED = ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS")


def _runtime(ctx):
    obj = ctx.find_root().obj
    if obj is not None and hasattr(obj, "runtime"):
        return obj.runtime
    from t5cli.plugins import load_runtime

    return load_runtime()


@click.command("train")
@click.option("--gin-file", "--gin_file", "gin_files", multiple=True, metavar="FILE",
              help="gin file to parse (repeatable; searched in the gin search path).")
@click.option("--gin", "gin_bindings", multiple=True, metavar="NAME=VALUE",
              help="gin binding, e.g. --gin TRAIN_STEPS=1000 (T5X's --gin.NAME=VALUE works too).")
@click.option("--gin-search-path", "--gin_search_paths", "gin_search_paths", multiple=True,
              metavar="DIRS", help="Folder(s) to look for gin files in (repeatable, comma-separated).")
@click.option("--tfds-data-dir", "--tfds_data_dir", default=None, metavar="DIR",
              help="Folder with prepared TFDS datasets (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")
@click.option("--task", default=None, help="seqio task or mixture (MIXTURE_OR_TASK_NAME).")
@click.option("--model", default=None, help="Model name, see `t5 models` (MODEL_NAME).")
@click.option("--model-dir", "--model_dir", "model_dir", default=None, metavar="DIR",
              help="Where checkpoints and logs go; an existing run there is resumed (MODEL_DIR).")
@click.option("--steps", type=int, default=None,
              help="TRAIN_STEPS: total steps, counted from the initial checkpoint's step as in T5X.")
@click.option("--batch-size", "--batch_size", "batch_size", type=int, default=None,
              help="Global batch size (BATCH_SIZE).")
@click.option("--init-checkpoint", "--init_checkpoint", "init_checkpoint", default=None, metavar="PATH",
              help="Start from these parameters: a t5cli MODEL_DIR or checkpoint_<N>, an HF "
                   "directory, a T5X checkpoint_<N> or a Mesh-TF model.ckpt-N "
                   "(INITIAL_CHECKPOINT_PATH).")
@click.option("--restore-optimizer-state", "--restore_optimizer_state", "restore_optimizer_state",
              is_flag=True, default=None,
              help="Also take the optimizer state from --init-checkpoint (T5X's default): this "
                   "tool's saved state, or a T5X / Mesh-TF checkpoint's Adafactor slots.")
@click.option("--feature-lengths", "--feature_lengths", "feature_lengths", default=None,
              metavar="inputs=N,targets=N", help="TASK_FEATURE_LENGTHS.")
@click.option("--seed", type=int, default=None, help="Random seed for init, dropout and data order (RANDOM_SEED).")
@click.option("--dtype", "--activation-dtype", "--activation_dtype", "dtype", default=None,
              type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Activation dtype (ACTIVATION_DTYPE, default float32); parameters stay float32. "
                   "bfloat16 is T5X's usual setting and ~1.4x faster on a CPU with AVX-512 BF16.")
@click.option("--use-cached-tasks", "--use_cached_tasks", "use_cached_tasks", is_flag=True,
              help="Read the task from its seqio cache, made by `t5 cache-tasks` (USE_CACHED_TASKS).")
@click.option("--cache-dir", "--seqio_additional_cache_dirs", "cache_dirs", multiple=True,
              metavar="DIR", help="Folder made by `t5 cache-tasks` to look for cached tasks in "
                                  "(repeatable or comma-separated).")
@click.option("--head", default=None, type=click.Choice(HEADS),
              help="Train the encoder alone with this head (FAT5 style): defaults AdamW at 1e-4 "
                   "(runs/heads.gin); the task gives inputs + label / labels / start_position and "
                   "end_position. Without --model the model is --init-checkpoint's.")
@click.option("--num-labels", "--num_labels", "num_labels", type=int, default=None, metavar="N",
              help="Classes of a classification head (default: the task's label names).")
@precompile_options
@distributed_options
@click.pass_context
def command(ctx, gin_files, gin_bindings, gin_search_paths, tfds_data_dir, task, model, model_dir,
            steps, batch_size, init_checkpoint, restore_optimizer_state, feature_lengths, seed, dtype,
            use_cached_tasks, cache_dirs, head=None, num_labels=None):
    """Train (or, as `finetune`, fine-tune) a model on a seqio task, T5X style.

    Every eval period and after the last step the model decodes the task's validation
    split and writes its metrics to MODEL_DIR/inference_eval/<task>/ (read them with
    `t5 parse-tb MODEL_DIR/inference_eval --seqio-summaries`); turn that off with
    --gin.train.infer_eval_period=0.

    \b
    t5 train --model byt5_tiny --task number_words_en_de --model-dir /tmp/m \\
        --steps 2000 --batch-size 32 --feature-lengths inputs=64,targets=64
    t5 finetune --gin-file my_run.gin --gin.TRAIN_STEPS=1_010_000
    t5 train --use-cached-tasks --cache-dir /data/cache --task number_words_en_de ...
    """
    from t5cli import config
    from t5cli.runtime.task_cache import add_cache_dirs, explain_missing_cache

    invoked = ctx.info_name if ctx.info_name in RUN_FILES else "train"
    runtime = _runtime(ctx)
    required = REQUIRED + (("INITIAL_CHECKPOINT_PATH",) if invoked == "finetune" else ())
    model_file = config.model_gin_file(model)
    t5x_train = config.setup_gin(
        base_files=[RUN_FILES[invoked]] + (["runs/heads.gin"] if head else []) + ([model_file] if model_file else []),
        gin_files=gin_files, bindings=gin_bindings, search_paths=gin_search_paths,
        shortcuts=_restore_binding(restore_optimizer_state) + config.shortcut_bindings(
            task=task, model=model, model_dir=model_dir, steps=steps, batch_size=batch_size,
            init_checkpoint=init_checkpoint, feature_lengths=feature_lengths, seed=seed,
            activation_dtype=dtype) + (["USE_CACHED_TASKS = True"] if use_cached_tasks else [])
        + _head_bindings(head, num_labels, model is None and init_checkpoint is not None),
        runtime=runtime, required=required, t5x_script_name=("train", "precompile"),
        t5x_required=T5X_REQUIRED + (("INITIAL_CHECKPOINT_PATH",) if invoked == "finetune" else ()),
    )
    if dtype is not None and t5x_train is None:
        _check_dtype_is_bound()
    add_cache_dirs(cache_dirs)
    with explain_missing_cache():
        # T5X's gin files bind train_script.train (t5cli.t5x_compat); t5cli's bind train
        result = config.call(t5x_train or "train", runtime=runtime, tfds_data_dir=tfds_data_dir)
    if hasattr(result, "lines"):  # --precompile: a report, nothing trained
        click.echo("\n".join(result.lines()))
        return
    click.echo(f"done: step {result.step}, MODEL_DIR {result.model_dir}")


def _head_bindings(head, num_labels, model_from_checkpoint: bool) -> list:
    """gin bindings for --head / --num-labels (the model may come from the checkpoint)."""
    out = [f"train.head = {head!r}"] if head else []
    if num_labels is not None:
        out.append(f"train.num_labels = {int(num_labels)}")
    if head and model_from_checkpoint:
        out.append("MODEL_NAME = None")
    return out


def _restore_binding(restore_optimizer_state) -> list:
    """The gin binding for --restore-optimizer-state (T5X's gin files: the restore config's
    assignment map decides, see t5cli.t5x_compat.scripts)."""
    return ["train.restore_optimizer_state = True"] if restore_optimizer_state else []


def _check_dtype_is_bound() -> None:
    """--dtype sets ACTIVATION_DTYPE; a model_overrides of the user's may have dropped it."""
    import gin

    from t5cli.errors import ConfigError

    try:
        overrides = gin.query_parameter("train.model_overrides")
    except ValueError:
        overrides = None
    if overrides is None or (isinstance(overrides, dict) and "dtype" not in overrides):
        raise ConfigError("--dtype has no effect: your train.model_overrides replaces the run file's; "
                          "add 'dtype': %ACTIVATION_DTYPE to it")
