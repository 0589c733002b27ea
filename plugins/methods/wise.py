"""WISE: a side copy of one MLP value matrix, a router on activations, and knowledge shards.

Wang et al., "WISE: Rethinking the Knowledge Memory for Lifelong Model Editing of Large Language
Models" (NeurIPS 2024). The model's own down-projection W [d, d_in] (the *main memory*) never
changes. Edits are written into a side copy W' of it, and at each position the router compares the
side memory's contribution there with a threshold:

    Δ_act(a) = ‖(W' − W) a‖₂                                   (paper, eq. 3; a [d_in]: the
                                                                 down-projection's input)
    output(a) = W' a  if Δ_act(a) > ε,  else  W a               (eq. 4)

Training an edit minimises, over the coordinates of W' in a random mask M (the edit's *shard*),

    L = NLL(target | prompt; W')
        + hinge(β − Δ_act(in-scope))  + hinge(Δ_act(out-of-scope) − α)
        + hinge(γ − (Δ_act(in-scope) − Δ_act(out-of-scope)))      (eq. 5, margins α < β, gap γ)

with hinge(x) the mean of the positive entries of x (the reference toolkit's reduction), and
ε = `act_ratio` · the smallest in-scope Δ_act of the memory's edits after training. Knowledge
sharding (section 3.3): every `save_freq` edits the current shard is saved as a memory of its own
and a new one starts with a new random mask; every `merge_freq` edits the saved shards are merged
into one memory with Ties-merging (Yadav et al., 2023): each task vector τᵢ = W'ᵢ − W is trimmed
to its `density` largest magnitudes, a sign is elected per coordinate (the sign of Σ τᵢ), and the
entries that agree with it are averaged. A position is routed to the memory whose Δ_act is
largest among those above their own threshold.

Where this differs from the paper and from the reference toolkit (EasyEdit's `WISE.py`), and why:
- Routing is per position, not per input: the reference decides once for a whole batch (it calls
  `.item()` on a score averaged over every token of it), which pads, batched evaluation and
  generation with a KV cache (one new token per step) all break; a per-position rule means the
  same thing in teacher-forced scoring and in generation. Training writes W' at exactly the
  positions that must carry the edit (from the last prompt token to the one before the last
  target token, the positions that predict the target); the edit prompt's earlier positions join
  the out-of-scope set, so that what training sees is what routing will do.
- Δ_act is the paper's ‖(W' − W)a‖; the reference applies the model's activation function to both
  outputs before the difference, which has no counterpart in the paper.
- Out-of-scope inputs are texts the model samples itself (the ROME family's context-template
  sampler, cached per model), not records of a training split (the reference draws one NQ
  question per edit); their activations are read once per side memory, not per step.
- The in-scope activations of every earlier edit of the current shard stay in the activation loss
  (a replay of activations, no forward pass), so a later edit cannot silently push an earlier one
  below the router's threshold; the reference keeps only the current edit there (its replay of
  whole inputs, Appendix B.3, exists for WISE-Retrieve only). The in-scope activations of the
  edits in finished memories join the out-of-scope set, and a term hinge(γ + r − Δ_in), r the
  largest score a finished memory gives the same input, makes the new shard win the router at its
  own positions: with one memory per edit, this took edit success after 20 sequential edits from
  0.77 to 0.90 on SmolLM2 (benchmarks/lifelong.md); the reference has neither, since it routes
  to merged memories only.
- α, β and γ are fractions of the mean norm of the main memory's output on the out-of-scope texts
  (the reference's 5, 20, 10 are absolute, for Llama-2-7B's layer 27), and the SGD step is
  `edit_lr` divided by the mean ‖a‖² of the in-scope inputs (a step changes the output there by
  about `edit_lr` times its gradient): one default fits every model width. On SmolLM2 the
  reference's plain step of 1.0 moves the outputs by hundreds and diverges. No weight decay (the
  reference's 1e-5 also shrinks the coordinates outside the mask); no L∞ norm constraint (the
  reference's 1.0 is far above the weights' own scale and never binds).
- Training stops once the target NLL is below `stop_loss` and the router separates (`act_ratio`
  times the smallest in-scope score above the largest out-of-scope one), else after `n_iter`.
- One edit per shard by default (`save_freq` 1; the reference's 500 is for 7B models). Edits that
  share a shard share its masked coordinates, and on a small model a later edit overwrites an
  earlier one's values: on SmolLM2 (d_in 1536), edit success after 10 sequential ZsRE edits in
  one shard was 0.50, after 20 edits in shards of one 0.77 (benchmarks/lifelong.md). Each saved
  shard is a full copy of W, so memory grows by one value matrix per edit until a merge.
- Saved shards are routed to at once; the reference only routes to shards once they are merged.
  A merge takes the earlier merged memory in as one more task vector with the shards, with equal
  weights (the reference weights it 0.6 against 0.4 for the shards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from harness.api import AppliedEdit, Capabilities, EditCase, HarnessError, Method
from harness_plugins.methods.lora_labels import EditBatch, edit_batch
from harness_plugins.methods.side_modules import (
    SideModule,
    attached,
    detach,
    read_inputs,
    sampled_inputs,
    target_positions,
)
from harness_plugins.rome_family.weights import layer_property

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Relative depth of the side memory: the reference's layer 27 of Llama-2-7B's 32 (27/31).
DEPTH = 27 / 31
#: The attribute under which the side memory hangs off the down-projection.
ATTR = "wise"


@dataclass(frozen=True)
class Memory:
    """A finished memory: a full copy W' of the value matrix (in its stored layout) and the
    router's threshold ε for it."""

    weight: torch.Tensor
    threshold: float


@dataclass(frozen=True)
class ShardState:
    """Everything of a side memory that an edit may change, except the values of `current`
    (restored from the edit's own record): what `undo` puts back."""

    edits: int
    mask: torch.Tensor
    threshold: float | None
    in_scope: torch.Tensor
    retired: torch.Tensor
    saved: tuple[Memory, ...]
    merged: Memory | None


class SideMemory(SideModule):
    """The side memory of one down-projection: the shard being written (`current`, a parameter),
    the saved shards and the merged memory, and the router.

    `main` is the module's own weight W ([d, d_in], or [d_in, d] where `transposed`, GPT-2's
    Conv1D); `out_of_scope` [n, d_in] the down-projection inputs of the out-of-scope texts.
    """

    def __init__(self, main: nn.Parameter, transposed: bool, out_of_scope: torch.Tensor) -> None:
        super().__init__()
        self.main = [main]  # a list, so the model's own weight is not registered twice
        self.transposed = transposed
        self.current = nn.Parameter(main.detach().clone(), requires_grad=False)
        self.out_of_scope = out_of_scope
        #: The unit of the activation margins: the mean ‖W a‖ over the out-of-scope inputs.
        self.scale = float(self.delta(out_of_scope, torch.zeros_like(main)).detach().norm(dim=-1).mean())
        self.state = ShardState(
            edits=0,
            mask=torch.zeros_like(main, dtype=torch.bool),
            threshold=None,
            in_scope=out_of_scope.new_empty(0, out_of_scope.shape[-1]),
            retired=out_of_scope.new_empty(0, out_of_scope.shape[-1]),
            saved=(),
            merged=None,
        )
        #: While training: per-position bool mask [batch, tokens] of where `current` is written.
        self.train_positions: torch.Tensor | None = None

    def delta(self, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(W' − W) a for activations a [..., d_in] -> [..., d]. With a zero `weight` this is −W a,
        whose norm is the main memory's output norm (bias aside)."""
        diff = weight - self.main[0]
        return a @ diff if self.transposed else a @ diff.T

    def finished(self) -> list[Memory]:
        """The memories no edit writes to any more: the merged one and the saved shards."""
        return ([self.state.merged] if self.state.merged is not None else []) + list(self.state.saved)

    def memories(self) -> list[Memory]:
        """The memories the router chooses among: the finished ones, and the current shard once it
        holds an edit."""
        found = self.finished()
        if self.state.threshold is not None:
            found.append(Memory(self.current, self.state.threshold))
        return found

    def rewrite(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor | None:
        if self.train_positions is not None:
            delta = self.delta(inputs, self.current)
            return output + delta * self.train_positions[..., None].to(delta.dtype)
        best = torch.zeros(output.shape[:-1], dtype=output.dtype, device=output.device)
        routed = None
        for memory in self.memories():
            delta = self.delta(inputs, memory.weight)
            score = delta.norm(dim=-1)
            take = (score > memory.threshold) & (score > best)
            if bool(take.any()):
                best = torch.where(take, score, best)
                routed = torch.where(take[..., None], delta, routed if routed is not None else 0)
        if routed is None:
            return None
        return torch.where((best > 0)[..., None], output + routed, output)


def ties_merge(main: torch.Tensor, weights: Sequence[torch.Tensor], density: float) -> torch.Tensor:
    """Ties-merging (Yadav et al., 2023, section 3) of the memories `weights` around `main`: every
    task vector τᵢ = Wᵢ − main keeps its `density` fraction of largest magnitudes, the sign of each
    coordinate is elected as sign(Σᵢ τᵢ), and the kept entries that agree with it are averaged.
    All tensors have main's shape; returns main + the merged task vector."""
    taus = torch.stack([w - main for w in weights]).flatten(1)
    keep = max(1, round(density * taus.shape[1]))
    floor = taus.abs().topk(keep, dim=1).values[:, -1:]
    trimmed = torch.where(taus.abs() >= floor, taus, torch.zeros_like(taus))
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    return main + merged.view_as(main)


def _hinge(x: torch.Tensor) -> torch.Tensor:
    """The mean of the positive entries of x (0 when there are none): the reference's reduction,
    which keeps pushing on the last few violations instead of averaging them away."""
    positive = x[x > 0]
    return positive.mean() if positive.numel() else x.new_zeros(())


@dataclass
class WiseEdit(AppliedEdit):
    """Undo puts back the side memory's state before the edit: `current` at the coordinates the
    edit trained (after restoring the whole tensor where the edit saved its shard), the rest from
    `before`; with no edit left, the side memory and its hook go. Edits undo in reverse order."""

    module: nn.Module
    memory: SideMemory
    before: ShardState
    mask: torch.Tensor
    trained_before: torch.Tensor
    saved: torch.Tensor | None
    edits_after: int

    def undo(self) -> None:
        memory = self.memory
        if memory.state.edits != self.edits_after:
            raise HarnessError(
                f"WISE edits must be undone in reverse order: the side memory holds {memory.state.edits} "
                f"edits, this edit left it with {self.edits_after}"
            )
        with torch.no_grad():
            if self.saved is not None:
                memory.current.copy_(self.saved)
            memory.current[self.mask] = self.trained_before
        memory.state = self.before
        if self.before.edits == 0:
            detach(self.module, ATTR)


class WISE(Method):
    name: ClassVar[str] = "wise"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=True, sequential=True, needs_training=False, edits_weights=False
    )
    tuning_hint: ClassVar[str] = "layer (the side memory's layer), edit_lr, n_iter, act_margin"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "layer": layer_property("layer whose MLP down-projection gets the side memory"),
            "mask_ratio": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.2,
                "description": "share of W' coordinates a shard trains (its random mask)",
            },
            "edit_lr": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 200.0,
                "description": "SGD step, divided by the mean squared norm of the in-scope inputs",
            },
            "n_iter": {"type": "integer", "minimum": 1, "default": 40},
            "stop_loss": {
                "type": "number",
                "minimum": 0,
                "default": 0.05,
                "description": "stop once the target NLL is below this and the router separates",
            },
            "act_margin": {
                "type": "array",
                "items": {"type": "number", "minimum": 0},
                "minItems": 3,
                "maxItems": 3,
                "default": [0.05, 0.4, 0.2],
                "description": "alpha, beta, gamma, as fractions of the main memory's mean output norm",
            },
            "act_ratio": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 0.88,
                "description": "router threshold: this times the smallest in-scope activation",
            },
            "save_freq": {
                "type": "integer",
                "minimum": 1,
                "default": 1,
                "description": "edits per shard (the reference: 500, for 7B models)",
            },
            "merge_freq": {
                "type": "integer",
                "minimum": 1,
                "default": 1000,
                "description": "edits between merges of the saved shards",
            },
            "density": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.53,
                "description": "Ties-merging: share of each task vector kept",
            },
        },
        "required": ["layer"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        return {"layer": handle.adapter.layer_at(DEPTH)}

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        if not cases:
            raise HarnessError("wise: apply needs at least one edit case")
        if hparams["merge_freq"] % hparams["save_freq"]:
            raise HarnessError(
                f"wise: merge_freq ({hparams['merge_freq']}) must be a multiple of save_freq "
                f"({hparams['save_freq']}), so that merges take whole shards"
            )
        name = handle.adapter.mlp_out_name(hparams["layer"])
        module = handle.adapter.module(name)
        memory = attached(
            module,
            ATTR,
            SideMemory,
            lambda: SideMemory(
                module.weight, handle.adapter.out_weight_transposed, sampled_inputs(handle, name)
            ),
        )
        before = memory.state
        if before.edits % hparams["save_freq"] == 0:  # a new shard: a new random mask
            mask = torch.rand(memory.current.shape, device=memory.current.device) < hparams["mask_ratio"]
        else:
            mask = before.mask
        trained_before = memory.current.detach()[mask].clone()
        batch = edit_batch(handle, cases)
        in_scope, prompt = target_positions(batch)
        seen = read_inputs(handle, name, batch.answers.model_inputs())
        in_scope_all = torch.cat([before.in_scope, seen[in_scope]])
        out_of_scope = torch.cat([memory.out_of_scope, seen[prompt], before.retired])
        rivals = _rival_scores(memory, in_scope_all)
        _train(handle, memory, batch, in_scope, mask, in_scope_all, out_of_scope, rivals, hparams)
        with torch.no_grad():
            smallest = float(memory.delta(in_scope_all, memory.current).norm(dim=-1).min())
        state = ShardState(
            edits=before.edits + 1,
            mask=mask,
            threshold=hparams["act_ratio"] * smallest,
            in_scope=in_scope_all,
            retired=before.retired,
            saved=before.saved,
            merged=before.merged,
        )
        saved = None
        if state.edits % hparams["save_freq"] == 0:
            saved = memory.current.detach().clone()
            state = _save(memory, state, Memory(saved, state.threshold), hparams)
        memory.state = state
        return WiseEdit(module, memory, before, mask, trained_before, saved, state.edits)


def _train(
    handle: ModelHandle,
    memory: SideMemory,
    batch: EditBatch,
    positions: torch.Tensor,
    mask: torch.Tensor,
    in_scope: torch.Tensor,
    out_of_scope: torch.Tensor,
    rivals: torch.Tensor,
    hparams: Mapping[str, Any],
) -> None:
    """SGD on the masked coordinates of `current` for the NLL of the targets, with `current`
    written at `positions`, plus the activation margins (eq. 5). Gradients are taken for
    `current` only, so no weight of the model ever accumulates a `.grad`."""
    alpha, beta, gamma = (memory.scale * m for m in hparams["act_margin"])
    step = hparams["edit_lr"] / float(in_scope.pow(2).sum(-1).mean())
    inputs = batch.model_inputs()
    memory.train_positions = positions
    memory.current.requires_grad_(True)
    try:
        with torch.enable_grad():
            for _ in range(hparams["n_iter"]):
                nll = handle.model(**inputs).loss
                s_in = memory.delta(in_scope, memory.current).norm(dim=-1)
                s_out = memory.delta(out_of_scope, memory.current).norm(dim=-1)
                activation = (
                    _hinge(beta - s_in)
                    + _hinge(s_out - alpha)
                    + _hinge(gamma - (s_in[:, None] - s_out[None, :]))
                    + _hinge(gamma + rivals - s_in)
                )
                loss = nll + activation
                if nll.item() < hparams["stop_loss"] and hparams["act_ratio"] * s_in.min() > s_out.max():
                    break  # the target is learned and the router tells the edit from the rest
                (grad,) = torch.autograd.grad(loss, [memory.current])
                with torch.no_grad():
                    memory.current.sub_(step * grad * mask)
    finally:
        memory.current.requires_grad_(False)
        memory.train_positions = None


def _rival_scores(memory: SideMemory, in_scope: torch.Tensor) -> torch.Tensor:
    """[n] the largest score the finished memories (merged and saved shards) give each in-scope
    input: the router sends a position to the largest score, so the shard being written must
    beat these there (0 where there is no finished memory)."""
    rivals = in_scope.new_zeros(in_scope.shape[0])
    with torch.no_grad():
        for finished in memory.finished():
            rivals = torch.maximum(rivals, memory.delta(in_scope, finished.weight).norm(dim=-1))
    return rivals


def _save(memory: SideMemory, state: ShardState, shard: Memory, hparams: Mapping[str, Any]) -> ShardState:
    """End the current shard: keep it as a memory, start `current` afresh from W, and merge the saved
    shards (with the earlier merged memory) once `merge_freq` edits are in."""
    saved = (*state.saved, shard)
    merged = state.merged
    if state.edits % hparams["merge_freq"] == 0:
        parts = ([merged] if merged is not None else []) + list(saved)
        main = memory.main[0].detach()
        weight = ties_merge(main, [m.weight for m in parts], hparams["density"])
        merged, saved = Memory(weight, min(m.threshold for m in parts)), ()
    with torch.no_grad():
        memory.current.copy_(memory.main[0])
    return ShardState(
        edits=state.edits,
        mask=state.mask,
        threshold=None,
        in_scope=state.in_scope[:0],
        retired=torch.cat([state.retired, state.in_scope]),
        saved=saved,
        merged=merged,
    )
