"""EMMET: equality-constrained mass model editing (Gupta et al., 2024, "A Unified Framework for
Model Editing").

MEMIT asks the edited keys to map *close to* their values (least squares against the preserved
keys, weighed by λ); EMMET asks them to map *exactly* to them, (W + ΔW) K = V, while moving the
preserved keys' outputs as little as possible: ΔW = R (Kᵀ C⁻¹ K)⁻¹ Kᵀ C⁻¹, the batched form of
ROME's update along C⁻¹k. Everything else (values, keys, the residual spread over the layers) is
MEMIT's, as in the reference toolkit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness_plugins.methods.memit import MEMIT, SHARED_PROPERTIES
from harness_plugins.rome_family.updates import emmet_update

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: The reference's `emmet_lambda` (every model it configures): added to Kᵀ C⁻¹ K, whose diagonal is
#: about d_in, so it changes a well-conditioned batch by a few parts in ten thousand.
EMMET_LAMBDA = 0.1


class EMMET(MEMIT):
    name = "emmet"
    tuning_hint = (
        "layers, v_lr and v_num_grad_steps (the values' optimisation), emmet_lambda (raise it when a "
        "batch holds near-duplicate keys)"
    )
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            **SHARED_PROPERTIES,
            "emmet_lambda": {
                "type": "number",
                "minimum": 0,
                "default": EMMET_LAMBDA,
                "description": "added to the diagonal of K^T C^-1 K: 0 writes the values exactly",
            },
        },
        "required": ["layers"],
    }

    def layer_update(
        self,
        handle: ModelHandle,
        layer: int,
        residual: torch.Tensor,
        keys: torch.Tensor,
        c: torch.Tensor,
        hparams: Mapping[str, Any],
    ) -> torch.Tensor:
        return emmet_update(residual, keys, c, hparams["emmet_lambda"])
