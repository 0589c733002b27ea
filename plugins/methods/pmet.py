"""PMET: precise model editing in a transformer (Li et al., 2024, "PMET: Precise Model Editing in a
Transformer", AAAI).

MEMIT optimizes one δ for the whole residual stream at its last layer, although that stream is the
sum of the attention's and the MLP's outputs, and then asks the MLP weights alone to produce it.
PMET optimizes two: δ_attn at the attention output and δ_mlp at the MLP output of the last edited
layer, jointly, so that the attention's share of the new fact is not forced into the MLP. Only the
MLP target z = m + δ_mlp (m: the MLP output there) is then written, into the MLP output matrices of
`layers` with MEMIT's least-squares update; the attention weights stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from harness.api import AppliedEdit, EditCase, SnapshotEdit
from harness_plugins.methods.memit import MEMIT
from harness_plugins.rome_family.keys import Rewrite, subject_reads
from harness_plugins.rome_family.second_moment import second_moments, stats_config
from harness_plugins.rome_family.templates import context_templates
from harness_plugins.rome_family.updates import spread_residual
from harness_plugins.rome_family.values import optimize_value
from harness_plugins.rome_family.weights import add_to_mlp_out, mlp_out_weight_name

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: The reference spreads PMET's residual over the layers left by √(layers left), not MEMIT's 1/(layers
#: left): the exponent of `spread_residual`.
SPREAD_POWER = 0.5


class PMET(MEMIT):
    name = "pmet"

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        rewrites = [Rewrite.of(case, self.name) for case in cases]
        layers = sorted(hparams["layers"])
        top = handle.adapter.mlp_out_name(layers[-1])
        modules = [handle.adapter.attn_name(layers[-1]), top]
        templates = context_templates(handle, hparams["context_templates"])
        covariances = second_moments(handle, layers, stats_config(hparams))
        mlp_deltas = torch.stack(
            [
                optimize_value(handle, layers[-1], rw, templates, hparams, modules=modules)[1]
                for rw in rewrites
            ],
            dim=1,
        )  # [d, n]: δ_mlp of each edit (δ_attn shaped it, and is not written)
        z = subject_reads(handle, top, rewrites, templates, "output") + mlp_deltas  # [d, n]
        snapshot = handle.snapshot([mlp_out_weight_name(handle, layer) for layer in layers])
        for i, layer in enumerate(layers):
            keys = subject_reads(handle, handle.adapter.mlp_out_name(layer), rewrites, templates, "input")
            current = subject_reads(handle, top, rewrites, templates, "output")  # [d, n]
            residual = spread_residual(z, current, len(layers) - i, power=SPREAD_POWER)
            c = covariances[layer].to(keys.device)
            add_to_mlp_out(handle, layer, self.layer_update(handle, layer, residual, keys, c, hparams))
        return SnapshotEdit(handle, snapshot)
