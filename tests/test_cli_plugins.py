"""The `t5` command, plugin discovery and user directories, as a user meets them."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import EXAMPLE_USER_DIR, PYTHON, REPO, python_env, write

# --- start-up cost -------------------------------------------------------------------------

HEAVY_CHECK = textwrap.dedent("""
    import sys
    from t5cli.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
    heavy = [m for m in ("jax", "tensorflow", "seqio", "flax", "apache_beam") if m in sys.modules]
    print("HEAVY=" + ",".join(heavy), file=sys.stderr)
""")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins"], ["train", "--help"],
                                  ["models"], ["paths"], ["tasks"], ["cache-tasks", "--help"]])
def test_light_commands_import_no_heavy_library(args, tmp_path):
    proc = subprocess.run([PYTHON, "-c", HEAVY_CHECK, *args], capture_output=True, text=True,
                          env=python_env(XDG_CONFIG_HOME=str(tmp_path)), cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stderr or proc.stderr.rstrip().endswith("HEAVY="), proc.stderr


def _t5_subprocess(*args, tmp_path, **env):
    """Run `t5 ARGS` in a fresh process, TensorFlow's log level left to t5 itself."""
    env = python_env(XDG_CONFIG_HOME=str(tmp_path / "config"), **env)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([PYTHON, "-m", "t5cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def test_user_dir_error_is_one_line_without_tensorflow_chatter(make_user_dir, tmp_path):
    d = make_user_dir({"boom.py": "import seqio\n\nraise RuntimeError('no config here')\n"})
    proc = _t5_subprocess("--user-dir", d, "plugins", tmp_path=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"{d / 'boom.py'}:3: RuntimeError: no config here" in lines[0]


def test_tasks_show_without_tfds_data_names_the_build_command(tmp_path):
    data_dir = tmp_path / "tfds"  # empty: nothing prepared, nothing downloaded
    data_dir.mkdir()
    proc = _t5_subprocess("tasks", "show", "wmt_t2t_ende_v003", "--tfds-data-dir", data_dir,
                          tmp_path=tmp_path, HOME=str(tmp_path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"tfds build wmt_t2t_translate --data_dir {data_dir}" in lines[0]
    assert "--tfds-data-dir" in lines[0] and "TFDS_DATA_DIR" in lines[0]


def _console_script() -> str | None:
    """The installed `t5` script of this interpreter's environment, else the one on PATH."""
    import shutil
    import sysconfig

    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("t5", path=folder)
        if found:
            return found
    return shutil.which("t5")


def test_console_script_and_python_m_agree(tmp_path):
    import importlib.metadata

    try:
        scripts = importlib.metadata.distribution("t5cli").entry_points.select(group="console_scripts")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("t5cli is not installed in this environment (no console script to compare)")
    assert [ep.value for ep in scripts if ep.name == "t5"] == ["t5cli.cli:main"]
    script = _console_script()
    assert script, f"t5cli is installed but its `t5` script is not next to {sys.executable} nor on PATH"
    env = python_env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    out = {}
    for flag in ("--version", "--help"):
        via_module = subprocess.run([PYTHON, "-m", "t5cli", flag], capture_output=True, text=True,
                                    cwd=REPO, env=env, timeout=60)
        via_script = subprocess.run([script, flag], capture_output=True, text=True, cwd=REPO,
                                    env=env, timeout=60)
        assert via_module.returncode == via_script.returncode == 0, (via_module.stderr, via_script.stderr)
        assert via_script.stdout == via_module.stdout
        out[flag] = via_script.stdout
    assert "0.1.0" in out["--version"]
    assert "parse-metrics (parse-tb)" in out["--help"]


def test_missing_core_command_module_is_an_error_that_names_it():
    from t5cli.cli import AliasedGroup, _register_core_commands

    commands = (("t5cli.commands.info", "paths_command", ("paths",)),
                ("t5cli.commands.no_such_module", "command", ("vanished",)))
    with pytest.raises(ImportError, match=r"'vanished'.*'t5cli\.commands\.no_such_module'"):
        _register_core_commands(AliasedGroup(), commands)
    with pytest.raises(ImportError, match=r"defines no 'no_such_attr'"):
        _register_core_commands(AliasedGroup(), (("t5cli.commands.info", "no_such_attr", ("x",)),))


# --- t5 plugins / tasks / models / paths ---------------------------------------------------

def test_plugins_lists_builtins_and_example_plugin(t5):
    r = t5("plugins")
    assert r.exit_code == 0, r.err
    plugins = {p["name"]: p for p in json.loads(r.out)}
    assert plugins["builtin_tasks"]["source"] == "builtin"
    assert "number_words_en_de" in plugins["builtin_tasks"]["provides"]["tasks"]
    assert "register_tasks" in plugins["builtin_tasks"]["hooks"]
    assert plugins["builtin_models"]["source"] == "builtin"
    textops = plugins["textops"]
    assert textops["source"] == "entrypoint"
    assert textops["distribution"] == "t5cli-textops" and textops["version"] == "0.1.0"
    assert textops["provides"] == {"tasks": ["textops_reverse_words"], "metrics": ["token_f1"]}
    assert textops["path"].endswith("plugin.py") and textops["error"] is None


def test_tasks_lists_user_dir_task_with_its_file(t5):
    r = t5("tasks", "--user-dir", EXAMPLE_USER_DIR)
    assert r.exit_code == 0, r.err
    line = next(line for line in r.out.splitlines() if line.startswith("toy_ende "))
    assert "user-dir" in line and str(EXAMPLE_USER_DIR / "tasks.py") in line
    assert any(line.startswith("wmt_t2t_de_en_v003 ") and "builtin" in line for line in r.out.splitlines())


def test_user_dir_flag_after_subcommand_and_json(t5):
    r = t5("tasks", "--json", "--user-dir", str(EXAMPLE_USER_DIR))
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert rows["toy_ende"]["source"] == "user-dir"
    assert rows["textops_reverse_words"]["source"] == "entrypoint"


def test_tasks_show_prints_real_examples_of_number_task(t5):
    r = t5("tasks", "show", "number_words_en_de", "--split", "validation", "-n", "2")
    assert r.exit_code == 0, r.err
    from builtin_tasks.tasks import number_word_pairs

    first_en, first_de = number_word_pairs("validation")[0]
    assert f"inputs_pretokenized: {first_en}" in r.out
    assert f"targets_pretokenized: {first_de}" in r.out
    # byte vocabulary: id = byte + 3, then EOS (1)
    ids = [b + 3 for b in first_de.encode("utf-8")] + [1]
    assert f"targets ({len(ids)} ids): {ids}" in r.out


def test_number_task_splits_are_disjoint_and_complete():
    from builtin_tasks.tasks import number_word_pairs

    splits = {s: {en for en, _ in number_word_pairs(s)} for s in ("train", "validation", "test")}
    assert not (splits["train"] & splits["validation"]) and not (splits["train"] & splits["test"])
    assert not (splits["validation"] & splits["test"])
    assert sum(len(v) for v in splits.values()) == 10000
    assert 800 < len(splits["validation"]) < 1200


def test_models_and_paths(t5):
    r = t5("models")
    assert r.exit_code == 0, r.err
    assert "t5_1_1_small" in r.out and "builtin_models" in r.out
    r = t5("paths")
    assert r.exit_code == 0 and "default_user_dir" in r.out and "T5CLI_USER_DIR" in r.out


# --- errors a user can cause -----------------------------------------------------------------

def test_unknown_task_suggests_close_matches(t5):
    r = t5("tasks", "show", "number_words_en_d")
    assert r.exit_code == 1
    assert "unknown task 'number_words_en_d'" in r.err and "'number_words_en_de'" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


def test_missing_user_dir(t5, tmp_path):
    r = t5("tasks", "--user-dir", tmp_path / "nope")
    assert r.exit_code == 1 and "does not exist" in r.err and "nope" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_user_dir_syntax_error_names_file_and_line(t5, make_user_dir):
    d = make_user_dir({"bad.py": "x = 1\ndef broken(:\n"})
    r = t5("tasks", "--user-dir", d)
    assert r.exit_code == 1
    assert f"{d / 'bad.py'}:2: SyntaxError" in r.err and "Traceback" not in r.err


def test_user_dir_raising_on_import_names_file_and_line(t5, make_user_dir):
    d = make_user_dir({"boom.py": "import os\n\nraise RuntimeError('no config here')\n"})
    r = t5("tasks", "--user-dir", d)
    assert r.exit_code == 1
    assert f"{d / 'boom.py'}:3: RuntimeError: no config here" in r.err
    assert "Traceback" not in r.err
    r = t5("--verbose", "tasks", "--user-dir", d)
    assert "Traceback" in r.err


def test_duplicate_task_across_sources_names_both(t5, make_user_dir):
    d = make_user_dir({"dup.py": textwrap.dedent("""
        import t5cli

        @t5cli.hookimpl
        def register_tasks(register):
            register("number_words_en_de", lambda: None)
    """)})
    r = t5("tasks", "--user-dir", d)
    assert r.exit_code == 1
    assert "registered twice" in r.err and "builtin plugin 'builtin_tasks'" in r.err
    assert str(d / "dup.py") in r.err


def test_module_level_duplicate_of_builtin_is_caught(t5, make_user_dir):
    d = make_user_dir({"tasks.py": textwrap.dedent("""
        import seqio
        seqio.TaskRegistry.add("wmt_t2t_de_en_v003", source=seqio.FunctionDataSource(
            lambda split, shuffle_files: None, splits=["train"]), output_features={})
    """)})
    r = t5("tasks", "--user-dir", d)
    assert r.exit_code == 1 and "registered twice" in r.err and "builtin_tasks" in r.err


BAD_REGISTRATIONS = {
    "metric_not_callable": ("register_metrics", "register('my_metric', 'exact_match')",
                            "metric 'my_metric' as str 'exact_match': expected a function"),
    "task_object_not_factory": ("register_tasks", "register('my_task', 42)",
                                "task 'my_task' as int 42: expected a function"),
    "model_not_a_config": ("register_models", "register('my_model', {'emb_dim': 8})",
                           "model 'my_model' as dict"),
    "unknown_mesh_axis": ("register_partitioning_rules", "register('mlp', 'modle')",
                          "partitioning rule 'mlp' as str 'modle': expected the mesh axis"),
    "missing_argument": ("register_metrics", "register('lonely')",
                         "called its metric register callback with 1 argument(s)"),
    "bad_name": ("register_metrics", "register(None, len)", "named None"),
    "hook_raises": ("register_metrics", "{}['missing']", "KeyError: 'missing'"),
}


@pytest.mark.parametrize("case", sorted(BAD_REGISTRATIONS))
def test_bad_registration_is_one_line_naming_the_file(case, t5, make_user_dir):
    hook, call, expected = BAD_REGISTRATIONS[case]
    d = make_user_dir({"wrong.py": f"import t5cli\n\n\n@t5cli.hookimpl\ndef {hook}(register):\n"
                                   f"    {call}\n"})
    r = t5("tasks", "--user-dir", d)
    assert r.exit_code == 1, r.out
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    assert expected in lines[0] and str(d / "wrong.py") in lines[0]


def test_bad_registration_from_the_command_line(make_user_dir, tmp_path):
    d = make_user_dir({"wrong.py": "import t5cli\n\n\n@t5cli.hookimpl\ndef register_metrics(register):\n"
                                   "    register('my_metric', 3.5)\n"})
    proc = _t5_subprocess("--user-dir", d, "plugins", tmp_path=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: user-dir plugin ") and str(d / "wrong.py") in lines[0]
    assert "metric 'my_metric' as float 3.5: expected a function fn(targets, predictions)" in lines[0]


@pytest.mark.parametrize("hook, factory, command, expected", [
    ("register_tasks", "lambda: 'not a task'", ("tasks", "show", "mine"),
     "the factory for task 'mine' returned str, not a seqio.Task or seqio.Mixture"),
    ("register_models", "dict", ("models", "--details"),
     "the factory for model 'mine' returned dict, not a t5cli.models.configs.T5Config"),
])
def test_factory_returning_the_wrong_kind_is_one_line(hook, factory, command, expected, t5,
                                                      make_user_dir):
    d = make_user_dir({"late.py": f"import t5cli\n\n\n@t5cli.hookimpl\ndef {hook}(register):\n"
                                  f"    register('mine', {factory})\n"})
    r = t5(*command, "--user-dir", d)
    assert r.exit_code == 1
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in r.err, r.err


def test_register_accepts_the_documented_keywords():
    from t5cli.plugins.registry import Origin, Registry

    registry = Registry()
    origin = Origin(plugin="p", source="user-dir", path="/x/p.py")
    registry.registrar("partitioning_rule", origin)(logical_axis="mlp", mesh_axis="model")
    registry.registrar("metric", origin)("m", fn=len)
    assert registry.partitioning_rules() == [("mlp", "model")] and registry.metric("m") is len


def test_misspelled_hook_is_caught(t5, make_user_dir):
    d = make_user_dir({"typo.py": "import t5cli\n\n@t5cli.hookimpl\ndef register_task(register):\n    pass\n"})
    r = t5("tasks", "--user-dir", d)
    assert r.exit_code == 1 and "register_task" in r.err and "spelling" in r.err


def _install_fake_distribution(root, module_source: str, name="broken-plugin", entry="broken"):
    module = f"{entry}_t5_plugin"
    write(root / f"{module}.py", module_source)
    info = root / f"{name.replace('-', '_')}-0.3.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    write(info / "entry_points.txt", f"[t5cli]\n{entry} = {module}\n")


def test_broken_installed_plugin_warns_and_cli_goes_on(t5, tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, "raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = t5("tasks")
    assert r.exit_code == 0
    assert "warning: plugin 'broken' from distribution broken-plugin 0.3 failed to load" in r.err
    assert "needs libfoo" in r.err and "number_words_en_de" in r.out
    r = t5("plugins")
    broken = [p for p in json.loads(r.out) if p["name"] == "broken"][0]
    assert "ImportError: needs libfoo" in broken["error"]
    r = t5("--strict-plugins", "tasks")
    assert r.exit_code == 1 and "needs libfoo" in r.err
    r = t5("tasks", "-p", "no:broken")
    assert r.exit_code == 0 and "broken" not in r.err


def test_load_only_named_plugins(t5, monkeypatch):
    monkeypatch.setenv("T5CLI_LOAD_PLUGINS", "nothing-matches")
    r = t5("plugins")
    names = [p["name"] for p in json.loads(r.out)]
    assert "textops" not in names and "builtin_tasks" in names


def _plugin_names(r):
    assert r.exit_code == 0, r.err
    return [p["name"] for p in json.loads(r.out)]


@pytest.mark.parametrize("flags", [["-p", "no:textops"], ["-pno:textops"], ["-p=no:textops"]])
def test_block_installed_plugin(t5, flags):
    names = _plugin_names(t5("plugins", *flags))
    assert "textops" not in names and {"builtin_tasks", "builtin_models"} <= set(names)
    r = t5(*flags, "tasks")
    assert r.exit_code == 0 and "textops_reverse_words" not in r.out and "number_words_en_de" in r.out


def test_load_plugins_env_selects_entry_points_and_keeps_builtins(t5, tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, "import t5cli\n\n@t5cli.hookimpl\ndef register_metrics(register):\n"
                                         "    register('other_metric', len)\n",
                               name="other-plugin", entry="other")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"textops", "other"} <= set(_plugin_names(t5("plugins")))
    monkeypatch.setenv("T5CLI_LOAD_PLUGINS", "textops")
    names = _plugin_names(t5("plugins"))
    assert "textops" in names and "other" not in names
    assert {"builtin_tasks", "builtin_models"} <= set(names)


# --- the user-dir contract -------------------------------------------------------------------

def test_user_dir_module_names_siblings_dataclasses_pickling(make_user_dir):
    from t5cli.plugins import load_runtime
    from t5cli.plugins.user_dir import package_name

    d = make_user_dir({
        "shapes.py": "import dataclasses\n\n@dataclasses.dataclass\nclass Point:\n    x: int\n    y: int = 2\n",
        "uses.py": "from . import shapes\nimport shapes as bare\nPOINT = shapes.Point(1)\nSAME = bare is shapes\n",
        "seqio.py": "SHADOW = True\n",
    })
    rt = load_runtime([d])
    pkg = package_name(d)
    assert pkg == package_name(d.resolve()) and pkg.startswith("t5cli_user_dir_")
    uses = sys.modules[f"{pkg}.uses"]
    assert uses.SAME and uses.POINT.y == 2
    assert pickle.loads(pickle.dumps(uses.POINT)) == uses.POINT
    import seqio  # the library, not the user's seqio.py

    assert not hasattr(seqio, "SHADOW") and hasattr(seqio, "TaskRegistry")
    assert str(d) not in sys.path
    assert rt.user_dirs == [d.resolve()]


def test_hookimpl_user_dir_task_is_attributed_and_buildable(make_user_dir, t5):
    d = make_user_dir({"mine.py": textwrap.dedent("""
        import t5cli

        def build():
            import seqio
            from builtin_tasks.tasks import _number_words_task
            task = _number_words_task("my_numbers", 50)
            return seqio.Task("my_numbers", source=task.source, preprocessors=task.preprocessors,
                              output_features=task.output_features)

        @t5cli.hookimpl
        def register_tasks(register):
            register("my_numbers", build)
    """)})
    from t5cli.plugins import load_runtime

    rt = load_runtime([d])
    origin = rt.registry.origin("task", "my_numbers")
    assert origin.source == "user-dir" and origin.path == str(d / "mine.py")
    assert rt.registry.task("my_numbers").name == "my_numbers"
    r = t5("tasks", "show", "my_numbers", "--split", "train", "-n", "1", "--user-dir", d)
    assert r.exit_code == 0 and "inputs_pretokenized:" in r.out


def test_env_var_and_default_user_dir_are_loaded(make_user_dir, monkeypatch, tmp_path):
    from t5cli.plugins import default_user_dir, load_runtime

    env_dir = make_user_dir({"a.py": "import t5cli\n@t5cli.hookimpl\ndef register_metrics(register):\n"
                                     "    register('env_metric', len)\n"})
    monkeypatch.setenv("T5CLI_USER_DIR", str(env_dir))
    default = default_user_dir()
    write(default / "b.py", "import t5cli\n@t5cli.hookimpl\ndef register_metrics(register):\n"
                            "    register('default_metric', len)\n")
    rt = load_runtime([env_dir])  # same dir twice: loaded once
    assert rt.user_dirs == [env_dir.resolve(), default.resolve()]
    assert {"env_metric", "default_metric"} <= set(rt.registry.names("metric"))
    monkeypatch.setenv("T5CLI_NO_DEFAULT_USER_DIR", "1")
    assert "default_metric" not in load_runtime().registry.names("metric")


def test_default_user_dir_is_the_config_dir_and_loads(t5, monkeypatch, tmp_path):
    from t5cli.plugins import default_user_dir

    config_home = tmp_path / "xdg_config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    folder = config_home / "t5cli"
    assert default_user_dir() == folder
    assert f"{folder}  (absent" in t5("paths").out
    write(folder / "mine.py", "import t5cli\n@t5cli.hookimpl\ndef register_metrics(register):\n"
                              "    register('default_metric', len)\n")
    r = t5("paths")
    line = next(line for line in r.out.splitlines() if line.startswith("default_user_dir"))
    assert line.split()[1] == str(folder) and "absent" not in line
    mine = [p for p in json.loads(t5("plugins").out) if p["name"] == "t5cli/mine.py"]
    assert mine and mine[0]["source"] == "user-dir" and mine[0]["path"] == str(folder / "mine.py")
    assert mine[0]["provides"] == {"metrics": ["default_metric"]}


def test_gin_file_in_user_dir_imports_tasks(tmp_path, monkeypatch):
    """The example's gin file resolves by bare name, and its `import tasks` is the user dir's."""
    import seqio

    from t5cli import config
    from t5cli.plugins import load_runtime
    from t5cli.plugins.user_dir import package_name

    monkeypatch.chdir(tmp_path)  # not the user dir: only the search path can find the file
    rt = load_runtime([EXAMPLE_USER_DIR])
    config.parse_gin(gin_files=["toy_ende.gin"], user_dirs=rt.gin_search_paths())
    assert config.macro_value("MIXTURE_OR_TASK_NAME") == "toy_ende"
    assert config.macro_value("TASK_FEATURE_LENGTHS") == {"inputs": 64, "targets": 64}
    assert config.macro_value("MODEL_NAME") == "byt5_tiny"
    real_name = f"{package_name(EXAMPLE_USER_DIR)}.tasks"
    assert sys.modules["tasks"] is sys.modules[real_name]
    assert sys.modules[real_name].__spec__.name == real_name
    assert "toy_ende" in rt.registry.names("task") and "toy_ende" in seqio.TaskRegistry.names()
    assert rt.registry.task("toy_ende").name == "toy_ende"


@pytest.mark.parametrize("style", ["relative", "bare"])
def test_module_level_task_is_credited_to_the_registering_sibling(make_user_dir, style, t5):
    import seqio

    # Bare module names are process-wide, so each case has its own sibling name.
    sibling, task = f"registers_{style}", f"sibling_task_{style}"
    d = make_user_dir({
        "a.py": f"from . import {sibling}\n" if style == "relative" else f"import {sibling}\n",
        f"{sibling}.py": textwrap.dedent(f"""
            import seqio
            seqio.TaskRegistry.add("{task}", source=seqio.FunctionDataSource(
                lambda split, shuffle_files: None, splits=["train"]), output_features={{}})
        """),
    })
    from t5cli.plugins import load_runtime

    try:
        rt = load_runtime([d])
        assert rt.registry.origin("task", task).path == str(d / f"{sibling}.py")
        provides = {p.name: p.provides for p in rt.plugins if p.source == "user-dir"}
        assert provides[f"{d.name}/a.py"] == {}
        assert provides[f"{d.name}/{sibling}.py"] == {"tasks": [task]}
        row = next(line for line in t5("tasks", "--user-dir", d).out.splitlines()
                   if line.startswith(task + " "))
        assert row.endswith(str(d / f"{sibling}.py"))
    finally:
        seqio.TaskRegistry.remove(task)


def test_partitioning_rules_and_metrics_from_plugins(make_user_dir):
    from t5cli.plugins import load_runtime

    d = make_user_dir({"rules.py": textwrap.dedent("""
        import t5cli

        @t5cli.hookimpl
        def register_partitioning_rules(register):
            register("mlp", "model")
            register("embed", None)
    """)})
    rt = load_runtime([d])
    assert rt.registry.partitioning_rules() == [("embed", None), ("mlp", "model")]
    assert rt.registry.metric("token_f1")(["a b"], ["a b"]) == {"token_f1": 100.0}


def test_plugin_commands_are_added(make_user_dir, t5):
    d = make_user_dir({"cmd.py": textwrap.dedent("""
        import click
        import t5cli

        @t5cli.hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("name")
            def hello(name):
                "Say hello."
                click.echo(f"hello {name}")
    """)})
    for flag in ("--help", "-h"):
        r = t5("--user-dir", d, "hello", flag)
        assert r.exit_code == 0, r.err
        assert "Usage: t5 hello [OPTIONS] NAME" in r.out and "Say hello." in r.out
    r = t5("--user-dir", d, "hello", "world")
    assert r.exit_code == 0 and r.out.strip() == "hello world"
    r = t5("hello", "world")  # plugin commands do not outlive the call that loaded them
    assert r.exit_code == 2 and "No such command 'hello'" in r.err
