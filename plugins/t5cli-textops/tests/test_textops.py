"""The example plugin, installed: found through its entry point and usable."""

from t5cli_textops.plugin import TASK_NAME, sentences, token_f1


def test_token_f1_values():
    assert token_f1(["a b c"], ["a b c"]) == {"token_f1": 100.0}
    assert token_f1(["a b"], ["c d"]) == {"token_f1": 0.0}
    # precision 1/2, recall 1/1 -> F1 2/3
    assert abs(token_f1(["a"], ["a b"])["token_f1"] - 200 / 3) < 1e-9


def test_splits_are_deterministic_and_distinct():
    assert sentences("train") == sentences("train")
    assert set(sentences("validation")) != set(sentences("test"))


def test_entry_point_registers_task_and_metric():
    from t5cli.plugins import load_runtime

    runtime = load_runtime(include_default_user_dir=False)
    origin = runtime.registry.origin("task", TASK_NAME)
    assert origin.source == "entrypoint" and origin.plugin == "textops"
    task = runtime.registry.task(TASK_NAME)
    example = next(task.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
    words = example["inputs_pretokenized"].decode().split()
    assert example["targets_pretokenized"].decode().split() == words[::-1]
    assert runtime.registry.metric("token_f1") is token_f1
