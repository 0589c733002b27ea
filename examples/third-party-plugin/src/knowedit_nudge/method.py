"""`logit-nudge`: the smallest honest weight editor.

For each case, let h be the final hidden state (the input of the output layer) at the last prompt
token and t the first token of `target_new`. Adding `strength * h / |h|^2` to row t of the output
embedding raises the logit of t by exactly `strength` at h, and by less wherever the hidden state
points elsewhere. It edits weights in place, so undo restores a snapshot of that one matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from harness.api import (
    AppliedEdit,
    Capabilities,
    EditCase,
    Method,
    ModelHandle,
    SnapshotEdit,
    capture_modules,
    encode_answers,
)


class LogitNudge(Method):
    """Raise the first target token's logit at the prompt's last hidden state."""

    name = "logit-nudge"
    capabilities = Capabilities(batch=True, sequential=True, needs_training=False, edits_weights=True)
    tuning_hint = "strength (nats the target's logit rises)"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "strength": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 30.0,
                "description": "how many nats the target token's logit rises at the prompt",
            }
        },
        "additionalProperties": False,
    }

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        weight_name = f"{handle.adapter.lm_head_name}.weight"
        snapshot = handle.snapshot([weight_name])
        hidden, targets = self._hidden_and_targets(handle, cases)
        weight = handle.adapter.module(handle.adapter.lm_head_name).weight
        with torch.no_grad():
            for h, t in zip(hidden, targets, strict=True):
                weight[t] += (float(hparams["strength"]) * h / h.dot(h)).to(weight.dtype)
        return SnapshotEdit(handle, snapshot)

    @staticmethod
    def _hidden_and_targets(handle: ModelHandle, cases: Sequence[EditCase]) -> tuple[torch.Tensor, list[int]]:
        """The output layer's input at each prompt's last token, [cases, hidden] float32, and each
        target's first token id."""
        batch = encode_answers(handle.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases])
        batch = batch.to(handle.device)
        with torch.no_grad(), capture_modules(handle, [handle.adapter.lm_head_name], inputs=True) as seen:
            handle.model(**batch.model_inputs())
        rows = torch.arange(len(cases), device=handle.device)
        last_prompt = batch.answer_start - 1
        hidden = seen.inputs[handle.adapter.lm_head_name][0][rows, last_prompt].float()
        targets = batch.input_ids[rows, batch.answer_start].tolist()
        return hidden, targets
