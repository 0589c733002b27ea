"""LoRA and AdaLoRA through peft: adapters learn the edit, and undo leaves no trace in the model."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import digests, logits, mean_scores, zsre_cases

from harness.api import EditCase, HarnessError
from harness.hparams import resolve_hparams
from harness.models.handle import ModelHandle
from harness_plugins.methods.lora import ADAPTER, AdaLoRA, LoRA, module_names
from harness_plugins.methods.lora_labels import edit_batch, target_nll

CASE = EditCase(case_id="c0", prompt="The capital of France is", target_new="Rome")
OTHER = EditCase(case_id="c1", prompt="Water is made of", target_new="stone")
FAST = {"num_steps": 25, "lr": 0.02}


def nll(handle: ModelHandle, case: EditCase) -> float:
    batch = edit_batch(handle, [case])
    with torch.no_grad():
        return target_nll(handle.model(**batch.answers.model_inputs()).logits, batch.labels).item()


def model_state(handle: ModelHandle) -> tuple:
    """What undo must give back besides the weights: the module tree, attributes, grad flags."""
    modules = tuple((name, type(m)) for name, m in handle.model.named_modules())
    flags = tuple((n, p.requires_grad) for n, p in handle.model.named_parameters())
    return modules, flags, sorted(vars(handle.model)), handle.model.training


def test_defaults_and_module_names_come_from_the_adapter(tiny_handle: ModelHandle) -> None:
    hparams = resolve_hparams(LoRA(), tiny_handle, {})
    assert hparams["layers"] and all(0 <= i < tiny_handle.adapter.num_layers for i in hparams["layers"])
    names = module_names(tiny_handle, [0], ["mlp_out", "mlp_in"])
    assert names == [tiny_handle.adapter.mlp_out_name(0), tiny_handle.adapter.mlp_in_name(0)]
    with pytest.raises(HarnessError, match="no module"):
        module_names(tiny_handle, [0], ["no_such_module"])
    with pytest.raises(HarnessError, match="rank"):
        resolve_hparams(LoRA(), tiny_handle, {"rank": 0})


def test_window_loss_is_the_target_nll_of_the_full_logits(tiny_handle: ModelHandle) -> None:
    batch = edit_batch(
        tiny_handle, [CASE, EditCase(case_id="c2", prompt="Water is made of", target_new="a long answer")]
    )
    with torch.no_grad():
        full = tiny_handle.model(**batch.answers.model_inputs()).logits
        window = tiny_handle.model(**batch.model_inputs())
    assert window.logits.shape[1] == len(batch.window) < full.shape[1]
    expected = target_nll(full, batch.labels)
    assert torch.allclose(window.loss, expected) and torch.allclose(
        target_nll(window.logits, batch.window_labels), expected
    )


@pytest.mark.parametrize("method", [LoRA(), AdaLoRA()], ids=["lora", "adalora"])
def test_edit_learns_the_target_and_undo_leaves_no_trace(tiny_handle: ModelHandle, method: LoRA) -> None:
    hparams = resolve_hparams(method, tiny_handle, FAST)
    before = digests(tiny_handle), logits(tiny_handle, [CASE, OTHER]), model_state(tiny_handle)
    before_nll = nll(tiny_handle, CASE)
    edit = method.apply(tiny_handle, [CASE], hparams)
    assert nll(tiny_handle, CASE) < before_nll - 0.5
    assert hasattr(tiny_handle.model, "peft_config")
    edit.undo()  # verify mode is on in the fixture: undo itself checks every parameter too
    assert digests(tiny_handle) == before[0]
    assert torch.equal(logits(tiny_handle, [CASE, OTHER]), before[1])
    assert model_state(tiny_handle) == before[2]


def test_batch_edit_trains_on_every_case(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(LoRA(), tiny_llama, FAST)
    before = nll(tiny_llama, CASE), nll(tiny_llama, OTHER)
    edit = LoRA().apply(tiny_llama, [CASE, OTHER], hparams)
    assert nll(tiny_llama, CASE) < before[0] - 1.0 and nll(tiny_llama, OTHER) < before[1] - 1.0
    edit.undo()


def test_sequential_edits_keep_training_one_adapter(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(LoRA(), tiny_llama, FAST)
    original = logits(tiny_llama, [CASE, OTHER])
    first = LoRA().apply(tiny_llama, [CASE], hparams)
    after_first = logits(tiny_llama, [CASE, OTHER])
    adapters = sum("lora_A" in n for n, _ in tiny_llama.model.named_parameters())
    second = LoRA().apply(tiny_llama, [OTHER], hparams)
    assert sum("lora_A" in n for n, _ in tiny_llama.model.named_parameters()) == adapters
    assert not torch.equal(logits(tiny_llama, [CASE, OTHER]), after_first)
    with pytest.raises(HarnessError, match="reverse order"):
        first.undo()
    with pytest.raises(HarnessError, match="already carries a lora adapter"):
        AdaLoRA().apply(tiny_llama, [CASE], resolve_hparams(AdaLoRA(), tiny_llama, FAST))
    second.undo()
    assert torch.equal(logits(tiny_llama, [CASE, OTHER]), after_first)
    first.undo()
    assert torch.equal(logits(tiny_llama, [CASE, OTHER]), original)


def test_adalora_allocates_ranks_over_its_schedule(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(AdaLoRA(), tiny_llama, {**FAST, "stop_loss": 0.0, "init_r": 6, "target_r": 2})
    edit = AdaLoRA().apply(tiny_llama, [CASE], hparams)
    pattern = edit.session.tuner.peft_config[ADAPTER].rank_pattern
    kept = sum(int(torch.as_tensor(mask).sum()) for mask in pattern.values())
    assert pattern and kept < 6 * len(pattern)  # the budget pruned ranks below their initial 6
    edit.undo()
    assert not hasattr(tiny_llama.model, "peft_config")


@pytest.mark.slow
@pytest.mark.parametrize("method", [LoRA(), AdaLoRA()], ids=["lora", "adalora"])
def test_lora_on_smollm2_with_real_zsre(smollm2: ModelHandle, method: LoRA) -> None:
    scores = mean_scores(smollm2, method, zsre_cases(20), resolve_hparams(method, smollm2, {}), mode="single")
    print(method.name, scores)
    # measured (20 cases) lora: edit 1.00, rephrase 0.94, locality 0.70; adalora: edit 1.00,
    # rephrase 0.79, locality 0.89. Unedited: edit 0.25, locality 1.0; the reference's LoRA: locality 0.0
    assert scores["edit_succ"] >= 0.9 and scores["locality"] >= 0.6
