"""The Ray executor's parts that need no cluster: how jobs are cut into shards, and that a run
without `--executor ray` never imports Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_runs_plugin import registry

from harness.cli import cli
from harness.runs.catalog import Catalog
from harness.runs.plan import RunConfig, build_plan
from harness.runs.ray_executor import shards
from harness.runs.schedule import schedule

TESTS = Path(__file__).resolve().parent


def job_schedule(**fields):
    catalog = Catalog(registry())
    fields = {"batch_size": 1, **fields}
    config = RunConfig(model="owner/model", methods=("nudge",), tasks=("facts",), **fields)
    (s,) = schedule(build_plan(config, catalog), config, catalog, warn=print)
    return s


@pytest.mark.parametrize("fields", [{"mode": "single"}, {"mode": "batch", "batch_size": 4}])
def test_an_undo_mode_job_is_cut_into_shards_of_whole_steps(fields):
    s = job_schedule(**fields)
    parts = shards(s, 2)
    assert len(parts) == 2
    assert [step for p in parts for step in p.steps] == list(s.steps)
    assert [t for p in parts for t in p.ordered] == list(s.ordered)
    assert set().union(*(p.row_keys() for p in parts)) == s.row_keys()
    for p in parts:
        assert {c.case_id for c in p.cases["facts"]} == {t.case.case_id for t in p.ordered}


def test_a_sequential_job_is_never_split():
    s = job_schedule(mode="sequential", eval_at=(2,))
    assert shards(s, 4) == [s]


def test_a_local_run_never_imports_ray(tiny_model_dirs, tmp_path):
    """The local executor, the command line's option parsing and --dry-run included."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from click.testing import CliRunner
        from test_runs_plugin import registry
        from harness.cli import cli
        from harness.runs.catalog import Catalog
        from harness.runs.plan import RunConfig
        from harness.runs.runner import execute

        model, out = {str(tiny_model_dirs["llama"])!r}, {str(tmp_path / "r")!r}
        config = RunConfig(model=model, methods=("nudge",), tasks=("facts",), limit=2)
        execute(config, out, device="cpu", catalog=Catalog(registry()), progress=False)
        result = CliRunner().invoke(cli, ["run", "--method", "ft-l", "--task", "zsre", "--dry-run"])
        assert result.exit_code == 0, result.output
        print("ray" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_ray_options_without_executor_ray_are_refused():
    result = CliRunner().invoke(cli, ["run", "--gpus-per-job", "1", "--address", "auto", "--dry-run"])
    assert result.exit_code != 0
    assert "--address, --gpus-per-job only apply with --executor ray" in str(result.exception)
