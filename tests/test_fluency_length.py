"""Fluency is measured on a continuation of a fixed length, whatever the model's end-of-turn
behaviour: on tiny models made to end their turn at once (fast), and on the real SmolLM2-Instruct,
which ends its turn right after most ZsRE questions (slow)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from shared_data import KNOWEDIT

from harness.api import EditCase
from harness.evaluation.batching import run_generations
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Request
from harness.testing import Evaluator, resolve_task
from harness_plugins.metrics.text import weighted_ngram_entropy

LENGTH = 12
CASE = EditCase("c", "The capital of France is", "Paris")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))


@contextmanager
def ends_turn_at_once(handle):
    """The model's first new token is its EOS (as SmolLM2-Instruct's end of turn after a question);
    later tokens are its own. The prompt's forward pass is the only one of more than one token."""

    def force_eos(module, args, kwargs, output):
        if kwargs["input_ids"].shape[1] > 1:
            output.logits[:, -1, handle.tokenizer.eos_token_id] = output.logits.max() + 100.0
        return output

    hook = handle.model.register_forward_hook(force_eos, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()


def fluency_request(handle, case: EditCase, length: int = LENGTH) -> Request:
    options = EvalOptions(metric_options={"fluency_max_new_tokens": length})
    (request,) = Evaluator(handle, ["fluency"], options).requests(case)
    return request


def test_the_fluency_request_does_not_stop_at_eos(tiny_gpt2):
    request = fluency_request(tiny_gpt2, CASE)
    assert request.kind == "generate" and request.max_new_tokens == LENGTH and not request.stop_at_eos
    stopping = Request.generate(request.prompt, LENGTH, top_k=request.top_k, seed=request.seed)
    assert stopping.stop_at_eos and stopping != request
    # Part of the pre-edit cache key; absent at its default, so keys of stopping requests stay.
    assert request.identity() == {**stopping.identity(), "stop_at_eos": False}
    assert "stop_at_eos" not in stopping.identity()


def test_a_fluency_text_has_its_length_when_the_model_ends_its_turn_at_once(tiny_handle):
    """In one batch: the fluency request goes on for its whole length, end token included; a
    request that stops at EOS (and another prompt's fluency request) beside it keep their own."""
    tok = tiny_handle.tokenizer
    fluency = fluency_request(tiny_handle, CASE)
    other = fluency_request(tiny_handle, EditCase("d", "Tokyo is the capital of", "Japan"), LENGTH + 3)
    stopping = Request.generate(CASE.prompt, LENGTH, top_k=fluency.top_k, seed=fluency.seed)
    with ends_turn_at_once(tiny_handle):
        made = run_generations(tiny_handle.model, tok, [fluency, stopping, other], EvalOptions())
        (scored,) = Evaluator(
            tiny_handle,
            ["fluency"],
            EvalOptions(use_cache=False, metric_options={"fluency_max_new_tokens": LENGTH}),
        ).evaluate_pre([CASE])
    full, stopped, longer = made
    assert stopped.token_ids == () and stopped.text == ""
    assert len(full.token_ids) == LENGTH and len(longer.token_ids) == LENGTH + 3
    assert full.token_ids[0] == tok.eos_token_id == longer.token_ids[0]
    assert full.text == tok.decode(full.token_ids, skip_special_tokens=True) != ""
    # The score reads the whole text, not the prompt alone.
    assert scored["fluency"] == pytest.approx(weighted_ngram_entropy(CASE.prompt + full.text))
    assert scored["fluency"] != pytest.approx(weighted_ngram_entropy(CASE.prompt))


def test_without_eos_a_fixed_length_continuation_is_what_the_model_samples(tiny_llama):
    """Not stopping changes nothing for a model that does not end its turn: the same draw."""
    fluency = fluency_request(tiny_llama, CASE)
    stopping = Request.generate(CASE.prompt, LENGTH, top_k=fluency.top_k, seed=fluency.seed)
    full, stopped = run_generations(
        tiny_llama.model, tiny_llama.tokenizer, [fluency, stopping], EvalOptions()
    )
    eos = tiny_llama.tokenizer.eos_token_id
    cut = full.token_ids.index(eos) if eos in full.token_ids else LENGTH
    assert len(full.token_ids) == LENGTH and stopped.token_ids == full.token_ids[:cut]


@pytest.mark.slow
@pytest.mark.skipif(not KNOWEDIT.exists(), reason="shared KnowEdit data absent")
def test_every_fluency_text_on_smollm2_has_the_full_length(smollm2):
    """The first 10 real ZsRE questions: SmolLM2-Instruct ends its turn at once after most of them
    (the premise, checked), yet every fluency continuation has its 100 tokens and its text is
    scored, not the prompt alone."""
    cases = resolve_task("zsre").load(data_dir=str(KNOWEDIT)).cases[:10]
    evaluator = Evaluator(smollm2, ["fluency"], EvalOptions(use_cache=False))
    requests = [r for case in cases for r in evaluator.requests(case)]
    stopping = [Request.generate(r.prompt, r.max_new_tokens, top_k=r.top_k, seed=r.seed) for r in requests]
    made = run_generations(smollm2.model, smollm2.tokenizer, requests + stopping, EvalOptions())
    full, stopped = made[: len(cases)], made[len(cases) :]
    ended_at_once = sum(not g.token_ids for g in stopped)
    print(f"SmolLM2 ends its turn at once after {ended_at_once} of {len(cases)} ZsRE questions")
    assert ended_at_once >= len(cases) // 2
    assert all(len(g.token_ids) == 100 for g in full)
    scores = evaluator.evaluate_pre(cases)
    for case, generation, got in zip(cases, full, scores, strict=True):
        assert generation.text.strip()
        assert got["fluency"] == pytest.approx(weighted_ngram_entropy(case.prompt + generation.text))
        assert got["fluency"] > weighted_ngram_entropy(case.prompt)
