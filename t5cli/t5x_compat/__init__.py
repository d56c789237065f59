"""T5X's gin files, unchanged: T5X's module paths and configurables, served inside t5cli's gin parsing.

T5X's gin files start with ``from __gin__ import dynamic_registration`` and import Python
modules (``import __main__ as train_script``, ``from t5x import utils``, ``import seqio``)
whose functions and classes they then bind by those paths (``utils.DatasetConfig``,
``train_script.train``). Here those imports are answered by this package's modules, which
carry T5X's names and parameters and translate them into t5cli's ``train()``,
``evaluate()`` and ``infer()`` arguments (:mod:`t5cli.t5x_compat.scripts`).

The answers are given only while t5cli itself parses gin (:func:`serving`): gin's import
call is redirected for that time. Nothing named ``t5x`` or ``t5`` is put into
``sys.modules``, so a real T5X installed beside t5cli is neither shadowed nor broken.
``seqio`` and ``optax`` stay the real modules. ``t5.data`` task modules are not needed
(the tasks come from t5cli, plugins and user dirs): they are skipped with a one-line note.

What t5cli cannot honour is collected by :func:`unsupported` and printed as one warning
line when the run starts (:func:`flush_warnings`).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import sys
import types
from typing import Any, Dict, List, Optional, Set

from t5cli.errors import ConfigError

#: T5X module → the module of this package that stands in for it
MODULES = {
    "t5x": "t5cli.t5x_compat",
    "t5x.utils": "t5cli.t5x_compat.utils",
    "t5x.models": "t5cli.t5x_compat.models",
    "t5x.partitioning": "t5cli.t5x_compat.partitioning",
    "t5x.adafactor": "t5cli.t5x_compat.adafactor",
    "t5x.optimizers": "t5cli.t5x_compat.optimizers",
    "t5x.trainer": "t5cli.t5x_compat.trainer",
    "t5x.decoding": "t5cli.t5x_compat.decoding",
    "t5x.gin_utils": "t5cli.t5x_compat.gin_utils",
    "t5x.examples.t5.network": "t5cli.t5x_compat.network",
    "__main__": "t5cli.t5x_compat.scripts",
}

#: the import line that provides each name T5X's gin files use
IMPORT_LINES = {
    **{name: f"from t5x import {name}" for name in
       ("utils", "models", "partitioning", "adafactor", "optimizers", "trainer", "decoding", "gin_utils")},
    "network": "from t5x.examples.t5 import network",
    "train_script": "import __main__ as train_script",
    "eval_script": "import __main__ as eval_script",
    "infer_script": "import __main__ as infer_script",
    "seqio": "import seqio",
    "optax": "import optax",
}

#: T5X's run scripts (all three are ``__main__`` in T5X): configurable → script alias
SCRIPTS = {"train": "train_script", "precompile": "train_script", "evaluate": "eval_script",
           "infer": "infer_script"}

_depth = 0
_registered: Set[str] = set()  # gin selectors registered while serving
_warnings: List[str] = []
_notes: Set[str] = set()  # printed once per process


def _stub(name: str) -> types.ModuleType:
    """An empty module for a ``t5.data`` task module: its tasks come from t5cli instead."""
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so ``import t5.data.mixtures`` works
    return module


_T5_STUBS: Dict[str, types.ModuleType] = {}


def _t5_module(name: str, top: bool) -> types.ModuleType:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in _T5_STUBS:
            _T5_STUBS[sub] = _stub(sub)
            if i > 1:
                setattr(_T5_STUBS[".".join(parts[:i - 1])], parts[i - 1], _T5_STUBS[sub])
    note = (f"t5cli: skipped `import {name}` (T5's task modules are not available offline); "
            f"tasks come from t5cli, plugins and --user-dir (see `t5 tasks`)")
    if note not in _notes:
        _notes.add(note)
        print(note, file=sys.stderr, flush=True)
    return _T5_STUBS[parts[0]] if top else _T5_STUBS[name]


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    """gin's ``__import__`` while t5cli parses: T5X modules → this package."""
    if level == 0 and name in MODULES:
        module = importlib.import_module(MODULES[name])
        if not fromlist and "." in name:  # `import t5x.utils`: gin binds the top name
            return importlib.import_module(MODULES[name.split(".")[0]])
        return module
    if level == 0 and (name == "t5" or name.startswith("t5.")):
        return _t5_module(name, top=not fromlist)
    if level == 0 and (name.startswith("t5x.") or name.split(".")[0] == "flaxformer"):
        known = ", ".join(sorted(k for k in MODULES if k.startswith("t5x.")))
        raise ConfigError(
            f"it imports {name!r}, a T5X module t5cli does not emulate (it serves {known}, "
            f"__main__, seqio and optax): delete that import and the bindings that use it")
    return builtins.__import__(name, globals, locals, fromlist, level)


def _registry_keys() -> Set[str]:
    import gin.config as gc

    return set(gc._REGISTRY._selector_map)  # pylint: disable=protected-access


@contextlib.contextmanager
def serving():
    """While active, gin's import statements get T5X's modules from this package."""
    global _depth
    import gin.config as gc

    before = _registry_keys()
    _depth += 1
    if _depth == 1:
        gc.__dict__["__import__"] = _import
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            gc.__dict__.pop("__import__", None)
        _registered.update(_registry_keys() - before)


def forget() -> None:
    """Drop gin's registrations of T5X names made while serving: a later t5cli run in this
    process then sees only t5cli's own configurables (``train`` is unambiguous again)."""
    import gin.config as gc

    for selector in list(_registered):
        try:
            configurable = gc._REGISTRY.pop(selector)  # pylint: disable=protected-access
        except KeyError:
            continue
        for key, value in list(gc._INVERSE_REGISTRY.items()):  # pylint: disable=protected-access
            if value is configurable:
                del gc._INVERSE_REGISTRY[key]  # pylint: disable=protected-access
    _registered.clear()
    _warnings.clear()


def script(name: str) -> Optional[Any]:
    """gin's wrapper of T5X's ``<alias>.<name>`` (``train_script.train`` …) if a parsed
    file bound it, else None."""
    import gin

    from t5cli.t5x_compat import scripts

    try:
        configurable = gin.config._inverse_lookup(getattr(scripts, name))  # pylint: disable=protected-access
    except Exception:  # pragma: no cover - gin internals changed
        configurable = None
    if configurable is None:
        return None
    return configurable.wrapper


def unsupported(name: str, value: Any, why: str = "") -> None:
    """Record a T5X binding t5cli does not honour (printed by :func:`flush_warnings`)."""
    text = f"{name}={value!r}" + (f" ({why})" if why else "")
    if text not in _warnings:
        _warnings.append(text)


def flush_warnings() -> None:
    """One line naming every T5X binding that has no effect in t5cli."""
    if _warnings:
        print("t5cli: warning: these T5X bindings have no effect here: " + "; ".join(_warnings),
              file=sys.stderr, flush=True)
        _warnings.clear()


def query(selector: str, default: Any = None) -> Any:
    """A bound gin value by its full T5X selector, e.g.
    ``t5x.models.EncoderDecoderModel.predict_batch_with_aux.num_decodes``."""
    import gin

    try:
        return _resolve(gin.query_parameter(selector))
    except (ValueError, KeyError):
        return default


def _resolve(value: Any) -> Any:
    """``%MACRO`` → its value, ``@name()`` → its result, ``@name`` → the configurable."""
    if type(value).__name__ == "ConfigurableReference":
        fn = value.scoped_configurable_fn
        return fn() if value.evaluate else fn
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v) for v in value)
    return value


__all__ = ["MODULES", "SCRIPTS", "serving", "forget", "script", "unsupported", "flush_warnings", "query"]
