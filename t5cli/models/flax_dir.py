"""A model as a plain folder: ``params.msgpack`` (flax.serialization) and ``config.json``
naming its t5cli config. Written by ``t5 convert`` and ``t5 export --format flax``."""

from __future__ import annotations

import json
import os

from t5cli.errors import CheckpointError
from t5cli.models.configs import T5Config

PARAMS_FILE = "params.msgpack"
CONFIG_FILE = "config.json"
FORMAT = "t5cli-flax-params"


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
