"""Shared helpers of the method tests: weight digests, logits, real ZsRE cases, and scores measured
with the real evaluator while checking that every undo returns the model bit-exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from shared_data import KNOWEDIT

from harness.api import AppliedEdit, EditCase, Method, Probe
from harness.evaluation.options import EvalOptions
from harness.models.handle import ModelHandle, tensor_digest
from harness.models.tokenization import encode_answers
from harness.seeding import case_seed, seed_everything
from harness.testing import Evaluator
from harness_plugins.methods.lora_labels import edit_batch, target_nll

METRICS = ("edit_succ", "generalization", "locality")


def digests(handle: ModelHandle) -> dict[str, bytes]:
    return {name: tensor_digest(p) for name, p in handle.model.named_parameters()}


def state_digests(handle: ModelHandle) -> dict[str, bytes]:
    """Every entry of the state_dict: parameters a method adds beside the model show as new keys,
    so an undo that leaves one behind fails the comparison."""
    return {name: tensor_digest(t) for name, t in handle.model.state_dict().items()}


def edit_nll(handle: ModelHandle, case: EditCase) -> float:
    """The mean NLL (nats per target token) of the case's target after its prompt."""
    batch = edit_batch(handle, [case])
    with torch.no_grad():
        return target_nll(handle.model(**batch.answers.model_inputs()).logits, batch.labels).item()


def logits(handle: ModelHandle, cases: Sequence[EditCase]) -> torch.Tensor:
    batch = encode_answers(handle.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases])
    with torch.no_grad():
        return handle.model(**batch.to(handle.device).model_inputs()).logits


#: Facts SmolLM2-135M gets right, about subjects no edited ZsRE record mentions: a ROME-style edit
#: must leave them alone even where it moves other relations of its own subject.
UNRELATED = tuple(
    Probe(prompt, (answer,))
    for prompt, answer in [
        ("The capital of France is", "Paris"),
        ("The capital of Japan is", "Tokyo"),
        ("The capital of Italy is", "Rome"),
        ("The capital of Germany is", "Berlin"),
        ("The capital of Spain is", "Madrid"),
        ("The Mona Lisa was painted by", "Leonardo da Vinci"),
    ]
)


def zsre_cases(n: int, *, start: int = 0, unrelated: bool = False) -> list[EditCase]:
    """Real KnowEdit ZsRE test records; with `unrelated`, each also probes UNRELATED as the
    locality group "unrelated" (scored as `locality.unrelated`)."""
    from harness.testing import resolve_task

    cases = resolve_task("zsre").load(data_dir=str(KNOWEDIT)).cases[start : start + n]
    if unrelated:
        return [replace(c, locality={**c.locality, "unrelated": UNRELATED}) for c in cases]
    return list(cases)


def mean_scores(
    handle: ModelHandle,
    method: Method,
    cases: Sequence[EditCase],
    hparams: Mapping[str, Any],
    *,
    mode: str,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """The mean of every score (sub-scores included) over the cases it applies to, and under
    "pre:<score>" the unedited model's. Each apply is seeded as the runner seeds it.

    "single" edits, scores and undoes one case at a time and checks after each undo that weights
    and outputs are the original ones; "sequential" applies every edit, scores all cases on the
    final model, then undoes in reverse."""
    evaluator = Evaluator(handle, list(metrics), EvalOptions(use_cache=False))
    evaluator.prepare(cases)
    pre = evaluator.evaluate_pre(cases)
    weights, outputs = digests(handle), logits(handle, cases)

    def apply(case: EditCase) -> AppliedEdit:
        seed_everything(case_seed(0, case.case_id))
        return method.apply(handle, [case], hparams)

    rows = []
    if mode == "single":
        for case in cases:
            edit = apply(case)
            rows += evaluator.evaluate([case], {case.case_id: edit.context})
            edit.undo()
            assert digests(handle) == weights
            assert torch.equal(logits(handle, cases), outputs)
    else:
        edits = [apply(case) for case in cases]
        rows = evaluator.evaluate(cases)
        for edit in reversed(edits):
            edit.undo()
        assert digests(handle) == weights
        assert torch.equal(logits(handle, cases), outputs)
    return {**_means(rows), **{f"pre:{key}": value for key, value in _means(pre).items()}}


def _means(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({key for row in rows for key in row})
    return {key: sum(r[key] for r in rows if key in r) / sum(key in r for r in rows) for key in keys}
