"""A preview of a task: a few preprocessed examples as text and token ids (`t5 tasks show`)."""

from __future__ import annotations

from typing import Dict, List, Optional

from t5cli.errors import T5CliError


def preview_examples(registry, name: str, *, split: str = "validation", n: int = 3,
                     tfds_data_dir: Optional[str] = None) -> List[Dict[str, object]]:
    """The first ``n`` preprocessed examples of ``split``, unshuffled, as python values."""
    from t5cli.runtime.datasets import ensure_task_data

    task = registry.task(name)
    # A TFDS task reads its splits from the prepared dataset: check the data first.
    ensure_task_data(task, tfds_data_dir)
    if split not in task.splits:
        raise T5CliError(f"task {name!r} has no split {split!r}; its splits are {', '.join(task.splits)}")
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False)
    examples = []
    for ex in dataset.take(n).as_numpy_iterator():
        examples.append({k: _pythonic(v) for k, v in ex.items()})
    return examples


def _pythonic(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def format_examples(name: str, split: str, examples: List[Dict[str, object]]) -> str:
    """Examples as readable text: pretokenized strings, then token ids."""
    lines = [f"{name} [{split}]: {len(examples)} example(s)"]
    for i, ex in enumerate(examples):
        lines.append(f"--- example {i}")
        for key in sorted(ex, key=lambda k: (k.endswith("_pretokenized") is False, k)):
            value = ex[key]
            if isinstance(value, list):
                shown = value if len(value) <= 64 else value[:64] + ["…"]
                lines.append(f"  {key} ({len(value)} ids): {shown}")
            else:
                lines.append(f"  {key}: {value}")
    return "\n".join(lines)
