"""T-Patcher: one patch neuron per edit learns the target, stays silent where it has not fired,
stacks over sequential edits, and every undo returns the whole state_dict and outputs bit-exactly."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import edit_nll, logits, mean_scores, state_digests, zsre_cases

from harness.api import EditCase, HarnessError
from harness.hparams import resolve_hparams
from harness.models.handle import ModelHandle
from harness_plugins.methods.tpatcher import ATTR, Patches, TPatcher

CASE = EditCase(case_id="c0", prompt="The capital of France is", target_new="Rome")
OTHER = EditCase(case_id="c1", prompt="Water is made of", target_new="stone")


def test_a_patch_adds_its_value_only_where_it_fires() -> None:
    patches = Patches(2, torch.zeros(0, 2))
    patches.keep(torch.tensor([[1.0, 0.0]]), torch.tensor([-1.0]), torch.tensor([[5.0, 7.0]]))
    inputs = torch.tensor([[[3.0, 0.0], [0.5, 0.0]]])  # z = 2 (fires), z = -0.5 (silent)
    output = torch.zeros(1, 2, 2)
    rewritten = patches.rewrite(inputs, output)
    assert rewritten[0, 0].tolist() == [10.0, 14.0]
    assert torch.equal(rewritten[0, 1], torch.zeros(2))
    assert patches.rewrite(inputs[:, 1:], output[:, 1:]) is None  # no patch fires: output kept


def test_defaults_patch_the_last_layer(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(TPatcher(), tiny_llama, {})
    assert hparams["layer"] == tiny_llama.adapter.num_layers - 1
    with pytest.raises(HarnessError, match="margin2"):
        resolve_hparams(TPatcher(), tiny_llama, {"margin2": 1})


def test_edit_learns_and_undo_restores_the_state_dict(tiny_handle: ModelHandle) -> None:
    hparams = resolve_hparams(TPatcher(), tiny_handle, {"n_iter": 60, "lr": 0.05})
    before_state, before_logits = state_digests(tiny_handle), logits(tiny_handle, [CASE, OTHER])
    before_nll = edit_nll(tiny_handle, CASE)
    edit = TPatcher().apply(tiny_handle, [CASE], hparams)
    assert edit_nll(tiny_handle, CASE) < before_nll - 0.3
    assert len(edit.patches.biases) == 1
    assert any(name.endswith(f"{ATTR}.values") for name in tiny_handle.model.state_dict())
    edit.undo()
    assert not edit.module._forward_hooks and not hasattr(edit.module, ATTR)
    assert state_digests(tiny_handle) == before_state
    assert torch.equal(logits(tiny_handle, [CASE, OTHER]), before_logits)
    assert all(p.grad is None for p in tiny_handle.model.parameters())


def test_sequential_and_batch_edits_add_one_patch_each_and_undo_in_reverse(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(TPatcher(), tiny_llama, {"n_iter": 20})
    original_state, original = state_digests(tiny_llama), logits(tiny_llama, [CASE, OTHER])
    first = TPatcher().apply(tiny_llama, [CASE], hparams)
    after_first = logits(tiny_llama, [CASE, OTHER])
    second = TPatcher().apply(tiny_llama, [CASE, OTHER], hparams)
    assert second.patches is first.patches and len(first.patches.biases) == 3
    with pytest.raises(HarnessError, match="reverse order"):
        first.undo()
    second.undo()
    assert torch.equal(logits(tiny_llama, [CASE, OTHER]), after_first)
    first.undo()
    assert state_digests(tiny_llama) == original_state
    assert torch.equal(logits(tiny_llama, [CASE, OTHER]), original)


@pytest.mark.slow
def test_tpatcher_on_smollm2_with_real_zsre(smollm2: ModelHandle) -> None:
    # 6 records keep CI short; benchmarks/lifelong.md has this test's figures at 20
    cases = zsre_cases(6, unrelated=True)
    hparams = resolve_hparams(TPatcher(), smollm2, {})
    single = mean_scores(smollm2, TPatcher(), cases, hparams, mode="single")
    print("t-patcher single", single)
    # unedited: about 0.25; a patch that never fires, or a value that never grows, stays there
    assert single["edit_succ"] >= 0.6
    assert single["locality.unrelated"] >= 0.9
