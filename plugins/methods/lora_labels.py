"""Training batches for methods that learn an edit by gradient descent (LoRA, AdaLoRA, GRACE).

The loss is the target-only masked one: the model is teacher-forced on `prompt + " " + target` and
only the target tokens are scored. Labels of every other position are -100, the ignore index of the
transformers causal-LM loss, so `model(..., labels=labels).loss` is already the mean negative
log-likelihood of the target tokens and no method needs a loss function of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from harness.api import EditCase
from harness.models.tokenization import AnswerBatch, encode_answers

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EditBatch:
    """The edit cases as one padded batch on the model's device, with their causal-LM labels."""

    answers: AnswerBatch
    labels: torch.Tensor

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {**self.answers.model_inputs(), "labels": self.labels}

    @property
    def last_prompt_index(self) -> torch.Tensor:
        """Per row, the position whose output predicts the first target token."""
        return self.answers.answer_start - 1


def answer_labels(batch: AnswerBatch) -> torch.Tensor:
    """input_ids with every position outside the answer span set to the ignore index."""
    positions = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)
    inside = (positions >= batch.answer_start[:, None]) & (positions < batch.answer_end[:, None])
    return batch.input_ids.masked_fill(~inside, IGNORE_INDEX)


def target_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean NLL of the labelled tokens, each predicted from the position before it: what stop
    criteria compare, apart from any regularizer a method adds to its training loss."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def edit_batch(handle: ModelHandle, cases: Sequence[EditCase]) -> EditBatch:
    """Right-padded, so a row's prompt occupies the same positions alone as in the batch."""
    answers = encode_answers(
        handle.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases], padding_side="right"
    ).to(handle.device)
    return EditBatch(answers=answers, labels=answer_labels(answers))
