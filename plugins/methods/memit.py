"""MEMIT: mass-editing memory in a transformer (Meng et al., 2023).

For every edit a target hidden state z = h + δ is optimized at the last edited layer; then, layer by
layer, the residual still missing there is spread over the layers left and written into each
layer's MLP output matrix by the covariance-regularized least-squares update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.api import AppliedEdit, Capabilities, EditCase, Method, SnapshotEdit
from harness_plugins.rome_family.keys import Rewrite, subject_note, subject_problem, subject_reads
from harness_plugins.rome_family.second_moment import MOM2_SCHEMA, second_moments, stats_config
from harness_plugins.rome_family.templates import context_templates
from harness_plugins.rome_family.updates import memit_update, spread_residual
from harness_plugins.rome_family.values import VALUE_SCHEMA, optimize_value
from harness_plugins.rome_family.weights import LAYERS_PROPERTY, add_to_mlp_out, mlp_out_weight_name

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Relative depths of the first and last edited layer: the reference's layers 4-8 of Llama-2-7B
#: (of 32) and 13-17 of GPT-2 XL (of 48); other families take the Llama values.
DEPTHS = {"gpt2": (13 / 47, 17 / 47)}
DEFAULT_DEPTHS = (4 / 31, 8 / 31)
#: λ per MLP inner dimension. For one key, the update reaches the fraction s/(1+s) of its residual
#: with s = kᵀC⁻¹k/λ, and E[kᵀC⁻¹k] = d_in; so λ must grow with d_in for edits to keep their
#: strength across widths. The reference's 15000 at Llama-2-7B's d_in = 11008 is about 1.4 d_in.
MOM2_WEIGHT_PER_DIM = 15000 / 11008
#: The hparams of MEMIT's layers, values and statistics: all of MEMIT's but the update's own
#: regularisation (λ), which relatives with another layer update (EMMET, AlphaEdit) replace.
SHARED_PROPERTIES: dict[str, Any] = {
    "layers": LAYERS_PROPERTY,
    **VALUE_SCHEMA,
    "context_templates": {**VALUE_SCHEMA["context_templates"], "default": [[10, 5]]},
    **MOM2_SCHEMA,
}


class MEMIT(Method):
    name = "memit"
    capabilities = Capabilities(batch=True, sequential=True)
    tuning_hint = (
        "layers, v_lr and v_num_grad_steps (the values' optimisation), mom2_update_weight (lower: "
        "stronger edits)"
    )
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {**SHARED_PROPERTIES, "mom2_update_weight": {"type": "number", "exclusiveMinimum": 0}},
        "required": ["layers", "mom2_update_weight"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        first, last = DEPTHS.get(handle.adapter.family, DEFAULT_DEPTHS)
        layers = list(range(handle.adapter.layer_at(first), handle.adapter.layer_at(last) + 1))
        if "mom2_update_weight" not in self.hparams_schema["properties"]:  # a relative without λ
            return {"layers": layers}
        weight = round(MOM2_WEIGHT_PER_DIM * handle.adapter.intermediate_size)
        return {"layers": layers, "mom2_update_weight": weight}

    def check_case(self, case: EditCase) -> str | None:
        return subject_problem(case, self.name)

    def case_note(self, case: EditCase) -> str | None:
        return subject_note(case)

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        rewrites = [Rewrite.of(case, self.name) for case in cases]
        layers = sorted(hparams["layers"])
        top = handle.adapter.layer_name(layers[-1])
        templates = context_templates(handle, hparams["context_templates"])
        covariances = second_moments(handle, layers, stats_config(hparams))
        hidden = subject_reads(handle, top, rewrites, templates, "output")  # [d, n]
        # δᵢ is measured (clamped, decayed) against the hidden state it moves, as in the reference.
        deltas = torch.stack(
            [
                optimize_value(handle, layers[-1], rw, templates, hparams, v0=hidden[:, i])
                for i, rw in enumerate(rewrites)
            ],
            dim=1,
        )  # [d, n]
        z = hidden + deltas  # [d, n]
        snapshot = handle.snapshot([mlp_out_weight_name(handle, layer) for layer in layers])
        for i, layer in enumerate(layers):
            keys = subject_reads(handle, handle.adapter.mlp_out_name(layer), rewrites, templates, "input")
            current = subject_reads(handle, top, rewrites, templates, "output")  # [d, n]
            residual = spread_residual(z, current, len(layers) - i)  # [d, n]
            c = covariances[layer].to(keys.device)
            add_to_mlp_out(handle, layer, self.layer_update(handle, layer, residual, keys, c, hparams))
        return SnapshotEdit(handle, snapshot)

    def layer_update(
        self,
        handle: ModelHandle,
        layer: int,
        residual: torch.Tensor,
        keys: torch.Tensor,
        c: torch.Tensor,
        hparams: Mapping[str, Any],
    ) -> torch.Tensor:
        """ΔW [d_out, d_in] that writes `residual` [d, n] at `keys` [d_in, n] into `layer`, given its
        key statistics C [d_in, d_in]: MEMIT's least-squares update. Its relatives (EMMET,
        AlphaEdit) share everything else of MEMIT and replace this."""
        return memit_update(residual, keys, c, hparams["mom2_update_weight"])
