"""``t5 convert``: Hugging Face T5 checkpoints to Flax params and back.

Only click is imported at module level; JAX, flax and safetensors load inside the command.
"""

from __future__ import annotations

import os

import click


@click.command("convert")
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--to-hf", is_flag=True,
              help="Reverse direction: SRC is a directory written by `t5 convert`, DST becomes "
                   "a Hugging Face directory (config.json + model.safetensors).")
def command(src, dst, to_hf):
    """Convert a Hugging Face T5 directory SRC into Flax params in DST.

    DST receives params.msgpack (flax.serialization msgpack) and config.json (the
    t5cli model config). Training can also start from an HF directory directly
    (--init-checkpoint DIR); this command is for keeping a Flax copy. SRC must hold
    model.safetensors (or a sharded index); pytorch_model.bin is never unpickled.
    """
    from t5cli.models.flax_dir import PARAMS_FILE, read_flax_dir, write_flax_dir

    if to_hf:
        config, params = read_flax_dir(src)
        from t5cli.models.hf import export_hf

        export_hf(config, params, dst)
        click.echo(f"wrote {os.path.join(dst, 'model.safetensors')} ({config.name}, "
                   f"{config.param_count():,} parameters)")
        return
    from t5cli.models.hf import import_hf

    config, params = import_hf(src)
    write_flax_dir(config, params, dst)
    click.echo(f"wrote {os.path.join(dst, PARAMS_FILE)} ({config.name}, "
               f"{config.param_count():,} parameters)")
