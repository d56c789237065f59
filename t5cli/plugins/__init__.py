"""The plugin side of t5cli: hook specifications, the plugin manager, the registry it
fills, and user directories.

Everything here is light (pluggy, importlib); nothing imports JAX, TensorFlow or seqio.
"""

from t5cli.plugins.manager import (ENTRY_POINT_GROUP, ENV_LOAD_PLUGINS, ENV_NO_DEFAULT_USER_DIR,
                                   ENV_USER_DIR, PluginInfo, PluginWarning, Runtime,
                                   default_user_dir, load_runtime, plugin_report,
                                   resolve_user_dirs, user_dirs_have_code)

__all__ = ["ENTRY_POINT_GROUP", "ENV_LOAD_PLUGINS", "ENV_NO_DEFAULT_USER_DIR", "ENV_USER_DIR",
           "PluginInfo", "PluginWarning", "Runtime", "default_user_dir", "load_runtime",
           "plugin_report", "resolve_user_dirs", "user_dirs_have_code"]
