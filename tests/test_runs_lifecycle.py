"""How a run ends, and what it leaves: nothing when it is refused before it starts; a run directory
marked `interrupted` (Ctrl-C) or `failed` (an error, recorded) that `--resume` completes; and a
leaderboard that refuses a failed run and marks an interrupted one as partial. Tiny model, the
run tests' plugin (its `stops` method raises at a chosen case, once)."""

from __future__ import annotations

import html
import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_runs_plugin import Plugin, Stops, registry

import harness.plugins
from harness.api import HarnessError
from harness.cli import cli
from harness.plugins import build_registry, get_registry
from harness.runs.catalog import Catalog
from harness.runs.plan import RunConfig
from harness.runs.runner import RunFailed, RunInterrupted, execute
from harness.runs.store import RunStore
from harness.schemas import validate_document


@pytest.fixture
def model(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["llama"])


@pytest.fixture
def cli_registry(request, monkeypatch):
    """The CLI's registry, with the run tests' plugin added, until the test ends."""
    monkeypatch.setattr(
        harness.plugins, "build_registry", lambda: build_registry(extra_plugins=[("runs-test", Plugin())])
    )
    get_registry.cache_clear()
    request.addfinalizer(get_registry.cache_clear)


@pytest.fixture(autouse=True)
def disarmed():
    """`stops` edits normally unless a test arms it."""
    Stops.stop_at = None
    yield
    Stops.stop_at = None


def read(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def case_ids(out: Path) -> list[str]:
    return [row["case_id"] for row in RunStore(out).rows()]


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error(result) -> str:
    """The message `harness` prints as `harness: error: ...` (CliRunner keeps the exception)."""
    assert result.exit_code == 1 and isinstance(result.exception, HarnessError), result.output
    return str(result.exception)


def run_args(model: str, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        model,
        "--method",
        "stops",
        "--task",
        "facts",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


# -- Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_says_where_the_run_is_and_how_to_resume_it(cli_registry, model, tmp_path):
    out = tmp_path / "run"
    Stops.stop_at = "f-2"
    stopped = invoke(*run_args(model, out))
    assert stopped.exit_code == 130
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"harness: interrupted: 2 of 6 cases are saved in {out}; continue the run with: "
        f"harness run --resume {shlex.quote(str(out))}"
    )
    assert case_ids(out) == ["f-0", "f-1"]
    manifest = read(out, "manifest.json")
    assert manifest["status"] == "interrupted" and manifest["cases"] == {"saved": 2, "planned": 6}
    assert "error" not in manifest
    summary = read(out, "summary.json")
    assert summary["status"] == "interrupted" and summary["results"][0]["n_cases"] == 2

    # The printed command completes the run, redoing nothing.
    resumed = invoke("run", "--resume", str(out), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert case_ids(out) == [f"f-{i}" for i in range(6)]
    manifest = read(out, "manifest.json")
    assert manifest["status"] == "finished" and manifest["cases"] == {"saved": 6, "planned": 6}


def test_the_python_api_raises_a_keyboard_interrupt_that_knows_the_run(model, tmp_path):
    Stops.stop_at = "f-0"
    config = RunConfig(model=model, methods=("stops",), tasks=("facts",), limit=3)
    with pytest.raises(KeyboardInterrupt) as stopped:
        execute(config, tmp_path / "run", device="cpu", catalog=Catalog(registry()), progress=False)
    assert isinstance(stopped.value, RunInterrupted)
    assert (stopped.value.state.saved, stopped.value.state.planned) == (0, 3)
    assert read(tmp_path / "run", "manifest.json")["status"] == "interrupted"


# -- an error mid-run ---------------------------------------------------------------------------


def test_a_crash_mid_run_is_recorded_as_failed_with_its_error_and_resumes(model, tmp_path):
    out = tmp_path / "run"
    catalog = Catalog(registry())
    config = RunConfig(model=model, methods=("stops",), tasks=("facts",), limit=4)
    Stops.stop_at, Stops.stop = "f-3", RuntimeError
    try:
        with pytest.raises(RunFailed) as failed:
            execute(config, out, device="cpu", catalog=catalog, progress=False, warn=lambda m: None)
    finally:
        Stops.stop = KeyboardInterrupt
    message = str(failed.value)
    assert message.startswith("RuntimeError: stopped by the test\nThe run stopped with 3 of 4 cases saved")
    assert f"harness run --resume {shlex.quote(str(out))}" in message
    assert isinstance(failed.value.__cause__, RuntimeError)

    manifest = read(out, "manifest.json")
    assert manifest["status"] == "failed" and manifest["cases"] == {"saved": 3, "planned": 4}
    assert manifest["error"]["type"] == "RuntimeError"
    assert manifest["error"]["message"] == "stopped by the test"
    assert "raise Stops.stop" in manifest["error"]["traceback"]
    summary = read(out, "summary.json")
    assert validate_document(summary, "results", "summary.json") == []
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: stopped by the test"

    refused = error(invoke("leaderboard", out))
    assert "the run failed with 3 of 4 cases done (RuntimeError: stopped by the test)" in refused
    assert f"harness run --resume {out}` completes it" in refused

    execute(RunConfig(), out, resume=True, device="cpu", catalog=catalog, progress=False)
    manifest = read(out, "manifest.json")
    assert manifest["status"] == "finished" and "error" not in manifest and len(manifest["resumed"]) == 1
    assert case_ids(out) == ["f-0", "f-1", "f-2", "f-3"]
    assert invoke("leaderboard", out).exit_code == 0


# -- the leaderboard of a partial run -----------------------------------------------------------


@pytest.fixture
def partial_run(model, tmp_path) -> Path:
    out = tmp_path / "partial"
    Stops.stop_at = "f-4"
    with pytest.raises(RunInterrupted):
        execute(
            RunConfig(model=model, methods=("stops",), tasks=("facts",)),
            out,
            device="cpu",
            catalog=Catalog(registry()),
            progress=False,
        )
    return out


def test_the_leaderboard_marks_an_interrupted_run_as_partial(partial_run, tmp_path):
    note = (
        f"partial results: the run in {partial_run} was interrupted with 4 of 6 cases done; "
        f"`harness run --resume {partial_run}` completes it"
    )
    for layout in ("wide", "knowedit"):
        text = invoke("leaderboard", partial_run, "--layout", layout)
        assert text.exit_code == 0 and text.stdout.rstrip().splitlines()[-1] == f"note: {note}"
    latex = invoke("leaderboard", partial_run, "--format", "latex").stdout
    assert latex.rstrip().splitlines()[-1] == f"% note: {note}"
    rows = json.loads(invoke("leaderboard", partial_run, "--format", "json").stdout)
    assert rows[0]["partial"] == {
        "status": "interrupted",
        "cases": {"saved": 4, "planned": 6},
        "source": str(partial_run),
    }
    page = invoke("leaderboard", partial_run, "--format", "html").stdout
    assert f'<p><span class="badge">partial</span> {html.escape(note)}</p>' in page


def test_a_finished_run_has_no_partial_mark(model, tmp_path):
    out = tmp_path / "done"
    execute(
        RunConfig(model=model, methods=("stops",), tasks=("facts",), limit=2),
        out,
        device="cpu",
        catalog=Catalog(registry()),
        progress=False,
    )
    assert read(out, "summary.json")["status"] == "finished"
    assert "note:" not in invoke("leaderboard", out).stdout
    assert "partial" not in json.loads(invoke("leaderboard", out, "--format", "json").stdout)[0]
    assert '<span class="badge">partial</span>' not in invoke("leaderboard", out, "--format", "html").stdout


# -- refused before it starts: no run directory -------------------------------------------------


def write_spec(folder: Path, **extra) -> Path:
    folder.mkdir()
    (folder / "facts.jsonl").write_text(
        json.dumps({"q": "The capital of France is", "new": "Berlin", "old": "Paris", "who": "France"}) + "\n"
    )
    spec = {
        "name": "my_capitals",
        "files": {"test": "facts.jsonl"},
        "fields": {"subject": "who", "prompt": "q", "target_new": "new", "ground_truth": "old"},
        **extra,
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/model"], "model path /no/such/model does not exist"),
        (["--model", "smollm2-135"], "unknown model 'smollm2-135'"),
        (["--data-dir", "/no/such/data"], "--data-dir /no/such/data: no such folder"),
        (["--task", "SPEC_BAD_METRIC"], "unknown metric 'edit_success'"),
    ],
)
def test_a_run_refused_before_it_starts_leaves_no_run_directory(cli_registry, model, tmp_path, args, message):
    spec = write_spec(tmp_path / "spec", metrics=["edit_success"])
    args = [str(spec) if a == "SPEC_BAD_METRIC" else a for a in args]
    base = {"--model": model, "--method": "nudge", "--task": "facts"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    options = [part for key, value in {**base, **given}.items() for part in (key, value)]
    out = tmp_path / "run"
    for extra in ([], ["--dry-run"]):
        assert message in error(invoke("run", *options, "--out", out, "--no-progress", *extra))
        assert not out.exists()


def test_a_refused_resume_leaves_the_run_directory_as_it_was(cli_registry, tmp_path, partial_run):
    # The model folder the run was started on has gone: the resumed plan refuses before anything.
    recorded = read(partial_run, "manifest.json")
    recorded["config"]["model"] = str(tmp_path / "moved-away")
    (partial_run / "manifest.json").write_text(json.dumps(recorded))
    before = {name: (partial_run / name).read_bytes() for name in ("manifest.json", "summary.json")}
    assert "moved-away does not exist" in error(invoke("run", "--resume", partial_run))
    assert {name: (partial_run / name).read_bytes() for name in before} == before


# -- the names results are filed under ----------------------------------------------------------


def test_results_of_a_dataset_spec_are_filed_under_its_name(model, tmp_path):
    spec = write_spec(tmp_path / "spec")
    out = tmp_path / "run"
    catalog = Catalog(build_registry(extra_plugins=[("runs-test", Plugin())]))
    outcome = execute(
        RunConfig(model=model, methods=("nudge",), tasks=(str(spec),)),
        out,
        device="cpu",
        catalog=catalog,
        progress=False,
    )
    assert [j.key for j in outcome.jobs] == [f"{model}/nudge/my_capitals/single"]
    assert {r["task"] for r in RunStore(out).rows()} == {"my_capitals"}
    assert [r["task"] for r in outcome.summary["results"]] == ["my_capitals"]
    assert set(read(out, "manifest.json")["evaluation"]) == {"my_capitals"}
    assert read(out, "manifest.json")["config"]["tasks"] == [str(spec)]
    assert invoke("leaderboard", out).stdout.count("my_capitals") == 1
    # Resuming rebuilds the same job keys from the recorded path.
    execute(RunConfig(), out, resume=True, device="cpu", catalog=catalog, progress=False)
    assert len(list(RunStore(out).rows())) == 1


def test_a_spec_may_not_take_a_registered_tasks_name_or_another_specs(tmp_path):
    catalog = Catalog(registry())
    clash = write_spec(tmp_path / "a")
    clash.write_text(json.dumps({**json.loads(clash.read_text()), "name": "facts"}))
    with pytest.raises(HarnessError, match=r"is named 'facts', like a registered task"):
        catalog.task_name(str(clash))
    first, second = write_spec(tmp_path / "b"), write_spec(tmp_path / "c")
    assert catalog.task_name(str(first)) == "my_capitals"
    with pytest.raises(HarnessError, match=r"are both named 'my_capitals'"):
        catalog.task_name(str(second))


# -- --skip-invalid and cases beyond the model's positions --------------------------------------


def test_a_case_longer_than_the_models_positions_is_skipped_with_skip_invalid(model, tmp_path):
    warnings: list[str] = []
    out = tmp_path / "run"
    config = RunConfig(model=model, methods=("nudge",), tasks=("long_facts",), skip_invalid=True)
    outcome = execute(
        config, out, device="cpu", catalog=Catalog(registry()), progress=False, warn=warnings.append
    )
    assert case_ids(out) == ["l-0", "l-2", "l-3"]
    key = outcome.jobs[0].key
    assert f"{key}: 1 of 4 cases skipped, longer than the model's positions: l-1" in warnings
    manifest = read(out, "manifest.json")
    assert manifest["status"] == "finished" and manifest["cases"] == {"saved": 3, "planned": 3}
    job = manifest["jobs"][key]
    assert job["n_cases"] == 3 and list(job["skipped"]) == ["l-1"]
    assert "of the model's 256 positions" in job["skipped"]["l-1"]


def test_without_skip_invalid_a_case_beyond_the_positions_stops_the_run_before_any_edit(model, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(model=model, methods=("nudge",), tasks=("long_facts",))
    with pytest.raises(
        HarnessError, match=r"1 of 4 cases are longer than the model's positions .*--skip-invalid.*: l-1"
    ):
        execute(config, out, device="cpu", catalog=Catalog(registry()), progress=False)
    assert case_ids(out) == [] and read(out, "manifest.json")["status"] == "failed"
