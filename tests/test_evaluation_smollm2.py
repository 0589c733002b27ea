"""The engine against the naive one-example scorer on the real SmolLM2 and 20 real ZsRE records, loaded
by the real task loader, before and after a stand-in edit, on both padding sides."""

from __future__ import annotations

from pathlib import Path

import pytest
from naive_eval import naive_accuracy, naive_score, perturb

from harness.evaluation.evaluator import Evaluator
from harness.evaluation.options import EvalOptions
from harness.tasks import resolve_task

KNOWEDIT = Path("/work/shared/data/knowedit")
METRICS = ["edit_succ", "generalization", "portability", "locality", "exact_match"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not KNOWEDIT.exists(), reason="shared KnowEdit data absent"),
]


def group_mean(handle, groups) -> float:
    """Mean over groups of the mean over probes of the first answer's token accuracy."""
    per_group = [sum(naive_accuracy(handle, p.prompt, p.answers[0]) for p in ps) / len(ps) for ps in groups]
    return sum(per_group) / len(per_group)


def agreement(before: list[int], after: list[int]) -> float:
    return sum(a == b for a, b in zip(before, after, strict=True)) / len(before)


@pytest.mark.parametrize("side", ["left", "right"])
def test_zsre_scores_equal_naive_on_smollm2(smollm2, side, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    cases = resolve_task("zsre").load(data_dir=str(KNOWEDIT)).cases[:20]
    assert len(cases) == 20 and all(c.locality and c.portability for c in cases)
    evaluator = Evaluator(smollm2, METRICS, EvalOptions(padding_side=side, max_batch_size=16))
    evaluator.prepare(cases)
    pre_argmax = {
        p.prompt: naive_score(smollm2, p.prompt, p.answers[0])[0]
        for c in cases
        for ps in c.locality.values()
        for p in ps
    }
    snapshot = smollm2.snapshot([f"{smollm2.adapter.mlp_out_name(1)}.weight"])
    perturb(smollm2)
    try:
        results = evaluator.evaluate(cases)
        localities = []
        for case, got in zip(cases, results, strict=True):
            edit = naive_accuracy(smollm2, case.prompt, case.target_new)
            assert got["edit_succ"] == edit
            assert got["exact_match"] == float(edit == 1.0)
            rephrases = [naive_accuracy(smollm2, r, case.target_new) for r in case.rephrases]
            assert got["generalization"] == pytest.approx(sum(rephrases) / len(rephrases), abs=1e-12)
            assert got["portability"] == pytest.approx(
                group_mean(smollm2, case.portability.values()), abs=1e-12
            )
            groups = [
                sum(
                    agreement(pre_argmax[p.prompt], naive_score(smollm2, p.prompt, p.answers[0])[0])
                    for p in ps
                )
                / len(ps)
                for ps in case.locality.values()
            ]
            assert got["locality"] == pytest.approx(sum(groups) / len(groups), abs=1e-12)
            localities.append(got["locality"])
        assert min(localities) < 1.0  # the stand-in edit moved some argmax tokens
    finally:
        smollm2.restore(snapshot)
