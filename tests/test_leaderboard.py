"""Leaderboards from run directories, in every format, and `harness leaderboard` / `harness run`."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner
from shared_data import KNOWEDIT

from harness.api import HarnessError, Metric, MetricInfo
from harness.commands.leaderboard import load_summary
from harness.runs.leaderboard import FORMATS, knowedit_table, merge, render
from harness.runs.summary import info_of

SUMMARY_A = {
    "results": [
        {
            "method": "rome",
            "task": "zsre",
            "mode": "single",
            "model": "smollm2-135m",
            "n_cases": 50,
            "metrics": {"edit_succ": 0.98, "locality": 0.95, "fluency": 5.71, "portability.reasoning": 0.4},
            "general": {"mmlu": {"metric": "acc", "before": 0.30, "after": 0.25}},
        }
    ]
}
SUMMARY_B = {
    "results": [
        {
            "method": "ft-l",
            "task": "convsent",
            "mode": "sequential",
            "protocol": "after-10",
            "model": "smollm2-135m",
            "n_cases": 10,
            "metrics": {"edit_succ": 0.5, "convsent_kl": 0.26},
        }
    ]
}


@pytest.fixture
def run_dirs(tmp_path):
    dirs = []
    for name, summary in (("a", SUMMARY_A), ("b", SUMMARY_B)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        dirs.append(str(tmp_path / name))
    return dirs


def test_scaling_rule_reads_the_metadata_recorded_or_registered(run_dirs):
    """Summaries without `metric_info` (written before runs recorded it) take it from the installed
    metrics; a sub-score takes its metric's; a name nobody describes is a fraction."""
    infos = {}
    for d in run_dirs:
        for row in merge([load_summary(d)]):
            infos.update((name, MetricInfo.from_json(data)) for name, data in row["metric_info"].items())
    fraction = [info_of(k, infos).is_fraction for k in ("edit_succ", "portability.reasoning", "general:mmlu")]
    assert fraction == [True, True, True]
    assert [info_of(k, infos).unit for k in ("fluency", "convsent_kl")] == ["bits", "nats"]
    assert info_of("perplexity", {"perplexity": MetricInfo(unit="perplexity")}).is_fraction is False


def test_merged_text_table_shows_scores_x100_and_leaves_absent_metrics_empty(run_dirs):
    text = render(merge([load_summary(d) for d in run_dirs]), "text")
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:9] == [
        "model",
        "method",
        "task",
        "mode",
        "n",
        "edit_succ",
        "locality",
        "fluency",
        "convsent_kl",
    ]
    assert "general:mmlu" in header and "general:mmlu:before" in header
    rome = next(line for line in lines if " rome " in line)
    assert "98.00" in rome and "95.00" in rome and "5.71" in rome and "40.00" in rome and "25.00" in rome
    ft = next(line for line in lines if " ft-l " in line)
    assert "sequential (after-10)" in ft and "0.26" in ft and "50.00" in ft
    # ft-l has no locality, fluency or general figures: those cells are blank, not 0.
    assert ft.split()[5:] == ["10", "50.00", "0.26"]


def test_knowedit_layout_has_a_row_per_task_and_headline_metric(run_dirs):
    headers, body = knowedit_table(merge([load_summary(d) for d in run_dirs]))
    # The columns name what differs between results: here the mode as well as the method.
    assert headers == ["task", "metric", "rome / single", "ft-l / sequential (after-10)"]
    assert body == [
        ["zsre", "edit_succ", "98.00", ""],
        ["", "locality", "95.00", ""],
        ["", "general:mmlu", "25.00", ""],
        ["", "general:mmlu:before", "30.00", ""],
        ["", "fluency", "5.71", ""],
        ["convsent", "edit_succ", "", "50.00"],
        ["", "convsent_kl", "", "0.26"],
    ]  # sub-scores (portability.reasoning) stay in the wide layout
    same_mode = [{**r, "mode": "single"} for r in merge([load_summary(d) for d in run_dirs])]
    assert knowedit_table(same_mode)[0] == ["task", "metric", "rome", "ft-l"]
    text = render(merge([load_summary(d) for d in run_dirs]), "markdown", "knowedit")
    assert text.splitlines()[2].startswith("| zsre ")
    with pytest.raises(HarnessError, match="unknown leaderboard layout"):
        render([], "text", "tall")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_carries_every_row(run_dirs, fmt):
    out = render(merge([load_summary(d) for d in run_dirs]), fmt)
    if fmt == "json":
        data = json.loads(out)
        assert [r["method"] for r in data] == ["rome", "ft-l"]
        assert data[0]["metrics"]["edit_succ"] == 0.98  # JSON keeps fractions
        return
    assert "rome" in out and "ft-l" in out and "98.00" in out
    if fmt == "markdown":
        assert out.splitlines()[1].startswith("|--")
    if fmt == "latex":
        assert "\\begin{tabular}" in out and "\\toprule" in out


def test_html_is_self_contained_and_sortable(run_dirs):
    page = render(merge([load_summary(d) for d in run_dirs]), "html")
    assert not re.search(r"(src|href)=", page), "the page must not fetch anything"
    assert "<script>" in page and "addEventListener" in page

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.headers, self.cells, self._in = [], [], None

        def handle_starttag(self, tag, attrs):
            self._in = tag

        def handle_data(self, data):
            if self._in == "th":
                self.headers.append(data)
            elif self._in == "td":
                self.cells.append(data)

        def handle_endtag(self, tag):
            self._in = None

    parser = Cells()
    parser.feed(page)
    assert parser.headers[:3] == ["model", "method", "task"]
    assert "98.00" in parser.cells


def test_bad_summary_names_the_file_and_field(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"results": [{"method": "rome"}]}))
    with pytest.raises(HarnessError, match=r"summary.json at \$.results\[0\]: missing required field"):
        load_summary(tmp_path)
    with pytest.raises(HarnessError, match=r"no summary\.json"):
        load_summary(tmp_path / "nothing")


def test_leaderboard_command_writes_each_format(run_dirs, tmp_path):
    from harness.cli import cli

    result = CliRunner().invoke(cli, ["leaderboard", *run_dirs, "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "| rome" in result.output
    target = tmp_path / "board.html"
    result = CliRunner().invoke(cli, ["leaderboard", *run_dirs, "--format", "html", "-o", str(target)])
    assert result.exit_code == 0 and target.read_text().startswith("<!DOCTYPE html>")
    result = CliRunner().invoke(cli, ["leaderboard", *run_dirs, "--layout", "knowedit"])
    assert result.exit_code == 0 and result.output.split()[:2] == ["task", "metric"]


def test_run_command_refuses_before_loading_and_resumes_without_redoing(tmp_path, tiny_model_dirs):
    from harness.cli import cli

    out = tmp_path / "run"
    model = str(tiny_model_dirs["llama"])
    refused = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            model,
            "--method",
            "rome",
            "--task",
            "zsre",
            "--mode",
            "batch",
            "--batch-size",
            "2",
        ],
    )
    assert refused.exit_code != 0 and "cannot edit several cases" in str(refused.exception)
    args = ["run", "--model", model, "--method", "ft-l", "--task", "zsre", "--limit", "1"]
    args += [
        "--data-dir",
        str(KNOWEDIT),
        "--set",
        "num_steps=1",
        "--out",
        str(out),
        "--no-progress",
    ]
    if not KNOWEDIT.is_dir():
        pytest.skip("KnowEdit data folder not present")
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "ft-l" in first.output and "edit_succ" in first.output
    rows = (out / "cases.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["method"] == "ft-l"
    again = CliRunner().invoke(cli, ["run", "--out", str(out), "--resume", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert (out / "cases.jsonl").read_text().splitlines() == rows
    clash = CliRunner().invoke(cli, ["run", "--out", str(out), "--resume", "--method", "rome"])
    assert clash.exit_code != 0 and "drop --method" in str(clash.exception)


RANK_INFO = {"unit": "rank", "higher_is_better": False, "headline": None, "edit_success": False}


def rank_summary(tmp_path, **extra):
    result = {**SUMMARY_A["results"][0], "metrics": {"edit_succ": 0.5, "target_rank": 5 / 3}}
    (tmp_path / "summary.json").write_text(json.dumps({"results": [result], **extra}))
    return tmp_path


class TargetRank(Metric):
    name = "target_rank"
    info = MetricInfo(unit="rank", higher_is_better=False)


def test_a_plugin_metric_in_its_own_unit_is_shown_as_it_is(tmp_path):
    """The issue-24 case: a mean rank of 1.67 showed as 166.67."""
    recorded = rank_summary(tmp_path, metric_info={"target_rank": RANK_INFO})
    for layout in ("wide", "knowedit"):
        text = render(merge([load_summary(recorded)]), "text", layout)
        assert "1.67" in text and "166.67" not in text and "50.00" in text


def test_an_older_summary_takes_units_from_the_installed_plugin_or_warns(tmp_path, capsys):
    from harness.api import hookimpl
    from harness.plugins import build_registry

    class Plugin:
        @hookimpl
        def harness_register_metrics(self, register):
            register("target_rank", TargetRank)

    old = rank_summary(tmp_path)
    with_plugin = build_registry(extra_plugins=[("rank", Plugin())])
    assert "1.67" in render(merge([load_summary(old, registry=with_plugin)]), "text")
    assert capsys.readouterr().err == ""
    assert "166.67" in render(merge([load_summary(old, registry=build_registry())]), "text")
    assert "no unit recorded or installed for metric(s) target_rank" in capsys.readouterr().err


def test_headline_places_order_the_columns(tmp_path):
    info = {
        "target_rank": {**RANK_INFO, "headline": 0},
        "edit_succ": {**RANK_INFO, "unit": "fraction", "headline": 1},
    }
    rows = merge([load_summary(rank_summary(tmp_path, metric_info=info))])
    assert render(rows, "text").splitlines()[0].split()[5:7] == ["target_rank", "edit_succ"]
    # knowedit layout: headline fractions first, then the rest, then headline metrics of other units
    assert [r[1] for r in knowedit_table(rows)[1]][:2] == ["edit_succ", "general:mmlu"]
    assert knowedit_table(rows)[1][-1][1] == "target_rank"
