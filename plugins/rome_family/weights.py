"""Reading and writing the MLP output matrix of a layer, whatever the family stores it as.

The papers write W [d_out, d_in] (value = W · key). GPT-2's Conv1D stores the transpose; the
adapter says which, and these helpers are the only place that knows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

#: The hparams-schema property of a method that edits the MLP output weights of several layers
#: (`"x-layer"`: checked against the model's layer count before it loads).
LAYERS_PROPERTY = {
    "type": "array",
    "items": {"type": "integer"},
    "minItems": 1,
    "uniqueItems": True,
    "x-layer": True,
}


def layer_property(description: str) -> dict[str, Any]:
    """The schema of a method's one edited layer (an index; `"x-layer"` marks it for the core's
    range check against the model), with what the method does there."""
    return {"type": "integer", "minimum": 0, "x-layer": True, "description": description}


if TYPE_CHECKING:
    from harness.api import ModelHandle


def mlp_out_params(handle: ModelHandle, layer: int) -> dict[str, torch.nn.Parameter]:
    """The parameters (weight, and bias where the family has one) of a layer's MLP output module,
    under the names `handle.snapshot` takes."""
    prefix = handle.adapter.mlp_out_name(layer)
    module = handle.adapter.module(prefix)
    return {f"{prefix}.{name}": p for name, p in module.named_parameters(recurse=False)}


def mlp_out_weight_name(handle: ModelHandle, layer: int) -> str:
    return f"{handle.adapter.mlp_out_name(layer)}.weight"


def mlp_out_matrix(handle: ModelHandle, layer: int) -> torch.Tensor:
    """W [d_out, d_in] of a layer, as a detached view in the papers' orientation."""
    weight = handle.adapter.module(handle.adapter.mlp_out_name(layer)).weight.detach()
    return weight.T if handle.adapter.out_weight_transposed else weight


@torch.no_grad()
def add_to_mlp_out(handle: ModelHandle, layer: int, delta: torch.Tensor) -> None:
    """W ← W + ΔW for ΔW [d_out, d_in] in the papers' orientation."""
    weight = handle.adapter.module(handle.adapter.mlp_out_name(layer)).weight
    update = delta.T if handle.adapter.out_weight_transposed else delta
    weight.add_(update.to(device=weight.device, dtype=weight.dtype))


@contextmanager
def trainable_only(model: torch.nn.Module, params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Let gradients flow only into `params` (none at all for an empty iterable) while inside, so a
    backward pass neither computes nor stores gradients of weights nobody updates."""
    keep = {id(p) for p in params}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            if id(p) not in keep:
                p.grad = None
