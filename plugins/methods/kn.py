"""KN: knowledge neurons (Dai et al., "Knowledge Neurons in Pretrained Transformers", ACL 2022).

A knowledge neuron is one intermediate unit of an MLP: an entry of the activation a [d_in] that the
down-projection reads, whose value vector is the matching column of the down-projection W [d, d_in]
(the MLP adds Σ_i a_i · W[:, i] to the residual stream). The method

1. scores every neuron of the searched layers by integrated gradients (the paper's attribution)
   of the probability of one token t₁ at the prompt's last position (the target's first token, or
   with `attribute: prediction` the model's present answer o):
       Attr(a_i) = a_i · ∫₀¹ ∂p(t₁ | prompt; α·a) / ∂a_i dα,
   the path scaling the whole layer's activation at that token from 0 (the baseline) to a, and the
   integral taken as a midpoint Riemann sum over `steps` points;
2. keeps, per prompt, the neurons above `adaptive_threshold` × the largest attribution, and across
   prompts (the edit prompt, with `paraphrases` its rephrasings too) those found for more than
   `refine_share` of them (the paper's refining step);
3. writes the new fact into their value vectors (the paper's "updating facts"):
       W[:, i] ← W[:, i] + c_i · (λ_new · Σ_t e(t) − λ_old · e(o)),
   with e(·) a token's output embedding, t the target's tokens, o the model's present next token,
   and c_i = sign(a_i) / Σ_j |a_j| (`scale: at_prompt`: the shift is written once at the edited
   prompt) or sign(a_i) (`per_neuron`, the paper's form).

Differences from the paper and the reference toolkit are listed in docs/methods.md ("KN"). Shapes:
d = hidden size, d_in = MLP inner width, S = steps, R = rows of one forward pass.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
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
    encode_prompts,
)
from harness_plugins.rome_family.weights import (
    LAYERS_PROPERTY,
    add_to_mlp_out,
    mlp_out_weight_name,
    trainable_only,
)

if TYPE_CHECKING:
    from harness.api import ModelHandle


#: The searched layers start at this relative depth: Dai et al. find knowledge neurons mostly in the
#: top layers, and on SmolLM2 the lower layers' neurons that pass the threshold fire on every text.
UPPER_HALF = 0.5


class _ScaleLast:
    """Forward pre-hook on one layer's down-projection: its input at the last position of the rows
    `rows` is replaced by `values` [len(rows), d_in] (a leaf that gradients are taken for)."""

    def __init__(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        self.rows = rows
        self.values = values

    def __call__(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        index = (
            self.rows.to(hidden.device),
            torch.full_like(self.rows, hidden.shape[1] - 1).to(hidden.device),
        )
        return (hidden.index_put(index, self.values.to(hidden.dtype)), *args[1:])


def last_activations(handle: ModelHandle, prompt: str, layers: Sequence[int]) -> torch.Tensor:
    """The down-projections' inputs (the neurons' activations) at the prompt's last token.
    -> [len(layers), d_in], float32"""
    names = [handle.adapter.mlp_out_name(layer) for layer in layers]
    batch = encode_prompts(handle.tokenizer, [prompt]).to(handle.device)
    with torch.no_grad(), capture_modules(handle, names, inputs=True) as seen:
        handle.model(**batch.model_inputs(), use_cache=False)
    return torch.stack([seen.inputs[name][0][0, -1].float() for name in names])


def midpoints(steps: int) -> torch.Tensor:
    """The scaling factors α_k = (k − ½)/S, k = 1..S, of the midpoint rule on [0, 1]. -> [S]"""
    return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps


def integrated_gradients(
    handle: ModelHandle,
    prompt: str,
    token: int,
    layers: Sequence[int],
    steps: int,
    rows_per_pass: int,
) -> torch.Tensor:
    """Integrated-gradients attribution of p(token | prompt) to every MLP neuron of `layers` at the
    prompt's last position, one layer's path at a time (Dai et al.'s attribution, midpoint rule).
    By completeness, a layer's attributions sum to p(a) − p(0) up to the rule's O(1/S²) error,
    where p(·) is the probability with that layer's activation at the last token set to the
    argument. -> [len(layers), d_in], float32

    The prompt's other positions do not depend on the last one (causal attention), so they are
    encoded once into a key/value cache, and each (layer, α) row of the Riemann sum costs the
    forward and backward pass of one token.
    """
    adapter = handle.adapter
    names = [adapter.mlp_out_name(layer) for layer in layers]
    ids = encode_prompts(handle.tokenizer, [prompt]).to(handle.device).input_ids  # [1, T]
    last = ids.shape[1] - 1
    activations = last_activations(handle, prompt, layers)
    prefix = None
    if last > 0:
        with torch.no_grad():
            prefix = handle.model(input_ids=ids[:, :last], use_cache=True).cache
    alphas = midpoints(steps).to(handle.device)
    plan = [(li, k) for li in range(len(layers)) for k in range(steps)]
    sums = torch.zeros_like(activations)  # Σ_k ∂p/∂a at α_k·a, per layer
    with trainable_only(handle.model, []):
        for start in range(0, len(plan), rows_per_pass):
            chunk = plan[start : start + rows_per_pass]
            n = len(chunk)
            hooks, leaves = [], {}
            try:
                for li, name in enumerate(names):
                    rows = [r for r, (lj, _) in enumerate(chunk) if lj == li]
                    if not rows:
                        continue
                    scale = alphas[[chunk[r][1] for r in rows]]
                    leaves[li] = (scale[:, None] * activations[li][None, :]).requires_grad_(True)
                    hook = _ScaleLast(torch.tensor(rows), leaves[li])
                    hooks.append(adapter.module(name).register_forward_pre_hook(hook))
                if prefix is None:
                    out = handle.model(input_ids=ids.expand(n, -1), use_cache=False, logits_to_keep=1)
                else:
                    cache = copy.deepcopy(prefix)
                    cache.batch_repeat_interleave(n)
                    out = handle.model(
                        input_ids=ids[:, last:].expand(n, -1),
                        attention_mask=torch.ones(n, last + 1, dtype=torch.long, device=handle.device),
                        cache=cache,
                        use_cache=True,
                    )
                probs = torch.softmax(out.logits[:, -1].float(), dim=-1)[:, token]  # [n]
                grads = torch.autograd.grad(probs.sum(), list(leaves.values()))
            finally:
                for hook in hooks:
                    hook.remove()
            for li, grad in zip(leaves, grads, strict=True):
                sums[li] += grad.float().sum(0)
    return activations * sums / steps


def found_neurons(scores: Sequence[torch.Tensor], threshold: float, share: float) -> list[tuple[int, int]]:
    """The neurons (layer position in the scores, unit) whose attribution exceeds `threshold` × that
    prompt's largest attribution, kept when found for more than `share` of the prompts (the paper's
    coarse threshold t and refining share p), in a stable order. scores: per prompt [L, d_in]."""
    counts: Counter[tuple[int, int]] = Counter()
    for score in scores:
        top = float(score.max())
        if top <= 0:
            continue
        for layer, unit in torch.nonzero(score > threshold * top).tolist():
            counts[(layer, unit)] += 1
    return sorted(n for n, c in counts.items() if c > share * len(scores))


def value_coefficients(activations: torch.Tensor, scale: str) -> torch.Tensor:
    """How much of the shift u each found neuron's value vector receives, given the neurons'
    activations a [n] at the edited prompt: sign(a_i) ("per_neuron", the paper's form: every value
    vector moves by u), or sign(a_i) / Σ_j |a_j| ("at_prompt": Σ_i a_i c_i = 1, so the MLPs
    together write exactly u at the edited prompt's last token, however many neurons were found
    and however large their activations). -> [n]"""
    signs = torch.sign(activations)
    return signs if scale == "per_neuron" else signs / activations.abs().sum().clamp_min(1e-12)


def answer_tokens(handle: ModelHandle, prompt: str, answer: str) -> list[int]:
    """The tokens of `answer` after `prompt`, exactly those the evaluator scores."""
    batch = encode_answers(handle.tokenizer, [prompt], [answer])
    return batch.input_ids[0, int(batch.answer_start[0]) : int(batch.answer_end[0])].tolist()


class KN(Method):
    name: ClassVar[str] = "kn"
    capabilities: ClassVar[Capabilities] = Capabilities(batch=True, sequential=True)
    tuning_hint: ClassVar[str] = (
        "lambda_new (how far each value vector moves), adaptive_threshold (how many neurons)"
    )
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "layers": {**LAYERS_PROPERTY, "description": "layers whose MLP neurons are searched"},
            "steps": {
                "type": "integer",
                "minimum": 1,
                "default": 20,
                "description": "points of the integrated-gradients Riemann sum (the paper's m)",
            },
            "rows_per_pass": {
                "type": "integer",
                "minimum": 1,
                "default": 128,
                "description": "(layer, step) rows computed in one forward and backward pass",
            },
            "adaptive_threshold": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.2,
                "description": "keep neurons above this fraction of the prompt's largest attribution",
            },
            "refine_share": {
                "type": "number",
                "minimum": 0,
                "exclusiveMaximum": 1,
                "default": 0.5,
                "description": "keep neurons found for more than this share of the prompts",
            },
            "paraphrases": {
                "type": "boolean",
                "default": False,
                "description": "search the case's rephrasings too (also its generalization probes)",
            },
            "attribute": {
                "enum": ["target", "prediction"],
                "default": "target",
                "description": "whose probability the neurons are attributed: the target's first token, or "
                "the model's present answer (the paper and the reference)",
            },
            "scale": {
                "enum": ["at_prompt", "per_neuron"],
                "default": "at_prompt",
                "description": "the shift is shared so that the edited prompt receives it once, or every "
                "value vector receives it whole (the paper and the reference)",
            },
            "lambda_old": {"type": "number", "minimum": 0, "default": 1.0},
            "lambda_new": {"type": "number", "exclusiveMinimum": 0, "default": 20.0},
        },
        "required": ["layers"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        return {"layers": list(range(handle.adapter.layer_at(UPPER_HALF), handle.adapter.num_layers))}

    def neurons(
        self, handle: ModelHandle, case: EditCase, hparams: Mapping[str, Any]
    ) -> tuple[list[tuple[int, int]], int]:
        """The case's knowledge neurons as (layer, unit), and the old answer's token: the model's
        most likely next token after the prompt. The attributed probability is that of the
        target's first token (`attribute: target`) or of the old answer (`prediction`)."""
        with torch.no_grad():
            batch = encode_prompts(handle.tokenizer, [case.prompt]).to(handle.device)
            old = int(handle.model(**batch.model_inputs(), use_cache=False).logits[0, -1].argmax())
        token = old
        if hparams["attribute"] == "target":
            token = answer_tokens(handle, case.prompt, case.target_new)[0]
        layers = list(hparams["layers"])
        prompts = [case.prompt, *(case.rephrases if hparams["paraphrases"] else ())]
        scores = [
            integrated_gradients(handle, p, token, layers, hparams["steps"], hparams["rows_per_pass"])
            for p in prompts
        ]
        found = found_neurons(scores, hparams["adaptive_threshold"], hparams["refine_share"])
        return [(layers[li], unit) for li, unit in found], old

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        if not cases:
            raise HarnessError("kn: apply needs at least one edit case")
        embedding = handle.adapter.output_embedding_weight().detach().float()  # [V, d]
        updates: dict[int, torch.Tensor] = {}  # layer -> ΔW [d, d_in]
        for case in cases:  # every case's neurons are found on the model before this batch
            neurons, old = self.neurons(handle, case, hparams)
            if not neurons:
                continue
            target = answer_tokens(handle, case.prompt, case.target_new)
            shift = hparams["lambda_new"] * embedding[target].sum(0) - hparams["lambda_old"] * embedding[old]
            layers = sorted({layer for layer, _ in neurons})
            acts = last_activations(handle, case.prompt, layers)  # [layers, d_in]
            found = torch.stack([acts[layers.index(layer), unit] for layer, unit in neurons])
            coefficients = value_coefficients(found, hparams["scale"])
            for (layer, unit), c in zip(neurons, coefficients.tolist(), strict=True):
                delta = updates.setdefault(
                    layer, torch.zeros(embedding.shape[1], acts.shape[1], device=handle.device)
                )
                delta[:, unit] += c * shift
        snapshot = handle.snapshot([mlp_out_weight_name(handle, layer) for layer in updates])
        for layer, delta in updates.items():
            add_to_mlp_out(handle, layer, delta)
        return SnapshotEdit(handle, snapshot)
