"""The README's main job, `harness run` with no options, cut to one case per task (slow): every
method of the knowedit-mini suite edits the real SmolLM2 on every bundled task, and the run prints
the KnowEdit-shaped table."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.runs.catalog import Catalog

pytestmark = pytest.mark.slow


def test_harness_run_with_no_options_runs_the_mini_suite(tmp_path):
    from harness.cli import cli

    suite = Catalog().suite("knowedit-mini")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--limit", "1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output

    summary = json.loads((out / "summary.json").read_text())
    pairs = {(r["method"], r["task"]) for r in summary["results"]}
    assert pairs == {(m, t) for m in suite.methods for t in suite.tasks}
    assert all(r["model"] == "smollm2-135m" and r["n_cases"] == 1 for r in summary["results"])
    headline = {"mini_convsent": "convsent_es", "mini_sanitation": "sanitation_success"}
    for r in summary["results"]:
        assert headline.get(r["task"], "edit_succ") in r["metrics"], r
        assert "fluency" in r["metrics"], r

    # The edit on the first ZsRE-format record moves its answer for every weight editor.
    rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    zsre = {r["method"]: r for r in rows if r["task"] == "mini_zsre"}
    for method in ("rome", "memit", "ft-m", "adalora"):
        assert zsre[method]["post"]["edit_succ"] > zsre[method]["pre"]["edit_succ"], zsre[method]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["config"]["suite"] == "knowedit-mini"
    rome_job = next(j for j in manifest["jobs"].values() if j["method"] == "rome")
    assert rome_job["hparams"]["context_templates"] == suite.hparams["rome"]["context_templates"]

    header = next(line for line in result.output.splitlines() if line.startswith("task"))
    assert header.split() == ["task", "metric", *suite.methods]
