"""Losses on the answer tokens of an `AnswerBatch` (from `harness.models.tokenization`), shared by
the fine-tuning methods and the value optimization of ROME and MEMIT, so that all of them score
exactly the tokens the evaluator scores."""

from __future__ import annotations

import torch

from harness.models.tokenization import AnswerBatch


def _answer_mask(batch: AnswerBatch, length: int) -> torch.Tensor:
    """[B, length] True at the positions of answer tokens."""
    positions = torch.arange(length, device=batch.answer_start.device)
    return (positions >= batch.answer_start[:, None]) & (positions < batch.answer_end[:, None])


def answer_nll(logits: torch.Tensor, batch: AnswerBatch) -> torch.Tensor:
    """Teacher-forced NLL of the answer tokens, averaged per row over its tokens, then over rows
    (so a long answer weighs no more than a short one): the FT-M loss and ROME's target loss.

    logits [B, T, V] -> scalar
    """
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position t predicts token t+1
    ids = batch.input_ids[:, 1:].to(logits.device)
    token_lp = log_probs.gather(-1, ids[..., None]).squeeze(-1)  # [B, T-1]
    mask = _answer_mask(batch, logits.shape[1])[:, 1:].to(logits.device)
    per_row = -(token_lp * mask).sum(-1) / mask.sum(-1)
    return per_row.mean()


def prompt_last_nll(logits: torch.Tensor, batch: AnswerBatch) -> torch.Tensor:
    """The reference FT-L loss (`objective_optimization: prompt_last`): every answer token scored at
    the last prompt position, as if each could be the next token. Equal to `answer_nll` for a
    one-token answer; for longer answers it trains a bag of tokens, which is what the KnowEdit FT-L
    numbers measure.

    logits [B, T, V] -> scalar
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    last = torch.log_softmax(logits[rows, batch.answer_start.to(logits.device) - 1].float(), dim=-1)  # [B, V]
    mask = _answer_mask(batch, logits.shape[1]).to(logits.device)  # [B, T]
    ids = batch.input_ids.to(logits.device)
    token_lp = last.gather(-1, ids) * mask  # [B, T]: log p(answer token at position t | prompt)
    return (-token_lp.sum(-1) / mask.sum(-1)).mean()
