"""The study's cross-domain experiment from one command: MEND and SERAC each learn from the train
split of ZsRE, WikiData recent and WikiData counterfact, and each editor is scored on all three,
giving the source x target matrices of edit success, portability, locality and fluency, which the
leaderboard renders as the study's table.

On a tiny model, with real records and a two-step training: this checks that the command builds
every matrix from real data; the scores of full trainings on SmolLM2 are measured by
benchmarks/trained_editors.py. ZsRE's train split is MEND's zsRE train file (not in KnowEdit, nor
in the offline data); its stand-in here is the first 40 records of the EasyEdit copy of MEND's zsRE
eval file, which has the same record format.
"""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main
from shared_data import KNOWEDIT, MEND_ZSRE_EVAL

TASKS = ["zsre", "wiki_recent", "wiki_counterfact"]


@pytest.fixture
def data_dir(tmp_path):
    """The KnowEdit files, and MEND-format zsRE records where the ZsRE train split is looked for."""
    if not (KNOWEDIT.is_dir() and MEND_ZSRE_EVAL.is_file()):
        pytest.skip(f"no KnowEdit data at {KNOWEDIT} or MEND zsRE records at {MEND_ZSRE_EVAL}")
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("ZsRE", "wiki_recent", "wiki_counterfact"):
        (folder / name).symlink_to(KNOWEDIT / name)
    records = json.loads(MEND_ZSRE_EVAL.read_text())[:40]
    (folder / "zsre_mend_train.json").write_text(json.dumps(records))
    return folder


def test_one_command_gives_both_editors_source_by_target_matrices(
    tiny_model_dirs, data_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the missing wiki_recent test file is not fetched
    out = tmp_path / "run"
    code, _, err = run_main(
        capsys,
        "run",
        "--model", str(tiny_model_dirs["llama"]),
        "--mode", "cross-domain",
        "--method", "mend,serac",
        "--train-task", ",".join(TASKS),
        "--task", ",".join(TASKS),
        "--limit", "1",
        "--set", "steps=2",
        "--data-dir", str(data_dir),
        "--device", "cpu",
        "--out", str(out),
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    for method in ("mend", "serac"):
        for task in TASKS:
            assert f"{method} zsre cross-domain from {task}, 1 edit" in err
            assert f"{method} on the {task} train split: no trained checkpoint, training it first" in err
    summary = json.loads((out / "summary.json").read_text())
    matrices = {(m["method"], m["metric"]): m for m in summary["cross_domain"]}
    for method in ("mend", "serac"):
        for metric in ("edit_succ", "portability", "locality", "fluency"):
            matrix = matrices[(method, metric)]
            assert matrix["sources"] == TASKS and matrix["targets"] == TASKS
            # the offline WikiData recent records (its train file) carry no portability probes
            scored = [t for t in TASKS if not (metric == "portability" and t == "wiki_recent")]
            cells = [row[TASKS.index(t)] for row in matrix["values"] for t in scored]
            assert all(isinstance(v, float) for v in cells), matrix["values"]
    code, table, err = run_main(capsys, "leaderboard", str(out), "--layout", "cross-domain")
    assert code == 0, err
    lines = [line for line in table.splitlines() if line.startswith(("mend ", "serac "))]
    assert [line.split()[:2] for line in lines] == [[m, t] for m in ("mend", "serac") for t in TASKS]
