"""`capture_modules`: what it records, how it edits outputs, stopping early, and that it never leaves
a hook behind."""

from __future__ import annotations

import pytest
import torch

from harness.api import HarnessError, capture_modules


def _inputs(handle, texts=("The capital of France is", "A cat is an animal")):
    batch = handle.tokenizer(list(texts), padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _hooks(module: torch.nn.Module) -> int:
    """Forward hooks on the model and its submodules (transformers attaches some of its own)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@torch.no_grad()
def test_records_inputs_and_outputs_of_linear_and_tuple_modules(tiny_llama) -> None:
    adapter = tiny_llama.adapter
    down, layer = adapter.mlp_out_name(1), adapter.layer_name(0)
    inputs = _inputs(tiny_llama)
    tiny_llama.model(**inputs, output_hidden_states=True)  # transformers adds its hooks on first use
    own = _hooks(tiny_llama.model)
    with capture_modules(tiny_llama, [down, layer], inputs=True, outputs=True) as seen:
        out = tiny_llama.model(**inputs, output_hidden_states=True)
    batch, tokens = inputs["input_ids"].shape
    (key,), (value,) = seen.inputs[down], seen.outputs[down]
    assert key.shape == (batch, tokens, adapter.intermediate_size)
    assert value.shape == (batch, tokens, adapter.hidden_size)
    weight = adapter.module(down).weight
    torch.testing.assert_close(value, key @ weight.T)  # the down-projection's own input and output
    # A decoder layer returns a tuple; its first element is the next hidden state.
    torch.testing.assert_close(seen.outputs[layer][0], out.hidden_states[1])
    assert _hooks(tiny_llama.model) == own


@torch.no_grad()
def test_edit_output_replaces_the_output_and_none_keeps_it(tiny_llama) -> None:
    name = tiny_llama.adapter.mlp_out_name(0)
    inputs = _inputs(tiny_llama)
    before = tiny_llama.model(**inputs).logits
    with capture_modules(tiny_llama.model, [name], edit_output=lambda _n, out: None):
        kept = tiny_llama.model(**inputs).logits
    calls = []
    with capture_modules(tiny_llama, [name], edit_output=lambda n, out: calls.append(n) or out * 0):
        zeroed = tiny_llama.model(**inputs).logits
    assert calls == [name]
    assert torch.equal(kept, before) and not torch.allclose(zeroed, before)
    assert torch.equal(tiny_llama.model(**inputs).logits, before)  # the edit ended with the block


@torch.no_grad()
def test_recorded_output_is_the_one_before_the_edit(tiny_gpt2) -> None:
    name = tiny_gpt2.adapter.layer_name(1)  # GPT-2 blocks return tuples too
    inputs = _inputs(tiny_gpt2)
    with capture_modules(tiny_gpt2, [name], outputs=True, edit_output=lambda _n, out: out + 1.0) as seen:
        edited = tiny_gpt2.model(**inputs, output_hidden_states=True)
    (original,) = seen.outputs[name]
    torch.testing.assert_close(edited.hidden_states[2], original + 1.0)


@torch.no_grad()
def test_stop_early_skips_the_layers_above(tiny_llama) -> None:
    adapter = tiny_llama.adapter
    first, last = adapter.mlp_out_name(0), adapter.mlp_out_name(adapter.num_layers - 1)
    inputs = _inputs(tiny_llama)
    with (
        capture_modules(tiny_llama, [last], inputs=True) as above,
        capture_modules(tiny_llama, [first], inputs=True, stop_early=True) as seen,
    ):
        assert seen.forward(**inputs) is None
        assert len(seen.inputs[first]) == 1 and above.inputs[last] == []
        seen.clear()
        assert seen.inputs[first] == []
    with capture_modules(tiny_llama, [first], inputs=True) as seen:  # without stop_early: the output
        assert seen.forward(**inputs).logits.shape[:2] == inputs["input_ids"].shape


def test_hooks_are_removed_on_error_and_unknown_names_attach_none(tiny_llama) -> None:
    name, own = tiny_llama.adapter.mlp_out_name(0), _hooks(tiny_llama.model)
    with pytest.raises(RuntimeError, match="inside"), capture_modules(tiny_llama, [name], inputs=True):
        assert _hooks(tiny_llama.model) == own + 1
        raise RuntimeError("inside the block")
    assert _hooks(tiny_llama.model) == own
    unknown = capture_modules(tiny_llama, [name, "model.nowhere"], outputs=True)
    with pytest.raises(HarnessError, match=r"no module 'model\.nowhere'"), unknown:
        pass
    assert _hooks(tiny_llama.model) == own
