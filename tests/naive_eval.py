"""Naive, one-example-at-a-time model calls that the evaluation tests check the batched engine
against: no padding, full logits, Hugging Face `generate`. Kept apart from the engine on purpose:
only the tokenization boundary (`encode_answers`) is shared, and that has tests of its own."""

from __future__ import annotations

import torch

from harness.models.handle import ModelHandle
from harness.models.tokenization import encode_answers


def naive_score(handle: ModelHandle, prompt: str, answer: str):
    """One example, no padding, full logits: argmax ids, gold ids, gold log-probs, and the full
    log-softmax [answer tokens, vocabulary] at the positions that predict the answer tokens."""
    enc = encode_answers(handle.tokenizer, [prompt], [answer])
    start, end = int(enc.answer_start[0]), int(enc.answer_end[0])
    ids = enc.input_ids[:, :end]
    with torch.no_grad():
        logits = handle.model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits[start - 1 : end - 1], -1)
    gold = ids[0, start:end]
    return (
        logprobs.argmax(-1).tolist(),
        gold.tolist(),
        logprobs.gather(-1, gold[:, None])[:, 0].tolist(),
        logprobs,
    )


def naive_accuracy(handle: ModelHandle, prompt: str, answer: str) -> float:
    pred, gold, _, _ = naive_score(handle, prompt, answer)
    return sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)


def naive_generate(handle: ModelHandle, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy continuation by `model.generate` on the unpadded prompt, cut before the first EOS."""
    tok = handle.tokenizer
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = handle.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    new = out[0, ids.shape[1] :].tolist()
    configured = handle.model.generation_config.eos_token_id
    eos = {tok.eos_token_id} | set(configured if isinstance(configured, list) else [configured])
    stop = next((i for i, t in enumerate(new) if t in eos), len(new))
    return new[:stop]


def perturb(handle: ModelHandle, scale: float = 0.05) -> None:
    """A stand-in "edit": seeded noise on one MLP output matrix."""
    weight = handle.adapter.module(handle.adapter.mlp_out_name(1)).weight
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight.add_(torch.randn(weight.shape, generator=generator) * scale)
