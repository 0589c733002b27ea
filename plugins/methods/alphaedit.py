"""AlphaEdit: MEMIT with its update projected onto the null space of the preserved keys (Fang et al.,
2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models").

The values, keys and the residual spread over the layers are MEMIT's. Each layer's update is
ΔW = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + l2 I)⁻¹: P (`rome_family.nullspace`, cached per model, layer,
statistics and threshold) projects onto the directions the preserved keys never take, so their
outputs stay as they were; K_p are the keys of the edits already made to this model (sequential
editing), whose outputs the new update must not move either. The method keeps K_p per model, and
undoing an edit takes its keys back off (edits are undone in reverse order).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.api import AppliedEdit, EditCase, HarnessError, SnapshotEdit
from harness_plugins.methods.memit import MEMIT, SHARED_PROPERTIES
from harness_plugins.rome_family.keys import Rewrite, subject_reads
from harness_plugins.rome_family.nullspace import null_space_projections
from harness_plugins.rome_family.second_moment import stats_config
from harness_plugins.rome_family.templates import context_templates
from harness_plugins.rome_family.updates import alphaedit_update

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: The reference's `nullspace_threshold` and `L2` (every model it configures). The threshold is on
#: the eigenvalues of C = E[k kᵀ] itself, so it depends on the scale of the model's MLP activations.
NULLSPACE_THRESHOLD = 2e-2
L2 = 10.0


@dataclass
class _Preserved:
    """The keys of the edits in force on one model, in the order they were made: per edit, layer ->
    K [d_in, n] (float64), and per layer the sum Σ K Kᵀ, always folded in that order so that taking
    the last edit off restores the sums bit for bit."""

    edits: list[dict[int, torch.Tensor]] = field(default_factory=list)
    sums: dict[int, torch.Tensor] = field(default_factory=dict)

    def push(self, keys: dict[int, torch.Tensor]) -> None:
        self.edits.append(keys)
        self._add(keys)

    def _add(self, keys: dict[int, torch.Tensor]) -> None:
        for layer, k in keys.items():
            self.sums[layer] = self.sums[layer] + k @ k.T if layer in self.sums else k @ k.T

    def pop(self, keys: dict[int, torch.Tensor]) -> None:
        if not self.edits or self.edits[-1] is not keys:
            raise HarnessError(
                f"alphaedit edits must be undone in reverse order: {len(self.edits)} edit(s) are in force "
                "and this one is not the last"
            )
        self.edits.pop()
        self.sums = {}
        for edit in self.edits:
            self._add(edit)


_PRESERVED: weakref.WeakKeyDictionary[torch.nn.Module, _Preserved] = weakref.WeakKeyDictionary()


class _AlphaEditEdit(SnapshotEdit):
    """Restores the weights and takes this edit's keys off the model's preserved keys."""

    def __init__(self, edit: SnapshotEdit, preserved: _Preserved, keys: dict[int, torch.Tensor]) -> None:
        super().__init__(edit.handle, edit.snapshot)
        self.preserved, self.keys = preserved, keys

    def undo(self) -> None:
        self.preserved.pop(self.keys)
        super().undo()


class AlphaEdit(MEMIT):
    name = "alphaedit"
    tuning_hint = (
        "layers, v_lr and v_num_grad_steps (the values' optimisation), nullspace_threshold (higher: a "
        "larger space to write in, less protection), l2 (lower: stronger edits)"
    )
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            **SHARED_PROPERTIES,
            "nullspace_threshold": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": NULLSPACE_THRESHOLD,
                "description": "eigenvalues of the key statistics C below this span the null space",
            },
            "l2": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": L2,
                "description": "weight of ||delta||^2",
            },
        },
        "required": ["layers"],
    }

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        edit = super().apply(handle, cases, hparams)
        # As the reference, the edit's keys are read on the edited model, every layer updated.
        rewrites = [Rewrite.of(case, self.name) for case in cases]
        templates = context_templates(handle, hparams["context_templates"])
        keys = {
            layer: subject_reads(
                handle, handle.adapter.mlp_out_name(layer), rewrites, templates, "input"
            ).double()
            for layer in hparams["layers"]
        }  # layer -> [d_in, n]
        preserved = _PRESERVED.setdefault(handle.model, _Preserved())
        preserved.push(keys)
        return _AlphaEditEdit(edit, preserved, keys)

    def layer_update(
        self,
        handle: ModelHandle,
        layer: int,
        residual: torch.Tensor,
        keys: torch.Tensor,
        c: torch.Tensor,
        hparams: Mapping[str, Any],
    ) -> torch.Tensor:
        threshold = hparams["nullspace_threshold"]
        projection = null_space_projections(handle, [layer], stats_config(hparams), threshold)[layer]
        preserved = _PRESERVED.get(handle.model, _Preserved()).sums.get(layer)
        if preserved is None:
            preserved = torch.zeros_like(projection)
        return alphaedit_update(
            residual, keys, projection.to(keys.device), preserved.to(keys.device), hparams["l2"]
        )
