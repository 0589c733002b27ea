"""The example plugin, tested the way a plugin author tests theirs: through the installed entry
point and with the harness's own pytest fixtures (`tiny_llama`, `tiny_handle`), no mocks."""

from __future__ import annotations

import pytest
import torch
from knowedit_nudge.metric import FirstTokenHit

from harness.api import EditCase, EvalOptions
from harness.testing import Evaluator, get_registry, resolve_task

CASE = EditCase(case_id="0", prompt="The capital of France is", target_new="Berlin", subject="France")


def test_the_entry_point_registers_method_metric_and_task():
    registry = get_registry()
    assert registry.plugins["nudge"].status == "ok"
    assert registry.plugins["nudge"].distribution == "knowedit-harness-nudge"
    assert registry.load("methods", "logit-nudge").name == "logit-nudge"
    assert registry.load("metrics", "first_token_hit") is FirstTokenHit


def test_the_dataset_spec_task_loads_its_cases():
    loaded = resolve_task("capitals").load()
    assert [case.target_new for case in loaded.cases] == ["Rome", "Paris", "Berlin", "Paris"]
    assert loaded.skipped == ()


def test_the_edit_moves_the_next_token_and_undo_restores_every_weight(tiny_handle):
    method = get_registry().load("methods", "logit-nudge")()
    evaluator = Evaluator(tiny_handle, [FirstTokenHit], options=EvalOptions(use_cache=False))
    evaluator.prepare([CASE])
    before = {name: p.detach().clone() for name, p in tiny_handle.model.named_parameters()}

    assert evaluator.evaluate_pre([CASE]) == [{"first_token_hit": 0.0}]
    edit = method.apply(tiny_handle, [CASE], {"strength": 30.0})
    assert evaluator.evaluate([CASE]) == [{"first_token_hit": 1.0}]

    edit.undo()
    assert evaluator.evaluate([CASE]) == [{"first_token_hit": 0.0}]
    for name, p in tiny_handle.model.named_parameters():
        assert torch.equal(p, before[name]), name


@pytest.mark.parametrize("strength", [5.0, 40.0])
def test_strength_is_the_logit_gain_at_the_prompt(tiny_llama, strength):
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    ids = tokenizer(CASE.prompt, return_tensors="pt").input_ids
    target = tokenizer(CASE.prompt + " " + CASE.target_new).input_ids[ids.shape[1]]
    method = get_registry().load("methods", "logit-nudge")()
    with torch.no_grad():
        before = model(ids).logits[0, -1, target].item()
        edit = method.apply(tiny_llama, [CASE], {"strength": strength})
        after = model(ids).logits[0, -1, target].item()
    edit.undo()
    assert after - before == pytest.approx(strength, rel=1e-3)
