"""The built-in model plugin: registers every named config in ``t5cli.models.configs``."""

from __future__ import annotations

import functools

from t5cli.plugins.hookspecs import hookimpl
from t5cli.models.configs import CONFIGS, get_config


@hookimpl
def register_models(register):
    for name in CONFIGS:
        register(name, functools.partial(get_config, name))
