"""The engine against the naive one-example scorer on the real SmolLM2 and 20 real ZsRE records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.api import EditCase, Probe
from harness.evaluation.evaluator import Evaluator
from harness.evaluation.options import EvalOptions
from harness.models.tokenization import encode_answers

ZSRE = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit" / "ZsRE" / "ZsRE-test-all.json"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ZSRE.exists(), reason="shared KnowEdit data absent")]


def first(value):
    while isinstance(value, list):
        value = value[0] if value else ""
    return value


def zsre_cases(n: int) -> list[EditCase]:
    records = json.loads(ZSRE.read_text())[:n]
    return [
        EditCase(
            case_id=str(i),
            prompt=r["prompt"],
            target_new=r["target_new"],
            rephrases=(r["rephrase_prompt"],),
            portability={
                g.lower(): tuple(Probe(p["prompt"], (first(p["ground_truth"]),)) for p in ps)
                for g, ps in r.get("portability", {}).items()
            },
        )
        for i, r in enumerate(records)
    ]


def naive_accuracy(handle, prompt: str, answer: str) -> float:
    enc = encode_answers(handle.tokenizer, [prompt], [answer])
    start, end = int(enc.answer_start[0]), int(enc.answer_end[0])
    with torch.no_grad():
        pred = handle.model(input_ids=enc.input_ids[:, :end]).logits[0, start - 1 : end - 1].argmax(-1)
    return (pred == enc.input_ids[0, start:end]).float().mean().item()


@pytest.mark.parametrize("side", ["left", "right"])
def test_zsre_scores_equal_naive_on_smollm2(smollm2, side, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    cases = zsre_cases(20)
    evaluator = Evaluator(
        smollm2,
        ["edit_succ", "generalization", "portability", "exact_match"],
        EvalOptions(padding_side=side, max_batch_size=16),
    )
    results = evaluator.evaluate_pre(cases)
    assert len(results) == 20
    for case, got in zip(cases, results, strict=True):
        edit = naive_accuracy(smollm2, case.prompt, case.target_new)
        assert got["edit_succ"] == pytest.approx(edit, abs=1e-9)
        assert got["exact_match"] == float(edit == 1.0)
        assert got["generalization"] == pytest.approx(
            naive_accuracy(smollm2, case.rephrases[0], case.target_new)
        )
        groups = [
            sum(naive_accuracy(smollm2, p.prompt, p.answers[0]) for p in ps) / len(ps)
            for ps in case.portability.values()
        ]
        assert got["portability"] == pytest.approx(sum(groups) / len(groups))
