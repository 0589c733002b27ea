"""`harness analyze` over a real run: ROME, MEMIT, FT-L and FT-M on a real ZsRE record with the
real SmolLM2-135M, traced on a real MQuAKE chain; every section is produced, and the page renders
in Chromium (slow; the 20-record run of docs/analyze.md is this test at --limit 20)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from shared_data import KNOWEDIT, SHARED_DATA
from test_analyze import check_in_chromium

from harness.cli import cli

MQUAKE = SHARED_DATA / "other" / "mquake" / "MQuAKE-hard.json"
METHODS = ("rome", "memit", "ft-l", "ft-m")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not KNOWEDIT.is_dir() or not MQUAKE.is_file(), reason=f"{SHARED_DATA} is not present"),
]


def test_analyze_a_real_run_of_four_methods(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "report"
    runner = CliRunner()
    args = [
        "run",
        "--method",
        ",".join(METHODS),
        "--task",
        "zsre",
        "--data-dir",
        str(KNOWEDIT),
        "--limit",
        "1",
    ]
    done = runner.invoke(cli, [*args, "--device", "cpu", "--out", str(run_dir), "--no-progress"])
    assert done.exit_code == 0, done.output
    # the MQuAKE file is found beside the run's data folder (its parent's other/mquake)
    args = ["analyze", str(run_dir), "--out", str(out), "--triples", "1", "--samples", "3", "--device", "cpu"]
    done = runner.invoke(cli, args)
    assert done.exit_code == 0, done.output

    numbers = json.loads((out / "report.json").read_text())
    assert numbers["edits_replayed"] == len(METHODS)
    assert set(numbers["taxonomy"]) == set(METHODS)
    # every method edits weights in place; ROME one layer, MEMIT several
    assert set(numbers["weights"]) == set(METHODS)
    assert len(numbers["weights"]["rome"]) == 1 and len(numbers["weights"]["memit"]) > 1
    for method in ("rome", "memit"):  # a rank-one (ROME) or low-rank (MEMIT) change per layer
        assert all(0 < layer["relative"] < 1 for layer in numbers["weights"][method].values())
    assert set(numbers["vocabulary"]) == set(METHODS)
    (study,) = numbers["case_study"]
    assert set(study["generations"]) == set(METHODS) and study["target"]
    (traced,) = numbers["locating"]["traces"]
    assert all(0 <= t["corrupted"] <= 1 and len(t["by_layer"]) == 30 for t in traced.values())
    # the noise on the subject hides at least one of the three facts (a generic answer such as
    # " the" after "... is a citizen of" may not depend on the subject at all)
    assert any(t["clean"] > t["corrupted"] for t in traced.values())
    assert numbers["locating"]["k"] == list(range(1, 31))
    assert set(numbers["radar"]) == set(METHODS)
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    wanted = {"weight-sparsity", "weight-top-share", "weight-norm", "vocab-hits"}
    assert wanted | {"locating-trace", "locating-layers", "locating-rsim", "radar"} <= figures
    check_in_chromium(tmp_path, out / "report.html", figures)
