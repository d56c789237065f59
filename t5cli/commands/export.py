"""``t5 export``: a checkpoint as an HF directory, Flax params, a jax.export decoder, or a
TensorFlow SavedModel.

Only click is imported at module level; the work is in :mod:`t5cli.runtime.export`.
"""

from __future__ import annotations

import click

from t5cli.commands.evaluate import checkpoint_options, gin_options, parse_lengths, run_configured

FORMATS = ("hf", "flax", "jax", "saved_model")


@click.command("export")
@checkpoint_options
@click.option("--output-dir", "--output_dir", "-o", "output_dir", required=True, metavar="DIR",
              help="Where to write (one format: DIR itself; several: DIR/<format>/).")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS),
              help="hf (default): config.json + model.safetensors for transformers; flax: "
                   "params.msgpack + config.json; jax: a jax.export decoder; saved_model: a "
                   "TensorFlow SavedModel in DIR/<step>/ (strings in, strings and scores "
                   "out) (repeatable).")
@click.option("--batch-size", "--batch_size", "batch_size", type=int, default=None,
              help="Batch size the jax decoder is compiled for (default 1); fixes the "
                   "SavedModel's batch size (default: any).")
@click.option("--feature-lengths", "--feature_lengths", "feature_lengths", default=None,
              metavar="inputs=N,targets=N",
              help="Input and output lengths of the jax/saved_model decoder (default: the "
                   "training lengths).")
@click.option("--beam-size", "--beam_size", "beam_size", type=int, default=None, metavar="N",
              help="Beam search with N beams in the jax/saved_model decoder (default 1: greedy).")
@click.option("--tokenized-inputs", "--tokenized_inputs", "tokenized_inputs", is_flag=True,
              default=None, help="The SavedModel takes int32 [batch, inputs length] token ids "
                                 "(EOS included, padded with 0) instead of strings.")
@click.option("--task", "task", default=None, metavar="NAME",
              help="Task whose vocabularies the SavedModel encodes and decodes with "
                   "(default: the one the model was trained on, else the model's).")
@click.option("--platform", "platforms", multiple=True, metavar="NAME",
              help="Platform(s) the jax/saved_model decoder is lowered for: cpu, cuda, tpu "
                   "(default: this one for jax, cpu for saved_model).")
@gin_options
@click.pass_context
def command(ctx, checkpoint, model_dir, model, step, output_dir, formats, batch_size,
            feature_lengths, beam_size, tokenized_inputs, task, platforms, gin_files,
            gin_bindings, gin_search_paths):
    """Export a checkpoint for use outside t5cli.

    \b
    t5 export --checkpoint /tmp/m -o /tmp/m_hf            # transformers can load /tmp/m_hf
    t5 export --checkpoint /tmp/m -o /tmp/m_out --format flax --format jax --batch-size 8
    t5 export --checkpoint /tmp/m -o /tmp/m_tf --format saved_model --beam-size 4
    """
    result = run_configured(
        ctx, "export", run_file=None, gin_files=gin_files, gin_bindings=gin_bindings,
        gin_search_paths=gin_search_paths, model=model,
        macros={"model_name": "MODEL_NAME"},
        explicit=dict(checkpoint_path=checkpoint, model_dir=model_dir, model_name=model, step=step,
                      output_dir=output_dir, formats=tuple(formats) or None,
                      batch_size=batch_size, task_feature_lengths=parse_lengths(feature_lengths),
                      beam_size=beam_size, tokenized_inputs=tokenized_inputs,
                      mixture_or_task_name=task, platforms=tuple(platforms) or None))
    click.echo(f"exported step {result.step}: " + ", ".join(f"{k} -> {v}" for k, v in result.paths.items()))
