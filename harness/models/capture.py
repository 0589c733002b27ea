"""Reading (and changing) what named modules see and produce in a forward pass, through hooks that
are always removed again.

Locate-then-edit methods read a layer's input (the keys of ROME and MEMIT, GRACE's query) or output
(the hidden state a value is optimised for), and some rewrite an output while a loss is minimised;
the statistics read the same inputs over a whole corpus. Each of them used to register its own
forward hook and had to remember to remove it on every path out. `capture_modules` is the one place
that does it: whatever happens inside the `with` block, an error included, the model leaves it with
no hook of ours attached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.ground import HarnessError
from harness.models.handle import ModelHandle

#: `edit_output(name, output)`: the replacement for a module's output, or None to keep it.
OutputEdit = Callable[[str, torch.Tensor], torch.Tensor | None]


class _Captured(Exception):
    """Raised by the last hook of a forward pass once every named module has been captured, so that
    the layers after them do no work; `Capture.forward` catches it."""


@dataclass
class Capture:
    """What the named modules saw and produced, one tensor per call of the module, oldest first.

    `inputs[name]` holds the module's first positional argument and `outputs[name]` its output (the
    first element where the module returns a tuple, as decoder layers do): for a decoder layer, an
    MLP or one of its projections that is [batch, tokens, width], width being the module's input or
    output size. The tensors are the model's own, neither copied nor detached: inside `torch.no_grad`
    they hold no graph; outside it, detach what you keep beyond the backward pass.
    """

    model: nn.Module = field(repr=False)
    names: tuple[str, ...]
    inputs: dict[str, list[torch.Tensor]] = field(default_factory=dict, repr=False)
    outputs: dict[str, list[torch.Tensor]] = field(default_factory=dict, repr=False)
    stop_early: bool = False
    _seen: set[str] = field(default_factory=set, init=False, repr=False)

    def clear(self) -> None:
        """Forget everything captured so far (between batches of a long pass)."""
        for store in (*self.inputs.values(), *self.outputs.values()):
            store.clear()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the model with these arguments. With `stop_early`, the pass ends as soon as every
        named module has been captured and None is returned instead of the model's output; without
        it, this is `model(*args, **kwargs)`."""
        self._seen.clear()
        try:
            return self.model(*args, **kwargs)
        except _Captured:
            return None

    def _done(self, name: str) -> None:
        if self.stop_early:
            self._seen.add(name)
            if len(self._seen) == len(self.names):
                raise _Captured


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) else value


@contextmanager
def capture_modules(
    model_or_handle: nn.Module | ModelHandle,
    names: Sequence[str],
    *,
    inputs: bool = False,
    outputs: bool = False,
    edit_output: OutputEdit | None = None,
    stop_early: bool = False,
) -> Iterator[Capture]:
    """Hook the modules called `names` (as `model.named_modules()` spells them, e.g. the adapter's
    `mlp_out_name(layer)`) for the duration of the `with` block.

    inputs / outputs: record each call's input / output in the `Capture` (see there for shapes).
    edit_output: called as `edit_output(name, output)` after the output is recorded; a tensor it
        returns replaces the output (inside the tuple, where the module returns one), None keeps it.
    stop_early: `Capture.forward` ends each pass once every named module has been captured, which
        saves the layers above the deepest one; call the model through `Capture.forward` then.

    Raises HarnessError, before any hook is attached, when a name is not a module of the model.
    Every hook is removed on leaving the block, also when it is left by an exception.
    """
    model = model_or_handle.model if isinstance(model_or_handle, ModelHandle) else model_or_handle
    modules = {}
    for name in dict.fromkeys(names):
        try:
            modules[name] = model.get_submodule(name)
        except AttributeError:
            raise HarnessError(f"{type(model).__name__} has no module {name!r}") from None
    capture = Capture(
        model,
        tuple(modules),
        inputs={name: [] for name in modules} if inputs else {},
        outputs={name: [] for name in modules} if outputs else {},
        stop_early=stop_early,
    )
    needs_output_hook = outputs or edit_output is not None
    handles = []
    try:
        for name, module in modules.items():
            if inputs:
                handles.append(
                    module.register_forward_pre_hook(_input_hook(capture, name, needs_output_hook))
                )
            if needs_output_hook:
                handles.append(module.register_forward_hook(_output_hook(capture, name, edit_output)))
        yield capture
    finally:
        for handle in handles:
            handle.remove()


def _input_hook(capture: Capture, name: str, output_hook_follows: bool) -> Callable[..., None]:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        capture.inputs[name].append(args[0])
        if not output_hook_follows:
            capture._done(name)

    return hook


def _output_hook(capture: Capture, name: str, edit_output: OutputEdit | None) -> Callable[..., Any]:
    def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        hidden = _first(output)
        if name in capture.outputs:
            capture.outputs[name].append(hidden)
        capture._done(name)
        replaced = edit_output(name, hidden) if edit_output is not None else None
        if replaced is None:
            return None
        return (replaced, *output[1:]) if isinstance(output, tuple) else replaced

    return hook
