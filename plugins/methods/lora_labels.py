"""Training batches for methods that learn an edit by gradient descent (LoRA, AdaLoRA, GRACE).

The loss is the target-only masked one: the model is teacher-forced on `prompt + " " + target` and
only the target tokens are scored. Projecting every position onto a 49k-token vocabulary would cost
a fifth of a small model's forward pass and most of its backward pass for nothing, so the batch asks
the model for the logits of a window only (transformers' `logits_to_keep`): from the position that
predicts the first target token to the last target token. Labels outside the targets are -100, the
ignore index of the causal-LM loss, and the window's labels line up with its logits the way the
causal-LM loss expects (shifted by one inside it), so `model(**batch.model_inputs()).loss` is the
mean negative log-likelihood of the target tokens, plus any regularizer a tuner adds (AdaLoRA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from harness.api import AnswerBatch, EditCase, encode_answers

if TYPE_CHECKING:
    from harness.api import ModelHandle

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EditBatch:
    """The edit cases as one padded batch on the model's device, with their causal-LM labels."""

    answers: AnswerBatch
    labels: torch.Tensor

    @property
    def window(self) -> torch.Tensor:
        """Positions whose logits the loss needs: one before the earliest target token of any row,
        through the latest target token of any row."""
        start = int(self.answers.answer_start.min()) - 1
        end = int(self.answers.answer_end.max())
        return torch.arange(start, end, device=self.labels.device)

    @property
    def window_labels(self) -> torch.Tensor:
        return self.labels[:, self.window]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Inputs for a forward pass that returns the window's logits and the target NLL as `loss`."""
        return {**self.answers.model_inputs(), "labels": self.window_labels, "logits_to_keep": self.window}

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
    criteria compare, apart from any regularizer a method adds to its training loss. Takes full
    logits with `labels`, or a window's logits with `window_labels`."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def edit_batch(handle: ModelHandle, cases: Sequence[EditCase]) -> EditBatch:
    """Right-padded, so a row's prompt occupies the same positions alone as in the batch."""
    answers = encode_answers(
        handle.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases], padding_side="right"
    ).to(handle.device)
    return EditBatch(answers=answers, labels=answer_labels(answers))
