"""``t5 convert``: Hugging Face T5 checkpoints to Flax params and back.

Only click is imported at module level; JAX, flax and safetensors load inside the command.
"""

from __future__ import annotations

import json
import os

import click

PARAMS_FILE = "params.msgpack"
CONFIG_FILE = "config.json"
FORMAT = "t5cli-flax-params"


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


def write_flax_dir(config, params, directory: str) -> None:
    """Write ``params.msgpack`` and a ``config.json`` naming the t5cli config."""
    from flax import serialization

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, PARAMS_FILE), "wb") as f:
        f.write(serialization.msgpack_serialize(params))
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump({"format": FORMAT, "t5_config": config.to_dict()}, f, indent=2)
        f.write("\n")


def read_flax_dir(directory: str):
    """Read a directory written by ``write_flax_dir``: ``(T5Config, params)``."""
    from flax import serialization

    from t5cli.errors import CheckpointError
    from t5cli.models.configs import T5Config

    config_path = os.path.join(directory, CONFIG_FILE)
    params_path = os.path.join(directory, PARAMS_FILE)
    for path in (config_path, params_path):
        if not os.path.exists(path):
            raise CheckpointError(f"{path} is missing; SRC must be a directory written by "
                                  "`t5 convert`")
    with open(config_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} was not written by `t5 convert` (no "
                              f"\"format\": \"{FORMAT}\")")
    with open(params_path, "rb") as f:
        params = serialization.msgpack_restore(f.read())
    return T5Config.from_dict(meta["t5_config"]), params
