"""Documentation that cannot drift: every hook has a section with a runnable example."""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest

from conftest import REPO

from t5cli.plugins import hookspecs

HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
DOC = (REPO / "docs" / "plugins.md").read_text()


def test_hooks_are_the_documented_set():
    assert HOOKS == ["register_commands", "register_metrics", "register_models",
                     "register_partitioning_rules", "register_tasks"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_a_section(hook):
    assert getattr(hookspecs, hook).__doc__.strip()
    section = re.search(rf"^## `{hook}`\n(.*?)(?=^## )", DOC, re.S | re.M)
    assert section, f"docs/plugins.md has no '## `{hook}`' section"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert code and f"def {hook}(" in code.group(1)


@pytest.mark.parametrize("hook", HOOKS)
def test_documented_example_runs(hook, tmp_path):
    """Each section's example, saved as a user-dir file, loads and registers something."""
    from t5cli.plugins import load_runtime

    if hook == "register_models":
        pytest.importorskip("t5cli.models.configs")
    section = re.search(rf"^## `{hook}`\n(.*?)(?=^## )", DOC, re.S | re.M).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    d = tmp_path / f"doc_{hook}"
    d.mkdir()
    (d / f"example_{hook}.py").write_text(code)
    rt = load_runtime([d])
    info = [p for p in rt.plugins if p.path and p.path.startswith(str(d))][0]
    assert hook in info.hooks
    if hook == "register_commands":
        import click

        group = click.Group()
        rt.pm.hook.register_commands(cli=group)
        assert "hello" in group.commands
    else:
        assert info.provides, f"the {hook} example registered nothing"
        if hook == "register_tasks":
            assert rt.registry.task("copy_words").name == "copy_words"
        if hook == "register_models":
            assert rt.registry.model("narrow_small").mlp_dim == 512


def _resolve(dotted: str):
    """The object a dotted name stands for: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_t5cli_name_in_the_plugin_doc_exists():
    names = sorted(set(re.findall(r"\b(t5cli(?:\.[A-Za-z_]\w*)+)", DOC)))
    assert "t5cli.models.configs.T5Config" in names and "t5cli.hookimpl" in names
    missing = []
    for dotted in names:
        try:
            _resolve(dotted)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{dotted}: {exc}")
    assert not missing, missing


def test_python_usage_calls_match_the_functions():
    import t5cli

    section = re.search(r"^## Using t5cli from Python\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert section, "docs/plugins.md has no '## Using t5cli from Python' section"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S).group(1)
    calls = [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
             and node.func.value.id == "t5cli"]
    assert {c.func.attr for c in calls} >= {"load_runtime", "train", "evaluate", "infer", "export",
                                            "parse_metrics"}
    for call in calls:
        function = getattr(t5cli, call.func.attr)
        inspect.signature(function).bind(*call.args, **{k.arg: k.value for k in call.keywords})


def test_readme_starts_with_the_two_commands():
    head = (REPO / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head
