"""Shared fixtures: an isolated environment and an in-process `t5` runner."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_USER_DIR = REPO / "examples" / "user_dir"

# Keep TensorFlow quiet and off the GPU path in every test process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No user config, no user-dir variables, no plugin filter leak into a test."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for var in ("T5CLI_USER_DIR", "T5CLI_LOAD_PLUGINS", "T5CLI_NO_DEFAULT_USER_DIR"):
        monkeypatch.delenv(var, raising=False)
    yield


@dataclasses.dataclass
class Result:
    exit_code: int
    out: str
    err: str


@pytest.fixture
def t5(capsys):
    """Run `t5 ARGS…` in this process through the real entry point; return code and output."""
    from t5cli.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def make_user_dir(tmp_path):
    """Create a user dir from {filename: source}; returns its path."""
    counter = {"n": 0}

    def make(files: dict) -> Path:
        counter["n"] += 1
        d = tmp_path / f"user_dir_{counter['n']}"
        d.mkdir()
        for name, text in files.items():
            write(d / name, text)
        return d

    return make


def python_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("T5CLI_")}
    env.update(extra)
    return env


PYTHON = sys.executable


@pytest.fixture(scope="session", autouse=True)
def session_compile_cache(tmp_path_factory):
    """t5cli's persistent compilation cache in one folder for the whole session, never the
    user's, set before any module-scoped fixture compiles (a test that counts entries
    points T5CLI_CACHE_DIR at its own folder)."""
    folder = tmp_path_factory.mktemp("compile_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("T5CLI_CACHE_DIR", str(folder))
        patch.delenv("T5CLI_COMPILE_CACHE", raising=False)
        patch.delenv("T5CLI_COMPILE_CACHE_MAX_SIZE", raising=False)
        yield folder
