"""MEND: small trained networks that turn a fine-tuning gradient into a good weight edit.

Mitchell et al., "Fast Model Editing at Scale" (ICLR 2022). For a linear layer W [d_out, d_in]
the gradient of a loss over a sequence is a sum of rank-one terms, one per token t (paper, eq. 1):

    ∇_W L = Σ_t δ_t u_tᵀ,   u_t = the layer's input at t,   δ_t = ∂L/∂(W u_t), its output gradient

MEND edits with the factors instead of the gradient: a per-layer editor network g maps each
token's normalised pair z_t = [u_t; δ_t] to a pseudo-pair [ũ_t; δ̃_t] (eq. 2-4), and the edit is

    W ← W − α_l Σ_t δ̃_t ũ_tᵀ

with a learned step size α_l per layer. g starts as the identity (its last matrix is zero), so the
untrained MEND is one normalised gradient step. g and α are trained (section 3.1) so that the edit
makes the target likely on the edit's rephrases (L_e, the NLL of the target on the edited model)
while leaving unrelated inputs' predictions alone (L_loc, KL(p_base ‖ p_edited) over every token of
unrelated inputs), minimising c_edit · L_e + c_loc · L_loc; the gradient flows through the edit
into g and α (the model's own weights are frozen).

Here (differences from the paper and EasyEdit, in docs/methods.md): the edited matrices are the
MLP output (down) projections of the last three layers; g is one residual low-rank MLP per layer
(z + U₂ relu(U₁ z + b₁) + b₂, rank r), not one network shared by layers of the same shape with a
per-layer scale and offset; the normalisation statistics of u and δ are estimated once, on the
first train batches, and then fixed (the paper keeps running statistics during training); during
training the edit acts through forward hooks (output + (−ΔW) x), exactly the effect of W − ΔW.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from harness.api import (
    AppliedEdit,
    Capabilities,
    EditCase,
    SnapshotEdit,
    capture_modules,
    encode_answers,
)
from harness_plugins.methods.editor_training import (
    TRAINING_PROPERTIES,
    TrainedEditorMethod,
    draw,
    in_scope_prompts,
    need_fit,
    out_of_scope_probes,
    pick,
    training_loop,
    usable,
)
from harness_plugins.methods.lora_labels import IGNORE_INDEX, answer_labels, target_nll
from harness_plugins.rome_family.weights import (
    LAYERS_PROPERTY,
    add_to_mlp_out,
    mlp_out_weight_name,
    trainable_only,
)

if TYPE_CHECKING:
    from harness.api import AnswerBatch, ModelHandle, TrainingProgress

#: Train batches the normalisation statistics of u and δ are estimated on.
NORM_BATCHES = 4


class FactorEditor(nn.Module):
    """g for one layer: [u; δ] [N, d_in + d_out] -> (ũ [N, d_in], δ̃ [N, d_out]), and α."""

    def __init__(self, d_in: int, d_out: int, rank: int, edit_lr: float) -> None:
        super().__init__()
        self.d_in = d_in
        width = d_in + d_out
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.down = nn.Linear(width, rank)
        self.up = nn.Linear(rank, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.log_lr = nn.Parameter(torch.tensor(math.log(edit_lr)))

    def forward(self, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """ΔW [d_out, d_in] = α Σ_t δ̃_t ũ_tᵀ over the N token rows given."""
        z = (torch.cat([u, delta], -1) - self.mean) / self.std
        out = z + self.up(torch.relu(self.down(z)))
        pseudo_u, pseudo_delta = out[:, : self.d_in], out[:, self.d_in :]
        return self.log_lr.exp() * pseudo_delta.T @ pseudo_u


def per_case_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] each row's mean NLL of its labelled tokens, each predicted from the position before."""
    nll = nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )
    counted = (labels[:, 1:] != IGNORE_INDEX).sum(-1).clamp(min=1)
    return nll.sum(-1) / counted


class Factors:
    """u and δ of every edited layer for one batch's fine-tuning loss, over the token rows where
    both are nonzero (pads and positions after the answer drop out). The loss is the sum over
    cases of each case's mean target NLL, so a case's δ has one scale whether it is edited alone
    or in a batch (with the batch's mean, δ would shrink with the batch size, and an editor trained
    on batches of 4 would overshoot on single edits by the same factor)."""

    def __init__(self, handle: ModelHandle, layers: Sequence[int], batch: AnswerBatch) -> None:
        names = {handle.adapter.mlp_out_name(layer): layer for layer in layers}
        zeros: dict[str, torch.Tensor] = {}

        def add_zero(name: str, output: torch.Tensor) -> torch.Tensor:
            zeros[name] = torch.zeros_like(output, requires_grad=True)
            return output + zeros[name]

        with (
            torch.enable_grad(),
            capture_modules(handle, list(names), inputs=True, edit_output=add_zero) as seen,
        ):
            logits = handle.model(**batch.model_inputs()).logits
            loss = per_case_nll(logits, answer_labels(batch)).sum()
            grads = torch.autograd.grad(loss, [zeros[n] for n in names])
        self.pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for (name, layer), grad in zip(names.items(), grads, strict=True):
            u = seen.inputs[name][0].detach().flatten(0, 1).float()
            delta = grad.detach().flatten(0, 1).float()
            keep = (u != 0).any(-1) & (delta != 0).any(-1)
            self.pairs[layer] = (u[keep], delta[keep])


class Editor:
    """What MEND trains: one `FactorEditor` per edited layer."""

    def __init__(self, handle: ModelHandle, hparams: Mapping[str, Any]) -> None:
        self.handle = handle
        self.layers = list(hparams["layers"])
        d_in, d_out = handle.adapter.intermediate_size, handle.adapter.hidden_size
        self.nets = nn.ModuleDict(
            {
                str(layer): FactorEditor(d_in, d_out, hparams["rank"], hparams["edit_lr"])
                for layer in self.layers
            }
        ).to(handle.device)

    def deltas(self, cases: Sequence[EditCase]) -> dict[int, torch.Tensor]:
        """ΔW per layer [d_out, d_in] for editing `cases` on the model as it is now."""
        factors = Factors(self.handle, self.layers, _batch(self.handle, cases, [c.prompt for c in cases]))
        return {layer: self.nets[str(layer)](*factors.pairs[layer]) for layer in self.layers}

    @torch.no_grad()
    def estimate_norms(self, batches: Sequence[Sequence[EditCase]]) -> None:
        """Mean and standard deviation of [u; δ] per dimension over the batches' token rows."""
        rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        for cases in batches:
            factors = Factors(self.handle, self.layers, _batch(self.handle, cases, [c.prompt for c in cases]))
            for layer, (u, delta) in factors.pairs.items():
                rows[layer].append(torch.cat([u, delta], -1))
        for layer, parts in rows.items():
            z = torch.cat(parts)
            net = self.nets[str(layer)]
            net.mean.copy_(z.mean(0))
            net.std.copy_(z.std(0).clamp(min=1e-6) if len(z) > 1 else torch.ones_like(net.std))

    def loss(
        self,
        cases: Sequence[EditCase],
        unrelated: Sequence[tuple[str, str]],
        generator: torch.Generator,
        hparams: Mapping[str, Any],
    ) -> torch.Tensor:
        """c_edit · L_e + c_loc · L_loc for editing `cases` (paper, section 3.1)."""
        deltas = self.deltas(cases)
        prompts = [pick(in_scope_prompts(c), generator) for c in cases]
        edited = _batch(self.handle, cases, prompts)
        with self.applied(deltas):
            logits = self.handle.model(**edited.model_inputs()).logits
        edit_loss = target_nll(logits, answer_labels(edited))
        if not unrelated:
            return hparams["c_edit"] * edit_loss
        local = encode_answers(
            self.handle.tokenizer, [p for p, _ in unrelated], [a for _, a in unrelated], padding_side="right"
        ).to(self.handle.device)
        with torch.no_grad():
            base = self.handle.model(**local.model_inputs()).logits.float().log_softmax(-1)
        with self.applied(deltas):
            post = self.handle.model(**local.model_inputs()).logits.float().log_softmax(-1)
        mask = local.attention_mask.bool()
        kl = (base.exp() * (base - post)).sum(-1)[mask].mean()
        return hparams["c_edit"] * edit_loss + hparams["c_loc"] * kl

    def applied(self, deltas: Mapping[int, torch.Tensor]) -> _Hooked:
        """The edits W − ΔW in effect as forward hooks, differentiable in ΔW."""
        return _Hooked(
            self.handle, {self.handle.adapter.mlp_out_name(layer): d for layer, d in deltas.items()}
        )


class _Hooked:
    """Forward hooks adding −x ΔWᵀ to the named modules' outputs (their input x) for a `with` block."""

    def __init__(self, handle: ModelHandle, deltas: Mapping[str, torch.Tensor]) -> None:
        self.handle = handle
        self.deltas = deltas
        self.hooks: list[Any] = []

    def __enter__(self) -> None:
        for name, delta in self.deltas.items():

            def hook(
                module: nn.Module, args: tuple[Any, ...], output: torch.Tensor, delta: torch.Tensor = delta
            ) -> torch.Tensor:
                return output - nn.functional.linear(args[0].float(), delta).to(output.dtype)

            self.hooks.append(self.handle.adapter.module(name).register_forward_hook(hook))

    def __exit__(self, *exc: object) -> None:
        while self.hooks:
            self.hooks.pop().remove()


def _batch(handle: ModelHandle, cases: Sequence[EditCase], prompts: Sequence[str]) -> AnswerBatch:
    return encode_answers(
        handle.tokenizer, list(prompts), [c.target_new for c in cases], padding_side="right"
    ).to(handle.device)


class MEND(TrainedEditorMethod):
    name: ClassVar[str] = "mend"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=True, sequential=True, needs_training=True, edits_weights=True
    )
    tuning_hint: ClassVar[str] = "steps (the training budget), edit_lr, c_loc"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **TRAINING_PROPERTIES,
            "layers": {**LAYERS_PROPERTY, "description": "layers whose MLP output matrix is edited"},
            "rank": {"type": "integer", "minimum": 1, "default": 64, "description": "hidden width of g"},
            "lr": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1e-3,
                "description": "Adam step size of g",
            },
            "lr_lr": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 0.1,
                "description": "Adam step size of the log edit step sizes log α",
            },
            "edit_lr": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1e-4,
                "description": "α at the start (the untrained editor's step size)",
            },
            "c_edit": {"type": "number", "minimum": 0, "default": 1.0, "description": "weight of L_e"},
            "c_loc": {"type": "number", "minimum": 0, "default": 1.0, "description": "weight of L_loc"},
        },
        "required": ["layers"],
    }

    def fit(
        self,
        handle: ModelHandle,
        train_cases: Sequence[EditCase],
        hparams: Mapping[str, Any],
        *,
        progress: TrainingProgress | None = None,
    ) -> None:
        """Train g and α on the train split (or load them, when trained before on the same)."""
        cases = usable(train_cases, self.name)
        torch.manual_seed(hparams["seed"])
        editor = Editor(handle, hparams)
        loop = training_loop(self.name, handle, cases, hparams, progress)
        size = hparams["train_batch"]
        with trainable_only(handle.model, ()):
            if not loop.path.exists():
                editor.estimate_norms(
                    [draw(cases, size, loop.generator(-1 - i)) for i in range(NORM_BATCHES)]
                )
            nets = editor.nets.values()
            optimizer = torch.optim.Adam(
                [
                    {"params": [p for net in nets for n, p in net.named_parameters() if n != "log_lr"]},
                    {"params": [net.log_lr for net in nets], "lr": hparams["lr_lr"]},
                ],
                lr=hparams["lr"],
            )

            def loss_at(step: int) -> torch.Tensor:
                generator = loop.generator(step)
                batch = draw(cases, size, generator)
                unrelated = [probe for c in batch for probe in out_of_scope_probes(c)]
                return editor.loss(batch, unrelated, generator, hparams)

            loop.run({"nets": editor.nets}, optimizer, loss_at)
        editor.nets.requires_grad_(False)
        self.editor = editor

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        need_fit(self.editor, handle, self.name)
        snapshot = handle.snapshot([mlp_out_weight_name(handle, layer) for layer in self.editor.layers])
        with trainable_only(handle.model, ()):
            deltas = self.editor.deltas(cases)
        for layer, delta in deltas.items():
            add_to_mlp_out(handle, layer, -delta.detach())
        return SnapshotEdit(handle, snapshot)
