"""UltraEdit: training-, subject- and memory-free lifelong editing (Gu et al., 2025,
arXiv:2505.14679).

One editing turn (one `apply`) takes, for each edited layer's down-projection W [d, d_in], the
module's inputs k [d_in] (keys) and the gradients g [d] of the target's NLL with respect to its
outputs, at every token of the edit texts (prompt + target). With z = [k ‖ g] the rows of this turn:

1. lifelong normalisation: the running mean μ and standard deviation σ of z over every row of
   every turn so far, this one included, give ẑ = (z − μ) / (σ + ε) = [k̂ ‖ ĝ];
2. pseudo values: v = −lr · ‖k̂‖² · ĝ, a normalised gradient step per row;
3. the parameter shift: the ridge regression of the values on the raw keys,
       ΔWᵀ = (KᵀK + λI)⁻¹ Kᵀ V        (K [N, d_in], V [N, d] stacked rows, λ = `ridge`),
   added to W, for every layer at once (all keys and gradients are read before any change).

No subject, no optimisation loop and no stored memory: the only state is (μ, σ, count) per layer,
kept with the model across the turns of a sequence and restored by `undo` with the weights, so a
run's next sequence (or each single-mode edit) starts from no statistics. Differences from the
paper and the reference code are listed in docs/methods.md ("UltraEdit").
Shapes: d = hidden size, d_in = MLP inner width, N = rows (tokens) of one turn.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.api import (
    AppliedEdit,
    Capabilities,
    EditCase,
    HarnessError,
    Method,
    SnapshotEdit,
    capture_modules,
    encode_answers,
    tensor_digest,
)
from harness_plugins.rome_family.losses import answer_logits, answer_nll
from harness_plugins.rome_family.weights import (
    LAYERS_PROPERTY,
    add_to_mlp_out,
    mlp_out_weight_name,
    trainable_only,
)

if TYPE_CHECKING:
    from harness.api import ModelHandle, Snapshot

#: ε of the normalisation, as the reference's (float32's machine epsilon).
EPS = torch.finfo(torch.float32).eps
#: Relative depths of the first and last edited layer: the reference toolkit's only UltraEdit
#: configuration edits layers 52..60 of Gemma-3-27B's 62 (on SmolLM2's 30 layers: 25..29).
FIRST_DEPTH, LAST_DEPTH = 52 / 61, 60 / 61


@dataclass(frozen=True)
class RunningMoments:
    """Count, mean and sum of squared deviations (M2) of every feature row seen so far, merged turn
    by turn with the exact pairwise update of Chan et al. (1979), in float64. Immutable: `update`
    returns the merged statistics, so a turn's undo can keep the ones before it.

    mean [D], m2 [D]; the standard deviation is the sample one, sqrt(M2 / (count − 1)).
    """

    count: int
    mean: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def empty(cls, width: int, device: torch.device | str) -> RunningMoments:
        zeros = torch.zeros(width, dtype=torch.float64, device=device)
        return cls(0, zeros, zeros.clone())

    def update(self, rows: torch.Tensor) -> RunningMoments:
        """The statistics of the rows seen so far and `rows` [n, D] together."""
        x = rows.double()
        n = x.shape[0]
        if n == 0:
            return self
        mean = x.mean(0)
        total = self.count + n
        delta = mean - self.mean
        return RunningMoments(
            total,
            self.mean + delta * (n / total),
            self.m2 + ((x - mean) ** 2).sum(0) + delta**2 * (self.count * n / total),
        )

    @property
    def std(self) -> torch.Tensor:
        if self.count < 2:
            return torch.zeros_like(self.m2)
        return (self.m2 / (self.count - 1)).sqrt()

    def normalise(self, rows: torch.Tensor) -> torch.Tensor:
        """(rows − μ) / (σ + ε), rows [n, D] -> [n, D] float32."""
        return ((rows.double() - self.mean) / (self.std + EPS)).float()


@dataclass(frozen=True)
class LifelongState:
    """What UltraEdit keeps between the turns of one sequence on one model: the statistics per edited
    layer, and the digests of the weights it left, which tell whether the model is still the one
    the statistics belong to."""

    moments: Mapping[int, RunningMoments]
    weights: Mapping[str, bytes]

    def belongs_to(self, handle: ModelHandle) -> bool:
        params = dict(handle.model.named_parameters())
        return all(tensor_digest(params[name]) == digest for name, digest in self.weights.items())


#: The state of the sequence now applied to each model (its turns not yet undone).
_STATES: weakref.WeakKeyDictionary[torch.nn.Module, LifelongState] = weakref.WeakKeyDictionary()


def current_state(handle: ModelHandle) -> LifelongState | None:
    """The lifelong state of the edits applied to this model, or None when there is none: no edit
    yet, every edit undone, or the weights changed since the last edit by something else (a
    restore from outside, another method), which starts a new sequence."""
    state = _STATES.get(handle.model)
    if state is not None and not state.belongs_to(handle):
        del _STATES[handle.model]
        return None
    return state


def _set_state(handle: ModelHandle, state: LifelongState | None) -> None:
    if state is None:
        _STATES.pop(handle.model, None)
    else:
        _STATES[handle.model] = state


class UltraEditEdit(SnapshotEdit):
    """Undo restores the weights and the lifelong statistics of before the turn; turns of one
    sequence must be undone in reverse order."""

    def __init__(
        self, handle: ModelHandle, snapshot: Snapshot, before: LifelongState | None, after: LifelongState
    ) -> None:
        super().__init__(handle, snapshot)
        self.before = before
        self.after = after

    def undo(self) -> None:
        if _STATES.get(self.handle.model) is not self.after:
            raise HarnessError(
                "ultraedit: edits must be undone in reverse order (a later edit of this model is still "
                "applied)"
            )
        super().undo()
        _set_state(self.handle, self.before)


def row_mask(attention_mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor, rows: str) -> torch.Tensor:
    """Which tokens give feature rows: "all" of the text's (the reference's `token: mask`), or
    "answer", the positions whose next token is a target token. -> [B, T] bool"""
    if rows == "all":
        return attention_mask.bool()
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions >= start[:, None] - 1) & (positions < end[:, None] - 1)


def edit_features(
    handle: ModelHandle, cases: Sequence[EditCase], layers: Sequence[int], rows: str
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the down-projection's inputs (keys [N, d_in]) and the gradients of the target's NLL
    (`answer_nll`, the tokens the evaluator scores) with respect to its outputs ([N, d]), at the
    tokens `rows` names, on the model as it is. One forward and one backward pass; no weight gets
    a gradient (each output is made a leaf of the graph, so the backward pass stops there)."""
    batch = encode_answers(
        handle.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases], padding_side="left"
    ).to(handle.device)
    names = [handle.adapter.mlp_out_name(layer) for layer in layers]
    leaves: dict[str, torch.Tensor] = {}

    def as_leaf(name: str, output: torch.Tensor) -> torch.Tensor:
        leaves[name] = output.detach().requires_grad_(True)
        return leaves[name]

    with (
        torch.enable_grad(),
        trainable_only(handle.model, []),
        capture_modules(handle, names, inputs=True, edit_output=as_leaf) as seen,
    ):
        loss = answer_nll(answer_logits(handle.model, batch), batch)
        grads = torch.autograd.grad(loss, [leaves[name] for name in names], allow_unused=True)
    mask = row_mask(batch.attention_mask, batch.answer_start, batch.answer_end, rows)
    features = {}
    for layer, name, grad in zip(layers, names, grads, strict=True):
        keys = seen.inputs[name][0].detach()
        grad = torch.zeros_like(leaves[name]) if grad is None else grad
        features[layer] = (keys[mask].float(), grad[mask].float())
    return features


def pseudo_values(normalised: torch.Tensor, d_in: int, lr: float) -> torch.Tensor:
    """v = −lr · ‖k̂‖² · ĝ for normalised rows [k̂ ‖ ĝ] [N, d_in + d]. -> [N, d]"""
    k_hat, g_hat = normalised[:, :d_in], normalised[:, d_in:]
    return -lr * (k_hat * k_hat).sum(-1, keepdim=True) * g_hat


def ridge_shift(keys: torch.Tensor, values: torch.Tensor, ridge: float) -> torch.Tensor:
    """ΔW [d, d_in] minimising Σᵢ ‖ΔW kᵢ − vᵢ‖² + ridge · ‖ΔW‖²_F, i.e. ΔWᵀ = (KᵀK + ridge·I)⁻¹ KᵀV,
    solved in float64. keys [N, d_in], values [N, d]."""
    k = keys.double()
    gram = k.T @ k + ridge * torch.eye(k.shape[1], dtype=torch.float64, device=k.device)
    return torch.linalg.solve(gram, k.T @ values.double()).T.float()


class UltraEdit(Method):
    name: ClassVar[str] = "ultraedit"
    capabilities: ClassVar[Capabilities] = Capabilities(batch=True, sequential=True)
    tuning_hint: ClassVar[str] = "lr (the size of each shift), layers"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "layers": {**LAYERS_PROPERTY, "description": "layers whose MLP down-projection is edited"},
            "lr": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1e-3,
                "description": "step size of the pseudo values v = -lr * |k^|^2 * g^",
            },
            "ridge": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1.0,
                "description": "the ridge term lambda of (K^T K + lambda I)",
            },
            "rows": {
                "enum": ["all", "answer"],
                "default": "all",
                "description": "feature rows: every token of prompt and target (the reference's 'mask') "
                "or the positions predicting target tokens",
            },
        },
        "required": ["layers"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        first, last = handle.adapter.layer_at(FIRST_DEPTH), handle.adapter.layer_at(LAST_DEPTH)
        return {"layers": list(range(first, last + 1))}

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        if not cases:
            raise HarnessError("ultraedit: apply needs at least one edit case")
        layers = list(dict.fromkeys(hparams["layers"]))
        before = current_state(handle)
        moments = dict(before.moments) if before is not None else {}
        shifts = {}
        for layer, (keys, grads) in edit_features(handle, cases, layers, hparams["rows"]).items():
            features = torch.cat([keys, grads], dim=-1)  # [N, d_in + d]
            stats = moments.get(layer, RunningMoments.empty(features.shape[1], features.device))
            moments[layer] = stats.update(features)
            values = pseudo_values(moments[layer].normalise(features), keys.shape[1], hparams["lr"])
            shifts[layer] = ridge_shift(keys, values, hparams["ridge"])
        names = [mlp_out_weight_name(handle, layer) for layer in layers]
        snapshot = handle.snapshot(names)
        for layer, shift in shifts.items():
            add_to_mlp_out(handle, layer, shift)
        params = dict(handle.model.named_parameters())
        weights = {**(before.weights if before else {}), **{n: tensor_digest(params[n]) for n in names}}
        after = LifelongState(moments, weights)
        _set_state(handle, after)
        return UltraEditEdit(handle, snapshot, before, after)
