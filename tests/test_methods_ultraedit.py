"""UltraEdit: the lifelong statistics against a direct computation over the turns, the closed-form
shift, the state kept across sequential turns and reset with the sequence, exact undo on tiny
models; edit quality on the real SmolLM2 with real ZsRE records (slow)."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import digests, logits, mean_scores, zsre_cases

from harness.api import EditCase, HarnessError, encode_answers
from harness.hparams import resolve_hparams
from harness.models.handle import ModelHandle
from harness_plugins.methods.ultraedit import (
    EPS,
    RunningMoments,
    UltraEdit,
    current_state,
    edit_features,
    pseudo_values,
    ridge_shift,
    row_mask,
)
from harness_plugins.rome_family.losses import answer_logits, answer_nll
from harness_plugins.rome_family.weights import mlp_out_weight_name

CASE = EditCase(case_id="u0", prompt="The capital of France is", target_new="Rome")
OTHER = EditCase(case_id="u1", prompt="Water is made of", target_new="stone")


def nll(handle: ModelHandle, case: EditCase) -> float:
    batch = encode_answers(handle.tokenizer, [case.prompt], [case.target_new], padding_side="left")
    with torch.no_grad():
        return answer_nll(answer_logits(handle.model, batch), batch).item()


def test_running_moments_equal_the_statistics_of_all_turns_together() -> None:
    generator = torch.Generator().manual_seed(0)
    turns = [torch.randn(n, 5, generator=generator) * 3 + 1 for n in (1, 7, 2, 12)]
    stats = RunningMoments.empty(5, "cpu")
    for seen, turn in enumerate(turns, start=1):
        stats = stats.update(turn)
        together = torch.cat(turns[:seen]).double()
        assert stats.count == together.shape[0]
        torch.testing.assert_close(stats.mean, together.mean(0))
        if together.shape[0] > 1:
            torch.testing.assert_close(stats.std, together.std(0))  # the sample (n − 1) std
    rows = torch.randn(3, 5, generator=generator)
    expected = (rows.double() - together.mean(0)) / (together.std(0) + EPS)
    torch.testing.assert_close(stats.normalise(rows), expected.float())


def test_one_row_normalises_to_zero_and_no_rows_change_nothing() -> None:
    stats = RunningMoments.empty(3, "cpu").update(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.equal(stats.normalise(torch.tensor([[1.0, 2.0, 3.0]])), torch.zeros(1, 3))
    assert stats.update(torch.empty(0, 3)) is stats


def test_feature_rows_are_every_token_or_the_positions_predicting_the_target() -> None:
    attention = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding in row 0
    start, end = torch.tensor([3, 2]), torch.tensor([5, 5])  # answer tokens [start, end)
    assert torch.equal(row_mask(attention, start, end, "all"), attention.bool())
    answer = row_mask(attention, start, end, "answer")
    assert answer.tolist() == [[False, False, True, True, False], [False, True, True, True, False]]


def test_pseudo_values_and_the_ridge_shift() -> None:
    normalised = torch.tensor([[1.0, 2.0, 0.5, -1.0]])  # k^ = [1, 2], g^ = [0.5, -1]
    torch.testing.assert_close(pseudo_values(normalised, 2, 0.1), torch.tensor([[-0.25, 0.5]]))
    generator = torch.Generator().manual_seed(1)
    keys, values = torch.randn(4, 6, generator=generator), torch.randn(4, 3, generator=generator)
    shift = ridge_shift(keys, values, 0.5)  # [d, d_in]
    assert shift.shape == (3, 6)
    # the normal equations of min ||K ΔWᵀ − V||² + 0.5 ||ΔW||²: Kᵀ(K ΔWᵀ − V) + 0.5 ΔWᵀ = 0
    residual = keys.T @ (keys @ shift.T - values) + 0.5 * shift.T
    torch.testing.assert_close(residual, torch.zeros(6, 3), atol=1e-5, rtol=0)


def test_default_layers_follow_the_references_relative_depths(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(UltraEdit(), tiny_llama, {})
    last = tiny_llama.adapter.num_layers - 1
    assert hparams["layers"][-1] == last and hparams["layers"] == sorted(hparams["layers"])
    with pytest.raises(HarnessError, match="rows"):
        resolve_hparams(UltraEdit(), tiny_llama, {"rows": "some"})


def test_an_edit_lowers_the_target_nll_and_undo_restores_weights_and_state(tiny_handle: ModelHandle) -> None:
    method = UltraEdit()
    hparams = resolve_hparams(method, tiny_handle, {"layers": [0, 1], "lr": 1e-2})
    before_weights, before_logits = digests(tiny_handle), logits(tiny_handle, [CASE, OTHER])
    before_nll = nll(tiny_handle, CASE)
    edit = method.apply(tiny_handle, [CASE], hparams)
    assert nll(tiny_handle, CASE) < before_nll - 0.05
    changed = {n for n, d in digests(tiny_handle).items() if d != before_weights[n]}
    assert changed == {mlp_out_weight_name(tiny_handle, layer) for layer in (0, 1)}
    assert current_state(tiny_handle) is edit.after
    edit.undo()
    assert current_state(tiny_handle) is None
    assert digests(tiny_handle) == before_weights
    assert torch.equal(logits(tiny_handle, [CASE, OTHER]), before_logits)
    assert all(p.grad is None for p in tiny_handle.model.parameters())


def test_sequential_turns_accumulate_statistics_and_undo_in_reverse(tiny_llama: ModelHandle) -> None:
    method = UltraEdit()
    hparams = resolve_hparams(method, tiny_llama, {"layers": [1], "lr": 1e-2})
    first_features = edit_features(tiny_llama, [CASE], [1], "all")[1]
    first = method.apply(tiny_llama, [CASE], hparams)
    second_features = edit_features(tiny_llama, [OTHER], [1], "all")[1]  # on the model after turn 1
    second = method.apply(tiny_llama, [OTHER], hparams)
    together = torch.cat([torch.cat(first_features, -1), torch.cat(second_features, -1)]).double()
    stats = current_state(tiny_llama).moments[1]
    assert stats.count == together.shape[0]
    torch.testing.assert_close(stats.mean, together.mean(0))
    torch.testing.assert_close(stats.std, together.std(0))
    with pytest.raises(HarnessError, match="reverse order"):
        first.undo()
    second.undo()
    assert current_state(tiny_llama) is first.after
    first.undo()
    assert current_state(tiny_llama) is None


def test_weights_restored_from_outside_start_a_new_sequence(tiny_llama: ModelHandle) -> None:
    method = UltraEdit()
    hparams = resolve_hparams(method, tiny_llama, {"layers": [1], "lr": 1e-2})
    edit = method.apply(tiny_llama, [CASE], hparams)
    tiny_llama.restore(edit.snapshot)  # as if the run had reset the model by itself
    assert current_state(tiny_llama) is None
    again = method.apply(tiny_llama, [CASE], hparams)
    assert again.before is None and current_state(tiny_llama).moments[1].count == edit.after.moments[1].count
    again.undo()


#: Real records of the slow test: few, for CI time; the 20-record figures are measured once and kept
#: in benchmarks/locate_then_edit.md and docs/methods.md.
RECORDS = 5


@pytest.mark.slow
def test_ultraedit_on_smollm2_with_real_zsre(smollm2: ModelHandle) -> None:
    """Single mode through the real evaluator; every undo is checked bit-exact (verify mode), and the
    lifelong statistics are gone after each undo, so every edit starts from none."""
    assert smollm2.verify
    hparams = resolve_hparams(UltraEdit(), smollm2, {})
    scores = mean_scores(smollm2, UltraEdit(), zsre_cases(RECORDS, unrelated=True), hparams, mode="single")
    print("ultraedit", {key: round(value, 3) for key, value in scores.items()})
    assert current_state(smollm2) is None
    assert scores["edit_succ"] >= scores["pre:edit_succ"] + 0.3
    assert scores["locality.unrelated"] >= 0.8
