"""Forward passes of one batch that redo only the part a change can reach.

An optimisation that adds δ to layer L's output at some token positions (ROME's and MEMIT's value
optimisation, `compute_v` / `compute_z`) runs the model on the same batch at every step, yet δ
moves nothing below layer L (layers read only lower layers) and nothing at a position before the
first one it is added at (attention is causal). `PartialForward` computes that unchanging part once
(the key/value cache of the earlier positions in every layer, and what layer L receives at the
later ones) and every later call runs only layers L..N on the later positions. The model's own
forward does the work, so rotary or absolute position embeddings, the causal and padding mask and
each family's layer code are exactly those of a full forward pass; what changes is what the model
is fed: the later columns with the earlier ones as its cache, and layers below L that hand on the
cached input of layer L instead of computing it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from harness.ground import HarnessError
from harness.models.handle import ModelHandle


def cache_kwargs(result: Any) -> dict[str, Any]:
    """The keyword that hands a forward pass's key/value cache to the next call: transformers 5.2x
    calls it `cache` (on the output and in `forward`), earlier releases `past_key_values`."""
    if hasattr(result, "cache"):
        return {"cache": result.cache}
    return {"past_key_values": result.past_key_values}


class _Reached(Exception):
    """Raised by the hook on the layer below the first one run, to end the pass that reads it."""


class PartialForward:
    """Forward passes over one batch that recompute only layers `layer`..N at columns `start`..T.

    inputs: `input_ids`, `attention_mask`, `position_ids`, each [B, T] (`PromptBatch.model_inputs()`);
        left padding is what makes a small `start` rare, since every row's text ends at column T.
    layer: the first layer whose input may change (0: all layers run, only the columns are cut).
    start: the first column whose hidden states may change, 0 ≤ start < T.

    On construction (no gradient): one pass over columns [0, start) keeps their key/value cache,
    one over columns [start, T) keeps what layer `layer` receives there. Each call,
    `forward(**kwargs)`, then runs the model on columns [start, T) with a copy of that cache, the
    layers below `layer` handing on the kept input; it returns the model's output for those columns
    only (logits [B, T - start, V], or fewer with `logits_to_keep`), equal to the same columns of
    a full forward pass up to floating-point rounding, as long as whatever the caller changes acts
    at layer `layer` or above and at columns `start` or later. Hooks on the layers below `layer`
    see no call of theirs during a partial pass. Gradients reach anything the caller adds at layer
    `layer` or above; no weight below it is used.

    Cost per call: (N − layer)/N of the layers on (T − start)/T of the columns, plus copying the
    cache. Raises HarnessError for a layer or start out of range.
    """

    def __init__(
        self, handle: ModelHandle, inputs: Mapping[str, torch.Tensor], *, layer: int, start: int
    ) -> None:
        adapter = handle.adapter
        if not 0 <= layer < adapter.num_layers:
            raise HarnessError(f"layer {layer} is out of range: the model has {adapter.num_layers} layers")
        width = inputs["input_ids"].shape[1]
        if not 0 <= start < width:
            raise HarnessError(f"start column {start} is out of range: the batch has {width} columns")
        self.layer, self.start = layer, start
        self._model = handle.model
        self._lower: list[nn.Module] = [adapter.module(adapter.layer_name(i)) for i in range(layer)]
        self._inputs = {
            "input_ids": inputs["input_ids"][:, start:],
            "attention_mask": inputs["attention_mask"],
            "position_ids": inputs["position_ids"][:, start:],
        }
        self._cache: dict[str, Any] = {}
        self._received: Any = None
        with torch.no_grad():
            if start > 0:
                prefix = self._model(
                    input_ids=inputs["input_ids"][:, :start],
                    attention_mask=inputs["attention_mask"][:, :start],
                    position_ids=inputs["position_ids"][:, :start],
                    use_cache=True,
                    logits_to_keep=1,
                )
                self._cache = cache_kwargs(prefix)
            if layer > 0:
                self._received = self._read_below()

    def _read_below(self) -> Any:
        """What layer `layer − 1` returns at columns [start, T), in the form it returns it; the pass
        stops there."""
        seen: list[Any] = []

        def keep(_module: nn.Module, _args: Any, output: Any) -> None:
            seen.append(output)
            raise _Reached

        hook = self._lower[-1].register_forward_hook(keep)
        try:
            self._model(**self._inputs, **self._fresh_cache(), logits_to_keep=1)
        except _Reached:
            pass
        finally:
            hook.remove()
        return seen[0]

    def _fresh_cache(self) -> dict[str, Any]:
        """A copy of the earlier columns' cache (a pass appends to the cache it is given)."""
        if not self._cache:
            return {"use_cache": False}
        return {**{k: copy.deepcopy(v) for k, v in self._cache.items()}, "use_cache": True}

    def _hand_on(self, *_args: Any, **_kwargs: Any) -> Any:
        return self._received

    def __call__(self, **kwargs: Any) -> Any:
        """The model's output for columns [start, T); `kwargs` go to the model (`logits_to_keep`)."""
        replaced = [layer.__dict__.get("forward") for layer in self._lower]
        for layer in self._lower:
            layer.forward = self._hand_on
        try:
            return self._model(**self._inputs, **self._fresh_cache(), **kwargs)
        finally:
            for layer, own in zip(self._lower, replaced, strict=True):
                if own is None:
                    del layer.forward
                else:
                    layer.forward = own
