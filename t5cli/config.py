"""gin configuration: files, bindings, command-line shortcuts, search paths, config.gin.

T5X's macro names are kept: ``MIXTURE_OR_TASK_NAME``, ``TASK_FEATURE_LENGTHS``,
``TRAIN_STEPS``, ``BATCH_SIZE``, ``DROPOUT_RATE``, ``INITIAL_CHECKPOINT_PATH``,
``MODEL_DIR``, ``LOSS_NORMALIZING_FACTOR``, ``USE_CACHED_TASKS``, ``RANDOM_SEED`` and
``MODEL_NAME`` (set by each ``configs/models/<name>.gin``); ours is ``ACTIVATION_DTYPE``.
The run files in ``configs/runs/`` bind them to the library's parameters
(``train.total_steps = %TRAIN_STEPS`` …).

Every configurable is registered here, once, by :func:`register_configurables`
(``train``, ``adafactor``, ``adamw``, the schedules, and the eval/infer/export functions
when those modules exist). The library functions stay plain Python; gin wraps them.

Order of precedence (later wins): the run file of the command (``runs/pretrain.gin`` for
``t5 train``, ``runs/finetune.gin`` for ``t5 finetune``), the model's gin file, the
``--gin-file`` files in order, the flag shortcuts (``--task`` …), then ``--gin`` bindings.
Search path: the current directory, ``t5cli/configs``, user dirs, ``--gin-search-path``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from t5cli.errors import ConfigError, first_line

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

#: (module, attribute, gin name): every gin configurable of t5cli, registered once
CONFIGURABLES = (
    ("t5cli.runtime.train", "train", "train"),
    ("t5cli.runtime.optim", "adafactor", "adafactor"),
    ("t5cli.runtime.optim", "adamw", "adamw"),
    ("t5cli.runtime.optim", "constant_schedule", "constant_schedule"),
    ("t5cli.runtime.optim", "rsqrt_schedule", "rsqrt_schedule"),
    ("t5cli.runtime.optim", "linear_schedule", "linear_schedule"),
    ("t5cli.runtime.optim", "cosine_schedule", "cosine_schedule"),
    ("t5cli.runtime.evaluate", "evaluate", "evaluate"),
    ("t5cli.runtime.infer", "infer", "infer"),
    ("t5cli.runtime.export", "export", "export"),
)

#: macros a run needs, and the flag that sets each
REQUIRED_MACROS = {
    "MODEL_DIR": "--model-dir DIR",
    "MIXTURE_OR_TASK_NAME": "--task NAME",
    "TASK_FEATURE_LENGTHS": "--feature-lengths inputs=N,targets=N",
    "TRAIN_STEPS": "--steps N",
    "MODEL_NAME": "--model NAME, a model gin file from t5cli/configs/models",
    "INITIAL_CHECKPOINT_PATH": "--init-checkpoint PATH",
    "CHECKPOINT_PATH": "--checkpoint PATH",
    "EVAL_OUTPUT_DIR": "--output-dir DIR",
    "INFER_OUTPUT_DIR": "--output-dir DIR",
}

_REGISTERED: Dict[str, Callable] = {}


def register_configurables() -> Dict[str, Callable]:
    """Register every t5cli configurable with gin (idempotent); name → gin-wrapped function."""
    import gin

    for module_name, attr, name in CONFIGURABLES:
        if name in _REGISTERED:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written yet in this build
                continue
            raise
        _REGISTERED[name] = gin.external_configurable(getattr(module, attr), name=name, module="t5cli")
    return _REGISTERED


def configurable(name: str) -> Callable:
    """The gin-wrapped library function called ``name`` (e.g. ``"train"``)."""
    registered = register_configurables()
    if name not in registered:
        raise ConfigError(f"no configurable {name!r}; known: {', '.join(sorted(registered))}")
    return registered[name]


def split_search_paths(values: Iterable[str]) -> List[str]:
    """Repeatable, comma-separated ``--gin-search-path`` values → a flat list."""
    out: List[str] = []
    for value in values or ():
        out.extend(p.strip() for p in str(value).split(",") if p.strip())
    return out


def _quote(value: Any) -> str:
    return repr(value)


def shortcut_bindings(*, task: Optional[str] = None, model: Optional[str] = None,
                      model_dir: Optional[str] = None, steps: Optional[int] = None,
                      batch_size: Optional[int] = None, init_checkpoint: Optional[str] = None,
                      feature_lengths: Optional[str] = None, seed: Optional[int] = None,
                      dropout_rate: Optional[float] = None,
                      activation_dtype: Optional[str] = None) -> List[str]:
    """gin bindings for the command-line shortcuts that were given."""
    from t5cli.runtime.data import parse_feature_lengths

    out = []
    if task is not None:
        out.append(f"MIXTURE_OR_TASK_NAME = {_quote(task)}")
    if model is not None:
        out.append(f"MODEL_NAME = {_quote(model)}")
    if model_dir is not None:
        out.append(f"MODEL_DIR = {_quote(os.path.abspath(os.path.expanduser(model_dir)))}")
    if steps is not None:
        out.append(f"TRAIN_STEPS = {int(steps)}")
    if batch_size is not None:
        out.append(f"BATCH_SIZE = {int(batch_size)}")
    if init_checkpoint is not None:
        out.append(f"INITIAL_CHECKPOINT_PATH = {_quote(os.path.expanduser(init_checkpoint))}")
    if feature_lengths is not None:
        out.append(f"TASK_FEATURE_LENGTHS = {parse_feature_lengths(feature_lengths)!r}")
    if seed is not None:
        out.append(f"RANDOM_SEED = {int(seed)}")
    if dropout_rate is not None:
        out.append(f"DROPOUT_RATE = {float(dropout_rate)}")
    if activation_dtype is not None:
        out.append(f"ACTIVATION_DTYPE = {_quote(activation_dtype)}")
    return out


def model_gin_file(model: Optional[str]) -> Optional[str]:
    """``models/<model>.gin`` if t5cli ships one (it may set more than MODEL_NAME)."""
    if model and (CONFIGS_DIR / "models" / f"{model}.gin").is_file():
        return f"models/{model}.gin"
    return None


def gin_reason(exc: BaseException) -> str:
    """What went wrong in a gin file or binding, in the user's terms: gin reports a value it
    cannot read as Python's "malformed node or string" with the token on a second line."""
    import re

    text = str(exc)
    token = re.search(r"Failed to parse token '(.*?)'", text)
    if token:
        return (f"cannot read the value {token.group(1)!r}: gin values are Python literals, "
                f"@references or %MACROS, so write text in quotes (NAME = \"{token.group(1)}\")")
    if "EOF in multi-line statement" in text:
        return "a bracket or quote is not closed"
    t5x = _t5x_closest_name(text)
    if t5x:
        return t5x
    module = re.search(r"No module named '((t5x|t5|flaxformer)\b[\w.]*)'", text)
    if module:
        return (f"it imports T5X's Python module {module.group(1)!r}, which t5cli does not use: "
                f"delete the `import`/`from ... import` lines that name t5, t5x or flaxformer "
                f"(T5X's includes t5x/configs/runs/*.gin and t5x/examples/t5/*/*.gin and its "
                f"macros work as they are)")
    return first_line(exc)


def _t5x_closest_name(text: str) -> Optional[str]:
    """gin's error for a T5X name or parameter t5cli's T5X layer lacks, with the closest one."""
    import difflib
    import inspect
    import re

    from t5cli import t5x_compat

    served = {v: k for k, v in t5x_compat.MODULES.items()}
    attr = re.search(r"Couldn't resolve selector ([\w.]+); <module '([\w.]+)'.*? has no attribute (\w+)", text)
    if attr and attr.group(2) in served:
        module = importlib.import_module(attr.group(2))
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr.group(3), names, n=1)
        hint = f"; did you mean {attr.group(1).rsplit('.', 1)[0]}.{close[0]}?" if close else ""
        return f"T5X's {served[attr.group(2)]} has no {attr.group(3)!r} that t5cli knows{hint}"
    param = re.search(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", text)
    if param:
        import gin

        try:
            fn = gin.config._REGISTRY.get_match(param.group(1)).wrapped  # pylint: disable=protected-access
            names = list(inspect.signature(fn).parameters)
        except Exception:  # pragma: no cover - gin internals changed
            return None
        close = difflib.get_close_matches(param.group(2), names, n=1)
        if not close:
            return None
        return f"{param.group(0)}; did you mean {close[0]!r}?"
    return None


def _location(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line.startswith("In file") or line.startswith("In bindings string"):
            return line
    filename = getattr(exc, "filename", None)
    lineno = getattr(exc, "lineno", None)
    if filename:
        return f"in file {filename!r}" + (f", line {lineno}" if lineno else "")
    return ""


def parse_gin(*, gin_files: Sequence[str] = (), bindings: Sequence[str] = (),
              search_paths: Sequence[str] = (), base_files: Sequence[str] = (),
              shortcuts: Sequence[str] = (), user_dirs: Sequence[str] = ()) -> None:
    """Clear gin, then parse base files, user files, shortcut bindings and ``--gin`` bindings.

    Any problem (missing file, unknown configurable or parameter, bad syntax) is a
    ConfigError that names the file or the flag.
    """
    import gin

    from t5cli import t5x_compat

    register_configurables()
    t5x_compat.forget()  # a T5X file parsed earlier in this process leaves no names behind
    gin.clear_config()
    paths = [str(CONFIGS_DIR), *map(str, user_dirs), *split_search_paths(search_paths)]
    for p in paths:
        gin.add_config_file_search_path(p)
    with _quiet_path_lookups(), t5x_compat.serving():
        _parse_files_and_bindings(list(base_files) + list(gin_files), shortcuts, bindings, paths)


def t5x_script(name: str) -> Optional[Callable]:
    """gin's wrapper of T5X's run script ``name`` (``train``, ``evaluate``, ``infer``) when the
    parsed gin files bind it (``train_script.train`` …), else None."""
    from t5cli import t5x_compat

    return t5x_compat.script(name)


class _DropPathNotFound:
    """gin logs an ERROR for every search-path entry a file is not in; we report misses ourselves."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Path not found")


class _quiet_path_lookups:
    def __enter__(self):
        import logging

        self._filter = _DropPathNotFound()
        logging.getLogger().addFilter(self._filter)

    def __exit__(self, *exc):
        import logging

        logging.getLogger().removeFilter(self._filter)


def _missing_include(exc: BaseException):
    """(file gin could not open, the gin file whose ``include`` named it, or None for a
    top-level file), read from gin's message and the location it appends per include."""
    import re

    text = str(exc)
    missing = re.search(r"Unable to open file: (.*?)\. Searched config paths", text)
    includer = re.search(r'^\s*In file "(.*)", line \d+', text, re.MULTILINE)
    return (missing.group(1) if missing else None), (includer.group(1) if includer else None)


def _parse_files_and_bindings(files, shortcuts, bindings, paths) -> None:
    import gin

    paths = ["."] + list(paths)
    for path in files:
        try:
            gin.parse_config_file(path)
        except (IOError, OSError) as exc:
            if "Unable to open file" in str(exc) or isinstance(exc, FileNotFoundError):
                missing, includer = _missing_include(exc)
                if missing and includer:
                    raise ConfigError(
                        f"gin file {includer!r} includes {missing!r}, which was not found "
                        f"(searched: {', '.join(paths)}); fix the include, or add its folder with "
                        f"--gin-search-path"
                    ) from None
                raise ConfigError(
                    f"gin file {path!r} not found (searched: {', '.join(paths)}); check --gin-file, "
                    f"or add its folder with --gin-search-path"
                ) from None
            raise ConfigError(f"gin file {path!r}: {first_line(exc)}") from None
        except Exception as exc:
            where = _location(exc)
            raise ConfigError(f"gin file {path!r}: {gin_reason(exc)}" + (f" ({where})" if where else "")) from None
    for binding, flag in [(b, "shortcut") for b in shortcuts] + [(b, "--gin") for b in bindings]:
        try:
            _parse_binding(binding)
        except Exception as exc:
            origin = f"--gin {binding!r}" if flag == "--gin" else f"option {binding!r}"
            hint = ""
            if "No configurable" in str(exc):
                hint = f"; t5cli's configurables: {', '.join(sorted(_REGISTERED))}"
            raise ConfigError(f"{origin}: {gin_reason(exc)}{hint}") from None


def _parse_binding(binding: str) -> None:
    """``gin.parse_config``; when T5X's scripts are registered too, a bare ``train.X`` /
    ``evaluate.X`` / ``infer.X`` means T5X's (``train_script.train.X`` …), as in T5X."""
    import re

    import gin

    from t5cli import t5x_compat

    try:
        gin.parse_config(binding)
    except Exception as exc:
        match = re.match(r"\s*(train|evaluate|infer)\.", binding)
        if "Ambiguous selector" in str(exc) and match:
            name = match.group(1)
            gin.parse_config(f"{t5x_compat.SCRIPTS[name]}.{name}." + binding.split(".", 1)[1])
            return
        # a T5X name no gin file has used yet: bind it as T5X's flags do, through its import
        alias = re.match(r"\s*(?:[\w.]+/)*(\w+)\.", binding)
        prelude = t5x_compat.IMPORT_LINES.get(alias.group(1)) if alias else None
        if "No configurable matching" not in str(exc) or prelude is None:
            raise
        gin.parse_config(f"from __gin__ import dynamic_registration\n{prelude}\n{binding}")


def call(name, **kwargs) -> Any:
    """Call the configurable ``name`` (or a gin-wrapped function, e.g. from
    :func:`t5x_script`) with gin's bindings (plus ``kwargs``).

    gin appends "In call to configurable …" to exceptions raised inside; a T5CliError
    comes out clean again, so the CLI prints one line. gin's bindings are cleared when the
    call returns: a later call from Python in the same process must neither take this
    run's values for arguments it leaves out nor record this run's config as its own.
    """
    import gin

    from t5cli.errors import T5CliError

    from t5cli import t5x_compat

    try:
        return (configurable(name) if isinstance(name, str) else name)(**kwargs)
    except T5CliError as exc:
        cls = type(exc)
        if cls.__name__ == cls.__mro__[1].__name__ and "__getattr__" in cls.__dict__:  # gin's proxy
            cls = cls.__mro__[1]
            message = str(exc).split("\n  In call to configurable")[0]
            clean = cls.__new__(cls)
            Exception.__init__(clean, message)
            raise clean.with_traceback(exc.__traceback__) from None
        raise
    finally:
        gin.clear_config()
        t5x_compat.forget()


def macro_value(name: str, default: Any = None) -> Any:
    """The value of a gin macro, ``default`` if unset, or the REQUIRED marker."""
    import gin

    try:
        return gin.query_parameter(f"{name}/macro.value")
    except ValueError:
        return default


def is_required_marker(value: Any) -> bool:
    return "REQUIRED" in repr(value) and type(value).__name__ == "ConfigurableReference"


def check_required(names: Iterable[str]) -> None:
    """ConfigError naming the flag for the first macro that is unset or ``%gin.REQUIRED``."""
    missing = object()
    for name in names:
        value = macro_value(name, missing)
        if value is missing or is_required_marker(value):
            flag = REQUIRED_MACROS.get(name, f"--gin {name}=VALUE")
            raise ConfigError(f"{name} is not set: pass {flag}, or --gin {name}=...")


def finalize() -> None:
    """Lock the config (gin's finalize hooks run here)."""
    import gin

    from t5cli import t5x_compat

    try:
        with t5x_compat.serving():  # finalize hooks may re-read T5X's import lines
            gin.finalize()
    except Exception as exc:
        raise ConfigError(f"gin config: {first_line(exc)}") from None


def operative_config() -> str:
    """gin's operative config (parameters actually used so far), or '' without gin."""
    import gin

    from t5cli import t5x_compat

    try:
        with t5x_compat.serving():  # the import lines of T5X's names are re-read
            return gin.operative_config_str()
    except Exception:  # pragma: no cover - gin state broken
        return ""


def bindings_from_arguments(function: str, arguments: Mapping[str, Any]) -> str:
    """gin-style lines for a library call made from Python without gin."""
    lines = [f"# {function}() called from Python; arguments as gin bindings"]
    for key in sorted(arguments):
        value = arguments[key]
        text = repr(value) if _literal(value) else repr(f"<{type(value).__name__}>")
        lines.append(f"{function}.{key} = {text}")
    return "\n".join(lines) + "\n"


def _literal(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _literal(v) for k, v in value.items())
    return False


def write_config_gin(model_dir, text: str) -> Path:
    """Write ``MODEL_DIR/config.gin`` atomically."""
    path = Path(model_dir) / "config.gin"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gin.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def setup_gin(*, base_files: Sequence[str] = (), gin_files: Sequence[str] = (),
              bindings: Sequence[str] = (), search_paths: Sequence[str] = (),
              shortcuts: Sequence[str] = (), runtime=None, required: Iterable[str] = (),
              t5x_script_name: Optional[str] = None, t5x_required: Iterable[str] = ()) -> Optional[Callable]:
    """Everything a command does before calling its configurable: parse, check, lock.

    ``runtime``'s user dirs join the search path; ``required`` macros must be set (the
    error names their flag). When the files bind T5X's run script ``t5x_script_name``
    (``train_script.train`` …; the first bound of several names), ``t5x_required`` is
    checked instead and that script's gin wrapper is returned (else None).
    """
    user_dirs = runtime.gin_search_paths() if runtime is not None else ()
    parse_gin(gin_files=gin_files, bindings=bindings, search_paths=search_paths,
              base_files=base_files, shortcuts=shortcuts, user_dirs=user_dirs)
    names = (t5x_script_name,) if isinstance(t5x_script_name, str) else tuple(t5x_script_name or ())
    bound = lambda: next((s for s in map(t5x_script, names) if s is not None), None)  # noqa: E731
    script = bound()
    if script is not None and base_files:  # T5X's own run files replace t5cli's
        parse_gin(gin_files=gin_files, bindings=bindings, search_paths=search_paths,
                  base_files=(), shortcuts=shortcuts, user_dirs=user_dirs)
        script = bound()
    check_required(t5x_required if script is not None else required)
    finalize()
    return script
