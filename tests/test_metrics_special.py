"""WikiBio perplexity, ConvSent success and KL locality, Sanitation success and locality: the engine
against naive one-example implementations on cases from the real task loaders and the real KnowEdit
files, on tiny models of both families; and the formulas' boundaries against hand-computed values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from naive_eval import naive_generate, naive_score, perturb
from shared_data import KNOWEDIT

from harness.api import EditCase, HarnessError, Probe
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Generation, Outcomes, Request, TokenScores
from harness.testing import Evaluator, resolve_task
from harness_plugins.metrics.convsent import ConvSentKL, ConvSentSuccess, coarse_kl
from harness_plugins.metrics.perplexity import Perplexity
from harness_plugins.metrics.sanitation import SANITATION_NEW_TOKENS, SanitationLocality, SanitationSuccess

needs_data = pytest.mark.skipif(not KNOWEDIT.exists(), reason="shared KnowEdit data absent")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def real_cases():
    """A few cases per task, loaded exactly as a run loads them."""
    names = ("wikibio", "convsent", "sanitation")
    return {name: resolve_task(name).load(data_dir=str(KNOWEDIT)).cases for name in names}


# --- conformance with naive implementations on real cases ---------------------------------------


@needs_data
def test_perplexity_equals_naive_on_wikibio(tiny_handle, real_cases):
    tok = tiny_handle.tokenizer
    # the tiny models have 256 positions: the shorter WikiBio passages fit
    cases = [c for c in real_cases["wikibio"] if len(tok(f"{c.prompt} {c.target_new}").input_ids) < 200][:3]
    assert len(cases) == 3
    results = Evaluator(tiny_handle, ["perplexity"], EvalOptions(max_batch_size=2)).evaluate_pre(cases)
    for case, got in zip(cases, results, strict=True):
        logprobs = naive_score(tiny_handle, case.prompt, case.target_new)[2]
        assert len(logprobs) > 10  # a whole sentence, not one token
        assert math.log(got["perplexity"]) == pytest.approx(-sum(logprobs) / len(logprobs), abs=1e-4)


@needs_data
def test_too_long_wikibio_passage_is_a_clear_error(tiny_gpt2, real_cases):
    tok = tiny_gpt2.tokenizer
    long_case = next(c for c in real_cases["wikibio"] if len(tok(c.prompt).input_ids) > 300)
    with pytest.raises(HarnessError, match="256 positions") as error:
        Evaluator(tiny_gpt2, ["perplexity"]).evaluate_pre([long_case])
    assert long_case.prompt[:40] in str(error.value)


def mean_logprob(handle, question: str, sentences) -> float:
    """Mean over sentences of the mean log-probability of the sentence's tokens."""
    per_sentence = [naive_score(handle, question, s)[2] for s in sentences]
    return sum(sum(lp) / len(lp) for lp in per_sentence) / len(per_sentence)


def naive_coarse_kl(pre: torch.Tensor, post: torch.Tensor, k: int) -> torch.Tensor:
    """Per position, KL(pre || post) over pre's k most likely ids plus one bucket for the rest."""
    top = pre.topk(k, -1)
    post_top = post.gather(-1, top.indices)
    p_rest = (1 - top.values.exp().sum(-1)).clamp(min=0)
    q_rest = (1 - post_top.exp().sum(-1)).clamp(min=1e-30)
    rest = torch.where(p_rest > 0, p_rest * (p_rest / q_rest).log(), torch.zeros_like(p_rest))
    return (top.values.exp() * (top.values - post_top)).sum(-1) + rest


@needs_data
@pytest.mark.parametrize("k", [64, None])
def test_convsent_equals_naive_on_real_cases(tiny_handle, real_cases, k):
    loaded = real_cases["convsent"]
    assert loaded[0].extras["outer_question"] == loaded[1].extras["question"]  # the next record's topic
    cases = [loaded[0]]
    x = [c.extras for c in cases]
    k = k or len(tiny_handle.tokenizer)
    options = EvalOptions(max_batch_size=8, metric_options={"kl_top_k": k})
    evaluator = Evaluator(tiny_handle, ["convsent_es", "convsent_kl"], options)
    evaluator.prepare(cases)
    h = tiny_handle
    pre_target = [mean_logprob(h, e["question"], e["target_sentences"]) for e in x]
    pre_outer = [[naive_score(h, e["outer_question"], s)[3] for s in e["outer_sentences"]] for e in x]
    perturb(h, 0.3)
    results = evaluator.evaluate(cases)
    for e, got, pre_t, pre_dists in zip(x, results, pre_target, pre_outer, strict=True):
        post_t = mean_logprob(h, e["question"], e["target_sentences"])
        post_o = mean_logprob(h, e["question"], e["opposite_sentences"])
        expected = 1 / (1 + math.exp(post_o - post_t)) * min(1.0, math.exp(post_t - pre_t))
        assert got["convsent_es"] == pytest.approx(expected, abs=1e-4)
        post_dists = [naive_score(h, e["outer_question"], s)[3] for s in e["outer_sentences"]]
        kl = torch.cat([naive_coarse_kl(a, b, k) for a, b in zip(pre_dists, post_dists, strict=True)])
        assert kl.mean().item() > 1e-3  # the perturbation moved the outer-topic distributions
        assert got["convsent_kl"] == pytest.approx(kl.mean().item(), abs=1e-4)
    if k == len(tiny_handle.tokenizer):  # no bucket left: the full-vocabulary KL
        pre, post = pre_outer[0][0], naive_score(h, x[0]["outer_question"], x[0]["outer_sentences"][0])[3]
        full = (pre.exp() * (pre - post)).sum(-1)
        assert naive_coarse_kl(pre, post, k) == pytest.approx(full, abs=1e-4)


@needs_data
def test_convsent_before_the_edit_is_neutral(tiny_handle, real_cases):
    """On the unedited model the success factor is capped at 1 and the KL is 0."""
    case = real_cases["convsent"][0]
    (got,) = Evaluator(tiny_handle, ["convsent_es", "convsent_kl"]).evaluate_pre([case])
    e = case.extras
    post_t = mean_logprob(tiny_handle, e["question"], e["target_sentences"])
    post_o = mean_logprob(tiny_handle, e["question"], e["opposite_sentences"])
    assert got["convsent_es"] == pytest.approx(1 / (1 + math.exp(post_o - post_t)), abs=1e-4)
    assert got["convsent_kl"] == pytest.approx(0.0, abs=1e-6)


@needs_data
def test_sanitation_equals_naive_on_real_cases(tiny_handle, real_cases):
    cases = list(real_cases["sanitation"][:2])
    assert all(c.target_new == "I don't know." and c.locality["retain"] for c in cases)
    evaluator = Evaluator(tiny_handle, ["sanitation_success", "sanitation_locality"])
    evaluator.prepare(cases)
    n = SANITATION_NEW_TOKENS
    pre = {p.prompt: naive_generate(tiny_handle, p.prompt, n) for c in cases for p in c.locality["retain"]}
    perturb(tiny_handle, 0.5)
    results = evaluator.evaluate(cases)
    fractions = []
    for case, got in zip(cases, results, strict=True):
        text = tiny_handle.tokenizer.decode(
            naive_generate(tiny_handle, case.prompt, n), skip_special_tokens=True
        )
        assert got["sanitation_success"] == float("i don't know." in text.lower())
        kept = []
        for probe in case.locality["retain"]:
            before, after = pre[probe.prompt], naive_generate(tiny_handle, probe.prompt, n)
            assert before  # a real continuation: the boundary rule for empty ones is tested by hand
            kept.append(sum(a == b for a, b in zip(before, after, strict=False)) / len(before))
        fractions += kept
        assert got["sanitation_locality"] == sum(kept) / len(kept)
    assert min(fractions) < 1.0  # the perturbation changed some continuation


@needs_data
def test_sanitation_success_reads_the_greedy_continuation(tiny_handle, real_cases):
    """A target the model does produce (upper-cased, to check case-insensitivity) counts as success."""
    case = real_cases["sanitation"][0]
    text = tiny_handle.tokenizer.decode(naive_generate(tiny_handle, case.prompt, SANITATION_NEW_TOKENS))
    said = text.strip().split()[0]
    hit = EditCase(case.case_id, case.prompt, f" {said.upper()} ")
    miss = EditCase("other", case.prompt, "I don't know. I don't know. I don't know.")
    results = Evaluator(tiny_handle, ["sanitation_success"]).evaluate_pre([hit, miss])
    assert [r["sanitation_success"] for r in results] == [1.0, 0.0]


# --- the formulas at their boundaries, on hand-made outcomes --------------------------------------


def scores(logprobs, pred=None) -> TokenScores:
    gold = tuple(range(len(logprobs)))
    return TokenScores(tuple(pred or gold), gold, tuple(logprobs))


def convsent_case(target, opposite) -> EditCase:
    extras = {
        "question": "Q?",
        "target_sentences": target,
        "opposite_sentences": opposite,
        "outer_question": "R?",
        "outer_sentences": ["r"],
    }
    return EditCase("c", "p", "t", extras=extras)


def test_convsent_success_by_hand():
    """L is the mean over sentences of per-sentence means: sentence a (-1, -3) and b (-4) give -3,
    not the token mean -8/3."""
    metric, case = ConvSentSuccess(), convsent_case(["a", "b"], ["o"])
    q = "Q?"
    post = {Request.score(q, "a"): scores([-1, -3]), Request.score(q, "b"): scores([-4])}
    post[Request.score(q, "o")] = scores([-3.0])
    outcomes = Outcomes("c", {Request.score(q, "a"): scores([-1]), Request.score(q, "b"): scores([-1])}, post)
    # post T = -3 = post O: sigmoid 1/2; pre T = -1: factor exp(-2)
    assert metric.score(case, outcomes)["convsent_es"] == pytest.approx(0.5 * math.exp(-2), abs=1e-12)
    lower_pre = {r: scores([-9] * len(s.logprobs)) for r, s in outcomes._phases["pre"].items()}
    # the likelihood went up: the factor is capped at 1
    got = metric.score(case, Outcomes("c", lower_pre, post))["convsent_es"]
    assert got == pytest.approx(0.5, abs=1e-12)
    far = {**post, Request.score(q, "o"): scores([-2000.0])}  # no overflow far from 0
    assert metric.score(case, Outcomes("c", lower_pre, far))["convsent_es"] == 1.0
    assert metric.score(convsent_case(["a"], [" "]), outcomes) == {}  # no opposite sentence left


def test_coarse_kl_by_hand():
    # p = (1/2, 1/4 | rest 1/4), q = (1/4, 1/4 | rest 1/2): KL = 1/2 ln 2 + 0 + 1/4 ln(1/2) = 1/4 ln 2
    ln = math.log
    assert coarse_kl([ln(0.5), ln(0.25)], [ln(0.25), ln(0.25)]) == pytest.approx(0.25 * ln(2))
    assert coarse_kl([ln(0.5), ln(0.25)], [ln(0.5), ln(0.25)]) == pytest.approx(0.0, abs=1e-12)
    # the whole vocabulary kept (no rest): plain KL
    assert coarse_kl([ln(0.5), ln(0.5)], [ln(0.9), ln(0.1)]) == pytest.approx(
        0.5 * ln(0.5 / 0.9) + 0.5 * ln(0.5 / 0.1)
    )


def test_convsent_kl_averages_over_all_outer_positions():
    ln = math.log
    case = convsent_case(["a"], ["o"])
    case = EditCase("c", "p", "t", extras={**case.extras, "outer_sentences": ["r", "s"]})
    metric = ConvSentKL(EvalOptions(metric_options={"kl_top_k": 2}))
    r, s = (Request.score("R?", x, dist_top_k=2) for x in ("r", "s"))

    def dist(rows):
        return TokenScores(
            (0,) * len(rows), (0,) * len(rows), (0.0,) * len(rows), ((0, 1),) * len(rows), rows
        )

    same = (ln(0.5), ln(0.25))
    pre = {r: dist((same, same)), s: dist((same,))}
    post = {r: dist((same, (ln(0.25), ln(0.25)))), s: dist((same,))}
    # three positions, one with KL 1/4 ln 2
    assert metric.score(case, Outcomes("c", pre, post))["convsent_kl"] == pytest.approx(ln(2) / 12)


def test_convsent_needs_its_extras():
    case = EditCase("case-7", "p", "t", extras={"question": "Q?"})
    with pytest.raises(HarnessError, match=r"case-7.*target_sentences"):
        ConvSentSuccess().requests(case)


def test_perplexity_by_hand():
    case = EditCase("c", "p", "t")
    one = Outcomes("c", {}, {Request.score("p", "t"): scores([math.log(0.25)])})
    assert Perplexity().score(case, one)["perplexity"] == pytest.approx(4.0)
    two = Outcomes("c", {}, {Request.score("p", "t"): scores([math.log(0.5), math.log(0.125)])})
    assert Perplexity().score(case, two)["perplexity"] == pytest.approx(4.0)  # geometric mean of 2 and 8


def test_sanitation_by_hand():
    case = EditCase("c", "Question:q\nAnswer:", " I don't know. ", locality={"retain": (Probe("a", ("x",)),)})
    success = SanitationSuccess()
    said = {Request.generate(case.prompt, SANITATION_NEW_TOKENS): Generation((1, 2), " i DON'T know. Maybe")}
    assert success.score(case, Outcomes("c", {}, said)) == {"sanitation_success": 1.0}
    other = {Request.generate(case.prompt, SANITATION_NEW_TOKENS): Generation((1,), " I do not know.")}
    assert success.score(case, Outcomes("c", {}, other)) == {"sanitation_success": 0.0}

    locality = SanitationLocality()
    (request,) = locality.requests(case)

    def kept(before, after) -> float:
        pre, post = {request: Generation(before, "")}, {request: Generation(after, "")}
        return locality.score(case, Outcomes("c", pre, post))["sanitation_locality"]

    assert kept((5, 6, 7, 8), (5, 6, 9)) == 0.5  # shorter post: missing positions differ
    assert kept((5, 6), (5, 6, 7, 8)) == 1.0  # longer post: extra tokens are not judged
    assert kept((5, 6, 7), (6, 7, 8)) == 0.0  # positions, not a bag of tokens
    assert kept((), ()) == 1.0  # both stop at once: kept
    assert kept((), (5,)) == 0.0
    assert locality.score(EditCase("d", "p", "t"), Outcomes("d", {}, {})) == {}  # no retain probe


def test_every_built_in_metric_is_in_the_glossary():
    from harness_plugins.metrics import METRICS

    glossary = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", glossary, flags=re.MULTILINE))
    assert set(METRICS) <= rows


def test_the_glossary_states_each_metrics_info():
    """docs/metrics.md's table of units, directions and headline places is what the metrics declare."""
    from harness.plugins import get_registry
    from harness_plugins.metrics import METRICS

    glossary = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    pattern = r"^\| `([a-z_]+)` \| ([a-z]+) \| (higher|lower) \| (\d+|none) \| (yes|no) \|$"
    table = {m[0]: m[1:] for m in re.findall(pattern, glossary, flags=re.MULTILINE)}
    assert set(table) == set(METRICS)
    for name, (unit, better, headline, success) in table.items():
        info = get_registry().metrics.load(name).info
        assert (unit, better, headline, success) == (
            info.unit,
            "higher" if info.higher_is_better else "lower",
            "none" if info.headline is None else str(info.headline),
            "yes" if info.edit_success else "no",
        ), name
