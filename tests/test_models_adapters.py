"""Architecture adapters: every family's names point at real modules of the right shape."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Qwen2Config,
)

from harness.api import HarnessError
from harness.models.adapters import ArchitectureAdapter

HIDDEN, INNER, LAYERS = 32, 48, 3

CONFIGS = {
    "llama": LlamaConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=INNER, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2,
    ),
    "qwen2": Qwen2Config(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=INNER, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2,
    ),
    "mistral": MistralConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=INNER, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2,
    ),
    "gpt2": GPT2Config(vocab_size=64, n_embd=HIDDEN, n_inner=INNER, n_layer=LAYERS, n_head=4),
    "gptj": GPTJConfig(vocab_size=64, n_embd=HIDDEN, n_inner=INNER, n_layer=LAYERS, n_head=4, rotary_dim=4),
    "gpt_neox": GPTNeoXConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=INNER, num_hidden_layers=LAYERS,
        num_attention_heads=4,
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(CONFIGS))
def adapter(request: pytest.FixtureRequest) -> ArchitectureAdapter:
    torch.manual_seed(0)
    return ArchitectureAdapter(AutoModelForCausalLM.from_config(CONFIGS[request.param]))


def test_sizes_come_from_the_config(adapter: ArchitectureAdapter) -> None:
    assert (adapter.num_layers, adapter.hidden_size, adapter.intermediate_size) == (LAYERS, HIDDEN, INNER)


def test_every_name_is_a_module_of_the_expected_shape(adapter: ArchitectureAdapter) -> None:
    for i in range(adapter.num_layers):
        assert adapter.module(adapter.layer_name(i)) is not None
        assert adapter.module(adapter.attn_name(i)) is not None
        w_in = adapter.module(adapter.mlp_in_name(i)).weight
        w_out = adapter.module(adapter.mlp_out_name(i)).weight
        if adapter.out_weight_transposed:  # GPT-2 Conv1D stores [in_features, out_features]
            assert w_in.shape == (HIDDEN, INNER) and w_out.shape == (INNER, HIDDEN)
        else:
            assert w_in.shape == (INNER, HIDDEN) and w_out.shape == (HIDDEN, INNER)
    assert adapter.input_embedding_weight().shape == (64, HIDDEN)
    assert adapter.output_embedding_weight().shape == (64, HIDDEN)
    norm = adapter.module(adapter.final_norm_name)
    assert norm.weight.shape == (HIDDEN,)
    assert adapter.module(adapter.lm_head_name).weight is adapter.output_embedding_weight()


def test_only_gpt2_is_transposed(adapter: ArchitectureAdapter) -> None:
    assert adapter.out_weight_transposed == (adapter.family == "gpt2")


def test_layer_names_reject_out_of_range(adapter: ArchitectureAdapter) -> None:
    assert adapter.mlp_out_name(-1) == adapter.mlp_out_name(LAYERS - 1)
    with pytest.raises(HarnessError, match="out of range"):
        adapter.layer_name(LAYERS)


def test_output_embedding_name_is_a_listed_parameter(adapter: ArchitectureAdapter) -> None:
    name = adapter.output_embedding_weight_name()
    assert dict(adapter.model.named_parameters())[name] is adapter.output_embedding_weight()


def test_layer_at_maps_relative_depth() -> None:
    model = AutoModelForCausalLM.from_config(
        LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=30,
                    num_attention_heads=2, num_key_value_heads=1)
    )  # fmt: skip
    adapter = ArchitectureAdapter(model)
    assert [adapter.layer_at(f) for f in (0.0, 0.25, 0.5, 1.0)] == [0, 7, 14, 29]
    with pytest.raises(HarnessError, match=r"\[0, 1\]"):
        adapter.layer_at(1.5)


def test_family_comes_from_the_config_not_the_name() -> None:
    model = AutoModelForCausalLM.from_config(CONFIGS["llama"])
    model.config._name_or_path = "openai-community/gpt2-xl"
    assert ArchitectureAdapter(model).family == "llama"


def test_unsupported_architecture_is_a_clear_error() -> None:
    model = AutoModelForCausalLM.from_config(
        OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=16, num_hidden_layers=1, num_attention_heads=2,
                  word_embed_proj_dim=16)
    )  # fmt: skip
    with pytest.raises(HarnessError, match=r"model_type 'opt'\) has no architecture adapter.*gpt2.*llama"):
        ArchitectureAdapter(model)


def test_module_names_the_missing_module(tiny_llama) -> None:
    with pytest.raises(HarnessError, match=r"no module 'model\.nope'"):
        tiny_llama.adapter.module("model.nope")


def test_tiny_models_tie_embeddings_like_smollm2(tiny_handle) -> None:
    assert tiny_handle.adapter.tied_embeddings
