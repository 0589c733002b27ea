"""MEND on tiny models: the rank-one factors sum to the true gradient (paper, eq. 1), the untrained
editor is one gradient step, the training-time hooks are the weight edit, training lowers the
editing loss, and edits stack and undo exactly on both families."""

from __future__ import annotations

import pytest
import torch
from test_runs_plugin import fact_cases

from harness.api import HarnessError, encode_answers
from harness.hparams import resolve_hparams
from harness.models.handle import tensor_digest
from harness_plugins.methods.lora_labels import answer_labels
from harness_plugins.methods.mend import MEND, Factors, _batch, per_case_nll
from harness_plugins.rome_family.weights import mlp_out_matrix

CASES = fact_cases("f")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))


def fitted(handle, **overrides):
    method = MEND()
    hparams = resolve_hparams(method, handle, {"steps": 0, **overrides})
    method.fit(handle, CASES[6:], hparams)
    return method, hparams


def test_the_factors_sum_to_the_gradient_of_the_edited_matrix(tiny_handle):
    layer = tiny_handle.adapter.num_layers - 1
    batch = _batch(tiny_handle, CASES[:2], [c.prompt for c in CASES[:2]])
    factors = Factors(tiny_handle, [layer], batch)
    u, delta = factors.pairs[layer]
    weight = tiny_handle.adapter.module(tiny_handle.adapter.mlp_out_name(layer)).weight
    weight.grad = None
    per_case_nll(tiny_handle.model(**batch.model_inputs()).logits, answer_labels(batch)).sum().backward()
    gradient = weight.grad.T if tiny_handle.adapter.out_weight_transposed else weight.grad
    tiny_handle.model.zero_grad(set_to_none=True)
    torch.testing.assert_close(delta.T @ u, gradient, atol=1e-6, rtol=1e-4)
    assert len(u) < batch.attention_mask.numel(), "pads and positions after the answer drop out"


def test_a_cases_factors_do_not_depend_on_the_batch_it_is_edited_in(tiny_llama):
    layer = tiny_llama.adapter.num_layers - 1

    def gradient(cases):
        u, delta = Factors(tiny_llama, [layer], _batch(tiny_llama, cases, [c.prompt for c in cases])).pairs[
            layer
        ]
        return delta.T @ u

    alone = gradient(CASES[:1]) + gradient(CASES[1:2])
    torch.testing.assert_close(gradient(CASES[:2]), alone, atol=1e-6, rtol=1e-4)


def test_the_untrained_editor_without_normalisation_is_one_gradient_step(tiny_handle, home):
    method, hparams = fitted(tiny_handle, edit_lr=0.5)
    for net in method.editor.nets.values():
        net.mean.zero_()
        net.std.fill_(1.0)
    case = CASES[0]
    layers = method.editor.layers
    before = {layer: mlp_out_matrix(tiny_handle, layer).clone() for layer in layers}
    batch = _batch(tiny_handle, [case], [case.prompt])
    expected = {layer: Factors(tiny_handle, [layer], batch).pairs[layer] for layer in layers}
    edit = method.apply(tiny_handle, [case], hparams)
    for layer in layers:
        u, delta = expected[layer]
        torch.testing.assert_close(
            mlp_out_matrix(tiny_handle, layer), before[layer] - 0.5 * delta.T @ u, atol=1e-6, rtol=1e-4
        )
    edit.undo()


def test_the_training_hooks_are_the_weight_edit(tiny_handle, home):
    method, hparams = fitted(tiny_handle, edit_lr=0.05)
    probe = encode_answers(tiny_handle.tokenizer, [CASES[3].prompt], [CASES[3].target_new])
    with torch.no_grad():
        deltas = method.editor.deltas(CASES[:2])
        with method.editor.applied(deltas):
            hooked = tiny_handle.model(**probe.model_inputs()).logits
    edit = method.apply(tiny_handle, CASES[:2], hparams)
    with torch.no_grad():
        edited = tiny_handle.model(**probe.model_inputs()).logits
    edit.undo()
    torch.testing.assert_close(hooked, edited, atol=1e-5, rtol=1e-4)


def test_training_lowers_the_editing_loss(tiny_llama, home):
    hparams = resolve_hparams(
        MEND(), tiny_llama, {"steps": 60, "lr": 1e-2, "lr_lr": 0.3, "train_batch": 4, "c_loc": 0.1}
    )
    trained, zero = MEND(), MEND()
    trained.fit(tiny_llama, CASES, hparams)
    zero.fit(tiny_llama, CASES, {**hparams, "steps": 0})

    def loss(method):
        unrelated = [("Water boils at one hundred", "degrees")]
        with torch.no_grad():
            return float(method.editor.loss(CASES[:4], unrelated, torch.Generator().manual_seed(0), hparams))

    assert loss(trained) < 0.9 * loss(zero), (loss(trained), loss(zero))


def test_batch_and_sequential_edits_undo_exactly(tiny_handle, home):
    method, hparams = fitted(tiny_handle, edit_lr=0.05)
    weights = {n: tensor_digest(p) for n, p in tiny_handle.model.named_parameters()}
    first = method.apply(tiny_handle, CASES[:3], hparams)
    changed = {n for n, p in tiny_handle.model.named_parameters() if tensor_digest(p) != weights[n]}
    assert changed == {f"{tiny_handle.adapter.mlp_out_name(layer)}.weight" for layer in method.editor.layers}
    second = method.apply(tiny_handle, [CASES[3]], hparams)
    second.undo()
    first.undo()
    assert {n: tensor_digest(p) for n, p in tiny_handle.model.named_parameters()} == weights


def test_apply_before_fit_is_refused(tiny_llama):
    with pytest.raises(HarnessError, match="call fit"):
        MEND().apply(tiny_llama, [CASES[0]], {})
