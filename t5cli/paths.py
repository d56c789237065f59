"""Folders t5cli uses, from platformdirs, and the environment variables that move them."""

from __future__ import annotations

import os
from typing import Dict


def describe_paths() -> Dict[str, str]:
    """Name → folder or setting, as ``t5 paths`` prints them."""
    import platformdirs

    from t5cli.plugins import ENV_LOAD_PLUGINS, ENV_USER_DIR, default_user_dir
    from t5cli.runtime import compile_cache
    from t5cli.runtime.task_cache import ENV_TASK_CACHE_DIR, default_cache_dir

    return {
        "config_dir": platformdirs.user_config_dir("t5cli"),
        "default_user_dir": f"{default_user_dir()}"
        + ("" if default_user_dir().is_dir() else "  (absent: create it to load it)"),
        "cache_dir": platformdirs.user_cache_dir("t5cli"),
        # seqio task caches: `t5 cache-tasks` writes here by default, --use-cached-tasks reads here
        "task_cache_dir": str(default_cache_dir()),
        # JAX's persistent compilation cache: every command that compiles reads and writes it
        "compile_cache_dir": compile_cache.describe(),
        "data_dir": platformdirs.user_data_dir("t5cli"),
        ENV_USER_DIR: os.environ.get(ENV_USER_DIR, "(unset)"),
        ENV_LOAD_PLUGINS: os.environ.get(ENV_LOAD_PLUGINS, "(unset: all installed plugins)"),
        ENV_TASK_CACHE_DIR: os.environ.get(ENV_TASK_CACHE_DIR, "(unset: task_cache_dir above)"),
        compile_cache.ENV_CACHE_DIR: os.environ.get(compile_cache.ENV_CACHE_DIR,
                                                     "(unset: compile_cache_dir above)"),
        compile_cache.ENV_SWITCH: os.environ.get(compile_cache.ENV_SWITCH, "(unset: on; 0 turns it off)"),
        compile_cache.ENV_MAX_SIZE: os.environ.get(compile_cache.ENV_MAX_SIZE,
                                                    f"(unset: {compile_cache.DEFAULT_MAX_SIZE})"),
        "TFDS_DATA_DIR": os.environ.get("TFDS_DATA_DIR", "(unset: ~/tensorflow_datasets)"),
    }
