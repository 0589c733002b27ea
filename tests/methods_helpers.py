"""Shared helpers of the method tests: weight digests, logits, real ZsRE cases, and scores measured
with the real evaluator while checking that every undo returns the model bit-exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.api import EditCase, Method
from harness.evaluation.evaluator import Evaluator
from harness.evaluation.options import EvalOptions
from harness.models.handle import ModelHandle, tensor_digest
from harness.models.tokenization import encode_answers

KNOWEDIT = Path("/work/shared/data/knowedit")
METRICS = ("edit_succ", "generalization", "locality")


def digests(handle: ModelHandle) -> dict[str, bytes]:
    return {name: tensor_digest(p) for name, p in handle.model.named_parameters()}


def logits(handle: ModelHandle, cases: Sequence[EditCase]) -> torch.Tensor:
    batch = encode_answers(handle.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases])
    with torch.no_grad():
        return handle.model(**batch.to(handle.device).model_inputs()).logits


def zsre_cases(n: int, *, start: int = 0) -> list[EditCase]:
    from harness.tasks import resolve_task

    cases = resolve_task("zsre").load(data_dir=str(KNOWEDIT)).cases
    return list(cases[start : start + n])


def mean_scores(
    handle: ModelHandle, method: Method, cases: Sequence[EditCase], hparams: Mapping[str, Any], *, mode: str
) -> dict[str, float]:
    """Mean edit success, generalization and locality over the cases. "single" edits, scores and undoes
    one case at a time and checks after each undo that weights and outputs are the original ones;
    "sequential" applies every edit, scores all cases on the final model, then undoes in reverse."""
    evaluator = Evaluator(handle, list(METRICS), EvalOptions(use_cache=False))
    evaluator.prepare(cases)
    weights, outputs = digests(handle), logits(handle, cases)
    rows = []
    if mode == "single":
        for case in cases:
            edit = method.apply(handle, [case], hparams)
            rows += evaluator.evaluate([case], {case.case_id: edit.context})
            edit.undo()
            assert digests(handle) == weights
            assert torch.equal(logits(handle, cases), outputs)
    else:
        edits = [method.apply(handle, [case], hparams) for case in cases]
        rows = evaluator.evaluate(cases)
        for edit in reversed(edits):
            edit.undo()
        assert digests(handle) == weights
        assert torch.equal(logits(handle, cases), outputs)
    return {key: sum(r[key] for r in rows if key in r) / sum(key in r for r in rows) for key in METRICS}
