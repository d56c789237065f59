"""``MODEL_DIR/t5cli_run.json``: what a run was made with, so later commands can say what is missing.

Training writes it; ``eval``, ``infer`` and ``export`` read it and, when a task or model
came from a user dir or plugin that is not loaded now, say which ``--user-dir`` to pass
instead of failing with a bare unknown name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from t5cli.errors import T5CliError

FILENAME = "t5cli_run.json"


def write_run_record(model_dir, runtime, *, task: Optional[str], model: Optional[str],
                     extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write (or update) the run record; earlier fields the caller does not set are kept."""
    path = Path(model_dir) / FILENAME
    record = read_run_record(model_dir) or {}
    record.update(runtime.describe())
    record["task"] = task
    record["model"] = model
    if task is not None and ("task", task) in runtime.registry:
        record["task_origin"] = _origin_dict(runtime.registry.origin("task", task))
    if model is not None and ("model", model) in runtime.registry:
        record["model_origin"] = _origin_dict(runtime.registry.origin("model", model))
    record.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if extra:
        record.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # never leave a half-written record
    return path


def read_run_record(model_dir) -> Optional[Dict[str, Any]]:
    """The run record of ``model_dir``, or None if there is none."""
    path = Path(model_dir) / FILENAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise T5CliError(f"{path} is not valid JSON ({exc}); restore it or delete it") from None


def _origin_dict(origin) -> Dict[str, Any]:
    return {"plugin": origin.plugin, "source": origin.source, "path": origin.path}


def add_hints(runtime, model_dir) -> Optional[Dict[str, Any]]:
    """Teach the registry what to say when the recorded task or model is not loaded now."""
    record = read_run_record(model_dir)
    if not record:
        return None
    loaded_dirs = {str(p) for p in runtime.user_dirs}
    for kind in ("task", "model"):
        name, origin = record.get(kind), record.get(f"{kind}_origin") or {}
        if not name or (kind, name) in runtime.registry:
            continue
        hint = _hint_for(kind, origin, record, loaded_dirs)
        if hint:
            runtime.registry.hints[(kind, name)] = hint
    return record


def _hint_for(kind: str, origin: Dict[str, Any], record: Dict[str, Any], loaded_dirs) -> str:
    source, path = origin.get("source"), origin.get("path")
    if source == "user-dir" and path:
        directory = str(Path(path).parent)
        if directory not in loaded_dirs:
            return f"this {kind} came from user dir {directory}: pass --user-dir {directory}"
    if source == "entrypoint":
        plugin = next((p for p in record.get("plugins", []) if p.get("name") == origin.get("plugin")), {})
        dist = plugin.get("distribution") or origin.get("plugin")
        return f"this {kind} came from the plugin package {dist!r}: install it (pip install {dist})"
    missing = [d for d in record.get("user_dirs", []) if d not in loaded_dirs]
    if missing:
        flags = " ".join(f"--user-dir {d}" for d in missing)
        return f"the run that made this model used {flags}: pass {flags}"
    return ""
