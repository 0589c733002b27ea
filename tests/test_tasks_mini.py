"""knowedit-mini: the bundled sample loads from package data, validates, and its probes are facts that
the unedited SmolLM2-135M gets right (so a probe that fails after an edit failed because of it)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.api import EditCase, HarnessError
from harness.plugins import get_registry
from harness.schemas import validate_records
from harness.testing import resolve_task

#: mini task -> (its full-size task, the number of edit cases it yields)
MINI = {
    "mini_zsre": ("zsre", 20),
    "mini_wiki_recent": ("wiki_recent", 20),
    "mini_wiki_counterfact": ("wiki_counterfact", 20),
    "mini_wikibio": ("wikibio", 20),
    "mini_convsent": ("convsent", 20),
    "mini_sanitation": ("sanitation", 20),
}
#: Sanitation's retain items (its second list) become locality probes, not cases.
SANITATION_RETAIN = 20


def mini_path(name: str) -> Path:
    loaded = resolve_task(name).load()
    return Path(loaded.source)


@pytest.mark.parametrize("name", MINI)
def test_registered_like_its_full_size_task(name: str) -> None:
    full, _ = MINI[name]
    components = get_registry().components["tasks"]
    assert components[name].info["record_format"] == components[full].info["record_format"]
    assert "bundled sample" in components[name].info["source"]
    mini_task, full_task = resolve_task(name), resolve_task(full)
    assert mini_task.record_format == full_task.record_format
    assert mini_task.metrics == full_task.metrics
    assert mini_task.splits == ("test",)


@pytest.mark.parametrize("name", MINI)
def test_every_method_of_the_suite_can_edit_every_case(name: str) -> None:
    """What the runner asks before a model loads (`Method.check_case`), asked of the bundled sample
    itself: a record a suite method would refuse must not ship."""
    from harness.plugins import get_registry
    from harness.runs.catalog import Catalog

    catalog = Catalog(get_registry())
    cases = resolve_task(name).load().cases
    for method in catalog.suite("knowedit-mini").methods:
        checker = catalog.method(method)
        assert [checker.check_case(c) for c in cases] == [None] * len(cases), method


@pytest.mark.parametrize("name", MINI)
def test_loads_from_package_data_offline(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    loaded = resolve_task(name).load()
    _, count = MINI[name]
    assert len(loaded.cases) == count
    assert loaded.skipped == ()
    source = Path(loaded.source)
    assert source.is_file() and source.parent.name == "knowedit_mini"
    assert [c.case_id for c in loaded.cases] == [f"{name}:test:{i}" for i in range(count)]
    if name == "mini_sanitation":
        retain = [p for c in loaded.cases for p in c.locality["retain"]]
        assert len(retain) == SANITATION_RETAIN


@pytest.mark.parametrize("name", MINI)
def test_every_record_validates_against_its_schema(name: str) -> None:
    task = resolve_task(name)
    path = mini_path(name)
    assert task.check_file(str(path)) == []
    data = json.loads(path.read_text(encoding="utf-8"))
    records = data["success"] + data["locality"] if name == "mini_sanitation" else data
    assert validate_records(records, task.record_format, str(path)) == []


@pytest.mark.parametrize("name", MINI)
def test_full_size_task_reads_the_mini_file_identically(name: str) -> None:
    """The sample is in the published format: the full-size task, pointed at the same file, makes
    the same cases (only the task name in the case ids differs)."""
    full, _ = MINI[name]
    path = mini_path(name)
    full_task = type(resolve_task(full))(paths={"test": path}, name=name)
    assert full_task.load().cases == resolve_task(name).load().cases


def test_explicit_paths_override_the_bundled_file(tmp_path: Path) -> None:
    """A dataset spec naming a record format may get a mini class: it must read the spec's file."""
    record = {"subject": "Iceland", "prompt": "The capital of Iceland is", "target_new": "Akureyri"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    task = type(resolve_task("mini_wiki_recent"))(paths={"test": path}, name="mine")
    (case,) = task.load().cases
    assert (case.case_id, case.target_new) == ("mine:test:0", "Akureyri")


def test_mini_sample_has_no_train_split() -> None:
    with pytest.raises(HarnessError, match="no split 'train'"):
        resolve_task("mini_wiki_counterfact").load(split="train")


def test_fact_records_carry_every_probe_kind_the_checks_rely_on() -> None:
    """Each fact format has locality probes on every case, and portability where a format has it."""
    for name in ("mini_zsre", "mini_wiki_recent", "mini_wiki_counterfact"):
        cases = resolve_task(name).load().cases
        assert all(c.locality for c in cases), name
        assert sum(bool(c.portability) for c in cases) >= 7, name
    counterfact = resolve_task("mini_wiki_counterfact").load().cases
    assert sum("forgetfulness" in c.locality for c in counterfact) >= 10
    assert all(c.ground_truth and c.rephrases for c in counterfact)
    assert all(not c.ground_truth for c in resolve_task("mini_wiki_recent").load().cases)


# -- what the unedited model must know -----------------------------------------------------------


def pre_edit_checks(name: str, cases: tuple[EditCase, ...]) -> list[tuple[str, str, str]]:
    """(label, prompt, answer) pairs the unedited model must complete right.

    Locality probes must hold before and after an edit, so the model must know them now. A
    portability answer follows from the *new* fact, so the unedited model cannot give it; what it
    must get right is the same probe with the fact as it stands (the case's ground truth): that
    shows it resolves the alias, and a wrong answer after the edit is the edit's failure. Sanitation
    forget prompts must be answered with the answer to be forgotten. wiki_recent inserts facts that
    have no pre-edit answer; its aliases are checked through its locality probes instead.
    """
    checks = []
    for case in cases:
        for group, probes in case.locality.items():
            checks += [(f"{case.case_id} locality.{group}", p.prompt, p.answers[0]) for p in probes]
        if case.ground_truth:
            for group, probes in case.portability.items():
                checks += [
                    (f"{case.case_id} portability.{group}", p.prompt, case.ground_truth[0]) for p in probes
                ]
        if name == "mini_sanitation":
            checks.append((f"{case.case_id} forget", case.prompt, case.extras["answer"]))
    return checks


def pre_edit_accuracy(handle, checks: list[tuple[str, str, str]]) -> dict[str, float]:
    """Teacher-forced token accuracy of each check's answer on the unedited model, by label."""
    from harness.evaluation.options import EvalOptions
    from harness.testing import Evaluator

    probes = [EditCase(case_id=label, prompt=prompt, target_new=answer) for label, prompt, answer in checks]
    evaluator = Evaluator(handle, ["edit_succ"], options=EvalOptions(use_cache=False))
    scores = evaluator.evaluate_pre(probes)
    return {label: s["edit_succ"] for (label, _, _), s in zip(checks, scores, strict=True)}


@pytest.mark.slow
def test_unedited_smollm2_knows_every_probe_answer(smollm2) -> None:
    checks = [c for name in MINI for c in pre_edit_checks(name, resolve_task(name).load().cases)]
    assert len(checks) >= 150
    accuracy = pre_edit_accuracy(smollm2, checks)
    wrong = {label: value for label, value in accuracy.items() if value < 1.0}
    assert wrong == {}


@pytest.mark.slow
def test_check_catches_a_probe_the_model_does_not_know(smollm2) -> None:
    """The check above is not vacuous: a locality probe with a wrong answer fails it."""
    (case,) = resolve_task("mini_wiki_counterfact").load().cases[:1]
    probe = case.locality["relation_specificity"][0]
    wrong = replace(probe, answers=("Klingon",))
    bad = replace(case, locality={"relation_specificity": (wrong,)}, portability={})
    accuracy = pre_edit_accuracy(smollm2, pre_edit_checks("mini_wiki_counterfact", (bad,)))
    (value,) = accuracy.values()
    assert value < 1.0
