"""WISE: the side memory learns the edit, routes only where its activation is high, shards and merges,
and every undo returns the model's whole state_dict and outputs bit-exactly."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import edit_nll, logits, mean_scores, state_digests, zsre_cases

from harness.api import EditCase, HarnessError
from harness.hparams import resolve_hparams
from harness.models.handle import ModelHandle
from harness_plugins.methods.lora_labels import edit_batch
from harness_plugins.methods.side_modules import read_inputs, target_positions
from harness_plugins.methods.wise import ATTR, WISE, ties_merge

CASE = EditCase(case_id="c0", prompt="The capital of France is", target_new="Rome")
OTHER = EditCase(case_id="c1", prompt="Water is made of", target_new="stone")
THIRD = EditCase(case_id="c2", prompt="The first president was", target_new="Lincoln")


def down_proj(handle: ModelHandle, hparams: dict) -> torch.nn.Module:
    return handle.adapter.module(handle.adapter.mlp_out_name(hparams["layer"]))


def test_ties_merge_trims_elects_signs_and_averages_agreeing_entries() -> None:
    main = torch.zeros(4)
    first = torch.tensor([1.0, -2.0, 0.1, 0.0])
    second = torch.tensor([3.0, 1.0, 0.0, 0.0])
    merged = ties_merge(main, [first, second], density=0.5)
    # kept: first {1, -2}, second {3, 1}; signs: +, - (−2 + 1 < 0); coordinate 0 averages 1 and 3
    assert merged.tolist() == [2.0, -2.0, 0.0, 0.0]


def test_defaults_follow_relative_depth_and_bad_values_fail(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(WISE(), tiny_llama, {})
    assert hparams["layer"] == tiny_llama.adapter.layer_at(27 / 31)
    with pytest.raises(HarnessError, match="mask_ratio"):
        resolve_hparams(WISE(), tiny_llama, {"mask_ratio": 2})
    with pytest.raises(HarnessError, match="multiple of save_freq"):
        WISE().apply(tiny_llama, [CASE], {**hparams, "save_freq": 2, "merge_freq": 3})


def test_edit_learns_routes_and_undo_restores_the_state_dict(tiny_handle: ModelHandle) -> None:
    hparams = resolve_hparams(WISE(), tiny_handle, {"n_iter": 40})
    before_state, before_logits = state_digests(tiny_handle), logits(tiny_handle, [CASE, OTHER])
    before_nll = edit_nll(tiny_handle, CASE)
    edit = WISE().apply(tiny_handle, [CASE], hparams)
    assert edit_nll(tiny_handle, CASE) < before_nll - 0.3
    module = down_proj(tiny_handle, hparams)
    memory = getattr(module, ATTR)
    # the edit's memory (a saved shard of one edit, by default) differs from the main memory on
    # the shard's coordinates only, and the shard being written starts afresh from W
    assert len(memory.state.saved) == 1 and torch.equal(memory.current, module.weight)
    changed = memory.memories()[-1].weight.detach() != module.weight.detach()
    assert bool(changed.any()) and not bool((changed & ~memory.state.mask).any())
    assert any(name.endswith(f"{ATTR}.current") for name in tiny_handle.model.state_dict())
    after = logits(tiny_handle, [CASE, OTHER])
    assert not torch.equal(after[0], before_logits[0])
    edit.undo()
    assert not module._forward_hooks and not hasattr(module, ATTR)
    assert state_digests(tiny_handle) == before_state
    assert torch.equal(logits(tiny_handle, [CASE, OTHER]), before_logits)
    assert all(p.grad is None for p in tiny_handle.model.parameters())


def test_router_keeps_positions_below_the_threshold_on_the_main_memory(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(WISE(), tiny_llama, {"n_iter": 20, "save_freq": 500})
    edit = WISE().apply(tiny_llama, [CASE], hparams)
    memory = getattr(down_proj(tiny_llama, hparams), ATTR)
    inputs = torch.randn(1, 3, memory.current.shape[1])
    output = torch.zeros(1, 3, memory.current.shape[0])
    memory.state = type(memory.state)(**{**memory.state.__dict__, "threshold": float("inf")})
    assert memory.rewrite(inputs, output) is None  # nothing above an infinite threshold
    memory.state = type(memory.state)(**{**memory.state.__dict__, "threshold": 0.0})
    routed = memory.rewrite(inputs, output)
    assert torch.allclose(routed, memory.delta(inputs, memory.current))  # everything through W'
    edit.undo()


def test_shards_are_saved_merged_and_undone_in_reverse(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(WISE(), tiny_llama, {"n_iter": 10, "save_freq": 1, "merge_freq": 2})
    original_state, original = state_digests(tiny_llama), logits(tiny_llama, [CASE, OTHER, THIRD])
    first = WISE().apply(tiny_llama, [CASE], hparams)
    memory = first.memory
    assert len(memory.state.saved) == 1 and memory.state.merged is None
    assert torch.equal(memory.current, down_proj(tiny_llama, hparams).weight)  # a fresh shard
    after_first = logits(tiny_llama, [CASE, OTHER, THIRD])
    second = WISE().apply(tiny_llama, [OTHER], hparams)
    assert memory.state.saved == () and memory.state.merged is not None
    third = WISE().apply(tiny_llama, [THIRD], hparams)
    assert len(memory.state.saved) == 1
    with pytest.raises(HarnessError, match="reverse order"):
        second.undo()
    third.undo()
    second.undo()
    assert torch.equal(logits(tiny_llama, [CASE, OTHER, THIRD]), after_first)
    first.undo()
    assert state_digests(tiny_llama) == original_state
    assert torch.equal(logits(tiny_llama, [CASE, OTHER, THIRD]), original)


def test_a_shard_keeps_earlier_edits_and_batches_work(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(WISE(), tiny_llama, {"n_iter": 30, "save_freq": 500})
    original_state = state_digests(tiny_llama)
    batch = WISE().apply(tiny_llama, [CASE, OTHER], hparams)
    assert batch.memory.state.in_scope.shape[0] >= 2
    later = WISE().apply(tiny_llama, [THIRD], hparams)
    assert later.memory is batch.memory and later.memory.state.edits == 2
    later.undo()
    batch.undo()
    assert state_digests(tiny_llama) == original_state


def test_a_new_memory_wins_the_router_on_its_own_edit_and_retires_the_earlier_one(
    tiny_llama: ModelHandle,
) -> None:
    hparams = resolve_hparams(WISE(), tiny_llama, {"n_iter": 40})
    first = WISE().apply(tiny_llama, [CASE], hparams)
    memory = first.memory
    retired = memory.state.retired
    assert retired.shape[0] >= 1  # the first edit's in-scope inputs, now out of scope for new shards
    second = WISE().apply(tiny_llama, [OTHER], hparams)
    batch = edit_batch(tiny_llama, [OTHER])
    positions, _ = target_positions(batch)
    name = tiny_llama.adapter.mlp_out_name(hparams["layer"])
    own = read_inputs(tiny_llama, name, batch.answers.model_inputs())[positions]
    old, new = (memory.delta(own, m.weight).norm(dim=-1) for m in memory.state.saved)
    assert bool((new > old).all())  # the router sends the second edit's positions to its memory
    assert memory.state.retired.shape[0] > retired.shape[0]
    second.undo()
    assert torch.equal(memory.state.retired, retired)
    first.undo()
    assert not hasattr(down_proj(tiny_llama, hparams), ATTR)


@pytest.mark.slow
def test_wise_on_smollm2_with_real_zsre(smollm2: ModelHandle) -> None:
    # 6 records keep CI short; benchmarks/lifelong.md has this test's figures at 20
    cases = zsre_cases(6, unrelated=True)
    hparams = resolve_hparams(WISE(), smollm2, {})
    single = mean_scores(smollm2, WISE(), cases, hparams, mode="single")
    print("wise single", single)
    # unedited: about 0.25; an edit that does not take, or a router that never fires, stays there
    assert single["edit_succ"] >= 0.6
    assert single["locality.unrelated"] >= 0.9
