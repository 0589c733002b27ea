"""SERAC on a tiny model: routing per row (in-scope rows read the edit's line, the others are the
base model's), KV-cached generation through the router, stacked edits, exact undo, and the
classifier's and counterfactual model's training lowering both losses."""

from __future__ import annotations

import pytest
import torch
from test_runs_plugin import fact_cases

from harness.api import HarnessError, encode_answers, encode_prompts
from harness.evaluation.batching import run_generations
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Request
from harness.hparams import resolve_hparams
from harness.models.handle import tensor_digest
from harness_plugins.methods.serac import SERAC, Adapters, edit_line, prepend

CASES = fact_cases("f")
TRAIN, EDITS = CASES[6:], CASES[:6]


@pytest.fixture
def serac(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    method = SERAC()
    hparams = resolve_hparams(method, tiny_llama, {"steps": 0})  # h's adapters are zero
    method.fit(tiny_llama, TRAIN, hparams)
    return method, hparams


def logits(handle, prompts, answers):
    batch = encode_answers(handle.tokenizer, prompts, answers).to(handle.device)
    with torch.no_grad():
        return handle.model(**batch.model_inputs()).logits, batch


def prefixed_logits(handle, method, case, prompt, answer):
    """The base model's logits on the edit's line followed by the input (what h computes, its
    adapters aside), for the input's own columns."""
    batch = encode_answers(handle.tokenizer, [prompt], [answer]).to(handle.device)
    inputs = batch.model_inputs()
    line = method.editor.line_ids(case)
    ids, mask, positions = prepend(
        inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], [line], 0
    )
    with torch.no_grad():
        out = handle.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    return out[:, -batch.input_ids.shape[1] :]


def test_in_scope_rows_read_the_edit_and_the_others_are_the_base_models(tiny_llama, serac):
    method, hparams = serac
    weights = {n: tensor_digest(p) for n, p in tiny_llama.model.named_parameters()}
    case, unrelated = EDITS[0], "Water boils at one hundred"
    prompts, answers = [case.prompt, unrelated], [case.target_new, "degrees"]
    before, _ = logits(tiny_llama, prompts, answers)
    expected = prefixed_logits(tiny_llama, method, case, case.prompt, case.target_new)[0]
    edit = method.apply(tiny_llama, [case], hparams)
    router_scope = edit.router.scope([case.prompt, unrelated])
    after, batch = logits(tiny_llama, prompts, answers)
    assert router_scope[0] == 0, "an edit's own prompt is in its scope"
    width = int(batch.attention_mask[0].sum())
    torch.testing.assert_close(after[0, :width], expected[:width], atol=1e-4, rtol=1e-4)
    if router_scope[1] < 0:
        torch.testing.assert_close(after[1], before[1], atol=1e-4, rtol=1e-4)
    edit.undo()
    assert "forward" not in tiny_llama.model.__dict__
    again, _ = logits(tiny_llama, prompts, answers)
    assert torch.equal(again, before)
    assert {n: tensor_digest(p) for n, p in tiny_llama.model.named_parameters()} == weights


def test_cached_generation_goes_through_the_router(tiny_llama, serac):
    method, hparams = serac
    case = EDITS[1]
    edit = method.apply(tiny_llama, [case], hparams)
    edit.router.scope = lambda texts: [0] * len(texts)  # in scope, whatever the classifier learnt
    request = Request.generate(case.prompt, 6, stop_at_eos=False)
    [routed] = run_generations(tiny_llama.model, tiny_llama.tokenizer, [request], EvalOptions())
    edit.undo()
    assert list(routed.token_ids) == greedy(tiny_llama, case, 6)


def greedy(handle, case, n, adapters=None):
    """The continuation decoded by hand, without a cache, from the edit's line and the prompt on the
    base model (with h's adapters on, when given)."""
    ids = handle.tokenizer(edit_line(case), add_special_tokens=False)["input_ids"]
    ids += encode_prompts(handle.tokenizer, [case.prompt]).input_ids[0].tolist()
    tokens = torch.tensor([ids])
    out = []
    if adapters is not None:
        adapters.attach()
        adapters.gate = torch.ones(1)
    try:
        with torch.no_grad():
            for _ in range(n):
                nxt = int(handle.model(input_ids=tokens).logits[0, -1].argmax())
                out.append(nxt)
                tokens = torch.cat([tokens, torch.tensor([[nxt]])], 1)
    finally:
        if adapters is not None:
            adapters.detach()
    return out


def test_sequential_edits_stack_and_undo_in_reverse(tiny_llama, serac):
    method, hparams = serac
    first = method.apply(tiny_llama, [EDITS[0]], hparams)
    second = method.apply(tiny_llama, EDITS[1:3], hparams)
    assert [c.case_id for c, _ in second.router.memory] == [c.case_id for c in EDITS[:3]]
    second.undo()
    assert [c.case_id for c, _ in first.router.memory] == [EDITS[0].case_id]
    first.undo()
    assert "forward" not in tiny_llama.model.__dict__


def test_training_lowers_both_losses_and_untrained_is_the_start(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    hparams = resolve_hparams(SERAC(), tiny_llama, {"steps": 40, "lr": 0.02, "train_batch": 5})
    trained, zero = SERAC(), SERAC()
    trained.fit(tiny_llama, CASES, hparams)
    zero.fit(tiny_llama, CASES, {**hparams, "steps": 0})
    assert torch.equal(zero.editor.classifier.proj, torch.eye(zero.editor.classifier.proj.shape[0]))
    assert all(bool((m.b == 0).all()) for m in zero.editor.adapters.values())

    def losses(method):
        with torch.no_grad():
            h = method.editor.counterfactual_loss(CASES, torch.Generator().manual_seed(0))
            g = method.editor.scope_loss(CASES, torch.Generator().manual_seed(0))
        return float(h), float(g)

    (h_trained, g_trained), (h_zero, g_zero) = losses(trained), losses(zero)
    assert h_trained < 0.9 * h_zero, (h_trained, h_zero)
    assert g_trained < 0.8 * g_zero, (g_trained, g_zero)
    case = EDITS[0]
    edit = trained.apply(tiny_llama, [case], hparams)
    edit.router.scope = lambda texts: [0] * len(texts)
    routed, _ = logits(tiny_llama, [case.prompt], [case.target_new])
    edit.undo()
    base = prefixed_logits(tiny_llama, trained, case, case.prompt, case.target_new)
    assert not torch.allclose(routed, base, atol=1e-3), "the trained adapters act in h's passes"
    # and in every KV-cached decoding step of an in-scope row
    edit = trained.apply(tiny_llama, [case], hparams)
    edit.router.scope = lambda texts: [0] * len(texts)
    request = Request.generate(case.prompt, 6, stop_at_eos=False)
    [generated] = run_generations(tiny_llama.model, tiny_llama.tokenizer, [request], EvalOptions())
    edit.undo()
    editor = trained.editor
    assert list(generated.token_ids) == greedy(
        tiny_llama, case, 6, Adapters(tiny_llama, editor.layers, editor.adapters)
    )


def test_apply_before_fit_is_refused(tiny_llama):
    with pytest.raises(HarnessError, match="call fit"):
        SERAC().apply(tiny_llama, [EDITS[0]], {})
