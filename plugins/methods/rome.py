"""ROME: rank-one model editing (Meng et al., 2022) of one MLP output matrix.

The key k* is the MLP input at the subject's last token, averaged over context templates; the
value is the original output plus an optimized δ; the update is the closed-form rank-one change
that maps k* to it, optionally along C⁻¹k* (the second-moment adjustment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.api import AppliedEdit, Capabilities, EditCase, HarnessError, Method, SnapshotEdit
from harness_plugins.rome_family.keys import Rewrite, subject_note, subject_problem, subject_reads
from harness_plugins.rome_family.second_moment import MOM2_SCHEMA, second_moments, stats_config
from harness_plugins.rome_family.templates import context_templates
from harness_plugins.rome_family.updates import rome_direction, rome_update
from harness_plugins.rome_family.values import VALUE_SCHEMA, optimize_value
from harness_plugins.rome_family.weights import add_to_mlp_out, mlp_out_matrix, mlp_out_weight_name

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Relative depth of the edited layer: the reference's layer 5 of Llama-2-7B's 32 (5/31), layer 17
#: of GPT-2 XL's 48 (17/47); other families take the Llama value.
DEPTH = {"gpt2": 17 / 47}
DEFAULT_DEPTH = 5 / 31


class ROME(Method):
    name = "rome"
    capabilities = Capabilities(batch=False, sequential=True)
    tuning_hint = "layers (the edited layer), v_lr and v_num_grad_steps (the value's optimisation)"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "layers": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 1,
                "maxItems": 1,
                "x-layer": True,
            },
            **VALUE_SCHEMA,
            "context_templates": {**VALUE_SCHEMA["context_templates"], "default": [[5, 10], [10, 10]]},
            "mom2_adjustment": {"type": "boolean", "default": False},
            **MOM2_SCHEMA,
        },
        "required": ["layers"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        depth = DEPTH.get(handle.adapter.family, DEFAULT_DEPTH)
        return {"layers": [handle.adapter.layer_at(depth)]}

    def check_case(self, case: EditCase) -> str | None:
        return subject_problem(case, self.name)

    def case_note(self, case: EditCase) -> str | None:
        return subject_note(case)

    def key_templates(self, templates: list[str]) -> list[str]:
        """The context templates the key k* is averaged over, in the direction u and in the update
        alike: all of them (R-ROME keys at the bare prompt instead)."""
        return templates

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        if len(cases) != 1:
            raise HarnessError(
                f"{self.name} edits one case at a time, got {len(cases)}; use memit for batches"
            )
        rewrite = Rewrite.of(cases[0], self.name)
        (layer,) = hparams["layers"]
        templates = context_templates(handle, hparams["context_templates"])
        k_star = subject_reads(
            handle, handle.adapter.mlp_out_name(layer), [rewrite], self.key_templates(templates), "input"
        )[:, 0]
        c_inv = None
        if hparams["mom2_adjustment"]:
            c = second_moments(handle, [layer], stats_config(hparams))[layer]
            c_inv = torch.linalg.inv(c.double()).float().to(k_star.device)
        u = rome_direction(k_star, c_inv)  # [d_in]
        delta = optimize_value(handle, layer, rewrite, templates, hparams)  # [d]
        w = mlp_out_matrix(handle, layer).float()  # [d, d_in]
        v_star = w @ k_star + delta  # the value the key must now produce
        snapshot = handle.snapshot([mlp_out_weight_name(handle, layer)])
        add_to_mlp_out(handle, layer, rome_update(w, k_star, v_star, u))
        return SnapshotEdit(handle, snapshot)
