"""The ``t5`` command line: a thin skin over the library.

Global flags (``--user-dir``, ``-p``, ``--strict-plugins``, ``--verbose``) are accepted
before or after the subcommand; they are lifted out of argv before click parses it.
T5X spellings (``--gin.NAME=VALUE``) are rewritten to click's (``--gin NAME=VALUE``).
Errors a user can cause (``T5CliError``) end in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

import click

from t5cli import __version__
from t5cli.errors import T5CliError

#: (module, attribute, names): each command object is registered under every name
COMMANDS = (
    ("t5cli.commands.info", "plugins_command", ("plugins",)),
    ("t5cli.commands.info", "tasks_command", ("tasks",)),
    ("t5cli.commands.info", "models_command", ("models",)),
    ("t5cli.commands.info", "paths_command", ("paths",)),
    ("t5cli.commands.train", "command", ("train", "finetune")),
    ("t5cli.commands.evaluate", "command", ("eval",)),
    ("t5cli.commands.infer", "command", ("infer",)),
    ("t5cli.commands.export", "command", ("export",)),
    ("t5cli.commands.convert", "command", ("convert",)),
    ("t5cli.commands.cache_tasks", "command", ("cache-tasks",)),
    ("t5cli.commands.parse_metrics", "command", ("parse-metrics", "parse-tb")),
)


@dataclasses.dataclass
class GlobalOptions:
    user_dirs: List[str] = dataclasses.field(default_factory=list)
    blocked: List[str] = dataclasses.field(default_factory=list)
    strict_plugins: bool = False
    verbose: bool = False


class App:
    """The object every command receives as ``ctx.obj``; builds the runtime once."""

    def __init__(self, options: GlobalOptions, runtime=None):
        self.options = options
        self._runtime = runtime

    @property
    def runtime(self):
        if self._runtime is None:
            from t5cli.plugins import load_runtime

            self._runtime = load_runtime(
                self.options.user_dirs, blocked=self.options.blocked,
                strict=self.options.strict_plugins,
            )
        return self._runtime


def split_global_options(argv: Sequence[str]) -> Tuple[GlobalOptions, List[str]]:
    """Lift global flags out of argv wherever they stand; rewrite T5X flag spellings."""
    opts = GlobalOptions()
    rest: List[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        value_flags = {"--user-dir": opts.user_dirs, "--user_dir": opts.user_dirs, "-p": None}
        name, eq, inline = arg.partition("=")
        if name in value_flags:
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise click.UsageError(f"{name} needs a value")
            if name == "-p":
                if not value.startswith("no:"):
                    raise click.UsageError(f"-p takes no:NAME to block a plugin, got {value!r}")
                opts.blocked.append(value[3:])
            else:
                opts.user_dirs.append(value)
        elif arg.startswith("-p") and len(arg) > 2 and arg[2:].startswith("no:"):
            opts.blocked.append(arg[5:])
        elif arg in ("--strict-plugins", "--strict_plugins"):
            opts.strict_plugins = True
        elif arg in ("--verbose", "-v"):
            opts.verbose = True
        elif arg.startswith("--gin.") and arg != "--gin.":
            binding = arg[len("--gin."):]
            if "=" not in binding and i + 1 < len(args):
                i += 1
                binding = f"{binding}={args[i]}"
            rest.extend(["--gin", binding])
        else:
            rest.append(arg)
        i += 1
    return opts, rest


class AliasedGroup(click.Group):
    """A group whose commands can have several names; aliases are hidden from the list."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.aliases = {}

    def add_alias(self, alias: str, name: str) -> None:
        self.aliases[alias] = name

    def get_command(self, ctx, cmd_name):
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            alias = [a for a, n in self.aliases.items() if n == name]
            label = name + (f" ({', '.join(alias)})" if alias else "")
            rows.append((label, cmd.get_short_help_str(limit=60)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=AliasedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="t5")
@click.option("--user-dir", "user_dirs", multiple=True, metavar="DIR",
              help="Folder of .py and .gin files to load (repeatable; also $T5CLI_USER_DIR).")
@click.option("-p", "blocked", multiple=True, metavar="no:NAME", help="Block the plugin NAME.")
@click.option("--strict-plugins", is_flag=True, help="Make a plugin that fails to load fatal.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug output.")
@click.pass_context
def cli(ctx, user_dirs, blocked, strict_plugins, verbose):
    """Train, fine-tune, evaluate, run and export T5 models on JAX.

    Global flags may stand before or after the command.
    """
    if ctx.obj is None:  # called without main(), e.g. from click's test runner
        ctx.obj = App(GlobalOptions(list(user_dirs), [b[3:] for b in blocked], strict_plugins, verbose))


def _register_core_commands(group: AliasedGroup, commands=COMMANDS) -> None:
    """Add every core command; a missing module or attribute is t5cli's bug and fails loudly."""
    for module_name, attr, names in commands:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the module exists; something it imports does not
                raise
            raise ImportError(
                f"t5cli's core command {names[0]!r} is missing its module {module_name!r}; "
                f"the installation is incomplete (reinstall t5cli)",
                name=module_name,
            ) from exc
        command = getattr(module, attr, None)
        if command is None:
            raise ImportError(
                f"t5cli's core command {names[0]!r}: module {module_name!r} defines no {attr!r}",
                name=module_name,
            )
        group.add_command(command, name=names[0])
        for alias in names[1:]:
            group.add_alias(alias, names[0])


_register_core_commands(cli)


def _report(exc: BaseException, verbose: bool) -> None:
    if verbose:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    click.secho(f"error: {exc}", err=True, fg="red")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``t5`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        opts, rest = split_global_options(argv)
    except click.UsageError as exc:
        exc.show()
        sys.exit(2)
    warnings.filterwarnings("default", category=UserWarning, module="t5cli")
    app = App(opts)
    core_commands = dict(cli.commands)
    try:
        core_only = _core_only(rest)
        if not core_only and not opts.verbose and (_needs_tensorflow(rest) or _user_dir_code(opts)):
            # User-dir files often import TensorFlow or seqio: its C++ start-up chatter
            # must not bury the one line an error prints.
            from t5cli.quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
        if not core_only:
            # Plugins may add commands, so the runtime is built before dispatch.
            _add_plugin_commands(app)
        rc = cli.main(args=rest, prog_name="t5", obj=app, standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except T5CliError as exc:
        _report(exc, opts.verbose)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a file-system error: one line naming the path and the cause
        from t5cli.errors import storage_error

        err = storage_error(exc)
        if err is None:
            raise
        if opts.verbose:
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__)
        click.secho(f"error: {err}", err=True, fg="red")
        sys.exit(err.exit_code)
    finally:
        cli.commands = core_commands  # main() may run again in this process (tests)


#: commands that read data or event files, and so import TensorFlow sooner or later
_TENSORFLOW_COMMANDS = {"train", "finetune", "eval", "infer", "export", "parse-metrics",
                        "parse-tb", "convert"}
_CORE_NAMES = {name for _, _, names in COMMANDS for name in names}


def _command_word(rest: Sequence[str]) -> Optional[str]:
    return next((a for a in rest if not a.startswith("-")), None)


def _core_only(rest: Sequence[str]) -> bool:
    """True when no plugin can matter: top-level help or version, or a core command's help."""
    if not rest or rest[0] in ("-h", "--help", "--version"):
        return True
    command = _command_word(rest)
    return command is None or (command in _CORE_NAMES and any(a in ("-h", "--help") for a in rest))


def _user_dir_code(opts: GlobalOptions) -> bool:
    from t5cli.plugins import user_dirs_have_code

    return user_dirs_have_code(opts.user_dirs)


def _needs_tensorflow(rest: Sequence[str]) -> bool:
    command = _command_word(rest)
    if command == "infer" and _text_infer(rest):
        return False  # the run's recorded vocabularies tokenize without TensorFlow
    return command in _TENSORFLOW_COMMANDS or (command == "tasks" and "show" in rest)


def _text_infer(rest: Sequence[str]) -> bool:
    """``t5 infer --input …`` without ``--task`` or gin files."""
    names = {a.split("=")[0] for a in rest}
    return bool(names & {"--input", "--input-file", "--input_file"}) and not (
        names & {"--task", "--gin-file", "--gin_file"})


def _add_plugin_commands(app: App) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runtime = app.runtime
    for w in caught:
        click.secho(f"warning: {w.message}", err=True, fg="yellow")
    runtime.pm.hook.register_commands(cli=cli)
