"""The weight change of an edit, ΔW = W_after − W_before of every matrix the edit changed, and what
it says: how concentrated it is (sparsity over columns), how large per layer, and which tokens its
largest columns write (the vocabulary-space view of the KnowEdit study, Zhang et al. 2024, Sec. 5).

A matrix is taken in the papers' orientation W [d_out, d_in] (value = W · key): a column j is what
the layer adds to its output per unit of input feature j; for an MLP output matrix d_out is the
hidden size, so a column is a direction of the residual stream and can be read through the
unembedding U [vocab, d] as logits U · ΔW[:, j] (the "logit lens" without the final norm: a norm
rescales a direction and so changes no ranking of RMS-normed models' logits but for the gain).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

#: Share of columns that count as "top" for the sparsity figures (at least one column).
TOP_SHARE = 0.01
#: Columns of ΔW read through the unembedding (the study's top-5).
VOCAB_COLUMNS = 5
#: The k of Hit@k.
HIT_KS = (10, 50)


@dataclass(frozen=True)
class Change:
    """One changed matrix of one edit: `name` (parameter name), `layer` (None outside the layers),
    `delta` ΔW [d_out, d_in] and `before` W [d_out, d_in], both float32 on the CPU."""

    name: str
    layer: int | None
    delta: torch.Tensor
    before: torch.Tensor


def layer_of(name: str, layer_names: Mapping[int, str]) -> int | None:
    """The layer index a parameter `name` belongs to, from `{i: adapter.layer_name(i)}`; None for
    parameters outside the layers (embeddings, final norm)."""
    for index, prefix in layer_names.items():
        if name.startswith(prefix + "."):
            return index
    return None


def changes(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    layer_names: Mapping[int, str],
    *,
    transposed: bool,
) -> list[Change]:
    """Every 2-D parameter whose values differ between the two state dicts (name -> tensor), as a
    `Change`; `transposed` (the family stores W as [d_in, d_out], GPT-2's Conv1D) turns them into
    the papers' orientation. Vectors (biases, norms) are left out: they have no columns; so is a
    name `after` lacks (a method that wrapped the module reads it elsewhere)."""
    found = []
    for name, old in before.items():
        if old.dim() != 2 or name not in after:
            continue
        new = after[name].detach().cpu()
        if torch.equal(old, new):
            continue
        old32, new32 = old.detach().float().cpu(), new.detach().float().cpu()
        if transposed:
            old32, new32 = old32.T, new32.T
        found.append(Change(name, layer_of(name, layer_names), new32 - old32, old32))
    return found


def column_energy(delta: torch.Tensor) -> torch.Tensor:
    """‖ΔW[:, j]‖² per column j. delta [d_out, d_in] -> [d_in]."""
    return delta.pow(2).sum(dim=0)


def top_share(delta: torch.Tensor, share: float = TOP_SHARE) -> float:
    """The share of ‖ΔW‖²_F in its top `share` of columns (at least one): 1 for a change in one
    column, `share` for one spread evenly. Raises ValueError for ΔW = 0."""
    energy = column_energy(delta)
    total = float(energy.sum())
    if total == 0:
        raise ValueError("ΔW is zero: no share to take")
    count = max(1, round(share * energy.numel()))
    return float(energy.topk(count).values.sum()) / total


def top_columns(delta: torch.Tensor, count: int = VOCAB_COLUMNS) -> list[int]:
    """The indices of the `count` columns of ΔW with the largest norm, largest first."""
    energy = column_energy(delta)
    return energy.topk(min(count, energy.numel())).indices.tolist()


def column_tokens(columns: torch.Tensor, unembedding: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k token ids of each column read through the unembedding (every token when the
    vocabulary is smaller than k). columns [d, n], unembedding U [vocab, d] -> [n, k], best first."""
    logits = unembedding.float() @ columns.float()  # [vocab, n]
    return logits.topk(min(k, logits.shape[0]), dim=0).indices.T


def hit_at_k(columns: torch.Tensor, unembedding: torch.Tensor, token_id: int, k: int) -> bool:
    """Whether `token_id` is among the top-k tokens of any column (columns [d, n], U [vocab, d]):
    the study's Hit@k of the target token in the vocabulary space of the edit's top columns."""
    return bool((column_tokens(columns, unembedding, k) == token_id).any())
