"""The seam rule beyond tokenization: whitespace variants of one fact are scored alike by every
metric kind and trained alike by the methods (the same weight change, bit for bit), and outcomes
cached under an older join are never read."""

from __future__ import annotations

import pytest
import torch

from harness.api import EditCase, EvalOptions, Probe
from harness.hparams import resolve_hparams
from harness.plugins import get_registry
from harness.testing import Evaluator
from harness_plugins.methods.ike import demonstration, fact_prefix

#: The same edit with its seam written three ways.
VARIANTS = [
    ("The capital of France is", "Berlin"),
    ("The capital of France is ", " Berlin"),
    ("The capital of France is  ", "Berlin \n"),
]
#: A case without a subject (ROME keys it at the prompt's last token), with and without the space.
QUESTIONS = [("Question: Where is Paris?\nAnswer:", "Rome"), ("Question: Where is Paris?\nAnswer: ", " Rome")]
FAST_ROME = {"context_templates": [[3, 2]], "v_num_grad_steps": 3, "mom2_adjustment": False}


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))


def _case(prompt: str, target: str, subject: str = "France") -> EditCase:
    return EditCase(
        case_id="c",
        prompt=prompt,
        target_new=target,
        subject=subject,
        locality={"relation_specificity": (Probe("The capital of Italy is ", ("Rome ",)),)},
    )


def test_every_kind_of_probe_scores_the_variants_alike(tiny_handle) -> None:
    metrics = ["edit_succ", "perplexity", "contains"]
    evaluator = Evaluator(tiny_handle, metrics, EvalOptions(use_cache=False))
    # One case per call, so that each is computed in a batch of the same shape (bit-identical).
    scores = [evaluator.evaluate_pre([_case(p, t)])[0] for p, t in VARIANTS]
    assert set(scores[0]) == set(metrics)
    assert all(s == scores[0] for s in scores[1:])


def _weight_change(handle, method: str, case: EditCase, overrides: dict) -> dict[str, torch.Tensor]:
    editor = get_registry().load("methods", method)()
    before = {n: p.detach().clone() for n, p in handle.model.named_parameters()}
    torch.manual_seed(0)
    edit = editor.apply(handle, [case], resolve_hparams(editor, handle, overrides))
    change = {
        n: p.detach() - before[n] for n, p in handle.model.named_parameters() if not torch.equal(p, before[n])
    }
    edit.undo()
    return change


@pytest.mark.parametrize(
    ("method", "overrides", "variants", "subject"),
    [
        ("ft-m", {"num_steps": 3}, VARIANTS, "France"),
        ("rome", FAST_ROME, VARIANTS, "France"),
        ("rome", FAST_ROME, QUESTIONS, ""),
    ],
    ids=["ft-m", "rome", "rome-without-subject"],
)
def test_methods_make_the_same_edit_for_every_variant(
    tiny_handle, method, overrides, variants, subject
) -> None:
    changes = [_weight_change(tiny_handle, method, _case(p, t, subject), overrides) for p, t in variants]
    assert changes[0]
    for other in changes[1:]:
        assert other.keys() == changes[0].keys()
        assert all(torch.equal(other[n], changes[0][n]) for n in other)


def test_in_context_demonstrations_are_the_same_text_for_every_variant() -> None:
    texts = {(fact_prefix(_case(p, t)), demonstration("fact", p, t)) for p, t in VARIANTS}
    assert texts == {
        (
            "New Fact: The capital of France is Berlin\nPrompt: ",
            "New Fact: fact\nPrompt: The capital of France is Berlin\n\n",
        )
    }


def test_outcomes_of_an_older_protocol_are_not_read(tiny_gpt2, monkeypatch) -> None:
    """The seam rule changed what the engine computes, so the protocol in every pre-edit cache key
    was bumped: a cache written under another protocol is computed afresh."""
    import harness.evaluation.cache as pre_cache

    case = _case(*VARIANTS[1])
    Evaluator(tiny_gpt2, ["locality"]).prepare([case])
    monkeypatch.setattr(pre_cache, "PROTOCOL_VERSION", pre_cache.PROTOCOL_VERSION - 1)
    older = Evaluator(tiny_gpt2, ["locality"])
    older.prepare([case])
    assert older.pre_computed == 1
