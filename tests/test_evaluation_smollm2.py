"""The engine against the naive one-example scorer on the real SmolLM2 and 20 real ZsRE records, loaded
by the real task loader, before and after a stand-in edit, on both padding sides."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from naive_eval import naive_accuracy, naive_score, perturb
from shared_data import KNOWEDIT

from harness.evaluation.options import EvalOptions
from harness.testing import Evaluator, resolve_task

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


@pytest.fixture(scope="module")
def zsre_expected(smollm2):
    """20 real ZsRE cases and their naive scores after the stand-in edit, computed once for both
    padding sides (the naive scorer is the slow part)."""
    cases = resolve_task("zsre").load(data_dir=str(KNOWEDIT)).cases[:20]
    assert len(cases) == 20 and all(c.locality and c.portability for c in cases)
    pre_argmax = {
        p.prompt: naive_score(smollm2, p.prompt, p.answers[0])[0]
        for c in cases
        for ps in c.locality.values()
        for p in ps
    }
    with stand_in_edit(smollm2):
        expected = []
        for case in cases:
            edit = naive_accuracy(smollm2, case.prompt, case.target_new)
            rephrases = [naive_accuracy(smollm2, r, case.target_new) for r in case.rephrases]
            locality = [
                [agreement(pre_argmax[p.prompt], naive_score(smollm2, p.prompt, p.answers[0])[0]) for p in ps]
                for ps in case.locality.values()
            ]
            expected.append(
                {
                    "edit_succ": edit,
                    "exact_match": float(edit == 1.0),
                    "generalization": sum(rephrases) / len(rephrases),
                    "portability": group_mean(smollm2, case.portability.values()),
                    "locality": sum(sum(g) / len(g) for g in locality) / len(locality),
                }
            )
    return cases, expected


@contextmanager
def stand_in_edit(handle):
    snapshot = handle.snapshot([f"{handle.adapter.mlp_out_name(1)}.weight"])
    perturb(handle)
    try:
        yield
    finally:
        handle.restore(snapshot)


@pytest.mark.parametrize("side", ["left", "right"])
def test_zsre_scores_equal_naive_on_smollm2(smollm2, zsre_expected, side, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    cases, expected = zsre_expected
    evaluator = Evaluator(smollm2, METRICS, EvalOptions(padding_side=side, max_batch_size=16))
    evaluator.prepare(cases)
    with stand_in_edit(smollm2):
        results = evaluator.evaluate(cases)
    for got, want in zip(results, expected, strict=True):
        assert got["edit_succ"] == want["edit_succ"]
        assert got["exact_match"] == want["exact_match"]
        for key in ("generalization", "portability", "locality"):
            assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert min(r["locality"] for r in results) < 1.0  # the stand-in edit moved some argmax tokens
