"""`harness run --general`: the runner calls the lm-eval adapter around a job's edits and the
figures reach the manifest, the summary and the leaderboard (tiny model, local lm-eval tasks)."""

from __future__ import annotations

import json

import pytest
from test_general import MC, TASKS_DIR
from test_runs_plugin import registry

from harness.runs.catalog import Catalog
from harness.runs.leaderboard import load_summary, merge, render
from harness.runs.plan import RunConfig
from harness.runs.runner import execute

pytest.importorskip("lm_eval")


def test_general_figures_before_and_after_reach_summary_manifest_and_leaderboard(tiny_model_dirs, tmp_path):
    config = RunConfig(
        model=str(tiny_model_dirs["gpt2"]),
        methods=("nudge",),
        tasks=("facts",),
        general=(MC,),
        general_include=str(TASKS_DIR),
        general_limit=4,
        general_edits=2,
        overrides={"scale": 5.0},
    )
    out = tmp_path / "run"
    execute(config, out, device="cpu", catalog=Catalog(registry()), progress=False, warn=lambda m: None)

    result = json.loads((out / "summary.json").read_text())["results"][0]
    figures = result["general"][MC]
    assert figures["metric"] == "acc"
    assert 0 <= figures["before"] <= 1 and 0 <= figures["after"] <= 1

    record = next(iter(json.loads((out / "manifest.json").read_text())["general"].values()))[MC]
    assert record["edits"] == 2
    assert record["provenance"]["limit"] == 4 and record["provenance"]["n_docs"] == 4
    assert record["provenance"]["lmeval_version"]

    table = render(merge([load_summary(out)]), "markdown")
    assert f"general:{MC}" in table
