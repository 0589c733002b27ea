"""FT-L and FT-M: losses, the norm constraint, batch editing and exact undo on tiny models; edit
quality on the real SmolLM2 with real ZsRE records (slow)."""

from __future__ import annotations

import pytest
import torch

from harness.api import EditCase
from harness.hparams import resolve_hparams
from harness.models.tokenization import encode_answers
from harness.plugins import get_registry
from harness_plugins.rome_family.losses import answer_logits, answer_nll, logits_needed, prompt_last_nll
from harness_plugins.rome_family.weights import mlp_out_params

CASES = [
    EditCase(case_id="a", prompt="The capital of France is", target_new="Berlin", subject="France"),
    EditCase(case_id="b", prompt="Tokyo is the capital of", target_new="Italy", subject="Tokyo"),
]


def test_losses_agree_on_one_token_answers_and_differ_on_longer(tiny_gpt2) -> None:
    tok = tiny_gpt2.tokenizer
    one = encode_answers(tok, ["The capital of France is"], ["Paris"])
    assert int(one.answer_end[0] - one.answer_start[0]) == 1
    with torch.no_grad():
        logits = tiny_gpt2.model(**one.model_inputs()).logits
    torch.testing.assert_close(answer_nll(logits, one), prompt_last_nll(logits, one))
    many = encode_answers(tok, ["The capital of France is", "A"], ["the city of Paris on the Seine", "cat"])
    with torch.no_grad():
        logits = tiny_gpt2.model(**many.model_inputs()).logits
    # answer_nll by hand for the first row
    s, e = int(many.answer_start[0]), int(many.answer_end[0])
    lp = torch.log_softmax(logits[0], -1)
    row0 = -torch.stack([lp[t - 1, many.input_ids[0, t]] for t in range(s, e)]).mean()
    row1 = -torch.log_softmax(logits[1], -1)[
        int(many.answer_start[1]) - 1, many.input_ids[1, int(many.answer_start[1])]
    ]
    torch.testing.assert_close(answer_nll(logits, many), (row0 + row1) / 2)
    assert not torch.isclose(answer_nll(logits, many), prompt_last_nll(logits, many))


@pytest.mark.parametrize("method", ["ft-l", "ft-m"])
def test_fine_tuning_lowers_the_loss_and_undoes_exactly(tiny_handle, method) -> None:
    ft = get_registry().load("methods", method)()
    hp = resolve_hparams(ft, tiny_handle, {"lr": 5e-2, "num_steps": 10, "batch_size": 2})
    batch = encode_answers(tiny_handle.tokenizer, [c.prompt for c in CASES], [c.target_new for c in CASES])
    loss = type(ft).loss
    before_params = {n: p.detach().clone() for n, p in tiny_handle.model.named_parameters()}
    with torch.no_grad():
        before = loss(tiny_handle.model(**batch.model_inputs()).logits, batch)
    edit = ft.apply(tiny_handle, CASES, hp)
    with torch.no_grad():
        after = loss(tiny_handle.model(**batch.model_inputs()).logits, batch)
    assert after < before - 0.1
    changed = {n for n, p in tiny_handle.model.named_parameters() if not torch.equal(p, before_params[n])}
    assert changed and changed <= set(mlp_out_params(tiny_handle, hp["layers"][0]))
    edit.undo()
    assert all(torch.equal(p, before_params[n]) for n, p in tiny_handle.model.named_parameters())
    assert all(p.requires_grad for p in tiny_handle.model.parameters())


def test_norm_constraint_bounds_every_weight(tiny_llama) -> None:
    ft = get_registry().load("methods", "ft-m")()
    hp = resolve_hparams(ft, tiny_llama, {"lr": 5e-2, "num_steps": 5, "norm_constraint": 1e-3})
    params = mlp_out_params(tiny_llama, hp["layers"][0])
    originals = {n: p.detach().clone() for n, p in params.items()}
    edit = ft.apply(tiny_llama, CASES[:1], hp)
    moved = max((p - originals[n]).abs().max().item() for n, p in params.items())
    assert 0 < moved <= 1e-3 + 1e-7
    edit.undo()


def test_losses_on_the_kept_tail_equal_the_full_losses(tiny_gpt2) -> None:
    """Left-padded batches need logits of the last few positions only; the losses read them there."""
    prompts, answers = ["The capital of France is", "A"], ["the city of Paris", "cat"]
    left = encode_answers(tiny_gpt2.tokenizer, prompts, answers, padding_side="left")
    right = encode_answers(tiny_gpt2.tokenizer, prompts, answers)
    keep = logits_needed(left)
    assert keep < left.input_ids.shape[1]
    with torch.no_grad():
        tail = answer_logits(tiny_gpt2.model, left)
        full = tiny_gpt2.model(**right.model_inputs()).logits
    assert tail.shape[1] == keep
    for loss in (answer_nll, prompt_last_nll):
        torch.testing.assert_close(loss(tail, left), loss(full, right), rtol=1e-4, atol=1e-4)
