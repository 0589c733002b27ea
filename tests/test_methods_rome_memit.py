"""ROME and MEMIT: the closed-form math on random tensors, the methods on tiny models, and edit
quality on the real SmolLM2 with real ZsRE records (slow)."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import mean_scores, zsre_cases

from harness.api import EditCase, HarnessError
from harness.hparams import resolve_hparams
from harness.plugins import get_registry
from harness.runs.catalog import Catalog
from harness_plugins.rome_family.keys import Rewrite, last_token_before, subject_reads
from harness_plugins.rome_family.templates import context_templates
from harness_plugins.rome_family.updates import (
    clamp_norm,
    memit_update,
    rome_direction,
    rome_update,
    spread_residual,
)
from harness_plugins.rome_family.weights import mlp_out_matrix

CASE = EditCase(case_id="c1", prompt="The capital of France is", target_new="Berlin", subject="France")
FAST = {"context_templates": [[3, 2]], "v_num_grad_steps": 3, "mom2_samples": 32, "mom2_tokens": 32}


def _random_spd(d: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, 4 * d, generator=generator)
    return a @ a.T / (4 * d)


def test_rome_update_maps_key_to_value_and_is_rank_one() -> None:
    g = torch.Generator().manual_seed(0)
    w, k, v = torch.randn(6, 10, generator=g), torch.randn(10, generator=g), torch.randn(6, generator=g)
    for c_inv in (None, torch.linalg.inv(_random_spd(10, g))):
        u = rome_direction(k, c_inv)
        delta = rome_update(w, k, v, u)
        assert delta.shape == (6, 10)
        torch.testing.assert_close((w + delta) @ k, v, rtol=1e-4, atol=1e-4)
        assert torch.linalg.matrix_rank(delta) == 1
    # A key orthogonal to u is left alone: that is what protects other facts.
    u = rome_direction(k)
    other = torch.randn(10, generator=g)
    other -= (other @ u) / (u @ u) * u
    torch.testing.assert_close(rome_update(w, k, v, u) @ other, torch.zeros(6), atol=1e-5, rtol=0)


def test_rome_update_rejects_mismatched_shapes() -> None:
    with pytest.raises(HarnessError, match="W is"):
        rome_update(torch.zeros(6, 10), torch.zeros(9), torch.zeros(6), torch.zeros(9))


def test_memit_update_satisfies_its_normal_equations() -> None:
    g = torch.Generator().manual_seed(1)
    d_in, d_out, n, lam = 12, 5, 3, 2.0
    c, k, r = _random_spd(d_in, g), torch.randn(d_in, n, generator=g), torch.randn(d_out, n, generator=g)
    delta = memit_update(r, k, c, lam)
    assert delta.shape == (d_out, d_in)
    # ΔW (λC + K Kᵀ) = R Kᵀ
    torch.testing.assert_close(
        delta.double() @ (lam * c.double() + k.double() @ k.double().T), r.double() @ k.double().T
    )
    # With a vanishing λ the keys map (almost) exactly to the residuals.
    torch.testing.assert_close(memit_update(r, k, c, 1e-8) @ k, r, rtol=1e-3, atol=1e-3)


def test_memit_helpers() -> None:
    z, h = torch.ones(4, 2) * 3, torch.ones(4, 2)
    torch.testing.assert_close(spread_residual(z, h, 4), torch.full((4, 2), 0.5))
    with pytest.raises(HarnessError):
        spread_residual(z, h, 0)
    ref = torch.ones(4)
    assert clamp_norm(torch.ones(4) * 10, ref, 2.0).norm().item() == pytest.approx(4.0)
    torch.testing.assert_close(clamp_norm(torch.ones(4) * 0.1, ref, 2.0), torch.ones(4) * 0.1)
    with pytest.raises(HarnessError, match="C is"):
        memit_update(torch.zeros(5, 2), torch.zeros(12, 2), torch.zeros(11, 11), 1.0)


def test_subject_position_and_rewrite_validation(tiny_handle) -> None:
    tok = tiny_handle.tokenizer
    rw = Rewrite.of(CASE, "rome")
    index = last_token_before(tok, CASE.prompt, rw.subject_end())
    enc = tok(CASE.prompt, add_special_tokens=True, return_offsets_mapping=True)
    assert CASE.prompt[enc.offset_mapping[index][0] : enc.offset_mapping[index][1]].strip() in CASE.subject
    assert enc.offset_mapping[index][1] == rw.subject_end()
    with pytest.raises(HarnessError, match=r"case c2: field 'subject'"):
        Rewrite.of(EditCase(case_id="c2", prompt="No subject here", target_new="x", subject="Rome"), "rome")


def test_context_templates_are_cached_and_seeded(tiny_handle, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    first = context_templates(tiny_handle, [[3, 2]])
    assert first[0] == "{}" and len(first) == 3 and all(t.endswith(". {}") for t in first[1:])
    assert len(list((tmp_path / "templates").iterdir())) == 1
    torch.manual_seed(123)  # the global seed must not matter
    assert context_templates(tiny_handle, [[3, 2]]) == first


@pytest.mark.parametrize("mom2", [False, True])
def test_rome_writes_the_value_at_the_key_and_undoes_exactly(
    tiny_handle, tmp_path, monkeypatch, mom2
) -> None:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    rome = get_registry().load("methods", "rome")()
    hp = resolve_hparams(rome, tiny_handle, {**FAST, "mom2_adjustment": mom2})
    (layer,) = hp["layers"]
    w0 = mlp_out_matrix(tiny_handle, layer).clone()
    torch.manual_seed(0)
    edit = rome.apply(tiny_handle, [CASE], hp)
    delta = mlp_out_matrix(tiny_handle, layer) - w0
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-5) == 1
    templates = context_templates(tiny_handle, hp["context_templates"])
    module = tiny_handle.adapter.mlp_out_name(layer)
    k_star = subject_reads(tiny_handle, module, [Rewrite.of(CASE, "rome")], templates, "input")[:, 0]
    assert delta.norm() > 0 and (delta @ k_star).norm() > 0
    edit.undo()  # verify mode: raises if any parameter differs from before
    assert torch.equal(mlp_out_matrix(tiny_handle, layer), w0)


def test_a_case_without_subject_is_keyed_at_the_prompts_last_token(
    tiny_handle, tmp_path, monkeypatch
) -> None:
    """Sanitation's test questions have no subject: ROME's `fact_token: last`."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    question = EditCase(case_id="q", prompt="Question: Where is Paris?\nAnswer:", target_new="I don't know.")
    rome = get_registry().load("methods", "rome")()
    assert rome.check_case(question) is None
    last = len(tiny_handle.tokenizer(question.prompt).input_ids) - 1
    rewrite = Rewrite.of(question, "rome")
    assert last_token_before(tiny_handle.tokenizer, question.prompt, rewrite.subject_end()) == last
    hp = resolve_hparams(rome, tiny_handle, FAST)
    (layer,) = hp["layers"]
    w0 = mlp_out_matrix(tiny_handle, layer).clone()
    edit = rome.apply(tiny_handle, [question], hp)
    assert torch.linalg.matrix_rank((mlp_out_matrix(tiny_handle, layer) - w0).double(), rtol=1e-5) == 1
    edit.undo()
    misplaced = EditCase(case_id="m", prompt=question.prompt, target_new="x", subject="Rome")
    assert "case m: field 'subject' ('Rome') does not occur in field 'prompt'" in rome.check_case(misplaced)


def test_rome_refuses_batches(tiny_llama) -> None:
    rome = get_registry().load("methods", "rome")()
    with pytest.raises(HarnessError, match="one case at a time"):
        rome.apply(tiny_llama, [CASE, CASE], resolve_hparams(rome, tiny_llama, FAST))


def test_memit_batch_edit_touches_only_its_layers_and_undoes(tiny_handle, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    memit = get_registry().load("methods", "memit")()
    hp = resolve_hparams(memit, tiny_handle, {**FAST, "layers": [1, 2]})
    second = EditCase(case_id="c2", prompt="Tokyo is the capital of", target_new="Italy", subject="Tokyo")
    before = {n: p.detach().clone() for n, p in tiny_handle.model.named_parameters()}
    edit = memit.apply(tiny_handle, [CASE, second], hp)
    changed = {n for n, p in tiny_handle.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"{tiny_handle.adapter.mlp_out_name(i)}.weight" for i in (1, 2)}
    edit.undo()
    assert all(torch.equal(p, before[n]) for n, p in tiny_handle.model.named_parameters())


def test_bad_overrides_fail_clearly(tiny_llama) -> None:
    memit = get_registry().load("methods", "memit")()
    with pytest.raises(HarnessError, match="layers"):
        resolve_hparams(memit, tiny_llama, {"layers": "4"})
    with pytest.raises(HarnessError, match="v_lr"):
        resolve_hparams(memit, tiny_llama, {"v_lr": "fast"})
    defaults = resolve_hparams(memit, tiny_llama, {})
    assert defaults["layers"] and defaults["mom2_update_weight"] > 0


# --- the real SmolLM2 on real ZsRE records (slow); FT-L and FT-M share the same protocol here ---

#: The hyperparameters are those of the main job (`harness run`): the knowedit-mini suite's CPU
#: settings for ROME and MEMIT (docs/methods.md, "Cost on a CPU"), the defaults for FT-L and FT-M.
MAIN_JOB_HPARAMS = Catalog(get_registry()).suite("knowedit-mini").hparams
#: Minimum mean edit success; ft-l only has to move the answers (see the test).
MIN_EDIT_SUCC = {"rome": 0.9, "memit": 0.8, "ft-m": 0.9}
MIN_UNRELATED = {"rome": 0.9, "memit": 0.9}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rome", "memit", "ft-m", "ft-l"])
def test_single_edits_on_smollm2_with_real_zsre(smollm2, method) -> None:
    """The runner's single-mode loop (seed, apply, evaluate, undo) with the real evaluator; undo in
    verify mode raises unless every parameter is bit-identical to before the edit.

    Same-subject locality (KnowEdit's relation_specificity) is measured and printed, not bounded:
    ROME-style edits move other relations of the edited subject (the study: 53.7 for ROME on ZsRE
    with Llama-2-7B-chat). Facts about other subjects must stay."""
    assert smollm2.verify
    editor = get_registry().load("methods", method)()
    hparams = resolve_hparams(editor, smollm2, MAIN_JOB_HPARAMS.get(method, {}))
    scores = mean_scores(smollm2, editor, zsre_cases(20, unrelated=True), hparams, mode="single")
    print(method, {key: round(value, 3) for key, value in scores.items()})
    assert scores["edit_succ"] >= MIN_EDIT_SUCC.get(method, scores["pre:edit_succ"] + 0.1)
    assert scores["locality.unrelated"] >= MIN_UNRELATED.get(method, 0.0)
