"""Applying a run's edits again, exactly as the run applied them (its hyperparameters, its seed per
case, its cases as handed to `apply`), to see what the run's rows cannot show: the edited model's
greedy generation for the edit prompt, and the weight change ΔW of each edit.

Only single-mode jobs are replayed: there each edit starts from the unedited model, so one edit
alone reproduces the model the row was scored on. Memory: one copy of the model's 2-D layer
parameters (the state before every edit), in the model's dtype, on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from harness.api import EditCase, encode_answers, encode_prompts, seed_everything
from harness_plugins.analysis.weights import (
    HIT_KS,
    VOCAB_COLUMNS,
    Change,
    changes,
    column_energy,
    column_tokens,
    hit_at_k,
    top_columns,
    top_share,
)

#: Tokens generated greedily after the edit prompt.
MAX_NEW_TOKENS = 16
#: Column bins of a sparsity heatmap row.
HEATMAP_BINS = 64


@dataclass
class LayerChange:
    """What one edit changed in one matrix, reduced to what the figures need: `layer`, `name`,
    `norm` ‖ΔW‖_F, `relative` ‖ΔW‖_F / ‖W‖_F, `top_share` (share of ‖ΔW‖² in the top 1% of
    columns) and `profile`, ‖ΔW[:, j]‖² summed into HEATMAP_BINS bins over the columns, divided by
    ‖ΔW‖² (sums to 1)."""

    layer: int | None
    name: str
    norm: float
    relative: float
    top_share: float
    profile: list[float]


@dataclass
class Replayed:
    """One edit applied again: the case, its method, the greedy `generation` after the edit prompt
    (with an in-context edit's context before it), the changed matrices, and (weights changed) the
    vocabulary view of its top columns: `hits` {"before@10": bool, "after@10": ..., ...} and
    `column_words` (top tokens of each of the top columns of ΔW)."""

    method: str
    task: str
    case: EditCase
    generation: str
    layers: list[LayerChange] = field(default_factory=list)
    hits: dict[str, bool] = field(default_factory=dict)
    column_words: list[list[str]] = field(default_factory=list)


def _profile(delta: torch.Tensor) -> list[float]:
    energy = column_energy(delta)
    bins = torch.tensor_split(energy, min(HEATMAP_BINS, energy.numel()))
    total = float(energy.sum())
    return [float(b.sum()) / total for b in bins]


def _layer_change(change: Change) -> LayerChange:
    norm = float(change.delta.norm())
    return LayerChange(
        layer=change.layer,
        name=change.name,
        norm=norm,
        relative=norm / max(float(change.before.norm()), 1e-12),
        top_share=top_share(change.delta),
        profile=_profile(change.delta),
    )


def target_token(tokenizer, prompt: str, target: str) -> int:
    """The first token of `target` after `prompt`, as the harness joins them."""
    batch = encode_answers(tokenizer, [prompt], [target])
    return int(batch.input_ids[0, batch.answer_start[0]])


def vocabulary_view(
    found: list[Change], unembedding: torch.Tensor, token_id: int, decode: Callable[[list[int]], str]
) -> tuple[dict[str, bool], list[list[str]]]:
    """Hit@k (k in HIT_KS) of `token_id` among the top-5 columns of ΔW over every changed matrix
    that writes the residual stream (d_out = the unembedding's width), read through the
    unembedding: `before@k` on W's columns, `after@k` on (W + ΔW)'s; and the top-10 tokens of
    each of ΔW's own top columns. Empty when no such matrix changed."""
    width = unembedding.shape[1]
    writers = [c for c in found if c.delta.shape[0] == width]
    if not writers:
        return {}, []
    candidates = [
        (float(column_energy(c.delta)[j]), i, j) for i, c in enumerate(writers) for j in top_columns(c.delta)
    ]
    ranked = sorted(candidates, reverse=True)[:VOCAB_COLUMNS]
    delta = torch.stack([writers[i].delta[:, j] for _, i, j in ranked], dim=1)
    before = torch.stack([writers[i].before[:, j] for _, i, j in ranked], dim=1)
    hits = {}
    for k in HIT_KS:
        hits[f"before@{k}"] = hit_at_k(before, unembedding, token_id, k)
        hits[f"after@{k}"] = hit_at_k(before + delta, unembedding, token_id, k)
    words = [[decode([t]) for t in row] for row in column_tokens(delta, unembedding, 10).tolist()]
    return hits, words


@torch.no_grad()
def greedy(handle, prompt: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """The model's greedy continuation of `prompt` (decoded, special tokens dropped)."""
    batch = encode_prompts(handle.tokenizer, [prompt]).to(handle.device)
    out = handle.model.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=handle.tokenizer.pad_token_id,
    )
    return handle.tokenizer.decode(out[0, batch.input_ids.shape[1] :], skip_special_tokens=True)


def layer_states(handle) -> dict[str, torch.Tensor]:
    """A CPU float copy of every 2-D parameter of the model's layers: the state edits start from."""
    prefixes = tuple(handle.adapter.layer_name(i) + "." for i in range(handle.adapter.num_layers))
    return {
        name: p.detach().to("cpu", copy=True)
        for name, p in handle.model.named_parameters()
        if p.dim() == 2 and name.startswith(prefixes)
    }


def replay(
    record, jobs: Sequence, handle, *, cases: int | None = None, progress: Callable[[str], None] = print
) -> Iterator[Replayed]:
    """Apply the edits of `jobs` (of `record`, an `open_run` result, all on `handle`'s model)
    again, one at a time and each undone before the next, the first `cases` of each single-mode
    job (all for None), yielding what each did; `progress` is told each edit as it starts."""
    before = layer_states(handle)
    layer_names = {i: handle.adapter.layer_name(i) for i in range(handle.adapter.num_layers)}
    unembedding = handle.adapter.module(handle.adapter.lm_head_name).weight.detach().float().cpu()
    for job in jobs:
        if job.mode != "single":
            continue
        method = record.method(job.method)
        for task, case in job.cases[:cases]:
            progress(f"{job.method} {case.case_id}")
            (handed,) = record.handed([case], method, handle)
            seed_everything(record.edit_seed(case.case_id))
            applied = method.apply(handle, [handed], job.hparams)
            try:
                generation = greedy(handle, applied.context + handed.prompt)
                after = {name: p.detach() for name, p in handle.model.named_parameters() if name in before}
                found = changes(before, after, layer_names, transposed=handle.adapter.out_weight_transposed)
            finally:
                applied.undo()
            result = Replayed(job.method, task, case, generation, [_layer_change(c) for c in found])
            token = target_token(handle.tokenizer, handed.prompt, handed.target_new)
            decode = handle.tokenizer.decode
            result.hits, result.column_words = vocabulary_view(found, unembedding, token, decode)
            yield result
