"""Each mode with the real built-in methods on SmolLM2-135M and real KnowEdit records (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import KNOWEDIT

from harness.plugins import get_registry
from harness.runs.catalog import Catalog
from harness.runs.plan import RunConfig
from harness.runs.runner import execute
from harness.runs.store import RunStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not KNOWEDIT.is_dir(), reason=f"KnowEdit data folder {KNOWEDIT} is not present"),
]


def run(out: Path, **fields):
    config = RunConfig(model="smollm2-135m", data_dir=str(KNOWEDIT), **fields)
    catalog = Catalog(get_registry())
    return execute(config, out, device="cpu", catalog=catalog, progress=False, warn=lambda m: None)


def rows(out: Path) -> list[dict]:
    return list(RunStore(out).rows())


def test_single_mode_ft_m_edits_real_zsre_records(tmp_path):
    outcome = run(tmp_path / "r", methods=("ft-m",), tasks=("zsre",), limit=2)
    got = rows(tmp_path / "r")
    assert [r["case_id"] for r in got] == [c.case_id for c in outcome_cases("zsre", 2)]
    # FT-M trains on the target tokens until they are predicted: every edit raises edit_succ.
    assert all(r["post"]["edit_succ"] > r["pre"]["edit_succ"] for r in got)
    result = outcome.summary["results"][0]
    assert result["metrics"]["edit_succ"] >= 0.9 and 0 <= result["metrics"]["locality"] <= 1
    assert "fluency" in result["metrics"] and "portability" in result["metrics"]


def outcome_cases(task: str, n: int):
    from harness.testing import resolve_task

    return resolve_task(task).load(split="test", data_dir=str(KNOWEDIT)).cases[:n]


def test_batch_mode_ft_l_edits_two_counterfacts_in_one_call(tmp_path):
    outcome = run(
        tmp_path / "b", methods=("ft-l",), tasks=("wiki_counterfact",), mode="batch", batch_size=2, limit=2
    )
    got = rows(tmp_path / "b")
    assert [r["edits"] for r in got] == [2, 2]
    assert outcome.summary["results"][0]["batch_size"] == 2


def test_sequential_and_interleaved_ft_m(tmp_path):
    outcome = run(
        tmp_path / "s",
        methods=("ft-m",),
        tasks=("zsre", "wiki_counterfact"),
        mode="sequential",
        interleave=True,
        eval_at=(2,),
        limit=2,
    )
    got = rows(tmp_path / "s")
    assert sorted({r["protocol"] for r in got}) == ["after-2", "after-4", "immediate"]
    assert {r["task"] for r in got} == {"zsre", "wiki_counterfact"}
    assert len([r for r in got if r["protocol"] == "after-4"]) == 4
    results = outcome.summary["results"]
    assert {(r["task"], r["protocol"]) for r in results} >= {
        ("zsre", "immediate"),
        ("wiki_counterfact", "after-4"),
    }
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["models"]["smollm2-135m"]["fingerprint"]


def test_cross_domain_ike_learns_from_counterfact_train_split(tmp_path):
    outcome = run(
        tmp_path / "x",
        methods=("ike",),
        tasks=("zsre",),
        mode="cross-domain",
        train_tasks=("wiki_counterfact",),
        limit=2,
    )
    matrix = next(m for m in outcome.summary["cross_domain"] if m["metric"] == "edit_succ")
    assert matrix["sources"] == ["wiki_counterfact"] and matrix["targets"] == ["zsre"]
    assert matrix["values"][0][0] == outcome.summary["results"][0]["metrics"]["edit_succ"]
