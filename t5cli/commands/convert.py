"""``t5 convert``: Hugging Face, T5X and Mesh-TensorFlow checkpoints to Flax params, and
Flax params (or any of those checkpoints) to a Hugging Face directory.

Only click is imported at module level; JAX, flax and safetensors load inside the command.
"""

from __future__ import annotations

import os

import click


@click.command("convert")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--to-hf", is_flag=True,
              help="Write DST as a Hugging Face directory (config.json + model.safetensors). "
                   "SRC is a directory written by `t5 convert`, or a T5X / Mesh-TensorFlow "
                   "checkpoint.")
@click.option("--model", "model_name", default=None,
              help="For a T5X / Mesh-TensorFlow SRC: the t5cli model whose activation, "
                   "vocabulary and relpos distance to assume (sizes come from the tensors).")
@click.option("--step", type=int, default=None,
              help="For a T5X MODEL_DIR SRC: the checkpoint step (default: the latest).")
def command(src, dst, to_hf, model_name, step):
    """Convert a checkpoint SRC into Flax params in DST (or, with --to-hf, an HF directory).

    SRC may be a Hugging Face T5 directory, a T5X checkpoint (a checkpoint_<N> directory
    in the legacy msgpack + tensorstore layout or in orbax's, or a T5X MODEL_DIR), or a
    Mesh-TensorFlow checkpoint (a directory or a model.ckpt-<N> prefix). gs:// paths must
    be copied locally first (gsutil -m cp -r). DST receives params.msgpack (flax
    serialization) and config.json (the t5cli model config). Nothing is written when SRC
    cannot be read. pytorch_model.bin is never unpickled.
    """
    from t5cli.models.flax_dir import PARAMS_FILE, read_flax_dir, write_flax_dir
    from t5cli.runtime import checkpoint_formats, checkpoints

    checkpoint_formats.check_local(src)
    kind = checkpoints.checkpoint_format(src, step)
    if kind in ("t5x", "t5x-orbax", "mtf"):
        from t5cli.models.configs import get_config
        from t5cli.runtime.model_loading import load_foreign

        base = get_config(model_name) if model_name else None
        config, params, _ = load_foreign(src, step=step, base=base)
    elif to_hf:
        config, params = read_flax_dir(src)
    else:
        from t5cli.models.hf import import_hf

        config, params = import_hf(src)
    if to_hf:
        from t5cli.models.hf import export_hf

        export_hf(config, params, dst)
        click.echo(f"wrote {os.path.join(dst, 'model.safetensors')} ({config.name}, "
                   f"{config.param_count():,} parameters)")
        return
    write_flax_dir(config, params, dst)
    click.echo(f"wrote {os.path.join(dst, PARAMS_FILE)} ({config.name}, "
               f"{config.param_count():,} parameters)")
