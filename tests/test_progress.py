"""Progress people can plan by: the estimate from the rows (also after a resume), the plain lines
without a terminal, and the warning about edits that had no effect."""

from __future__ import annotations

import io
import re

import pytest
from click.testing import CliRunner

from harness.api import Method
from harness.runs.executor import STUCK_MIN_EDITS, no_effect_warning
from harness.runs.plan import Job
from harness.runs.progress import Estimate, Estimator, JobWork, RunProgress, choose_style, duration


def row(job: str, case: int, *, apply_s: float, eval_s: float, protocol: str = "immediate") -> dict:
    return {
        "job": job,
        "case_id": f"c{case}",
        "protocol": protocol,
        "timing": {"apply_s": apply_s, "eval_s": eval_s},
    }


SLOW = JobWork("m/slow/t/single", "slow", "slow t single", edits=10, saved=4)
FAST = JobWork("m/fast/t/single", "fast", "fast t single", edits=10)
BATCH = JobWork("m/batched/t/batch", "batched", "batched t batch", edits=10, batch_size=5)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_after_a_resume_the_eta_comes_from_the_saved_rows_not_the_clock():
    saved = [row(SLOW.key, i, apply_s=8.0, eval_s=2.0) for i in range(4)]  # 10 s per edit
    saved += [row(FAST.key, 0, apply_s=0.5, eval_s=0.5)]  # 1 s per edit
    jobs = [SLOW, JobWork(FAST.key, FAST.method, FAST.label, edits=10, saved=1)]
    clock = Clock()
    progress = RunProgress(jobs, saved, clock=clock)
    # The saved edits are where the count starts: 5 of 20, and they are no evidence of speed.
    assert (progress.finished, progress.total) == (5, 20)
    assert progress.eta() == Estimate(6 * 10.0 + 9 * 1.0)
    assert "5 saved, 15 left; estimate 1m09s, from the timing of 5 saved edits" in progress.plan_text()
    progress.start_job(jobs[0])
    clock.now += 3600  # an hour passes (a slow model load, a sleeping laptop): the rows decide
    progress.row(row(SLOW.key, 4, apply_s=18.0, eval_s=2.0))  # this edit took 20 s
    progress.advance(1)
    # 5 timed edits of 10, 10, 10, 10, 20 s; the first is the warm-up, so 12.5 s each for the 5
    # left; the fast method's one edit is its warm-up and all there is: its 9 at 1 s.
    assert progress.eta() == Estimate(5 * 12.5 + 9 * 1.0)


def test_a_batch_shares_its_apply_call_and_checkpoint_rows_add_their_scoring():
    estimator = Estimator([BATCH])
    for i in range(5):  # one apply call of 10 s for the batch of 5, 1 s of scoring per case
        estimator.add(row(BATCH.key, i, apply_s=10.0, eval_s=1.0))
    assert estimator.per_edit(BATCH.key) == pytest.approx(3.0)
    # The checkpoint's scoring is spread over the edits timed after the warm-up (the first row).
    estimator.add(row(BATCH.key, 0, apply_s=10.0, eval_s=4.0, protocol="after-5"))
    assert estimator.per_edit(BATCH.key) == pytest.approx(4.0)


def test_a_methods_first_edit_is_its_warm_up_and_counts_only_while_it_is_the_only_one():
    other = JobWork("m/fast/u/single", "fast", "fast u single", edits=10)
    estimator = Estimator([FAST, other])
    estimator.add(row(FAST.key, 0, apply_s=290.0, eval_s=10.0))  # pays for statistics built once
    assert estimator.per_edit(FAST.key) == estimator.per_edit(other.key) == pytest.approx(300.0)
    estimator.add(row(other.key, 0, apply_s=2.0, eval_s=1.0))
    assert estimator.per_edit(FAST.key) == estimator.per_edit(other.key) == pytest.approx(3.0)
    assert estimator.timed() == 2


def test_a_method_without_timed_edits_makes_the_estimate_a_lower_bound():
    other = JobWork("m/slow/u/single", "slow", "slow u single", edits=3)
    estimator = Estimator([SLOW, other, FAST])
    estimator.add(row(SLOW.key, 0, apply_s=1.5, eval_s=0.5))
    # A job of a timed method takes its method's rate; an untimed method is named, not guessed.
    estimate = estimator.remaining({SLOW.key: 2, other.key: 3, FAST.key: 10})
    assert estimate == Estimate(10.0, ("fast",))
    assert str(estimate) == "at least 10s (fast not timed yet)"
    assert str(estimator.remaining({FAST.key: 1})) == "unknown until fast is timed"
    assert str(Estimate(3725.0)) == "1h02m" and duration(190) == "3m10s"


def test_without_a_terminal_the_unedited_scoring_is_said_once_with_the_count_of_every_phase():
    stream, clock = io.StringIO(), Clock()
    progress = RunProgress([FAST], [], style="lines", stream=stream, clock=clock)
    progress.start_job(FAST)
    update = progress.scoring("t")
    for done, total in ((0, 1), (1, 1), (0, 4), (4, 4)):  # two phases: 1 request, then 4
        update(done, total)
    clock.now += 12
    progress.scored()
    lines = stream.getvalue().splitlines()[-2:]
    assert lines == [
        "job 1 of 1: unedited model on t: scoring",
        "job 1 of 1: unedited model scored (5 requests, 12s)",
    ]


def test_progress_bars_only_on_a_terminal():
    assert choose_style(True, io.StringIO()) == "lines"
    assert choose_style(False, io.StringIO()) == "off"
    assert choose_style("lines", io.StringIO()) == "lines"


def test_without_a_terminal_the_cli_prints_a_line_per_edit(tiny_model_dirs, tmp_path):
    from harness.cli import cli

    args = ["run", "--model", str(tiny_model_dirs["llama"]), "--method", "ice", "--task", "capitals"]
    result = CliRunner().invoke(cli, [*args, "--limit", "3", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "1 job (1 method): 3 edits; a time estimate follows each method's first edits" in lines
    assert "job 1 of 1: ice capitals single, 3 edits" in lines
    per_edit = [line for line in lines if line.startswith("job 1 of 1 ice capitals single: ")]
    assert len(per_edit) == 3, lines
    for n, line in enumerate(per_edit, start=1):
        assert re.fullmatch(rf".*: {n}/3 edits; run {n}/3; elapsed \d+s; ETA \d+s", line), line
    assert "\r" not in result.stderr  # no bar redrawn in a log


class Knobs(Method):
    name = "knobs"
    tuning_hint = "layers, lr"


class NoKnobs(Method):
    name = "no-knobs"


def job(method: str) -> Job:
    return Job(model="org/m", method=method, tasks=("t",), mode="single")


def test_the_no_effect_warning_names_the_methods_own_knobs_and_needs_enough_edits():
    below = no_effect_warning(job("knobs"), Knobs(), STUCK_MIN_EDITS - 1, STUCK_MIN_EDITS - 1, ["edit_succ"])
    assert below is None
    assert no_effect_warning(job("knobs"), Knobs(), 3, 6, ["edit_succ"]) is None  # half is not most
    advice = no_effect_warning(job("knobs"), Knobs(), 5, 6, ["edit_succ"])
    assert advice == (
        "org/m/knobs/t/single: 5 of 6 edits did not improve edit_succ over the unedited model; knobs may "
        "be mis-configured for this model: try layers, lr (--set knobs.KEY=VALUE; `harness list methods "
        "knobs --model org/m` shows every hyperparameter with its default)"
    )
    plain = no_effect_warning(job("no-knobs"), NoKnobs(), 6, 6, ["edit_succ"])
    assert plain == "org/m/no-knobs/t/single: 6 of 6 edits did not improve edit_succ over the unedited model"


def test_a_resumed_run_starts_at_its_saved_edits_and_estimates_from_their_rows(
    tiny_model_dirs, tmp_path, capsys
):
    from test_runs_plugin import registry

    from harness.runs.catalog import Catalog
    from harness.runs.plan import RunConfig
    from harness.runs.runner import execute

    catalog = Catalog(registry())
    out = tmp_path / "run"
    config = RunConfig(model=str(tiny_model_dirs["llama"]), methods=("nudge",), tasks=("facts",), limit=3)
    execute(config, out, device="cpu", catalog=catalog, progress=False)
    lines = (out / "cases.jsonl").read_bytes().splitlines(keepends=True)
    (out / "cases.jsonl").write_bytes(b"".join(lines[:2]))  # as if killed after two cases
    capsys.readouterr()
    execute(RunConfig(), out, resume=True, device="cpu", catalog=catalog, progress="lines")
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(
        r"1 job \(1 method\): 3 edits, 2 saved, 1 left; estimate \d+s, from the timing of 2 saved edits",
        err[0],
    ), err
    assert "job 1 of 1: nudge facts single, 3 edits, 2 saved" in err
    per_edit = [line for line in err if line.startswith("job 1 of 1 nudge facts single: ")]
    assert len(per_edit) == 1 and "3/3 edits; run 3/3;" in per_edit[0], err
