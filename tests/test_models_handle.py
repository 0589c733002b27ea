"""ModelHandle: snapshot/restore is bit-exact and cheap, verify mode catches stray writes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.api import AppliedEdit, HarnessError
from harness.models.handle import VERIFY_ENV, ModelHandle, RestoreError, SnapshotEdit, tensor_digest


def all_bytes(handle: ModelHandle) -> dict[str, bytes]:
    return {name: tensor_digest(p) for name, p in handle.model.named_parameters()}


def perturb(param: torch.nn.Parameter, kind: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if kind == "noise":
            param.add_(torch.randn(param.shape, generator=gen) * 1e-3)
        elif kind == "one_element":
            param.view(-1)[seed % param.numel()] = float("nan")
        else:
            param.fill_(seed + 0.5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_restore_returns_the_original_bytes(tiny_handle: ModelHandle, data: st.DataObject) -> None:
    names = sorted(n for n, _ in tiny_handle.model.named_parameters())
    before = all_bytes(tiny_handle)
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=6, unique=True))
    snapshot = tiny_handle.snapshot(chosen)
    params = dict(tiny_handle.model.named_parameters())
    for name in data.draw(st.lists(st.sampled_from(chosen), min_size=1, unique=True)):
        kind = data.draw(st.sampled_from(["noise", "one_element", "fill"]))
        perturb(params[name], kind, data.draw(st.integers(0, 10**6)))
    assert all_bytes(tiny_handle) != before
    tiny_handle.restore(snapshot)  # verify mode is on in the fixture: checks every parameter too
    assert all_bytes(tiny_handle) == before


def test_snapshot_clones_only_the_named_parameters(tiny_llama: ModelHandle) -> None:
    name = tiny_llama.adapter.mlp_out_name(1) + ".weight"
    snapshot = tiny_llama.snapshot([name, name])
    assert snapshot.names == (name,)
    saved = snapshot.tensors[name]
    live = dict(tiny_llama.model.named_parameters())[name]
    assert saved.data_ptr() != live.data_ptr() and torch.equal(saved, live)


def test_verify_mode_catches_a_change_outside_the_snapshot(tiny_gpt2: ModelHandle) -> None:
    inside = tiny_gpt2.adapter.mlp_out_name(0) + ".weight"
    outside = tiny_gpt2.adapter.mlp_in_name(2) + ".weight"
    snapshot = tiny_gpt2.snapshot([inside])
    params = dict(tiny_gpt2.model.named_parameters())
    perturb(params[inside], "noise", 1)
    perturb(params[outside], "noise", 2)
    with pytest.raises(RestoreError, match=rf"1 parameter\(s\) still differ.*{outside}"):
        tiny_gpt2.restore(snapshot)


def test_without_verify_a_stray_change_goes_unnoticed(tiny_gpt2: ModelHandle) -> None:
    tiny_gpt2.verify = False
    snapshot = tiny_gpt2.snapshot([tiny_gpt2.adapter.mlp_out_name(0) + ".weight"])
    perturb(dict(tiny_gpt2.model.named_parameters())[tiny_gpt2.adapter.mlp_in_name(0) + ".weight"], "fill", 0)
    tiny_gpt2.restore(snapshot)
    with pytest.raises(HarnessError, match="without verify mode"):
        tiny_gpt2.check_unchanged(snapshot)


def test_env_var_turns_verify_mode_on(tiny_llama: ModelHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VERIFY_ENV, "1")
    assert ModelHandle(tiny_llama.model, tiny_llama.tokenizer, "x").verify
    monkeypatch.setenv(VERIFY_ENV, "0")
    assert not ModelHandle(tiny_llama.model, tiny_llama.tokenizer, "x").verify


def test_tied_head_is_snapshotted_under_either_name(tiny_llama: ModelHandle) -> None:
    head = tiny_llama.adapter.output_embedding_weight()
    before = tensor_digest(head)
    snapshot = tiny_llama.snapshot(["lm_head.weight"])
    perturb(head, "noise", 3)
    tiny_llama.restore(snapshot)
    assert tensor_digest(tiny_llama.adapter.input_embedding_weight()) == before


def test_unknown_parameter_is_named(tiny_llama: ModelHandle) -> None:
    with pytest.raises(HarnessError, match=r"no parameter named 'model\.layers\.9\.mlp\.weight'"):
        tiny_llama.snapshot(["model.layers.9.mlp.weight"])


def test_snapshot_edit_undo_restores(tiny_llama: ModelHandle) -> None:
    name = tiny_llama.adapter.mlp_out_name(2) + ".weight"
    before = all_bytes(tiny_llama)
    edit = SnapshotEdit(tiny_llama, tiny_llama.snapshot([name]))
    perturb(dict(tiny_llama.model.named_parameters())[name], "noise", 4)
    assert isinstance(edit, AppliedEdit) and edit.context == ""
    edit.undo()
    assert all_bytes(tiny_llama) == before


def test_fingerprint_is_a_content_hash(
    tiny_model_dirs: dict, tiny_llama: ModelHandle, tiny_gpt2: ModelHandle
) -> None:
    from harness.models.load import load_model

    again = load_model(tiny_model_dirs["llama"], device="cpu")
    assert tiny_llama.fingerprint() == again.fingerprint() != tiny_gpt2.fingerprint()
    changed = load_model(tiny_model_dirs["llama"], device="cpu")
    perturb(changed.adapter.module(changed.adapter.final_norm_name).weight, "noise", 0)
    assert changed.fingerprint() != tiny_llama.fingerprint()


def test_digest_sees_dtype_and_bits() -> None:
    x = torch.tensor([1.0, 2.0])
    assert tensor_digest(x) != tensor_digest(x.to(torch.bfloat16))
    same = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    assert tensor_digest(x.to(torch.bfloat16)) == tensor_digest(same)
    assert tensor_digest(torch.tensor([0.0])) != tensor_digest(torch.tensor([-0.0]))
