"""Where each model family keeps its layers, MLP projections, attention, embeddings, norm and head.

Editing methods address modules by these names, and choose their defaults by family and relative
depth, so that no code ever guesses a layout from a substring of the model's name. The family is
read from the model's config (`model_type`), which transformers sets from the architecture itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.ground import HarnessError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class _Layout:
    """Module-name templates of one family; `{i}` is the layer index."""

    family: str
    layer: str
    mlp_in: str
    mlp_out: str
    attn: str
    embed: str
    final_norm: str
    out_weight_transposed: bool = False


_LLAMA = _Layout(
    family="llama",
    layer="model.layers.{i}",
    mlp_in="model.layers.{i}.mlp.up_proj",
    mlp_out="model.layers.{i}.mlp.down_proj",
    attn="model.layers.{i}.self_attn",
    embed="model.embed_tokens",
    final_norm="model.norm",
)
_GPT2 = _Layout(
    family="gpt2",
    layer="transformer.h.{i}",
    mlp_in="transformer.h.{i}.mlp.c_fc",
    mlp_out="transformer.h.{i}.mlp.c_proj",
    attn="transformer.h.{i}.attn",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    out_weight_transposed=True,
)
_GPTJ = _Layout(
    family="gptj",
    layer="transformer.h.{i}",
    mlp_in="transformer.h.{i}.mlp.fc_in",
    mlp_out="transformer.h.{i}.mlp.fc_out",
    attn="transformer.h.{i}.attn",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
)
_GPT_NEOX = _Layout(
    family="gpt_neox",
    layer="gpt_neox.layers.{i}",
    mlp_in="gpt_neox.layers.{i}.mlp.dense_h_to_4h",
    mlp_out="gpt_neox.layers.{i}.mlp.dense_4h_to_h",
    attn="gpt_neox.layers.{i}.attention",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
)

#: config.model_type -> layout. Llama-style decoders (Qwen2, Mistral, SmolLM) share one layout.
LAYOUTS: dict[str, _Layout] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gpt2": _GPT2,
    "gptj": _GPTJ,
    "gpt_neox": _GPT_NEOX,
}


def _config_int(config: object, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def config_num_layers(config: object) -> int:
    """The number of transformer layers a transformers config declares (0 when it declares none).

    The one reading of the depth: the adapter of a loaded model and the plan-time check of layer
    hyperparameters (`harness.models.shape`, before any weights load) agree by construction."""
    return _config_int(config, "num_hidden_layers", "n_layer") or 0


class ArchitectureAdapter:
    """Names and sizes of one loaded model's editable parts."""

    def __init__(self, model: PreTrainedModel) -> None:
        config = model.config
        model_type = getattr(config, "model_type", None)
        layout = LAYOUTS.get(model_type or "")
        if layout is None:
            raise HarnessError(
                f"model {type(model).__name__} (model_type {model_type!r}) has no architecture adapter; "
                f"supported model types: {', '.join(sorted(LAYOUTS))}"
            )
        self.model = model
        self._layout = layout
        self.family: str = layout.family
        self.model_type: str = model_type
        self.out_weight_transposed: bool = layout.out_weight_transposed
        self.num_layers: int = config_num_layers(config)
        self.hidden_size: int = _config_int(config, "hidden_size", "n_embd") or 0
        inner = _config_int(config, "intermediate_size", "n_inner")
        self.intermediate_size: int = inner if inner is not None else 4 * self.hidden_size
        self.embed_name: str = layout.embed
        self.final_norm_name: str = layout.final_norm
        head = model.get_output_embeddings()
        # Read from the model, not the layout: the head's attribute name moved between versions.
        self.lm_head_name: str = next((n for n, m in model.named_modules() if m is head and n), "")
        if not self.lm_head_name:
            raise HarnessError(f"{type(model).__name__} has no output embedding (LM head)")

    def __repr__(self) -> str:
        return f"ArchitectureAdapter(family={self.family!r}, num_layers={self.num_layers})"

    def _index(self, i: int) -> int:
        if not -self.num_layers <= i < self.num_layers:
            raise HarnessError(f"layer {i} is out of range: the model has {self.num_layers} layers")
        return i % self.num_layers

    def layer_name(self, i: int) -> str:
        return self._layout.layer.format(i=self._index(i))

    def mlp_in_name(self, i: int) -> str:
        return self._layout.mlp_in.format(i=self._index(i))

    def mlp_out_name(self, i: int) -> str:
        return self._layout.mlp_out.format(i=self._index(i))

    def attn_name(self, i: int) -> str:
        return self._layout.attn.format(i=self._index(i))

    def layer_at(self, fraction: float) -> int:
        """The layer at a relative depth (0.0 first, 1.0 last), so that method defaults found on one
        model size carry over to another of the same family."""
        if not 0.0 <= fraction <= 1.0:
            raise HarnessError(f"relative depth must lie in [0, 1], got {fraction}")
        return round(fraction * (self.num_layers - 1))

    def module(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise HarnessError(f"{type(self.model).__name__} has no module {name!r}") from None

    def output_embedding_weight_name(self) -> str:
        """The name under which `named_parameters()` lists the LM head's weight.

        With tied embeddings (SmolLM2, GPT-2) the head has no parameter of its own: its weight is
        the input embedding's, listed once under the embedding's name. Snapshots need that name.
        """
        weight = self.output_embedding_weight()
        for name, param in self.model.named_parameters():
            if param is weight:
                return name
        raise HarnessError(f"{type(self.model).__name__}: the LM head's weight is not a model parameter")

    def output_embedding_weight(self) -> nn.Parameter:
        """The LM head's weight [vocab, hidden], the same tensor as the input embedding's when tied."""
        return self.module(self.lm_head_name).weight

    def input_embedding_weight(self) -> nn.Parameter:
        return self.module(self.embed_name).weight

    @property
    def tied_embeddings(self) -> bool:
        return self.output_embedding_weight() is self.input_embedding_weight()
