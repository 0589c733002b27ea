"""ROME's and MEMIT's value optimisation (issue 23): each of its choices, checked on a tiny model
against the loss computed here by hand from the model's own outputs.

The optimisation's trace records, per loss evaluation, the δ it was taken at and the loss terms; the
tests re-run the model with that δ added at the subject (a hook written here, not the method's) and
compute the KL term, the decay and the total themselves.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import harness_plugins.methods.memit as memit_module
from harness.api import EditCase, HarnessError, encode_answers, join_prompt_answer
from harness.hparams import resolve_hparams
from harness.testing import get_registry
from harness_plugins.rome_family.keys import Rewrite, last_token_before, subject_reads
from harness_plugins.rome_family.templates import context_templates, fill
from harness_plugins.rome_family.values import STOP_BELOW, ValueStep, kl_divergence, optimize_value

#: The prompt ends with the subject, so δ at the subject's last token moves the target's first
#: token directly and the NLL can reach the stopping threshold within a few steps.
REWRITE = Rewrite("The capital of France", "France", "Berlin")
TEMPLATES = ["{}", "Paris is a city. {}"]
LAYER = 1
#: Three evaluations, the KL term computed but too light to hold δ back, so that δ moves far enough
#: for every choice to show.
BASE = {
    "v_num_grad_steps": 3,
    "v_lr": 0.5,
    "v_weight_decay": 0.0,
    "clamp_norm_factor": 1000.0,
    "kl_factor": 1e-3,
    "kl_position": "next_token",
    "kl_direction": "edited_original",
    "weight_decay_form": "squared",
    "stop_on": "total_loss",
}


def _sharpen(handle, factor: float):
    """The tiny model with its final norm's weight scaled by `factor`. A random tiny model's logits
    span a few nats, so no δ could make a target likely, nor move a distribution far; scaled, they
    can, as in a trained model. (Scaling the tied embeddings instead would scale the residual stream
    too, and drown what δ at the subject passes on to later tokens.)"""
    with torch.no_grad():
        handle.adapter.module(handle.adapter.final_norm_name).weight.mul_(factor)
    return handle


@pytest.fixture
def sharp(tiny_handle):
    """Logits sharp enough for the NLL to fall below the stopping threshold in a step or two."""
    return _sharpen(tiny_handle, 20)


def _trace(handle, v0: torch.Tensor | None = None, **changes) -> tuple[torch.Tensor, list[ValueStep]]:
    """The value optimised with BASE and `changes`, and its trace."""
    trace: list[ValueStep] = []
    delta = optimize_value(handle, LAYER, REWRITE, TEMPLATES, {**BASE, **changes}, v0=v0, trace=trace)
    return delta, trace


def _log_probs_with(handle, text: str, delta: torch.Tensor, at: int) -> torch.Tensor:
    """log p(next token) at every position of `text` [T, V], δ added to the MLP output of LAYER at
    token `at`."""
    ids = handle.tokenizer(text, return_tensors="pt").input_ids

    def add(_module, _args, output):
        output = output.clone()
        output[0, at] += delta
        return output

    hook = handle.adapter.module(handle.adapter.mlp_out_name(LAYER)).register_forward_hook(add)
    try:
        with torch.no_grad():
            return torch.log_softmax(handle.model(input_ids=ids).logits[0].float(), dim=-1)
    finally:
        hook.remove()


def _subject_last(handle, text: str, subject: str) -> int:
    tok = handle.tokenizer
    prefix = tok(subject).input_ids
    assert tok(text).input_ids[: len(prefix)] == prefix  # the subject's tokens start the text
    return len(prefix) - 1


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p ‖ q) of log-probabilities, as the textbook writes it."""
    return float(sum(pi.exp() * (pi - qi) for pi, qi in zip(p.double(), q.double(), strict=True)))


def test_kl_divergence_is_the_references_call_in_its_direction() -> None:
    """The reference's `kl_div(kl_distr_init, kl_log_probs, log_target=True)` takes its first
    argument as log q of KL(p ‖ q): it is KL(edited ‖ original), as the ROME paper's eq. 4 writes."""
    g = torch.Generator().manual_seed(0)
    original, edited = (torch.log_softmax(3 * torch.randn(50, generator=g), -1) for _ in range(2))
    reference = torch.nn.functional.kl_div(
        original[None], edited[None], log_target=True, reduction="batchmean"
    )
    ours = kl_divergence(original, edited, "edited_original")
    torch.testing.assert_close(ours, reference)
    assert ours.item() == pytest.approx(_kl(edited, original), rel=1e-5)
    reverse = kl_divergence(original, edited, "original_edited")
    assert reverse.item() == pytest.approx(_kl(original, edited), rel=1e-5)
    assert reverse.item() != pytest.approx(ours.item(), rel=1e-2)


@pytest.mark.parametrize("position", ["next_token", "subject_last"])
@pytest.mark.parametrize("direction", ["edited_original", "original_edited"])
def test_kl_term_reads_the_chosen_token_in_the_chosen_direction(tiny_handle, position, direction) -> None:
    handle = _sharpen(tiny_handle, 6)  # distributions that one step of δ moves measurably
    _, trace = _trace(handle, kl_position=position, kl_direction=direction)
    step = trace[1]  # one Adam step away from δ = 0
    text = "France is a"
    subject = _subject_last(handle, text, "France")
    edited = _log_probs_with(handle, text, step.delta, subject)
    original = _log_probs_with(handle, text, torch.zeros_like(step.delta), subject)
    by_hand = {}
    for pos, row in (("next_token", -1), ("subject_last", subject)):
        by_hand[pos, "edited_original"] = _kl(edited[row], original[row])
        by_hand[pos, "original_edited"] = _kl(original[row], edited[row])
    assert trace[0].kl == 0.0
    assert step.kl == pytest.approx(by_hand[position, direction], rel=1e-3)
    assert step.total == pytest.approx(step.nll + BASE["kl_factor"] * step.kl, rel=1e-5)
    # The position matters; so does the direction where the distribution moves far (at the subject;
    # after "is a" the two directions are within 2% here, and the test above tells them apart).
    other_position = "subject_last" if position == "next_token" else "next_token"
    assert step.kl != pytest.approx(by_hand[other_position, direction], rel=0.5)
    other_direction = "original_edited" if direction == "edited_original" else "edited_original"
    assert by_hand["subject_last", direction] != pytest.approx(
        by_hand["subject_last", other_direction], rel=0.1
    )


@pytest.mark.parametrize("form", ["squared", "norm"])
def test_weight_decay_form_and_the_value_it_is_measured_against(sharp, form) -> None:
    """v₀ defaults to the MLP output at the subject, averaged over the templates; MEMIT passes the
    hidden state instead. The decay and the clamp use whichever v₀ is in force."""
    _, trace = _trace(sharp, kl_factor=0.0, v_weight_decay=1e-5, weight_decay_form=form)
    v0 = subject_reads(sharp, sharp.adapter.mlp_out_name(LAYER), [REWRITE], TEMPLATES, "output")[:, 0]
    for step in trace:
        size = step.delta.norm() ** 2 if form == "squared" else step.delta.norm()
        assert step.decay == pytest.approx(float(size / v0.norm() ** 2), rel=1e-4, abs=1e-9)
        assert step.total == pytest.approx(step.nll + 1e-5 * step.decay, rel=1e-5)
    assert trace[-1].decay > 0

    anchor = torch.full_like(v0, 3.0)
    _, anchored = _trace(sharp, kl_factor=0.0, weight_decay_form=form, clamp_norm_factor=0.01, v0=anchor)
    limit = 0.01 * anchor.norm()
    assert all(step.delta.norm() <= limit * (1 + 1e-5) for step in anchored)
    assert anchored[-1].delta.norm() == pytest.approx(float(limit), rel=1e-4)  # the clamp binds
    size = anchored[-1].delta.norm() ** 2 if form == "squared" else anchored[-1].delta.norm()
    assert anchored[-1].decay == pytest.approx(float(size / anchor.norm() ** 2), rel=1e-4)


def test_optimisation_stops_where_the_chosen_loss_falls_below_the_threshold(sharp) -> None:
    """ "nll" stops at the first evaluation whose NLL is below 0.05; "total_loss" goes on while the
    decay keeps the total above it, up to `v_num_grad_steps` evaluations, i.e. one fewer Adam steps.
    Either way the δ returned is the last one evaluated."""
    slow = {"kl_factor": 0.0, "v_lr": 0.1, "v_num_grad_steps": 12, "v_weight_decay": 1e-3}
    delta, by_nll = _trace(sharp, **slow, stop_on="nll")
    assert all(step.nll >= STOP_BELOW for step in by_nll[:-1])
    assert by_nll[-1].nll < STOP_BELOW < by_nll[-1].total  # stopped on the NLL alone
    assert 1 < len(by_nll) < slow["v_num_grad_steps"]
    torch.testing.assert_close(delta, by_nll[-1].delta)

    delta, by_total = _trace(sharp, **slow, stop_on="total_loss")
    assert all(step.total >= STOP_BELOW for step in by_total)
    assert len(by_total) == slow["v_num_grad_steps"]  # ran to the cap, taking one fewer Adam steps:
    assert all(not torch.equal(a.delta, b.delta) for a, b in itertools.pairwise(by_total))
    torch.testing.assert_close(delta, by_total[-1].delta)
    for a, b in zip(by_nll, by_total, strict=False):  # the same path until the NLL rule stopped
        torch.testing.assert_close(a.delta, b.delta)

    # Without decay and KL the total is the NLL, and "total_loss" stops as early.
    _, plain = _trace(sharp, **{**slow, "v_weight_decay": 0.0}, stop_on="total_loss")
    assert all(step.total >= STOP_BELOW for step in plain[:-1])
    assert plain[-1].total < STOP_BELOW and len(plain) < slow["v_num_grad_steps"]


def test_nll_is_the_targets_mean_token_nll_over_the_templates_by_hand(tiny_handle) -> None:
    """Each evaluation's NLL is the target's mean token NLL, averaged over the templated prompts,
    computed here with one full forward pass per prompt (δ added at its subject's last token): the
    partial passes, the KL prompt sharing their batch and the target's last column left out of it
    change nothing but rounding. A two-token target, so that the left-out column is a target's."""
    handle = _sharpen(tiny_handle, 6)
    rewrite = Rewrite("The capital of France is", "France", "Berlin city")
    trace: list[ValueStep] = []
    optimize_value(handle, LAYER, rewrite, TEMPLATES, BASE, trace=trace)
    module = handle.adapter.module(handle.adapter.mlp_out_name(LAYER))
    for step in trace:
        by_hand = []
        for template in TEMPLATES:
            prompt = fill(template, rewrite.prompt)
            enc = encode_answers(handle.tokenizer, [prompt], [rewrite.target])
            at = last_token_before(
                handle.tokenizer, join_prompt_answer(prompt, rewrite.target), rewrite.subject_end(template)
            )

            def add(_module, _args, output, at=at, delta=step.delta):
                output = output.clone()
                output[0, at] += delta
                return output

            hook = module.register_forward_hook(add)
            try:
                with torch.no_grad():
                    log_probs = torch.log_softmax(handle.model(input_ids=enc.input_ids).logits[0].float(), -1)
            finally:
                hook.remove()
            first, end = int(enc.answer_start[0]), int(enc.answer_end[0])
            assert end - first >= 2
            gold = enc.input_ids[0, first:end, None]
            by_hand.append(-log_probs[first - 1 : end - 1].gather(-1, gold).mean())
        assert step.nll == pytest.approx(float(sum(by_hand) / len(by_hand)), rel=1e-4)


def test_choices_are_hyperparameters_with_the_documented_defaults(tiny_llama) -> None:
    for name in ("rome", "memit"):
        method = get_registry().load("methods", name)()
        hparams = resolve_hparams(method, tiny_llama, {})
        assert {k: hparams[k] for k in ("kl_position", "kl_direction", "weight_decay_form", "stop_on")} == {
            "kl_position": "next_token",
            "kl_direction": "edited_original",
            "weight_decay_form": "squared",
            "stop_on": "total_loss",
        }
        with pytest.raises(HarnessError, match="kl_position"):
            resolve_hparams(method, tiny_llama, {"kl_position": "last"})


def test_memit_measures_its_delta_against_the_hidden_state(tiny_llama, monkeypatch, tmp_path) -> None:
    """MEMIT's z = h + δ: δ is clamped and decayed relative to h, the layer's output at the subject
    (the reference's `target_init`), not to the MLP output that ROME edits."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["v0"])
        return optimize_value(*args, **kwargs)

    monkeypatch.setattr(memit_module, "optimize_value", spy)
    memit = memit_module.MEMIT()
    hparams = resolve_hparams(
        memit,
        tiny_llama,
        {
            "layers": [1, 2],
            "context_templates": [[3, 2]],
            "v_num_grad_steps": 2,
            "mom2_samples": 8,
            "mom2_tokens": 16,
        },
    )
    case = EditCase("c", REWRITE.prompt, REWRITE.target, subject=REWRITE.subject)
    memit.apply(tiny_llama, [case], hparams).undo()
    templates = context_templates(tiny_llama, hparams["context_templates"])
    hidden = subject_reads(tiny_llama, tiny_llama.adapter.layer_name(2), [REWRITE], templates, "output")[:, 0]
    torch.testing.assert_close(seen[0], hidden)
