"""GRACE: the codebook edits the edited prompt only, stacks sequential edits, and undoes exactly."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import digests, logits, mean_scores, zsre_cases

from harness.api import EditCase, HarnessError
from harness.hparams import resolve_hparams
from harness.models.handle import ModelHandle
from harness_plugins.methods.grace import GRACE, Codebook
from harness_plugins.methods.lora_labels import edit_batch, target_nll

CASE = EditCase(case_id="c0", prompt="The capital of France is", target_new="Rome")
OTHER = EditCase(case_id="c1", prompt="Water is made of", target_new="stone")


def nll(handle: ModelHandle, case: EditCase) -> float:
    batch = edit_batch(handle, [case])
    with torch.no_grad():
        return target_nll(handle.model(**batch.answers.model_inputs()).logits, batch.labels).item()


def test_codebook_replaces_only_within_the_radius() -> None:
    book = Codebook(keys=torch.empty(0, 2), radii=torch.empty(0), values=torch.empty(0, 3))
    book.add(torch.tensor([[1.0, 0.0]]), torch.tensor([0.5]), torch.tensor([[9.0, 9.0, 9.0]]), ["a"])
    inputs = torch.tensor([[[1.2, 0.0], [2.0, 0.0]]])  # one position inside the ball, one outside
    output = torch.zeros(1, 2, 3)
    replaced = book(torch.nn.Identity(), (inputs,), output)
    assert torch.equal(replaced[0, 0], torch.full((3,), 9.0))
    assert torch.equal(replaced[0, 1], torch.zeros(3))


def test_conflicting_keys_split_their_radii_and_same_targets_do_not() -> None:
    book = Codebook(keys=torch.empty(0, 2), radii=torch.empty(0), values=torch.empty(0, 1))
    book.add(torch.tensor([[0.0, 0.0]]), torch.tensor([1.0]), torch.zeros(1, 1), ["a"])
    book.add(torch.tensor([[1.0, 0.0]]), torch.tensor([1.0]), torch.ones(1, 1), ["a"])
    assert book.radii.tolist() == [1.0, 1.0]
    book.add(torch.tensor([[0.0, 1.0]]), torch.tensor([1.0]), torch.ones(1, 1), ["b"])
    # distances to the new key: 1 and sqrt(2); each conflicting radius shrinks to half of it
    assert book.radii.tolist() == pytest.approx([0.5, 2**0.5 / 2, 0.5])


def test_default_layer_follows_relative_depth(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(GRACE(), tiny_llama, {})
    assert hparams["layer"] == tiny_llama.adapter.layer_at(0.5)
    with pytest.raises(HarnessError, match="eps"):
        resolve_hparams(GRACE(), tiny_llama, {"eps": -1})


def test_edit_learns_the_target_and_undo_is_bit_exact(tiny_handle: ModelHandle) -> None:
    hparams = resolve_hparams(GRACE(), tiny_handle, {"n_iter": 30})
    before_weights, before_logits = digests(tiny_handle), logits(tiny_handle, [CASE, OTHER])
    before_nll = nll(tiny_handle, CASE)
    edit = GRACE().apply(tiny_handle, [CASE], hparams)
    # a random tiny model's final norm bounds how far one value can move the logits: ask for a clear drop
    assert nll(tiny_handle, CASE) < before_nll - 0.3
    after = logits(tiny_handle, [CASE, OTHER])
    assert not torch.equal(after[0], before_logits[0])
    assert torch.equal(after[1], before_logits[1])  # another prompt: no key within the radius
    edit.undo()
    module = tiny_handle.adapter.module(tiny_handle.adapter.mlp_out_name(hparams["layer"]))
    assert not module._forward_hooks
    assert digests(tiny_handle) == before_weights
    assert torch.equal(logits(tiny_handle, [CASE, OTHER]), before_logits)
    assert all(p.grad is None for p in tiny_handle.model.parameters())


def test_sequential_edits_share_one_codebook_and_undo_in_reverse(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(GRACE(), tiny_llama, {"n_iter": 30})
    original = logits(tiny_llama, [CASE, OTHER])
    first = GRACE().apply(tiny_llama, [CASE], hparams)
    after_first = logits(tiny_llama, [CASE, OTHER])
    second = GRACE().apply(tiny_llama, [OTHER], hparams)
    both = logits(tiny_llama, [CASE, OTHER])
    assert torch.equal(both[0], after_first[0])  # the first edit is kept
    assert not torch.equal(both[1], after_first[1])
    assert first.book is second.book and len(first.book) == 2
    with pytest.raises(HarnessError, match="reverse order"):
        first.undo()
    second.undo()
    assert torch.equal(logits(tiny_llama, [CASE, OTHER]), after_first)
    first.undo()
    assert torch.equal(logits(tiny_llama, [CASE, OTHER]), original)


@pytest.mark.slow
def test_grace_on_smollm2_with_real_zsre(smollm2: ModelHandle) -> None:
    cases = zsre_cases(20)
    hparams = resolve_hparams(GRACE(), smollm2, {})
    single = mean_scores(smollm2, GRACE(), cases, hparams, mode="single")
    sequential = mean_scores(smollm2, GRACE(), cases, hparams, mode="sequential")
    print("grace single", single, "sequential", sequential)
    assert single["edit_succ"] >= 0.9 and single["locality"] >= 0.95
    assert sequential["edit_succ"] >= 0.85 and sequential["locality"] >= 0.9
