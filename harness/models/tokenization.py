"""The one place that joins a prompt and its answer and finds the answer's tokens.

Every metric and method scores or trains on "the answer tokens after the prompt"; if each computed
that boundary its own way, scores would silently disagree by a token. The join is the reference
convention, `prompt + " " + answer`, with the whitespace where the two meet made canonical (the
seam rule, `join_prompt_answer`), so that one fact scores the same however its data spells that
whitespace. The boundary is found from the fast tokenizer's character offsets of the joined text,
so it is right whether the joining space merges into the answer's first token (byte-level BPE:
" Paris") or becomes a marker of its own (SentencePiece), and whether or not a BOS token is added.
Padding is done here, by hand, on the side each call asks for: the tokenizer's own `padding_side`
is never touched, so no caller can leave it flipped for the next one.

The chat template of instruct models (`render_chat`, `chat_case`) is applied here too, opt-in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Literal

import torch

from harness.ground import EditCase, HarnessError, Probe

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
    """Padded `join_prompt_answer(prompt, answer)` texts; the answer is tokens `answer_start[b]:answer_end[b]`
    of row b, predicted by the logits at positions one earlier."""

    answer_start: torch.Tensor
    answer_end: torch.Tensor


#: What `str.splitlines` splits at: at the seam these end the prompt and are kept.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def _seam(prompt: str, answer: str) -> tuple[str, str, str]:
    """(head, separator, answer text) of the join: `head + separator + text` is the joined text,
    `head` is what the model reads before the answer, and the answer tokens start after it.

    The whitespace where prompt and answer meet (the prompt's trailing and the answer's leading
    whitespace) is replaced: by its line breaks, which stay with the head, when it has any (a chat
    template's "assistant\\n", a "Q: ...\\nA:" format); else by one space, which goes with the
    answer (byte-level BPE merges it into " Paris"). The answer's trailing whitespace is dropped:
    it is the start of what would come next, never part of the answer."""
    body = prompt.rstrip()
    gap = prompt[len(body) :] + answer[: len(answer) - len(answer.lstrip())]
    breaks = "".join(c for c in gap if c in LINE_BREAKS)
    return body + breaks, "" if breaks else " ", answer.strip()


def join_prompt_answer(prompt: str, answer: str) -> str:
    """`prompt + " " + answer` under the seam rule: the whitespace where the two meet becomes one
    space, or the line breaks it holds; the answer's trailing whitespace is dropped. So
    ("The capital of France is ", "Paris ") and ("The capital of France is", " Paris") give the same
    text, "The capital of France is Paris", and a chat prompt ending in "assistant\\n" is followed
    by "Paris" directly. Only whitespace is touched: an answer starting with punctuation (".338
    Lapua Magnum", "'s-Hertogenbosch") still gets its space, as in the reference."""
    head, separator, text = _seam(prompt, answer)
    return head + separator + text


def trim_prompt(prompt: str) -> str:
    """The prompt as the model reads it before a continuation: without the spaces it ends with
    (the next word brings its own; a lone space token would distort the first prediction), its
    trailing line breaks kept. The head of `join_prompt_answer` for any answer without leading
    line breaks; what `encode_prompts` encodes. Code that locates characters of a prompt itself
    (ROME's subject) works on this text."""
    return _seam(prompt, "")[0]


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a tokenizer without a pad token the EOS token as pad (the reference convention). Pads are
    always masked, so which id fills them never changes a score."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise HarnessError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token


def chat_template_of(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template (its Jinja text, or the named templates as JSON), for the
    manifest. Raises HarnessError for a tokenizer without one: base models have none, and
    rendering prompts without the template the model was tuned on is no chat at all."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise HarnessError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template, so prompts cannot be put in "
            "one: leave --chat-template (and a dataset spec's chat_template) off, or use an instruct "
            "model"
        )
    return template if isinstance(template, str) else json.dumps(template, sort_keys=True)


def render_chat(tokenizer: PreTrainedTokenizerBase, prompt: str, *, system: str | None = None) -> str:
    """A prompt as one user turn in the tokenizer's chat template, ready for the assistant's answer.

    Opt-in for instruct models (`harness run --chat-template`). The user's text is stripped, so the
    whitespace variants of one prompt render alike (Llama 3's template trims it anyway); the
    rendered text ends where the assistant's answer starts (SmolLM2: "<|im_start|>assistant\\n"),
    and `join_prompt_answer` puts the answer right after a trailing line break. The BOS text a
    template may start with is dropped, because encoding adds BOS itself and a doubled BOS shifts
    the model's predictions. Raises HarnessError for a tokenizer without a chat template."""
    chat_template_of(tokenizer)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt.strip()})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and tokenizer.bos_token_id in _encode(tokenizer, "").input_ids and text.startswith(bos):
        text = text[len(bos) :]
    return text


def chat_case(tokenizer: PreTrainedTokenizerBase, case: EditCase) -> EditCase:
    """The case with every prompt (the edit prompt, rephrases, portability and locality probes)
    rendered by `render_chat`: what a weight-editing method is handed when the run applies the chat
    template, so that it trains on the very text the evaluator scores. Answers, the subject and
    `extras` are left as they are (the subject occurs verbatim inside the rendered prompt)."""

    def probes(groups: Mapping[str, tuple[Probe, ...]]) -> dict[str, tuple[Probe, ...]]:
        return {
            group: tuple(replace(p, prompt=render_chat(tokenizer, p.prompt)) for p in ps)
            for group, ps in groups.items()
        }

    return replace(
        case,
        prompt=render_chat(tokenizer, case.prompt),
        rephrases=tuple(render_chat(tokenizer, r) for r in case.rephrases),
        portability=probes(case.portability),
        locality=probes(case.locality),
    )


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
    """Prompts padded for generation (left, the default) or for next-token scoring, each encoded
    as `trim_prompt` leaves it (no trailing spaces), so that the token after `last_index` is the
    one `encode_answers` would put first in an answer. Raises HarnessError for a prompt with no
    token to continue from."""
    if not prompts:
        raise HarnessError("encode_prompts needs at least one prompt")
    rows = [_encode(tokenizer, trim_prompt(p)).input_ids for p in prompts]
    empty = [p for p, row in zip(prompts, rows, strict=True) if not row]
    if empty:
        raise HarnessError(f"prompt {empty[0]!r} has no token to continue from")
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
    """`join_prompt_answer(prompt, answer)` texts, padded, with the answer tokens located in every
    row: the tokens covering any character after the join's head (the trimmed prompt), so a joining
    space merged into the answer's first token counts with the answer, a line break never does.
    Raises HarnessError for a blank answer or one that has no token of its own."""
    if len(prompts) != len(answers):
        raise HarnessError(f"encode_answers got {len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise HarnessError("encode_answers needs at least one prompt")
    rows, spans = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        if not answer.strip():
            raise HarnessError(f"the answer to prompt {prompt!r} is empty")
        head, separator, text = _seam(prompt, answer)
        enc = _encode(tokenizer, head + separator + text)
        span = _answer_span(enc.offset_mapping, len(head))
        if span is None or span[0] == 0:
            raise HarnessError(f"answer {answer!r} to prompt {prompt!r} has no token of its own to score")
        rows.append(enc.input_ids)
        spans.append(span)
    ids, mask, position_ids, offsets = _pad(rows, tokenizer.pad_token_id, padding_side)
    last = offsets + torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    start = offsets + torch.tensor([s for s, _ in spans], dtype=torch.long)
    end = offsets + torch.tensor([e for _, e in spans], dtype=torch.long)
    return AnswerBatch(ids, mask, position_ids, last, start, end)
