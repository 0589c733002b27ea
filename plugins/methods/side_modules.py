"""Parameters added beside a module instead of changing it: the memory-based lifelong editors' home.

WISE keeps a side copy of one MLP value matrix and T-Patcher adds patch neurons to the last MLP;
neither touches a weight of the model. What they add lives in a child module of the module whose
output they change (`SideModule`, attached under a fixed attribute name), and a forward hook on
that module lets the child rewrite the output. While an edit is active its parameters therefore
show in `named_parameters()` and `state_dict()` under the edited module's name (e.g.
`model.layers.25.mlp.down_proj.wise.current`); `detach` removes the hook and the child together,
after which the model's state_dict and forward pass are exactly the original ones. Sequential
edits find the child already attached (`attached`) and extend it.

Both methods also read the same things here: where in an edit batch the edit must act
(`target_positions`), a module's input on a forward pass cut short there (`read_inputs`), and that
input on texts the model samples itself, their out-of-scope examples (`sampled_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from harness.api import HarnessError, capture_modules, encode_prompts
from harness_plugins.rome_family.templates import SLOT, context_templates

if TYPE_CHECKING:
    from harness.api import ModelHandle
    from harness_plugins.methods.lora_labels import EditBatch

#: Out-of-scope texts: 20 samples of 20 tokens from the model itself (`[[tokens, count]]`).
SAMPLED_SPEC = [[20, 20]]


class SideModule(nn.Module):
    """Added parameters that rewrite the output of the module they are attached to.

    Subclasses implement `rewrite(inputs, output)`: `inputs` is the module's first positional
    argument and `output` its output, both [..., width]; return the new output or None to keep it.
    """

    hook_handle: torch.utils.hooks.RemovableHandle | None = None

    def rewrite(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def _hook(self, _module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        return self.rewrite(args[0], output)


S = TypeVar("S", bound=SideModule)


def attached(module: nn.Module, attr: str, kind: type[S], create: Callable[[], S]) -> S:
    """The side module `module.<attr>`, created with `create()` and hooked on first use.

    Raises HarnessError when `module` already has something else under `attr` (another method's
    side module, or a real submodule of that name).
    """
    child = module._modules.get(attr)
    if child is None:
        if hasattr(module, attr):
            raise HarnessError(f"{type(module).__name__} already has an attribute {attr!r}")
        child = create()
        module.add_module(attr, child)
        child.hook_handle = module.register_forward_hook(child._hook)
    if not isinstance(child, kind):
        raise HarnessError(
            f"{type(module).__name__}.{attr} is a {type(child).__name__}, not a {kind.__name__}"
        )
    return child


def detach(module: nn.Module, attr: str) -> None:
    """Remove the side module `module.<attr>` and its hook; the module is then as it was before
    `attached` (its state_dict keys and forward pass included)."""
    child = module._modules.pop(attr, None)
    if child is not None and child.hook_handle is not None:
        child.hook_handle.remove()


def target_positions(batch: EditBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool masks [batch, tokens] of a right-padded edit batch: the positions that predict the target
    (the last prompt token up to the one before the last target token), where an edit must act,
    and the prompt's earlier positions, where it should not."""
    answers = batch.answers
    t = torch.arange(answers.input_ids.shape[1], device=answers.input_ids.device)
    last = batch.last_prompt_index[:, None]
    return (t >= last) & (t < answers.answer_end[:, None] - 1), t < last


def read_inputs(handle: ModelHandle, name: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The input [batch, tokens, width] of module `name` on a forward pass that stops there (so no
    side module of that module or above it takes part)."""
    with torch.no_grad(), capture_modules(handle, [name], inputs=True, stop_early=True) as seen:
        seen.forward(**inputs)
    return seen.inputs[name][0].detach()


def sampled_inputs(handle: ModelHandle, name: str) -> torch.Tensor:
    """The input [n, width] of module `name` at every token of texts the model samples itself (the
    ROME family's context-template sampler, seeded and cached per model): out-of-scope examples
    that need no data set."""
    texts = [t.replace(SLOT, "").strip() for t in context_templates(handle, SAMPLED_SPEC)[1:]]
    batch = encode_prompts(handle.tokenizer, texts).to(handle.device)
    return read_inputs(handle, name, batch.model_inputs())[batch.attention_mask.bool()]
