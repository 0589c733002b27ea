"""The value ROME and MEMIT write: the δ added to a layer's MLP output at the subject's last token
that makes the model say the new target (`compute_v` in ROME, `compute_z` in MEMIT).

Shapes: d = hidden size (values), T = templates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from harness.api import (
    HarnessError,
    PartialForward,
    PromptBatch,
    encode_answers,
    encode_prompts,
    join_prompt_answer,
)
from harness_plugins.rome_family.keys import Rewrite, last_token_before
from harness_plugins.rome_family.losses import answer_nll, logits_needed
from harness_plugins.rome_family.templates import fill
from harness_plugins.rome_family.updates import clamp_norm
from harness_plugins.rome_family.weights import trainable_only

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Hyperparameters of the value optimization (ROME's `compute_v`, MEMIT's `compute_z`). The last four
#: choose between the papers' objective and the reference code's reading of it: docs/methods.md
#: ("The value optimization") gives the defaults' reasons and the settings that reproduce the
#: reference.
VALUE_SCHEMA: dict[str, Any] = {
    "v_num_grad_steps": {
        "type": "integer",
        "minimum": 2,
        "default": 25,
        "description": "evaluations of the loss, as the reference counts them: at most one fewer Adam steps",
    },
    "v_lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.5},
    "v_weight_decay": {"type": "number", "minimum": 0, "default": 1e-3},
    "clamp_norm_factor": {"type": "number", "exclusiveMinimum": 0, "default": 4.0},
    "kl_factor": {"type": "number", "minimum": 0, "default": 0.0625},
    "kl_position": {
        "enum": ["next_token", "subject_last"],
        "default": "next_token",
        "description": "the KL term's distribution: the token after '{subject} is a' (the paper) or the "
        "token after the subject (the reference code)",
    },
    "kl_direction": {
        "enum": ["edited_original", "original_edited"],
        "default": "edited_original",
        "description": "KL(edited || original) (the paper and the reference code) or KL(original || edited)",
    },
    "weight_decay_form": {
        "enum": ["squared", "norm"],
        "default": "squared",
        "description": "the decay term: ||delta||^2 / ||v0||^2, or ||delta|| / ||v0||^2 (the reference code)",
    },
    "stop_on": {
        "enum": ["total_loss", "nll"],
        "default": "total_loss",
        "description": "stop once this falls below 0.05: the whole loss (the reference code) or the "
        "target's NLL alone",
    },
    "context_templates": {
        "type": "array",
        "items": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
        "description": "[[sampled tokens, count], ...] of context prefixes",
    },
}
#: The reference's stopping threshold (`if loss < 5e-2: break`), applied to what `stop_on` names.
STOP_BELOW = 0.05


class _AddAt:
    """Forward hook adding δ to a module's output at one position per row; with `record_rows`, it
    also keeps the output before the addition, averaged over the first `record_rows` rows (the
    original value v₀), in the next call."""

    def __init__(self, delta: torch.Tensor) -> None:
        self.delta = delta
        self.rows = self.positions = torch.empty(0, dtype=torch.long)
        self.recorded: torch.Tensor | None = None
        self.record_rows = 0

    def at(self, positions: Sequence[int], record_rows: int = 0) -> _AddAt:
        self.rows = torch.arange(len(positions))
        self.positions = torch.tensor(positions)
        self.record_rows = record_rows
        return self

    def __call__(self, _module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if self.record_rows:
            kept = slice(0, self.record_rows)
            self.recorded = hidden[self.rows[kept], self.positions[kept]].detach().float().mean(0)
            self.record_rows = 0
        added = hidden.index_put(
            (self.rows.to(hidden.device), self.positions.to(hidden.device)),
            self.delta.to(hidden.dtype).expand(len(self.rows), -1),
            accumulate=True,
        )
        return (added, *output[1:]) if isinstance(output, tuple) else added


def _stacked(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], pad_id: int
) -> dict[str, torch.Tensor]:
    """Two left-padded batches (`model_inputs()`) as one, the narrower one padded on the left to the
    wider one's width: rows keep their texts right-aligned, so counted from the right every column
    is where it was."""
    width = max(first["input_ids"].shape[1], second["input_ids"].shape[1])
    fill_with = {"input_ids": pad_id, "attention_mask": 0, "position_ids": 0}

    def widened(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        extra = width - inputs["input_ids"].shape[1]
        return {k: torch.nn.functional.pad(v, (extra, 0), value=fill_with[k]) for k, v in inputs.items()}

    first, second = widened(first), widened(second)
    return {k: torch.cat([first[k], second[k]]) for k in fill_with}


def _left_padded(batch: PromptBatch, positions: Sequence[int]) -> list[int]:
    """Token indices of the unpadded texts, moved to their places in the left-padded batch."""
    pads = batch.input_ids.shape[1] - batch.attention_mask.sum(-1)
    return [p + int(pad) for p, pad in zip(positions, pads, strict=True)]


@dataclass(frozen=True)
class ValueStep:
    """One evaluation of the value loss: the δ [d] it was taken at and its terms, unweighted.

    total = nll + kl_factor · kl + v_weight_decay · decay; kl in nats (0 without the KL term),
    decay the ratio `weight_decay_form` names."""

    delta: torch.Tensor
    nll: float
    kl: float
    decay: float
    total: float


def kl_divergence(original: torch.Tensor, edited: torch.Tensor, direction: str) -> torch.Tensor:
    """KL divergence in nats between two distributions given as log-probabilities [V].

    "edited_original" is KL(p_δ ‖ p₀) = Σ p_δ (log p_δ − log p₀): the ROME paper's term (eq. 4) and
    the reference's `kl_div(kl_distr_init, kl_log_probs, log_target=True)`, whose first argument is
    the log q of KL(p ‖ q). "original_edited" is KL(p₀ ‖ p_δ)."""
    p, q = (edited, original) if direction == "edited_original" else (original, edited)
    return (p.exp() * (p - q)).sum()


def decay_ratio(delta: torch.Tensor, v0: torch.Tensor, form: str) -> torch.Tensor:
    """The decay term before its factor: ‖δ‖²/‖v₀‖² ("squared", scale-free) or the reference's
    ‖δ‖/‖v₀‖² ("norm", which shrinks as 1/‖v₀‖ on a model with larger hidden states)."""
    size = delta.norm() ** 2 if form == "squared" else delta.norm()
    return size / v0.norm() ** 2


def optimize_value(
    handle: ModelHandle,
    layer: int,
    rewrite: Rewrite,
    templates: Sequence[str],
    hparams: Mapping[str, Any],
    *,
    v0: torch.Tensor | None = None,
    trace: list[ValueStep] | None = None,
    modules: Sequence[str] | None = None,
) -> torch.Tensor:
    """δ [d] to add to layer `layer`'s MLP output at the subject's last token so that every
    templated prompt is followed by the target. Minimizes, with Adam,

        NLL(target | templated prompts; δ) + kl_factor · KL(p_δ ‖ p₀) + v_weight_decay · ‖δ‖²/‖v₀‖²

    (the forms that `kl_direction`, `kl_position` and `weight_decay_form` choose), keeping
    ‖δ‖ ≤ clamp_norm_factor · ‖v₀‖. The KL term compares the model's next-token distribution after
    "{subject} is a" (or after the subject, `kl_position`), δ added at the subject, with the
    unedited one: it holds what the model says about the subject in general, so that only the asked
    relation moves; a case without a subject has none. v₀ [d] is what δ is measured against: by
    default the original MLP output at the subject, averaged over the templates (ROME's v* adds δ
    to it); MEMIT passes the hidden state its z = h + δ starts from. `trace`, when given, receives
    every evaluation (`ValueStep`).

    `modules`, when given, names m modules of layer `layer` or above (PMET: the layer's attention
    and MLP output) whose outputs each get their own δ, optimized jointly: one Adam over all, the
    decay the sum of theirs, each clamped against its own v₀, the module's original output at the
    subject (template-averaged; `v0` then must be None). Returns δ [m, d] in their order. Without
    it the one module is layer `layer`'s MLP output and δ is [d], as above.

    Steps, as the reference takes them: evaluate the loss at δ; stop if what `stop_on` names is
    below STOP_BELOW or this was evaluation number `v_num_grad_steps`; else take an Adam step and
    clamp. So δ is always one the loss was evaluated at, after at most v_num_grad_steps − 1 steps.

    Each evaluation is one forward pass over every templated prompt and the short KL prompt, in one
    left-padded batch, each step one backward pass, both over what δ can change only
    (`PartialForward`): layers `layer`..N at the columns from the first subject token δ is added at
    on; the layers below and the columns before are computed once, as are their key/value caches.
    With left padding the losses need the logits of the last few positions only (`logits_needed`);
    no weight requires a gradient, so the backward pass stops at the edited layer.
    """
    tokenizer = handle.tokenizer
    prompts = [fill(t, rewrite.prompt) for t in templates]
    batch = encode_answers(tokenizer, prompts, [rewrite.target] * len(prompts), padding_side="left")
    positions = _left_padded(
        batch,
        [
            last_token_before(tokenizer, join_prompt_answer(p, rewrite.target), rewrite.subject_end(t))
            for p, t in zip(prompts, templates, strict=True)
        ],
    )
    batch = batch.to(handle.device)
    kl_factor = hparams["kl_factor"] if rewrite.subject else 0.0  # no subject: nothing to keep
    # The KL prompt: δ goes in at the subject's last token; the distribution is read there
    # ("subject_last") or at the prompt's end ("next_token"), kl_keep columns from the right.
    kl_text = f"{rewrite.subject} is a"
    kl_inputs = encode_prompts(tokenizer, [kl_text]).to(handle.device).model_inputs()
    kl_subject = last_token_before(tokenizer, kl_text, len(rewrite.subject)) if kl_factor > 0 else 0
    length = kl_inputs["input_ids"].shape[1]
    kl_keep = length - kl_subject if hparams["kl_position"] == "subject_last" else 1
    # One batch serves both terms: the templated prompts, then the KL prompt as the last row. The
    # prompts' last column is left out: it is the target's last token, whose logits predict nothing
    # the loss reads and which no other column attends to.
    needed = logits_needed(batch) - 1  # logits the NLL reads: the last prompt token's to the last but one
    rows, inputs, keep = len(prompts), {k: v[:, :-1] for k, v in batch.model_inputs().items()}, needed
    if kl_factor > 0:
        inputs = _stacked(inputs, kl_inputs, tokenizer.pad_token_id)
        shift = inputs["input_ids"].shape[1] - (batch.input_ids.shape[1] - 1)
        positions = [p + shift for p in positions] + [kl_subject + inputs["input_ids"].shape[1] - length]
        keep = max(keep, kl_keep)
    start = min(positions)  # the first column δ reaches
    forward = PartialForward(handle, inputs, layer=layer, start=start)
    positions = [p - start for p in positions]

    steps = hparams["v_num_grad_steps"]
    names = [handle.adapter.mlp_out_name(layer)] if modules is None else list(modules)
    if modules is not None and v0 is not None:
        raise HarnessError("optimize_value: v0 is recorded per module when `modules` is given; pass None")
    deltas = [
        torch.zeros(handle.adapter.hidden_size, device=handle.device, requires_grad=True) for _ in names
    ]
    adders = [_AddAt(delta) for delta in deltas]
    optimizer = torch.optim.Adam(deltas, lr=hparams["v_lr"])
    kl_init: torch.Tensor | None = None
    v0s = None if v0 is None else [v0]
    hooks = [
        handle.adapter.module(name).register_forward_hook(a) for name, a in zip(names, adders, strict=True)
    ]
    try:
        with trainable_only(handle.model, []):
            for step in range(steps):
                optimizer.zero_grad()
                for adder in adders:
                    adder.at(positions, record_rows=rows if v0s is None else 0)
                logits = forward(logits_to_keep=keep).logits  # [rows (+1), keep, V]
                # answer_nll takes the logits up to the last column and ignores that one: zeros stand in.
                nll = answer_nll(torch.nn.functional.pad(logits[:rows, keep - needed :], (0, 0, 0, 1)), batch)
                if v0s is None:
                    v0s = [adder.recorded for adder in adders]
                kl = torch.zeros((), device=handle.device)
                if kl_factor > 0:
                    kl_lp = torch.log_softmax(logits[rows, keep - kl_keep].float(), dim=-1)
                    if kl_init is None:
                        kl_init = kl_lp.detach()
                    kl = kl_divergence(kl_init, kl_lp, hparams["kl_direction"])
                decays = [
                    decay_ratio(d, v, hparams["weight_decay_form"]) for d, v in zip(deltas, v0s, strict=True)
                ]
                decay = sum(decays[1:], decays[0])
                total = nll + kl_factor * kl + hparams["v_weight_decay"] * decay
                if trace is not None:
                    trace.append(
                        ValueStep(
                            _joined(deltas, modules).clone(),
                            nll.item(),
                            kl.item(),
                            decay.item(),
                            total.item(),
                        )
                    )
                watched = total if hparams["stop_on"] == "total_loss" else nll
                if watched.item() < STOP_BELOW or step == steps - 1:
                    break
                total.backward()
                optimizer.step()
                with torch.no_grad():
                    for delta, v in zip(deltas, v0s, strict=True):
                        delta.copy_(clamp_norm(delta, v, hparams["clamp_norm_factor"]))
    finally:
        for hook in hooks:
            hook.remove()
    return _joined(deltas, modules)


def _joined(deltas: Sequence[torch.Tensor], modules: Sequence[str] | None) -> torch.Tensor:
    """The optimized δ, detached: [d] for the one default module, [m, d] for named ones."""
    return deltas[0].detach() if modules is None else torch.stack([d.detach() for d in deltas])
