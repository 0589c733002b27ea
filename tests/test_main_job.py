"""The README's main job, `harness run` with no options (slow).

Its plan is checked whole: every method of the knowedit-mini suite on every bundled task, on
smollm2-135m, with the suite's CPU settings. Its execution is checked on one task, one case per
method (the whole suite costs about two hours on a 2-core CPU; each of its cases is checked
editable by test_tasks_mini.py): every method edits the real SmolLM2 through the command line, and
the run prints the KnowEdit-shaped table."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.plugins import get_registry
from harness.runs.catalog import Catalog
from harness.runs.plan import RunConfig
from harness.runs.runner import plan

pytestmark = pytest.mark.slow

SUITE = Catalog(get_registry()).suite("knowedit-mini")


def test_harness_run_with_no_options_plans_the_mini_suite_on_smollm2() -> None:
    config, jobs = plan(RunConfig(), Catalog(get_registry()))
    assert config.suite == "knowedit-mini" and config.model == "smollm2-135m" and config.mode == "single"
    assert {(j.method, j.tasks) for j in jobs} == {(m, (t,)) for m in SUITE.methods for t in SUITE.tasks}
    for job in jobs:
        assert dict(job.overrides) == SUITE.hparams.get(job.method, {}), job.key


def test_every_suite_method_edits_smollm2_through_the_command_line(tmp_path) -> None:
    from harness.cli import cli

    out = tmp_path / "run"
    args = ["run", "--suite", "knowedit-mini", "--task", "mini_zsre", "--limit", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output

    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["method"] for r in summary["results"]) == sorted(SUITE.methods)
    for r in summary["results"]:
        assert r["model"] == "smollm2-135m" and r["n_cases"] == 1, r
        assert {"edit_succ", "generalization", "locality", "fluency"} <= set(r["metrics"]), r

    # The first record's edit moves its answer for every weight editor.
    rows = {r["method"]: r for r in map(json.loads, (out / "cases.jsonl").read_text().splitlines())}
    for method in ("rome", "memit", "ft-m", "adalora"):
        assert rows[method]["post"]["edit_succ"] > rows[method]["pre"]["edit_succ"], rows[method]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    rome_job = next(j for j in manifest["jobs"].values() if j["method"] == "rome")
    assert rome_job["hparams"]["context_templates"] == SUITE.hparams["rome"]["context_templates"]

    lines = result.output.splitlines()
    assert lines[0].split() == ["task", "metric", *SUITE.methods]  # nothing printed before the table
    assert lines[2].split()[:2] == ["mini_zsre", "edit_succ"]
