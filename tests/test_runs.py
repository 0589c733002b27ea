"""Runs on a tiny model: every mode, the run store, resuming after SIGKILL, plan-time refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runs_plugin import registry

from harness.api import HarnessError
from harness.plugins import get_registry
from harness.runs.catalog import Catalog
from harness.runs.modes import checkpoints, interleave, steps
from harness.runs.plan import RunConfig
from harness.runs.runner import execute, plan
from harness.runs.store import RunStore
from harness.schemas import validate_document, validate_records


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(registry())


@pytest.fixture(scope="module")
def model(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["llama"])


@pytest.fixture(scope="module")
def unloadable(tmp_path_factory) -> str:
    """A model folder that passes every check made before loading (it has a config.json) but cannot
    be loaded: a refusal on it proves that the run refused before loading any model."""
    folder = tmp_path_factory.mktemp("unloadable-model")
    (folder / "config.json").write_text("{}")
    return str(folder)


def run(catalog, model, out, **fields):
    config = RunConfig(model=model, **fields)
    return execute(config, out, device="cpu", catalog=catalog, progress=False, warn=lambda m: None)


def rows(out) -> list[dict]:
    return list(RunStore(out).rows())


def without_timing(rows_: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timing"} for r in rows_]


# -- planning -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"methods": ("single-only",), "tasks": ("facts",), "mode": "batch", "batch_size": 2},
            "cannot edit several",
        ),
        ({"methods": ("single-only",), "tasks": ("facts",), "mode": "sequential"}, "cannot stack edits"),
        (
            {"methods": ("nudge",), "tasks": ("facts",), "mode": "cross-domain", "train_tasks": ("facts",)},
            "does not learn",
        ),
        (
            {
                "methods": ("recall",),
                "tasks": ("facts",),
                "mode": "cross-domain",
                "train_tasks": ("other_facts",),
            },
            "no train split",
        ),
        ({"methods": ("recall",), "tasks": ("facts",), "mode": "cross-domain"}, "needs --train-task"),
        ({"methods": ("nudge",), "tasks": ("facts",), "mode": "single", "eval_at": (2,)}, "--eval-at only"),
        (
            {"methods": ("nudge",), "tasks": ("facts",), "mode": "sequential", "interleave": True},
            "--interleave",
        ),
        ({"methods": ("nudge",), "tasks": ("facts",), "batch_size": 3}, "--batch-size needs"),
        ({"methods": ("nope",), "tasks": ("facts",)}, "unknown method 'nope'"),
        ({"methods": ("nudge",), "tasks": ("facts",), "overrides": {"scal": 1}}, "no hyperparameter 'scal'"),
        (
            {"methods": ("nudge", "recall"), "tasks": ("facts",), "overrides": {"scale": 1}},
            r"'recall' has no hyperparameter 'scale'; known: none; to give .* --set METHOD.KEY=VALUE",
        ),
        (
            {"methods": ("nudge",), "tasks": ("facts",), "overrides": {"rome.v_lr": 2}},
            r"--set rome.v_lr: method 'rome' is not in this run",
        ),
        ({"methods": ("nudge",), "tasks": ("nope",)}, "unknown task 'nope'"),
        (
            {"methods": ("nudge",), "tasks": ("facts",), "metrics": ("nope",)},
            r"unknown metric 'nope'; known metrics: .*edit_succ.*target_rank",
        ),
    ],
)
def test_impossible_requests_are_refused_before_anything_is_written(
    catalog, unloadable, tmp_path, fields, message
):
    out = tmp_path / "run"
    with pytest.raises(HarnessError, match=message):
        execute(RunConfig(model=unloadable, **fields), out, catalog=catalog, progress=False)
    assert not out.exists()


def test_a_case_the_method_cannot_edit_stops_the_run_before_the_model_loads(catalog, unloadable, tmp_path):
    config = RunConfig(model=unloadable, methods=("picky",), tasks=("facts",))
    with pytest.raises(
        HarnessError, match=r"picky cannot edit 1 of 6 cases \(first: case f-1: field 'prompt'"
    ):
        execute(config, tmp_path / "run", catalog=catalog, progress=False)


def test_the_schedule_refuses_cases_before_the_run_directory_exists(catalog, unloadable, tmp_path):
    from harness.runs.schedule import schedule

    config, jobs = plan(
        RunConfig(model="org/m", methods=("nudge", "picky"), tasks=("facts",), limit=3), catalog
    )
    with pytest.raises(HarnessError, match="org/m/picky/facts/single: picky cannot edit 1 of 3 cases"):
        schedule(jobs, config, catalog, warn=lambda m: None)
    refused = RunConfig(model=unloadable, methods=("picky",), tasks=("facts",))
    with pytest.raises(HarnessError, match="picky cannot edit"):
        execute(refused, tmp_path / "run", catalog=catalog, progress=False)
    assert not (tmp_path / "run").exists()
    skipped = schedule(jobs, dataclasses.replace(config, skip_invalid=True), catalog, warn=lambda m: None)
    assert [len(s.ordered) for s in skipped] == [3, 2]
    assert [len(s.row_keys()) for s in skipped] == [3, 2]


def test_skip_invalid_leaves_out_the_cases_the_method_cannot_edit(catalog, model, tmp_path):
    warnings: list[str] = []
    config = RunConfig(model=model, methods=("picky",), tasks=("facts",), limit=3, skip_invalid=True)
    outcome = execute(
        config, tmp_path / "run", device="cpu", catalog=catalog, progress=False, warn=warnings.append
    )
    assert [r["case_id"] for r in rows(tmp_path / "run")] == ["f-0", "f-2"]
    assert outcome.summary["results"][0]["n_cases"] == 2
    assert any("1 of 3 cases skipped that picky cannot edit" in w for w in warnings)


def test_plan_expands_methods_tasks_and_cross_domain_pairs(catalog):
    config, jobs = plan(
        RunConfig(model="org/m", methods=("nudge", "single-only"), tasks=("facts", "other_facts")), catalog
    )
    assert config.mode == "single" and config.batch_size == 1
    assert [j.key for j in jobs] == [
        "org/m/nudge/facts/single",
        "org/m/nudge/other_facts/single",
        "org/m/single-only/facts/single",
        "org/m/single-only/other_facts/single",
    ]
    _, jobs = plan(
        RunConfig(model="org/m", methods=("recall",), tasks=("facts", "other_facts"), train_tasks=("facts",)),
        catalog,
    )
    assert [(j.train_task, j.tasks, j.mode) for j in jobs] == [
        ("facts", ("facts",), "cross-domain"),
        ("facts", ("other_facts",), "cross-domain"),
    ]


def test_set_keys_scoped_to_a_method_reach_only_its_jobs(catalog):
    overrides = {"delay": 0, "nudge.scale": 0.2, "single-only.scale": 0.3}
    _, jobs = plan(
        RunConfig(model="org/m", methods=("nudge", "single-only"), tasks=("facts",), overrides=overrides),
        catalog,
    )
    assert [dict(j.overrides) for j in jobs] == [{"delay": 0, "scale": 0.2}, {"delay": 0, "scale": 0.3}]


def test_no_arguments_means_the_quick_suite_on_smollm2():
    config, jobs = plan(RunConfig(), Catalog(get_registry()))
    assert config.suite == "knowedit-quick" and config.model == "smollm2-135m" and config.limit == 1
    assert jobs and all(j.model == "smollm2-135m" for j in jobs)


def test_suite_exclusions_and_hparams_shape_the_plan(tmp_path):
    from harness import hookimpl

    suite = {
        "name": "tiny-suite",
        "methods": ["nudge", "single-only"],
        "tasks": ["facts", "other_facts"],
        "exclude": [{"method": "single-only", "task": "facts", "reason": "for the test"}],
        "hparams": {"nudge": {"scale": 0.1}},
        "limit": 2,
    }
    path = tmp_path / "tiny-suite.json"
    path.write_text(json.dumps(suite))

    class Suites:
        @hookimpl
        def harness_register_suites(self, register):
            register("tiny-suite", str(path))

    from test_runs_plugin import Plugin

    from harness.plugins import build_registry

    cat = Catalog(build_registry(extra_plugins=[("t", Plugin()), ("s", Suites())]))
    config, jobs = plan(RunConfig(model="org/m", suite="tiny-suite", overrides={"delay": 0}), cat)
    assert config.limit == 2
    assert [j.key for j in jobs] == [
        "org/m/nudge/facts/single",
        "org/m/nudge/other_facts/single",
        "org/m/single-only/other_facts/single",
    ]
    assert dict(jobs[0].overrides) == {"scale": 0.1, "delay": 0}

    path.write_text(json.dumps({**suite, "mode": "sideways"}))
    with pytest.raises(HarnessError, match=r"tiny-suite.json at \$.mode"):
        plan(RunConfig(suite="tiny-suite"), cat)


def test_modes_schedule_scoring_as_documented():
    from test_runs_plugin import fact_cases

    from harness.runs.modes import Tagged

    cases = [Tagged("t", c) for c in fact_cases("x")[:5]]
    assert checkpoints((2, 10), 5) == [2, 5]
    seq = steps(cases, 1, sequential=True, eval_at=(2,))
    assert [[(p, len(c)) for p, c in s.score] for s in seq] == [
        [("immediate", 1)],
        [("immediate", 1), ("after-2", 2)],
        [("immediate", 1)],
        [("immediate", 1)],
        [("immediate", 1), ("after-5", 5)],
    ]
    batched = steps(cases, 2, sequential=False, eval_at=())
    assert [len(s.chunk) for s in batched] == [2, 2, 1]
    assert all(s.score == (("immediate", s.chunk),) for s in batched)
    mixed = interleave([cases[:2], [Tagged("u", c.case) for c in cases[2:]]], seed=3)
    assert sorted(t.key for t in mixed) == sorted(
        [*(t.key for t in cases[:2]), *(("u", t.case.case_id) for t in cases[2:])]
    )
    assert mixed == interleave([cases[:2], [Tagged("u", c.case) for c in cases[2:]]], seed=3)


# -- modes on the tiny model --------------------------------------------------------------------


def test_single_mode_undoes_each_edit(catalog, model, tmp_path):
    outcome = run(catalog, model, tmp_path / "a", methods=("nudge",), tasks=("facts",), limit=3)
    got = rows(tmp_path / "a")
    assert [r["case_id"] for r in got] == ["f-0", "f-1", "f-2"]
    assert {r["protocol"] for r in got} == {"immediate"} and {r["edits"] for r in got} == {1}
    assert set(got[0]["post"]) == {
        "edit_succ",
        "generalization",
        "locality",
        "locality.relation_specificity",
        "perplexity",
    }
    # Undone edits: a case scores the same whether or not other cases were edited before it.
    run(catalog, model, tmp_path / "b", methods=("nudge",), tasks=("facts",), limit=1)
    assert rows(tmp_path / "b")[0]["post"] == got[0]["post"]
    result = outcome.summary["results"][0]
    assert result["n_cases"] == 3 and result["mode"] == "single"
    assert result["metrics"]["locality"] == pytest.approx(sum(r["post"]["locality"] for r in got) / 3)


def test_sequential_mode_scores_immediately_and_at_checkpoints(catalog, model, tmp_path):
    outcome = run(
        catalog, model, tmp_path / "s", methods=("nudge",), tasks=("facts",), mode="sequential", eval_at=(2,)
    )
    got = rows(tmp_path / "s")
    immediate = [r for r in got if r["protocol"] == "immediate"]
    assert [r["edits"] for r in immediate] == [1, 2, 3, 4, 5, 6]
    assert [r["case_id"] for r in got if r["protocol"] == "after-2"] == ["f-0", "f-1"]
    assert [r["case_id"] for r in got if r["protocol"] == "after-6"] == [f"f-{i}" for i in range(6)]
    # Edits accumulate: the last case's immediate score equals its score after all six edits.
    last = [r for r in got if r["case_id"] == "f-5"]
    assert last[0]["post"] == last[1]["post"]
    # ... and the first case's score has moved since its own edit.
    first = [r for r in got if r["case_id"] == "f-0"]
    assert first[0]["post"]["perplexity"] != first[-1]["post"]["perplexity"]
    protocols = [(r["protocol"], r["n_cases"]) for r in outcome.summary["results"]]
    assert protocols == [("immediate", 6), ("after-2", 2), ("after-6", 6)]


def test_batch_mode_edits_k_cases_per_apply(catalog, model, tmp_path):
    outcome = run(
        catalog, model, tmp_path / "b", methods=("nudge",), tasks=("facts",), mode="batch", batch_size=4
    )
    got = rows(tmp_path / "b")
    assert [r["edits"] for r in got] == [4, 4, 4, 4, 2, 2]
    assert outcome.summary["results"][0]["batch_size"] == 4
    assert outcome.jobs[0].key.endswith("/batch/b4")


def test_interleaved_sequence_mixes_tasks_by_seed(catalog, model, tmp_path):
    fields = dict(
        methods=("nudge",), tasks=("facts", "other_facts"), mode="sequential", interleave=True, limit=3
    )
    outcome = run(catalog, model, tmp_path / "m", seed=1, **fields)
    got = [r for r in rows(tmp_path / "m") if r["protocol"] == "immediate"]
    order = [(r["task"], r["case_id"]) for r in got]
    assert sorted(order) == sorted(
        [("facts", f"f-{i}") for i in range(3)] + [("other_facts", f"o-{i}") for i in range(3)]
    )
    assert [t for t, _ in order] != ["facts"] * 3 + ["other_facts"] * 3
    assert "generalization" not in got[[t for t, _ in order].index("other_facts")]["post"]
    by_task = {(r["task"], r.get("protocol")): r for r in outcome.summary["results"]}
    assert by_task[("other_facts", "immediate")]["mix"] == ["facts", "other_facts"]
    assert "generalization" not in by_task[("other_facts", "immediate")]["metrics"]
    run(catalog, model, tmp_path / "m2", seed=2, **fields)
    assert [(r["task"], r["case_id"]) for r in rows(tmp_path / "m2") if r["protocol"] == "immediate"] != order


def test_cross_domain_fits_on_the_train_task_and_builds_a_matrix(catalog, model, tmp_path):
    outcome = run(
        catalog,
        model,
        tmp_path / "x",
        methods=("recall",),
        tasks=("facts", "other_facts"),
        train_tasks=("facts",),
        limit=2,
    )
    assert {r["job"] for r in rows(tmp_path / "x")} == {
        f"{model}/recall/facts/cross-domain/from-facts",
        f"{model}/recall/other_facts/cross-domain/from-facts",
    }
    matrix = next(m for m in outcome.summary["cross_domain"] if m["metric"] == "edit_succ")
    assert matrix["sources"] == ["facts"] and matrix["targets"] == ["facts", "other_facts"]
    results = outcome.summary["results"]
    assert matrix["values"] == [[r["metrics"]["edit_succ"] for r in results]]


# -- the run store ------------------------------------------------------------------------------


def test_run_directory_matches_the_contracts(catalog, model, tmp_path):
    out = tmp_path / "r"
    run(catalog, model, out, methods=("nudge",), tasks=("facts",), limit=2, mode="sequential")
    summary = json.loads((out / "summary.json").read_text())
    assert validate_document(summary, "results", "summary.json") == []
    from harness.schemas import load_schema

    row_schema = {"$defs": load_schema("results")["$defs"], "$ref": "#/$defs/case_row"}
    assert validate_records(rows(out), row_schema, "cases.jsonl") == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["started"] <= manifest["ended"]
    assert manifest["config"]["methods"] == ["nudge"] and manifest["seed"] == 0
    assert manifest["models"][model]["fingerprint"]
    assert {"torch", "transformers"} <= set(manifest["versions"]["packages"])
    assert manifest["versions"]["plugins"]["runs-test"]["status"] == "ok"
    job = manifest["jobs"][f"{model}/nudge/facts/sequential"]
    assert job["hparams"] == {"scale": 0.5, "delay": 0}
    assert "edit_succ" in manifest["evaluation"]["facts"]["metrics"]


def test_metric_option_scores_every_task_and_the_summary_says_what_its_numbers_mean(catalog, model, tmp_path):
    from harness.commands.leaderboard import load_summary
    from harness.plugins import build_registry
    from harness.runs.leaderboard import merge, render

    out = tmp_path / "r"
    outcome = run(
        catalog,
        model,
        out,
        methods=("nudge",),
        tasks=("facts", "other_facts"),
        metrics=("target_rank",),
        limit=2,
    )
    assert {r["task"] for r in rows(out) if "target_rank" in r["post"]} == {"facts", "other_facts"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["metrics"] == ["target_rank"]
    assert manifest["evaluation"]["other_facts"]["metrics"] == ["edit_succ", "locality", "target_rank"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == outcome.summary and validate_document(summary, "results", "summary.json") == []
    assert summary["metric_info"]["target_rank"] == {
        "unit": "rank",
        "higher_is_better": False,
        "headline": None,
        "edit_success": True,
    }
    assert summary["metric_info"]["edit_succ"]["headline"] == 0
    # The leaderboard needs no plugin: the installed registry knows no target_rank.
    rank = summary["results"][0]["metrics"]["target_rank"]
    text = render(merge([load_summary(out, registry=build_registry())]), "text")
    assert f"{rank:.2f}" in text and f"{rank * 100:.2f}" not in text


def test_metric_flag_is_checked_before_any_model_loads(unloadable, tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    args = [
        "run",
        "--model",
        unloadable,
        "--method",
        "ft-l",
        "--task",
        "zsre",
        "--out",
        str(tmp_path / "r"),
    ]
    refused = CliRunner().invoke(cli, [*args, "--metric", "exact_match,nope"])
    assert refused.exit_code != 0 and not (tmp_path / "r").exists()
    assert re.search(r"unknown metric 'nope'; known metrics: .*exact_match", str(refused.exception))
    planned = CliRunner().invoke(cli, [*args, "--metric", "exact_match", "--metric", "contains", "--dry-run"])
    assert planned.exit_code == 0, planned.output
    resumed = CliRunner().invoke(cli, ["run", "--out", str(tmp_path), "--resume", "--metric", "contains"])
    assert resumed.exit_code != 0 and "drop --metric" in str(resumed.exception)


def test_the_no_effect_warning_reads_the_edit_success_metrics(catalog, model, tmp_path):
    warnings: list[str] = []
    config = RunConfig(model=model, methods=("noop",), tasks=("facts",), metrics=("target_rank",))
    execute(config, tmp_path / "r", device="cpu", catalog=catalog, progress=False, warn=warnings.append)
    assert any(
        w.endswith("6 of 6 edits did not improve edit_succ, target_rank over the unedited model")
        for w in warnings
    ), warnings


def test_same_seed_same_cases_apart_from_timing(catalog, model, tmp_path):
    fields = dict(methods=("nudge",), tasks=("facts",), mode="sequential", eval_at=(3,))
    run(catalog, model, tmp_path / "1", **fields)
    run(catalog, model, tmp_path / "2", **fields)
    run(catalog, model, tmp_path / "3", seed=5, **fields)
    assert without_timing(rows(tmp_path / "1")) == without_timing(rows(tmp_path / "2"))
    assert without_timing(rows(tmp_path / "1")) != without_timing(rows(tmp_path / "3"))


def test_a_fresh_run_refuses_a_used_directory(catalog, model, tmp_path):
    run(catalog, model, tmp_path / "r", methods=("nudge",), tasks=("facts",), limit=1)
    with pytest.raises(HarnessError, match="--resume"):
        run(catalog, model, tmp_path / "r", methods=("nudge",), tasks=("facts",), limit=1)


def test_truncated_last_line_is_dropped_and_the_case_redone(catalog, model, tmp_path):
    out = tmp_path / "r"
    run(catalog, model, out, methods=("nudge",), tasks=("facts",), limit=3)
    complete = rows(out)
    lines = (out / "cases.jsonl").read_bytes().split(b"\n")
    (out / "cases.jsonl").write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:25])
    assert [r["case_id"] for r in rows(out)] == ["f-0", "f-1"]
    execute(RunConfig(), out, resume=True, device="cpu", catalog=catalog, progress=False)
    assert without_timing(rows(out)) == without_timing(complete)


def test_sigkill_mid_run_then_resume_gives_each_case_exactly_once(catalog, model, tmp_path):
    """A sequential run killed after some rows: resuming replays the finished edits and scores the rest."""
    out = tmp_path / "killed"
    script = Path(__file__).with_name("test_runs_plugin.py")
    env = {**os.environ, "NUDGE_DELAY": "0.4"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), model], env=env)
    cases = out / "cases.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if cases.exists() and len(cases.read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = rows(out)
    assert 4 <= len(partial) < 9, "the run should have been killed mid-way"
    subprocess.run([sys.executable, str(script), str(out), model, "--resume"], check=True)
    resumed = rows(out)
    keys = [(r["job"], r["task"], r["case_id"], r["protocol"]) for r in resumed]
    assert len(keys) == len(set(keys)) == 6 + 2 + 6
    assert resumed[: len(partial)] == partial
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(script), str(reference), model], check=True)
    assert without_timing(resumed) == without_timing(rows(reference))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["resumed"]) == 1
