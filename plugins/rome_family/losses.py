"""Losses on the answer tokens of an `AnswerBatch` (from `harness.api`), shared by
the fine-tuning methods and the value optimization of ROME and MEMIT, so that all of them score
exactly the tokens the evaluator scores.

Both take the logits of the batch's *last* T' positions ([B, T', V], T' ≤ T). With left padding every
answer ends at the last position, so a caller may ask the model for only those logits
(`answer_logits`): the LM head and the softmax then run over a few positions instead of all of
them, which on a 50k vocabulary is a fifth of a small model's forward and backward pass.
"""

from __future__ import annotations

import torch

from harness.api import AnswerBatch


def _answer_mask(batch: AnswerBatch, length: int) -> torch.Tensor:
    """[B, length] True at the positions of answer tokens."""
    positions = torch.arange(length, device=batch.answer_start.device)
    return (positions >= batch.answer_start[:, None]) & (positions < batch.answer_end[:, None])


def logits_needed(batch: AnswerBatch) -> int:
    """How many final positions hold every logit the losses read (from the last prompt token on)."""
    return int(batch.input_ids.shape[1] - batch.answer_start.min()) + 1


def answer_logits(model: torch.nn.Module, batch: AnswerBatch) -> torch.Tensor:
    """The model's logits at the last `logits_needed(batch)` positions. -> [B, T', V]"""
    return model(**batch.model_inputs(), use_cache=False, logits_to_keep=logits_needed(batch)).logits


def answer_nll(logits: torch.Tensor, batch: AnswerBatch) -> torch.Tensor:
    """Teacher-forced NLL of the answer tokens, averaged per row over its tokens, then over rows
    (so a long answer weighs no more than a short one): the FT-M loss and ROME's target loss.

    logits [B, T', V] of the last T' positions -> scalar
    """
    first = batch.input_ids.shape[1] - logits.shape[1]  # absolute position of logits[:, 0]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position t predicts token t+1
    ids = batch.input_ids[:, first + 1 :].to(logits.device)
    token_lp = log_probs.gather(-1, ids[..., None]).squeeze(-1)  # [B, T'-1]
    mask = _answer_mask(batch, batch.input_ids.shape[1])[:, first + 1 :].to(logits.device)
    per_row = -(token_lp * mask).sum(-1) / mask.sum(-1)
    return per_row.mean()


def prompt_last_nll(logits: torch.Tensor, batch: AnswerBatch) -> torch.Tensor:
    """The reference FT-L loss (`objective_optimization: prompt_last`): every answer token scored at
    the last prompt position, as if each could be the next token. Equal to `answer_nll` for a
    one-token answer; for longer answers it trains a bag of tokens, which is what the KnowEdit FT-L
    numbers measure.

    logits [B, T', V] of the last T' positions -> scalar
    """
    first = batch.input_ids.shape[1] - logits.shape[1]
    rows = torch.arange(logits.shape[0], device=logits.device)
    at = (batch.answer_start - 1 - first).to(logits.device)
    last = torch.log_softmax(logits[rows, at].float(), dim=-1)  # [B, V]
    mask = _answer_mask(batch, batch.input_ids.shape[1]).to(logits.device)  # [B, T]
    ids = batch.input_ids.to(logits.device)
    token_lp = last.gather(-1, ids) * mask  # [B, T]: log p(answer token at position t | prompt)
    return (-token_lp.sum(-1) / mask.sum(-1)).mean()
