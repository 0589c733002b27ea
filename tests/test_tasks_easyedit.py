"""Bad records in EasyEdit's flat formats and in PIQA are named by file, record and field."""

from __future__ import annotations

import json

import pytest

from harness.api import HarnessError
from harness.testing import resolve_task
from harness_plugins.tasks.piqa import read_piqa

FLAT = {
    "case_id": 3,
    "prompt": "The capital of Norway is",
    "subject": "Norway",
    "target_new": "Bergen",
    "ground_truth": "Oslo",
    "rephrase_prompt": "Norway's capital city is",
    "locality_prompt": "The capital of Sweden is",
    "locality_ground_truth": "Stockholm",
}


def test_flat_counterfact_with_a_blank_target_names_record_and_field(tmp_path):
    path = tmp_path / "counterfact-edit.json"
    path.write_text(json.dumps([FLAT, {**FLAT, "target_new": " "}]))
    with pytest.raises(HarnessError) as info:
        resolve_task("easyedit_counterfact").load(data_dir=str(tmp_path))
    assert str(path) in str(info.value) and "record 1 at $.target_new" in str(info.value)


def test_temporal_record_needs_its_ood_passage_but_hallucination_does_not(tmp_path):
    record = {key: FLAT[key] for key in ("prompt", "subject", "target_new")}
    (tmp_path / "hallucination-edit.json").write_text(json.dumps([record]))
    (tmp_path / "temporal-edit.json").write_text(json.dumps([record]))
    case = resolve_task("wise_hallucination").load(data_dir=str(tmp_path)).cases[0]
    assert case.locality == {} and case.target_new == "Bergen"
    with pytest.raises(HarnessError, match=r"record 0 at \$: missing required field 'ood_rephrase'"):
        resolve_task("wise_temporal").load(data_dir=str(tmp_path))


def test_piqa_record_without_a_second_solution_is_rejected(tmp_path):
    path = tmp_path / "piqa_valid.jsonl"
    good = {"goal": "Open a jar", "sol1": "Twist the lid", "sol2": "Shake the jar"}
    path.write_text("\n".join(json.dumps(r) for r in (good, {"goal": "Boil water", "sol1": "Heat it"})))
    with pytest.raises(HarnessError) as info:
        read_piqa(path)
    assert str(path) in str(info.value) and "record 1 at $: missing required field 'sol2'" in str(info.value)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good))
    assert read_piqa(path)[1].solutions == ("Twist the lid", "Shake the jar")
