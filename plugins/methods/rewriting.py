"""What ROME and MEMIT share: where the subject is, reading keys and hidden states there, and
optimizing the value that makes the model say the new target (`compute_z` in the papers).

Shapes: d_in = MLP inner width (keys), d = hidden size (values), n = edits, T = templates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from harness.api import EditCase, HarnessError
from harness.models.tokenization import PromptBatch, encode_answers, encode_prompts, join_prompt_answer
from harness.second_moment import StatsConfig
from harness_plugins.methods.edit_math import clamp_norm
from harness_plugins.methods.losses import answer_logits, answer_nll
from harness_plugins.methods.templates import SLOT, fill
from harness_plugins.methods.weights import trainable_only

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle

#: Hyperparameters of the value optimization (ROME's `compute_v`, MEMIT's `compute_z`).
VALUE_SCHEMA: dict[str, Any] = {
    "v_num_grad_steps": {"type": "integer", "minimum": 1, "default": 25},
    "v_lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.5},
    "v_weight_decay": {"type": "number", "minimum": 0, "default": 1e-3},
    "clamp_norm_factor": {"type": "number", "exclusiveMinimum": 0, "default": 4.0},
    "kl_factor": {"type": "number", "minimum": 0, "default": 0.0625},
    "context_templates": {
        "type": "array",
        "items": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
        "description": "[[sampled tokens, count], ...] of context prefixes",
    },
}
#: Hyperparameters of the second-moment statistics (see harness.second_moment).
MOM2_SCHEMA: dict[str, Any] = {
    "mom2_corpus": {"type": "string", "default": "model"},
    "mom2_samples": {"type": "integer", "minimum": 1, "default": 256},
    "mom2_tokens": {"type": "integer", "minimum": 2, "default": 128},
    "mom2_dtype": {"enum": ["float32", "float64"], "default": "float32"},
}
#: Stop the value optimization once the target's NLL is this low (the reference's threshold).
NLL_STOP = 0.05


def stats_config(hparams: Mapping[str, Any]) -> StatsConfig:
    return StatsConfig(
        corpus=hparams["mom2_corpus"],
        samples=hparams["mom2_samples"],
        tokens=hparams["mom2_tokens"],
        dtype=hparams["mom2_dtype"],
    )


def subject_problem(case: EditCase, method: str) -> str | None:
    """Why `method` cannot key an edit on this case's subject, or None.

    A case without a subject (Sanitation's test questions) is keyed at the prompt's last token,
    ROME's `fact_token: last`; a subject that the prompt does not contain is a data error."""
    if case.subject and case.subject not in case.prompt:
        return (
            f"{method}: case {case.case_id}: field 'subject' ({case.subject!r}) does not occur in "
            f"field 'prompt' ({case.prompt!r})"
        )
    return None


@dataclass(frozen=True)
class Rewrite:
    """One requested edit as ROME and MEMIT see it: a prompt, the subject in it ("" for none), and
    a target."""

    prompt: str
    subject: str
    target: str

    @classmethod
    def of(cls, case: EditCase, method: str) -> Rewrite:
        problem = subject_problem(case, method)
        if problem:
            raise HarnessError(problem)
        return cls(case.prompt, case.subject, case.target_new)

    def subject_end(self, template: str = SLOT) -> int:
        """Character index in `fill(template, prompt)` just past the subject, or past the prompt
        when there is no subject: the edit is keyed at the last token before it."""
        if not self.subject:
            return template.index(SLOT) + len(self.prompt)
        return template.index(SLOT) + self.prompt.index(self.subject) + len(self.subject)


def last_token_before(tokenizer, text: str, char_end: int) -> int:
    """Index of the last token of `text` (encoded as the harness encodes it) that starts before
    `char_end`: the subject's last token when `char_end` is where the subject ends."""
    offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True).offset_mapping
    inside = [i for i, (lo, hi) in enumerate(offsets) if hi > lo and lo < char_end]
    if not inside:
        raise HarnessError(f"no token of {text!r} lies before character {char_end}")
    return inside[-1]


def _capture(module: torch.nn.Module, what: str, store: list[torch.Tensor]):
    if what == "input":
        return module.register_forward_pre_hook(lambda _m, args: store.append(args[0]))
    return module.register_forward_hook(
        lambda _m, _args, out: store.append(out[0] if isinstance(out, tuple) else out)
    )


@torch.no_grad()
def read_at(
    handle: ModelHandle, module_name: str, texts: Sequence[str], positions: Sequence[int], what: str
) -> torch.Tensor:
    """A module's input or output at one position per text. -> [len(texts), width]"""
    batch = encode_prompts(handle.tokenizer, texts, padding_side="right").to(handle.device)
    store: list[torch.Tensor] = []
    hook = _capture(handle.adapter.module(module_name), what, store)
    try:
        handle.model(**batch.model_inputs(), use_cache=False)
    finally:
        hook.remove()
    rows = torch.arange(len(texts), device=handle.device)
    return store[0][rows, torch.tensor(positions, device=handle.device)].float()


def subject_reads(
    handle: ModelHandle, module_name: str, rewrites: Sequence[Rewrite], templates: Sequence[str], what: str
) -> torch.Tensor:
    """A module's input (keys) or output (hidden states) at the subject's last token, averaged over
    the context templates. -> [width, n]"""
    texts, positions = [], []
    for rw in rewrites:
        for template in templates:
            text = fill(template, rw.prompt)
            texts.append(text)
            positions.append(last_token_before(handle.tokenizer, text, rw.subject_end(template)))
    chunk = 64
    reads = torch.cat(
        [
            read_at(handle, module_name, texts[i : i + chunk], positions[i : i + chunk], what)
            for i in range(0, len(texts), chunk)
        ]
    )  # [n*T, width]
    return reads.view(len(rewrites), len(templates), -1).mean(1).T


class _AddAt:
    """Forward hook adding δ to a module's output at given (row, position) pairs; with `record`, it
    also keeps the output there before the addition (the original value v₀)."""

    def __init__(self, delta: torch.Tensor) -> None:
        self.delta = delta
        self.rows = self.positions = torch.empty(0, dtype=torch.long)
        self.recorded: torch.Tensor | None = None
        self.record = False

    def at(self, positions: Sequence[int], record: bool = False) -> _AddAt:
        self.rows = torch.arange(len(positions))
        self.positions = torch.tensor(positions)
        self.record = record
        return self

    def __call__(self, _module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if self.record:
            self.recorded = hidden[self.rows, self.positions].detach().float().mean(0)
            self.record = False
        added = hidden.index_put(
            (self.rows.to(hidden.device), self.positions.to(hidden.device)),
            self.delta.to(hidden.dtype).expand(len(self.rows), -1),
            accumulate=True,
        )
        return (added, *output[1:]) if isinstance(output, tuple) else added


def _left_padded(batch: PromptBatch, positions: Sequence[int]) -> list[int]:
    """Token indices of the unpadded texts, moved to their places in the left-padded batch."""
    pads = batch.input_ids.shape[1] - batch.attention_mask.sum(-1)
    return [p + int(pad) for p, pad in zip(positions, pads, strict=True)]


def optimize_value(
    handle: ModelHandle, layer: int, rewrite: Rewrite, templates: Sequence[str], hparams: Mapping[str, Any]
) -> torch.Tensor:
    """δ [d] to add to layer `layer`'s MLP output at the subject's last token so that every
    templated prompt is followed by the target. Minimizes

        NLL(target | templated prompts; δ) + kl_factor · KL(p₀ ‖ p_δ)("{subject} is a")
        + v_weight_decay · ‖δ‖² / ‖v₀‖²

    with Adam, keeping ‖δ‖ ≤ clamp_norm_factor · ‖v₀‖ (v₀: the original MLP output there), and
    stopping once the NLL is below NLL_STOP. The KL term keeps what the model says about the subject
    in general, so that only the asked relation moves; a case without a subject has none.

    Each step is one forward and backward pass over every templated prompt, so its cost is what an
    edit costs. Batches are left-padded so that the loss needs the logits of the last few positions
    only (`answer_logits`); the KL prompt, needing only its last position, runs only when kl_factor
    is positive. No weight requires a gradient, so the backward pass stops at the edited layer.
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
    kl_rw = Rewrite(f"{rewrite.subject} is a", rewrite.subject, rewrite.target)
    kl_inputs = encode_prompts(tokenizer, [kl_rw.prompt]).to(handle.device).model_inputs()
    kl_position = [last_token_before(tokenizer, kl_rw.prompt, kl_rw.subject_end())]

    delta = torch.zeros(handle.adapter.hidden_size, device=handle.device, requires_grad=True)
    adder = _AddAt(delta)
    optimizer = torch.optim.Adam([delta], lr=hparams["v_lr"])
    kl_init: torch.Tensor | None = None
    hook = handle.adapter.module(handle.adapter.mlp_out_name(layer)).register_forward_hook(adder)
    try:
        with trainable_only(handle.model, []):
            for step in range(hparams["v_num_grad_steps"]):
                optimizer.zero_grad()
                adder.at(positions, record=step == 0)
                nll = answer_nll(answer_logits(handle.model, batch), batch)
                if step == 0:
                    v0 = adder.recorded
                if nll.item() < NLL_STOP:
                    break
                loss = nll + hparams["v_weight_decay"] * delta.norm() ** 2 / v0.norm() ** 2
                if kl_factor > 0:
                    adder.at(kl_position)
                    kl_logits = handle.model(**kl_inputs, use_cache=False, logits_to_keep=1).logits[0, -1]
                    kl_lp = torch.log_softmax(kl_logits.float(), dim=-1)
                    if kl_init is None:
                        kl_init = kl_lp.detach()
                    loss = loss + kl_factor * (kl_init.exp() * (kl_init - kl_lp)).sum()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    delta.copy_(clamp_norm(delta, v0, hparams["clamp_norm_factor"]))
    finally:
        hook.remove()
    return delta.detach()
