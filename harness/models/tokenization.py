"""The one place that joins a prompt and its answer and finds the answer's tokens.

Every metric and method scores or trains on "the answer tokens after the prompt"; if each computed
that boundary its own way, scores would silently disagree by a token. The join is the reference
convention, `prompt + " " + answer`. The boundary is found from the fast tokenizer's character
offsets of the joined text, so it is right whether the leading space merges into the answer's first
token (byte-level BPE: " Paris") or becomes a marker of its own (SentencePiece), and whether or not
a BOS token is added. Padding is done here, by hand, on the side each call asks for: the tokenizer's
own `padding_side` is never touched, so no caller can leave it flipped for the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal

import torch

from harness.ground import HarnessError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class PromptBatch:
    """Padded prompts. `last_index[b]` is the position of row b's last real token, whose logits
    predict the next token under either padding side."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    last_index: torch.Tensor

    def to(self, device: torch.device | str) -> PromptBatch:
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for `model(...)` / `model.generate(...)`."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


@dataclass(frozen=True)
class AnswerBatch(PromptBatch):
    """Padded `prompt + " " + answer` texts; the answer is tokens `answer_start[b]:answer_end[b]`
    of row b, predicted by the logits at positions one earlier."""

    answer_start: torch.Tensor
    answer_end: torch.Tensor


def join_prompt_answer(prompt: str, answer: str) -> str:
    """`prompt + " " + answer`, without doubling a space the answer already starts with."""
    return prompt + answer if answer[:1].isspace() else f"{prompt} {answer}"


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a tokenizer without a pad token the EOS token as pad (the reference convention). Pads are
    always masked, so which id fills them never changes a score."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise HarnessError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token


def render_chat(tokenizer: PreTrainedTokenizerBase, prompt: str, *, system: str | None = None) -> str:
    """A prompt as one user turn in the tokenizer's chat template, ready for the assistant's answer.

    Opt-in for instruct models. The BOS text a template may start with is dropped, because encoding
    adds BOS itself and a doubled BOS shifts the model's predictions."""
    if not getattr(tokenizer, "chat_template", None):
        raise HarnessError(f"tokenizer {tokenizer.name_or_path!r} has no chat template")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and tokenizer.bos_token_id in _encode(tokenizer, "").input_ids and text.startswith(bos):
        text = text[len(bos) :]
    return text


def _encode(tokenizer: PreTrainedTokenizerBase, text: str):
    if not tokenizer.is_fast:
        raise HarnessError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: the harness needs character "
            "offsets to find answer tokens"
        )
    return tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)


def _pad(rows: Sequence[Sequence[int]], pad_id: int, side: PaddingSide) -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask, position_ids and per-row pad counts for `side` padding."""
    if side not in ("left", "right"):
        raise HarnessError(f"padding_side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = torch.tensor([width - len(r) if side == "left" else 0 for r in rows], dtype=torch.long)
    for b, row in enumerate(rows):
        start = int(offsets[b])
        ids[b, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, start : start + len(row)] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, position_ids, offsets


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *, padding_side: PaddingSide = "left"
) -> PromptBatch:
    """Prompts padded for generation (left, the default) or for next-token scoring."""
    if not prompts:
        raise HarnessError("encode_prompts needs at least one prompt")
    rows = [_encode(tokenizer, p).input_ids for p in prompts]
    ids, mask, position_ids, offsets = _pad(rows, tokenizer.pad_token_id, padding_side)
    last = offsets + torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    return PromptBatch(ids, mask, position_ids, last)


def _answer_span(offsets: Sequence[tuple[int, int]], boundary: int) -> tuple[int, int] | None:
    """Token indices [start, end) of the tokens that cover any character at or after `boundary`.
    Special tokens have empty spans at 0 and never count."""
    inside = [i for i, (lo, hi) in enumerate(offsets) if hi > boundary and hi > lo]
    return (inside[0], inside[-1] + 1) if inside else None


def encode_answers(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    padding_side: PaddingSide = "right",
) -> AnswerBatch:
    """`prompt + " " + answer` texts, padded, with the answer tokens located in every row."""
    if len(prompts) != len(answers):
        raise HarnessError(f"encode_answers got {len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise HarnessError("encode_answers needs at least one prompt")
    rows, spans = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        if not answer.strip():
            raise HarnessError(f"the answer to prompt {prompt!r} is empty")
        enc = _encode(tokenizer, join_prompt_answer(prompt, answer))
        span = _answer_span(enc.offset_mapping, len(prompt))
        if span is None or span[0] == 0:
            raise HarnessError(f"answer {answer!r} to prompt {prompt!r} has no token of its own to score")
        rows.append(enc.input_ids)
        spans.append(span)
    ids, mask, position_ids, offsets = _pad(rows, tokenizer.pad_token_id, padding_side)
    last = offsets + torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    start = offsets + torch.tensor([s for s, _ in spans], dtype=torch.long)
    end = offsets + torch.tensor([e for _, e in spans], dtype=torch.long)
    return AnswerBatch(ids, mask, position_ids, last, start, end)
