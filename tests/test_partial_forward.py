"""`PartialForward`: the columns and layers it recomputes give the full forward pass's logits and
gradients, on both tiny families, and it leaves the model as it found it."""

from __future__ import annotations

import pytest
import torch

from harness.api import HarnessError, PartialForward, encode_prompts

TEXTS = [
    "The capital of France is Paris and it is a city",
    "A cat",
    "I think that the answer to the question is",
]


def _batch(handle):
    return encode_prompts(handle.tokenizer, TEXTS, padding_side="left").model_inputs()


def _add_at(delta: torch.Tensor, column: int):
    """A forward hook adding δ [d] to a module's output at one column of every row."""

    def hook(_module, _args, output):
        added = output.clone()
        added[:, column] += delta
        return added

    return hook


@torch.no_grad()
@pytest.mark.parametrize("layer", [0, 1, 3])
def test_logits_equal_the_full_forward_at_the_recomputed_columns(tiny_handle, layer: int) -> None:
    inputs = _batch(tiny_handle)
    full = tiny_handle.model(**inputs, use_cache=False).logits
    width = inputs["input_ids"].shape[1]
    assert int((inputs["attention_mask"] == 0).sum(-1).max()) > 2
    # 0: no cache; 1: inside a row's padding (rows still padded in the recomputed part); the last.
    for start in (0, 1, width // 2, width - 1):
        partial = PartialForward(tiny_handle, inputs, layer=layer, start=start)
        torch.testing.assert_close(partial().logits, full[:, start:], atol=1e-5, rtol=1e-4)
        keep = min(2, width - start)
        torch.testing.assert_close(partial(logits_to_keep=keep).logits, full[:, -keep:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", [1, 2])
def test_a_change_at_the_layer_gets_the_full_forward_passs_gradient(tiny_handle, layer: int) -> None:
    inputs = _batch(tiny_handle)
    width = inputs["input_ids"].shape[1]
    column = width - 4
    module = tiny_handle.adapter.module(tiny_handle.adapter.mlp_out_name(layer))
    torch.manual_seed(0)
    delta = (0.5 * torch.randn(tiny_handle.adapter.hidden_size)).requires_grad_()

    def loss_and_grad(run, column_in_output: int):
        delta.grad = None
        hook = module.register_forward_hook(_add_at(delta, column_in_output))
        try:
            logits = run().logits
        finally:
            hook.remove()
        loss = torch.log_softmax(logits[:, -3:].float(), -1)[..., 7].sum()
        loss.backward()
        return logits[:, -3:].detach(), delta.grad.clone()

    full_logits, full_grad = loss_and_grad(lambda: tiny_handle.model(**inputs, use_cache=False), column)
    start = column - 2
    partial = PartialForward(tiny_handle, inputs, layer=layer, start=start)
    for _ in range(2):  # a second call starts again from the kept cache
        logits, grad = loss_and_grad(partial, column - start)
        torch.testing.assert_close(logits, full_logits, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(grad, full_grad, atol=1e-5, rtol=1e-4)
    assert grad.abs().sum() > 0


@torch.no_grad()
def test_the_model_is_left_as_it_was(tiny_llama) -> None:
    inputs = _batch(tiny_llama)
    before = tiny_llama.model(**inputs, use_cache=False).logits
    layers = [tiny_llama.adapter.module(tiny_llama.adapter.layer_name(i)) for i in range(4)]
    hooks = sum(len(m._forward_hooks) for m in tiny_llama.model.modules())
    PartialForward(tiny_llama, inputs, layer=3, start=2)()
    assert all("forward" not in layer.__dict__ for layer in layers)
    assert sum(len(m._forward_hooks) for m in tiny_llama.model.modules()) == hooks
    assert torch.equal(tiny_llama.model(**inputs, use_cache=False).logits, before)


def test_out_of_range_layer_or_column_is_refused(tiny_gpt2) -> None:
    inputs = _batch(tiny_gpt2)
    width = inputs["input_ids"].shape[1]
    with pytest.raises(HarnessError, match="layer 4 is out of range"):
        PartialForward(tiny_gpt2, inputs, layer=4, start=0)
    with pytest.raises(HarnessError, match=f"start column {width} is out of range"):
        PartialForward(tiny_gpt2, inputs, layer=0, start=width)
