"""``t5 infer``: decode a task split, a text file or stdin to JSONL (see :mod:`t5cli.runtime.infer`).

Only click is imported at module level.
"""

from __future__ import annotations

import click

from t5cli.commands.distributed_options import distributed_options
from t5cli.commands.evaluate import (COMMON_MACROS, cache_options, checkpoint_options,
                                     data_options, decode_options, gin_options, parse_lengths,
                                     run_configured, shortcut_bindings, use_cache_dirs)


@click.command("infer")
@checkpoint_options
@data_options
@decode_options
@click.option("--input", "--input-file", "--input_file", "input_file", default=None, metavar="FILE",
              help="Text file with one input per line ('-' for stdin) instead of a task split.")
@click.option("--output", "-o", "output", default=None, metavar="FILE",
              help="JSONL file to write ('-' for stdout). Default: stdout for --input, "
                   "MODEL_DIR/inference/<task>-<split>-<step>.jsonl for a task.")
@click.option("--output-dir", "--output_dir", "output_dir", default=None, metavar="DIR",
              help="Write <task>-<split>-<step>.jsonl here (INFER_OUTPUT_DIR).")
@cache_options
@gin_options
@distributed_options
@click.pass_context
def command(ctx, checkpoint, model_dir, model, step, task, split, feature_lengths, batch_size,
            tfds_data_dir, num_examples, beam_size, alpha, temperature, top_k, top_p, seed,
            input_file, output, output_dir, use_cached_tasks, cache_dirs, gin_files, gin_bindings,
            gin_search_paths):
    """Run a checkpoint on inputs and write JSONL: inputs, prediction, score.

    \b
    echo "forty-two" | t5 infer --checkpoint /tmp/m --input -
    t5 infer --checkpoint /tmp/m --input questions.txt --beam-size 4 -o out.jsonl
    t5 infer --checkpoint /tmp/m --task number_words_en_de --split test
    """
    from t5cli.runtime.task_cache import explain_missing_cache

    if input_file is None or cache_dirs:  # text inputs read no task data (and need no seqio)
        use_cache_dirs(cache_dirs)
    with explain_missing_cache():
        run_configured(
            ctx, "infer", run_file="runs/infer.gin", gin_files=gin_files, gin_bindings=gin_bindings,
            gin_search_paths=gin_search_paths, model=model,
            shortcuts=shortcut_bindings(task=task, model=model, model_dir=model_dir,
                                        batch_size=batch_size, feature_lengths=feature_lengths,
                                        checkpoint=checkpoint, split=split, output_dir=output_dir,
                                        output_macro="INFER_OUTPUT_DIR"),
            macros=dict(COMMON_MACROS, output_dir="INFER_OUTPUT_DIR"),
            explicit=dict(checkpoint_path=checkpoint, model_dir=model_dir, model_name=model, step=step,
                          mixture_or_task_name=task, split=split,
                          task_feature_lengths=parse_lengths(feature_lengths), batch_size=batch_size,
                          tfds_data_dir=tfds_data_dir, num_examples=num_examples,
                          beam_size=beam_size, alpha=alpha, temperature=temperature, top_k=top_k,
                          top_p=top_p, seed=seed, input_file=input_file, output=output,
                          output_dir=output_dir, use_cached_tasks=use_cached_tasks or None))
