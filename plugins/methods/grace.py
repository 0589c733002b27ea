"""GRACE: a codebook of (key, value) pairs attached to the output of one layer's MLP.

Hartvigsen et al., "Aging with GRACE" (2023). An edit stores the MLP input at the last prompt token
as a key and trains a value that, written in place of the MLP output there, makes the model produce
the target. At inference every position whose MLP input lies within a deferral radius of a key gets
that key's value; every other position passes through untouched, which is where GRACE's locality
comes from. The weights never change: the codebook lives in a forward hook, and undo shrinks the
codebook back (removing the hook with the last entry), so undo is exact by construction.

Differences from the reference toolkit, and why:
- The radius is relative to the key's norm (`eps` x ||key||), not an absolute distance, because MLP
  input norms differ by an order of magnitude across layers and models; one default then fits all.
- A key matches at any position of any input, so teacher-forced scoring and generation see the same
  edit; the reference's evaluation tokenized targets without their leading space and scored correct
  GRACE edits near 0 on byte-level BPE tokenizers. Targets here go through `encode_answers`.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from harness.api import AppliedEdit, Capabilities, EditCase, HarnessError, Method, capture_modules
from harness_plugins.methods.lora_labels import EditBatch, edit_batch
from harness_plugins.rome_family.weights import layer_property

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Relative depth of the default edited layer: mid-depth leaves enough layers above the value for
#: it to steer every token of a multi-token target through attention.
DEFAULT_DEPTH = 0.5


@dataclass
class Codebook:
    """The keys, radii, values and targets of one layer, applied as a forward hook on its MLP output."""

    keys: torch.Tensor
    radii: torch.Tensor
    values: torch.Tensor
    targets: list[str] = field(default_factory=list)
    hook: torch.utils.hooks.RemovableHandle | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if not self.targets:
            return None
        queries = args[0].reshape(-1, args[0].shape[-1]).float()
        distance, nearest = torch.cdist(queries, self.keys).min(dim=-1)
        hit = distance <= self.radii[nearest]
        if not bool(hit.any()):
            return None
        flat = output.reshape(-1, output.shape[-1])
        replaced = torch.where(hit[:, None], self.values[nearest].to(output.dtype), flat)
        return replaced.reshape(output.shape)

    def add(
        self, keys: torch.Tensor, radii: torch.Tensor, values: torch.Tensor, targets: Sequence[str]
    ) -> None:
        """Append entries; where a new ball overlaps an entry with another target, both radii shrink
        to half their distance (GRACE's split), so no input can be claimed by two conflicting edits."""
        for key, radius, value, target in zip(keys, radii, values, targets, strict=True):
            radius = radius.clone()
            if self.targets:
                distance = torch.linalg.vector_norm(self.keys - key, dim=-1)
                conflict = (distance < self.radii + radius) & torch.tensor(
                    [t != target for t in self.targets], device=distance.device
                )
                if bool(conflict.any()):
                    half = distance[conflict] / 2
                    self.radii[conflict] = torch.minimum(self.radii[conflict], half)
                    radius = torch.minimum(radius, half.min())
            self.keys = torch.cat([self.keys, key[None]])
            self.radii = torch.cat([self.radii, radius[None]])
            self.values = torch.cat([self.values, value[None]])
            self.targets.append(target)

    def truncate(self, size: int, radii: torch.Tensor) -> None:
        self.keys, self.values, self.radii = self.keys[:size], self.values[:size], radii.clone()
        del self.targets[size:]


#: The codebook attached to each hooked module, so sequential edits extend one codebook.
_CODEBOOKS: weakref.WeakKeyDictionary[nn.Module, Codebook] = weakref.WeakKeyDictionary()


def _codebook(module: nn.Module, d_in: int, d_out: int, device: torch.device) -> Codebook:
    book = _CODEBOOKS.get(module)
    if book is None:
        empty = torch.empty(0, device=device)
        book = Codebook(keys=empty.reshape(0, d_in), radii=empty, values=empty.reshape(0, d_out))
        book.hook = module.register_forward_hook(book)
        _CODEBOOKS[module] = book
    return book


class GraceEdit(AppliedEdit):
    """Undo returns the codebook to its size and radii before the edit; with none left, the hook goes."""

    def __init__(
        self, module: nn.Module, book: Codebook, size_before: int, radii_before: torch.Tensor
    ) -> None:
        self.module = module
        self.book = book
        self.size_before = size_before
        self.radii_before = radii_before
        self.size_after = len(book)

    def undo(self) -> None:
        if len(self.book) != self.size_after:
            raise HarnessError(
                f"GRACE edits must be undone in reverse order: the codebook has {len(self.book)} entries, "
                f"this edit left it with {self.size_after}"
            )
        self.book.truncate(self.size_before, self.radii_before)
        if not self.book.targets and self.book.hook is not None:
            self.book.hook.remove()
            _CODEBOOKS.pop(self.module, None)


def _capture(name: str, handle: ModelHandle, batch: EditBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's input and output at each row's last prompt token, on the unedited forward pass."""
    rows = torch.arange(batch.labels.shape[0], device=batch.labels.device)
    with torch.no_grad(), capture_modules(handle, [name], inputs=True, outputs=True) as seen:
        handle.model(**batch.answers.model_inputs())
    key = seen.inputs[name][0][rows, batch.last_prompt_index].detach().float()
    value = seen.outputs[name][0][rows, batch.last_prompt_index].detach().float()
    return key, value


def _train_values(
    name: str, handle: ModelHandle, batch: EditBatch, init: torch.Tensor, hparams: Mapping[str, Any]
) -> torch.Tensor:
    """Values that, written at the last prompt tokens, minimize the target NLL. Gradients are taken
    for the values only, so no weight ever accumulates a `.grad`."""
    rows = torch.arange(init.shape[0], device=init.device)
    values = nn.Parameter(init.clone())
    optimizer = torch.optim.Adam([values], lr=hparams["edit_lr"])

    def overwrite(_name: str, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[rows, batch.last_prompt_index] = values.to(output.dtype)
        return output

    inputs = batch.model_inputs()
    with torch.enable_grad(), capture_modules(handle, [name], edit_output=overwrite):
        for _ in range(hparams["n_iter"]):
            loss = handle.model(**inputs).loss
            if loss.item() < hparams["stop_loss"]:
                break
            (values.grad,) = torch.autograd.grad(loss, [values])
            optimizer.step()
    return values.detach()


class GRACE(Method):
    name: ClassVar[str] = "grace"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=True, sequential=True, needs_training=False, edits_weights=False
    )
    tuning_hint: ClassVar[str] = "layer (the adapted layer), edit_lr, n_iter"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "layer": layer_property("layer whose MLP output is adapted"),
            "eps": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 0.1,
                "description": "deferral radius, as a fraction of the key's norm",
            },
            "edit_lr": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
            "n_iter": {"type": "integer", "minimum": 1, "default": 50},
            "stop_loss": {
                "type": "number",
                "minimum": 0,
                "default": 0.01,
                "description": "stop training a value once the target NLL is below this",
            },
        },
        "required": ["layer"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        return {"layer": handle.adapter.layer_at(DEFAULT_DEPTH)}

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        if not cases:
            raise HarnessError("grace: apply needs at least one edit case")
        name = handle.adapter.mlp_out_name(hparams["layer"])
        module = handle.adapter.module(name)
        batch = edit_batch(handle, cases)
        keys, original = _capture(name, handle, batch)
        values = _train_values(name, handle, batch, original, hparams)
        book = _codebook(module, keys.shape[-1], values.shape[-1], handle.device)
        size_before, radii_before = len(book), book.radii.clone()
        radii = hparams["eps"] * torch.linalg.vector_norm(keys, dim=-1)
        book.add(keys, radii, values, [c.target_new for c in cases])
        return GraceEdit(module, book, size_before, radii_before)
