"""The README's two commands: the main job (`harness run` with no options) and the test command.

The main job's plan is checked whole: every method of the default suite, knowedit-quick, on every
bundled task, on smollm2-135m, with the CPU settings it shares with knowedit-mini (the 20-record
suite it is a shorter run of). Its execution is checked on one task, one case per method (the whole
default run costs minutes, the 20-record suite hours; each bundled case is checked editable by
test_tasks_mini.py): every method edits the real SmolLM2 through the command line (slow), and the
run prints the KnowEdit-shaped table. The README's install lines are checked against `.ci/run`, so
that what CI installs is what a newcomer is told to install."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.plugins import get_registry
from harness.runs.catalog import Catalog
from harness.runs.plan import RunConfig
from harness.runs.runner import plan

ROOT = Path(__file__).resolve().parents[1]
CATALOG = Catalog(get_registry())
QUICK = CATALOG.suite("knowedit-quick")
MINI = CATALOG.suite("knowedit-mini")


def test_harness_run_with_no_options_plans_the_quick_suite_on_smollm2() -> None:
    config, jobs = plan(RunConfig(), CATALOG)
    assert config.suite == "knowedit-quick" and config.model == "smollm2-135m" and config.mode == "single"
    assert config.limit == QUICK.limit
    assert {(j.method, j.tasks) for j in jobs} == {(m, (t,)) for m in QUICK.methods for t in QUICK.tasks}
    for job in jobs:
        assert dict(job.overrides) == QUICK.hparams.get(job.method, {}), job.key


def test_the_quick_suite_is_the_mini_suite_on_fewer_records() -> None:
    def shape(suite):
        return (suite.methods, suite.tasks, suite.model, suite.mode, suite.hparams, suite.excluded)

    assert shape(QUICK) == shape(MINI)
    assert MINI.limit is None and QUICK.limit is not None and 1 <= QUICK.limit < 20


def _command(section: str) -> list[str]:
    """The one-line command in the first bash block under README heading `section`, split at `&&`."""
    readme = (ROOT / "README.md").read_text()
    body = readme.split(f"\n## {section}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", body, re.DOTALL)
    assert block, f"no bash block under {section!r}"
    lines = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, lines
    return [part.strip() for part in lines[0].split("&&")]


def test_the_readme_installs_the_cpu_torch_before_the_project() -> None:
    # Installed first, torch==2.13.0 is the CPU wheel on the project's machines; `pip install -e .`
    # after it keeps it, where a plain `pip install torch` (or letting the project pull torch) takes
    # the CUDA build. .ci/check_cpu_only.py checks what pip resolved.
    for section in ("Set up and run", "Set up and test"):
        parts = _command(section)
        assert parts[0] == "pip install torch==2.13.0", parts
        assert parts[1].replace("'", "").startswith("pip install -e ."), parts  # the project next
    assert _command("Set up and run")[-1] == "harness run"


def test_ci_installs_what_the_readme_test_command_installs_and_runs_its_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    for part in _command("Set up and test"):
        if part.startswith("pip install "):
            assert '"${PIP[@]}" ' + part.removeprefix("pip install ") + "\n" in ci, part
        else:
            assert part + ' "$@"\n' in ci, part
    assert "python .ci/check_cpu_only.py" in ci


@pytest.mark.slow
def test_every_suite_method_edits_smollm2_through_the_command_line(tmp_path) -> None:
    from harness.cli import cli

    out = tmp_path / "run"
    args = ["run", "--suite", "knowedit-quick", "--task", "mini_zsre", "--limit", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output

    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["method"] for r in summary["results"]) == sorted(QUICK.methods)
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
    assert rome_job["hparams"]["context_templates"] == QUICK.hparams["rome"]["context_templates"]

    lines = result.stdout.splitlines()  # progress lines go to stderr
    assert lines[0].split() == ["task", "metric", *QUICK.methods]  # nothing on stdout before the table
    assert lines[2].split()[:2] == ["mini_zsre", "edit_succ"]
