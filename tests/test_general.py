"""The lm-eval adapter on tiny random models with the local task folder tests/data/lmeval_tasks."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import HarnessError
from harness.general import (
    GeneralResult,
    LmEvalMissingError,
    check_tasks,
    evaluate_general,
    general_before,
)
from harness.general.environment import OFFLINE_VARIABLES, hub_unreachable, prepare_environment
from harness.general.results import read_results

TASKS_DIR = Path(__file__).parent / "data" / "lmeval_tasks"
MC, GEN = "harness_facts_mc", "harness_facts_gen"
N_MC, N_GEN = 8, 10


class NetworkBlocked(ConnectionRefusedError):
    """Raised by the audit hook for any outbound connection or DNS lookup during a guarded test."""


_ATTEMPTS: list[tuple[str, object]] | None = None


def _network_audit(event: str, args: tuple) -> None:
    # Audit hooks cannot be removed, so this one stays installed and acts only inside `network_guard`.
    if _ATTEMPTS is None:
        return
    if event == "socket.getaddrinfo" or (event == "socket.connect" and isinstance(args[1], tuple)):
        _ATTEMPTS.append((event, args[1] if event == "socket.connect" else args[0]))
        raise NetworkBlocked(f"network access during a test: {event} {args[1:]}")


sys.addaudithook(_network_audit)


@pytest.fixture
def network_guard() -> Iterator[list[tuple[str, object]]]:
    """Every DNS lookup and internet connection in the test fails, and is recorded."""
    global _ATTEMPTS
    _ATTEMPTS = []
    try:
        yield _ATTEMPTS
    finally:
        _ATTEMPTS = None


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private cache, and offline switches restored after tests that flip them."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    for name in (*OFFLINE_VARIABLES, "HF_UPDATE_DOWNLOAD_COUNTS"):
        monkeypatch.setenv(name, "1" if name != "HF_UPDATE_DOWNLOAD_COUNTS" else "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_UPDATE_DOWNLOAD_COUNTS"):
        monkeypatch.setattr(datasets.config, name, getattr(datasets.config, name))


def _evaluate(handle, tasks=(MC, GEN), **kwargs) -> dict[str, GeneralResult]:
    return evaluate_general(handle, list(tasks), include_path=TASKS_DIR, batch_size=4, **kwargs)


def test_results_carry_metric_and_provenance(tiny_gpt2, network_guard) -> None:
    import lm_eval

    results = _evaluate(tiny_gpt2)

    assert list(results) == [MC, GEN]
    mc, gen = results[MC], results[GEN]
    assert (mc.metric, mc.filter, mc.n_docs) == ("acc", "none", N_MC)
    assert (gen.metric, gen.filter, gen.n_docs) == ("exact_match", "strip", N_GEN)
    for result in results.values():
        assert 0.0 <= result.value <= 1.0
        assert (result.n_shot, result.limit, result.task_version) == (0, None, "1.0")
        assert result.lmeval_version == lm_eval.__version__
        assert GeneralResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    assert network_guard == []


def test_limit_is_the_number_of_documents_evaluated(tiny_llama) -> None:
    results = _evaluate(tiny_llama, limit=3)

    assert {name: (r.n_docs, r.limit) for name, r in results.items()} == {MC: (3, 3), GEN: (3, 3)}


def test_callers_random_streams_survive_the_evaluation(tiny_gpt2) -> None:
    def draw() -> tuple[float, float, list[float]]:
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    def seed_all() -> None:
        random.seed(11)
        np.random.seed(12)
        torch.manual_seed(13)

    seed_all()
    expected = draw()
    seed_all()
    _evaluate(tiny_gpt2, tasks=(MC,), limit=2, seed=99)

    assert draw() == expected


def test_train_mode_is_restored_and_does_not_leak_into_the_scores(tiny_gpt2) -> None:
    model = tiny_gpt2.model
    model.eval()
    in_eval = _evaluate(tiny_gpt2)
    model.train()

    in_train = _evaluate(tiny_gpt2)

    assert model.training
    assert in_train == in_eval


def test_wrapping_keeps_an_edit_to_an_untied_output_head(tiny_gpt2) -> None:
    """HFLM calls tie_weights(): with the config still saying "tied", that would copy the input
    embeddings over this head."""
    model = tiny_gpt2.model
    edited = model.lm_head.weight.detach().clone() + 0.5
    model.lm_head.weight = torch.nn.Parameter(edited.clone())
    assert model.config.tie_word_embeddings

    _evaluate(tiny_gpt2, tasks=(MC,), limit=2)

    assert model.lm_head.weight is not model.transformer.wte.weight
    assert torch.equal(model.lm_head.weight, edited)


def test_before_figures_are_computed_once_then_read_from_the_cache(tiny_llama) -> None:
    from harness.cache import cache_dir

    first = general_before(tiny_llama, [MC], include_path=TASKS_DIR, limit=4)
    (entry,) = cache_dir("general").glob("*.json")
    stored = json.loads(entry.read_text())
    # A value no evaluation of 4 documents can give: if it comes back, it came from the file.
    stored[MC]["value"] = 0.123
    entry.write_text(json.dumps(stored))

    again = general_before(tiny_llama, [MC], include_path=TASKS_DIR, limit=4)

    assert first[MC].value != 0.123
    assert again[MC] == GeneralResult.from_json({**first[MC].to_json(), "value": 0.123})


def test_before_cache_key_follows_the_limit_and_the_task_files(tiny_llama, tmp_path) -> None:
    from harness.cache import cache_dir

    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, tasks)
    general_before(tiny_llama, [MC], include_path=tasks, limit=2)
    general_before(tiny_llama, [MC], include_path=tasks, limit=3)
    facts = tasks / "facts_mc.jsonl"
    facts.write_text("\n".join(facts.read_text().splitlines()[::-1]) + "\n")
    reordered = general_before(tiny_llama, [MC], include_path=tasks, limit=2)

    assert len(list(cache_dir("general").glob("*.json"))) == 3
    assert reordered[MC].n_docs == 2


def test_offline_mode_is_entered_when_the_hub_is_unreachable(monkeypatch, network_guard) -> None:
    import datasets.config
    import huggingface_hub.constants

    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub_unreachable.cache_clear()
    try:
        prepare_environment(None)
    finally:
        hub_unreachable.cache_clear()

    assert len(network_guard) == 1
    assert datasets.config.HF_HUB_OFFLINE and huggingface_hub.constants.HF_HUB_OFFLINE
    assert all(os.environ[name] == "1" for name in OFFLINE_VARIABLES)


def test_missing_lmeval_says_how_to_install_it(tiny_gpt2, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)

    with pytest.raises(LmEvalMissingError, match=r"pip install 'knowedit-harness\[lmeval\]'"):
        _evaluate(tiny_gpt2)


def test_unknown_task_names_the_task_and_the_folder(tiny_gpt2) -> None:
    with pytest.raises(HarnessError, match=r"'no_such_task'.*lmeval_tasks"):
        _evaluate(tiny_gpt2, tasks=(MC, "no_such_task"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include_path": "/nonexistent/tasks"}, "not a directory"),
        ({"limit": 0}, "positive document count"),
        ({"num_fewshot": -1}, "num_fewshot"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_bad_arguments_are_harness_errors(tiny_gpt2, kwargs, message) -> None:
    options = {"include_path": TASKS_DIR, **kwargs}
    with pytest.raises(HarnessError, match=message):
        evaluate_general(tiny_gpt2, [MC], **options)


def test_a_group_reports_its_aggregate_over_all_its_documents() -> None:
    output = {
        "results": {"grp": {"alias": "grp", "acc,none": 0.5, "acc_stderr,none": "N/A"}},
        "group_subtasks": {"grp": ["a", "sub"], "sub": ["b"]},
        "n-shot": {"a": 5, "b": 5},
        "n-samples": {"a": {"original": 10, "effective": 4}, "b": {"original": 7, "effective": 4}},
        "versions": {"grp": 2},
    }

    (result,) = read_results(output, ["grp"], limit=4, lmeval_version="0.4.13").values()

    assert (result.metric, result.value, result.n_docs, result.n_shot) == ("acc", 0.5, 8, 5)
    assert result.task_version == "2"


def test_a_group_without_an_aggregate_is_a_clear_error() -> None:
    output = {"results": {"grp": {"alias": "grp"}}, "group_subtasks": {"grp": ["a"]}}
    with pytest.raises(HarnessError, match="aggregate_metric_list"):
        read_results(output, ["grp"], limit=None, lmeval_version="0.4.13")


UNCACHED_TASK = """
task: harness_uncached
dataset_path: knowedit-harness-tests/never-downloaded
test_split: test
output_type: multiple_choice
doc_to_text: "{{prompt}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


@pytest.fixture
def uncached_tasks(tmp_path: Path) -> Path:
    """A task folder with a task whose dataset lives on the hub and is in no local cache."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "harness_uncached.yaml").write_text(UNCACHED_TASK)
    return folder


def test_a_task_whose_data_is_not_cached_offline_fails_in_one_line(uncached_tasks, network_guard) -> None:
    with pytest.raises(HarnessError) as refused:
        check_tasks(["harness_uncached"], include_path=uncached_tasks)
    message = str(refused.value)
    assert "\n" not in message and refused.value.__cause__ is None
    assert message.startswith(
        "lm-eval task 'harness_uncached' cannot be built: dataset knowedit-harness-tests/never-downloaded "
        "is not in the local `datasets` cache and the hub is offline;"
    )
    assert "HF_HOME" in message and f"a task from {uncached_tasks} (--general-include)" in message
    check_tasks([MC, GEN], include_path=TASKS_DIR)  # local data builds offline
    assert network_guard == []


def test_a_run_refuses_an_unbuildable_general_task_before_its_directory_exists(
    uncached_tasks, tiny_model_dirs, tmp_path
) -> None:
    from test_runs_plugin import registry

    from harness.runs.catalog import Catalog
    from harness.runs.plan import RunConfig
    from harness.runs.runner import execute, plan

    catalog = Catalog(registry())
    fields = dict(model=str(tiny_model_dirs["llama"]), methods=("nudge",), tasks=("facts",))
    refused = RunConfig(**fields, general=("harness_uncached",), general_include=str(uncached_tasks))
    with pytest.raises(HarnessError, match=r"^lm-eval task 'harness_uncached' cannot be built"):
        execute(refused, tmp_path / "run", device="cpu", catalog=catalog, progress=False)
    assert not (tmp_path / "run").exists()
    local = RunConfig(**fields, general=(MC,), general_include=str(TASKS_DIR))
    assert [j.key for j in plan(local, catalog)[1]] == [f"{fields['model']}/nudge/facts/single"]
