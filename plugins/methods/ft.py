"""FT-L and FT-M: fine-tuning one layer's MLP output weights on the edits.

Both train the same parameters with Adam and may keep them within an L∞ ball around the original
(`norm_constraint`, the constrained fine-tuning of Zhu et al. 2020 that the KnowEdit study's FT-L
uses). They differ only in the loss:

- FT-L: the reference's `prompt_last` loss: every target token scored at the last prompt position.
- FT-M: causal-LM cross-entropy on `prompt + " " + target`, masked to the target tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.api import AnswerBatch, AppliedEdit, Capabilities, EditCase, Method, SnapshotEdit, encode_answers
from harness_plugins.rome_family.losses import answer_logits, answer_nll, prompt_last_nll
from harness_plugins.rome_family.weights import LAYERS_PROPERTY, mlp_out_params, trainable_only

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Relative depth of the tuned layer: the reference's layer 21 of Llama-2-7B's 32 (21/31), used for
#: every family (on SmolLM2's 30 layers: layer 20).
DEPTH = 21 / 31
#: A step is skipped, and an epoch ends training, below this loss (the reference's threshold).
LOSS_STOP = 1e-2


class _FineTune(Method):
    capabilities = Capabilities(batch=True, sequential=True)
    tuning_hint = "layers (the tuned layer), lr, num_steps"
    loss: ClassVar[Callable[[torch.Tensor, AnswerBatch], torch.Tensor]]
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "layers": LAYERS_PROPERTY,
            "num_steps": {"type": "integer", "minimum": 1, "default": 25},
            "lr": {"type": "number", "exclusiveMinimum": 0, "default": 5e-4},
            "batch_size": {"type": "integer", "minimum": 1, "default": 1},
            "norm_constraint": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "default": None,
                "description": "L-inf radius around the original weights; null for none",
            },
        },
        "required": ["layers"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        return {"layers": [handle.adapter.layer_at(DEPTH)]}

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        params = {n: p for layer in hparams["layers"] for n, p in mlp_out_params(handle, layer).items()}
        snapshot = handle.snapshot(params)
        originals = list(snapshot.tensors.values())
        radius = hparams["norm_constraint"]
        optimizer = torch.optim.Adam(params.values(), lr=hparams["lr"])
        size = hparams["batch_size"]
        batches = [
            encode_answers(
                handle.tokenizer,
                [c.prompt for c in cases[i : i + size]],
                [c.target_new for c in cases[i : i + size]],
                padding_side="left",
            ).to(handle.device)
            for i in range(0, len(cases), size)
        ]
        with trainable_only(handle.model, params.values()):
            for _ in range(hparams["num_steps"]):
                losses = []
                for batch in batches:
                    optimizer.zero_grad()
                    loss = type(self).loss(answer_logits(handle.model, batch), batch)
                    losses.append(loss.item())
                    if loss.item() < LOSS_STOP:
                        continue
                    loss.backward()
                    optimizer.step()
                    if radius is not None:
                        with torch.no_grad():
                            for p, original in zip(params.values(), originals, strict=True):
                                p.copy_(torch.clamp(p, original - radius, original + radius))
                if sum(losses) / len(losses) < LOSS_STOP:
                    break
        return SnapshotEdit(handle, snapshot)


class FTL(_FineTune):
    name = "ft-l"
    loss = staticmethod(prompt_last_nll)


class FTM(_FineTune):
    name = "ft-m"
    loss = staticmethod(answer_nll)
