"""The evaluation engine against a naive one-example-at-a-time implementation, on tiny models of both
tokenizer families, plus the pre-edit cache and the tricky boundaries."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from naive_eval import naive_accuracy, naive_generate, naive_score, perturb

from harness.api import BOTH, EditCase, HarnessError, Metric, MetricInfo, Outcomes, Probe, TokenScores
from harness.evaluation.batching import ScoreJob, run_generations, run_scores
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Request
from harness.runs.plan import RunConfig
from harness.testing import Evaluator

PAIRS = [
    ("The capital of France is", "Paris"),
    ("The capital of Germany is", " Berlin"),
    ("Who wrote plays in English?", "William Shakespeare"),
    ("Tokyo is the capital of", "Japan, an island country in Asia"),
    ("x", "The official language of Brazil is Portuguese."),
    ("The currency of Japan is the", "yen"),
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_scores_equal_one_by_one(tiny_handle, side):
    options = EvalOptions(padding_side=side, max_batch_size=4)
    jobs = [ScoreJob(Request.score(p, a)) for p, a in PAIRS]
    batched = run_scores(tiny_handle.model, tiny_handle.tokenizer, jobs, options)
    for (prompt, answer), got in zip(PAIRS, batched, strict=True):
        pred, gold, logprobs, _ = naive_score(tiny_handle, prompt, answer)
        assert got.pred_ids == tuple(pred)
        assert got.gold_ids == tuple(gold)
        assert got.logprobs == pytest.approx(logprobs, abs=1e-4)


def test_gold_ids_are_the_answer_tokens_after_the_prompt(tiny_gpt2, tiny_llama):
    """Byte-level BPE merges the joining space into the answer (" Paris"); the Llama-style tokenizer
    adds BOS at the front, never inside the answer."""
    options = EvalOptions()
    for handle in (tiny_gpt2, tiny_llama):
        (got,) = run_scores(handle.model, handle.tokenizer, [ScoreJob(Request.score(*PAIRS[0]))], options)
        full = handle.tokenizer("The capital of France is Paris").input_ids
        prompt = handle.tokenizer("The capital of France is").input_ids
        assert full[: len(prompt)] == prompt
        assert got.gold_ids == tuple(full[len(prompt) :])
        assert handle.tokenizer.decode(got.gold_ids).strip() == "Paris"
        assert handle.tokenizer.bos_token_id not in got.gold_ids


def test_multi_token_answer_accuracy_is_fraction_of_tokens(tiny_handle):
    prompt, answer = PAIRS[3]
    (got,) = run_scores(
        tiny_handle.model, tiny_handle.tokenizer, [ScoreJob(Request.score(prompt, answer))], EvalOptions()
    )
    pred, gold, _, _ = naive_score(tiny_handle, prompt, answer)
    assert len(gold) > 3
    assert got.accuracy == sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)


def test_greedy_generation_batched_equals_hf_generate_one_by_one(tiny_handle):
    prompts = [p for p, _ in PAIRS]
    requests = [Request.generate(p, 12) for p in prompts]
    for side in ("left", "right"):
        batched = run_generations(
            tiny_handle.model, tiny_handle.tokenizer, requests, EvalOptions(padding_side=side)
        )
        for prompt, got in zip(prompts, batched, strict=True):
            expected = naive_generate(tiny_handle, prompt, 12)
            assert list(got.token_ids) == expected
            assert got.text == tiny_handle.tokenizer.decode(expected, skip_special_tokens=True)


def test_sampled_generation_is_seeded_per_row(tiny_handle):
    prompts = [p for p, _ in PAIRS]
    requests = [Request.generate(p, 10, top_k=5, seed=7) for p in prompts]
    model, tok = tiny_handle.model, tiny_handle.tokenizer
    batched = run_generations(model, tok, requests, EvalOptions())
    alone = [run_generations(model, tok, [r], EvalOptions())[0] for r in requests]
    assert batched == alone
    reseeded = run_generations(model, tok, [Request.generate(prompts[0], 10, top_k=5, seed=8)], EvalOptions())
    greedy = run_generations(model, tok, [Request.generate(prompts[0], 10)], EvalOptions())
    assert {reseeded[0].token_ids, greedy[0].token_ids, batched[0].token_ids} != {batched[0].token_ids}


def case_with_probes() -> EditCase:
    return EditCase(
        case_id="c1",
        prompt=PAIRS[0][0],
        target_new="Berlin",
        rephrases=("Paris is the capital of", "What is the capital of France?"),
        portability={
            "reasoning": (Probe("The Eiffel Tower is in", ("Rome", "Berlin city")),),
            "subject_aliasing": (Probe("The capital of the French Republic is", ("Berlin",)), Probe("p", ())),
        },
        locality={
            "relation_specificity": (Probe(PAIRS[3][0], (PAIRS[3][1],)), Probe(PAIRS[5][0], ("yen",))),
            "forgetfulness": (Probe("The capital of Italy is", (" ", "Rome")),),
        },
    )


def naive_acc(handle, prompt, answers, policy="first"):
    accs = [naive_accuracy(handle, prompt, a) for a in answers if a.strip()]
    accs = accs[:1] if policy == "first" else accs
    return max(accs) if accs else None


@pytest.mark.parametrize("policy", ["first", "best"])
def test_knowedit_metrics_equal_naive(tiny_handle, policy):
    case = case_with_probes()
    names = ["edit_succ", "generalization", "portability", "locality"]
    evaluator = Evaluator(tiny_handle, names, EvalOptions(alias_policy=policy, max_batch_size=3))
    evaluator.prepare([case])
    loc_pre = {
        p.prompt: naive_score(tiny_handle, p.prompt, next(a for a in p.answers if a.strip()))[0]
        for ps in case.locality.values()
        for p in ps
    }
    perturb(tiny_handle, 0.5)
    (got,) = evaluator.evaluate([case])
    h = tiny_handle
    assert got["edit_succ"] == naive_acc(h, case.prompt, [case.target_new])
    assert got["generalization"] == sum(naive_acc(h, r, ["Berlin"]) for r in case.rephrases) / 2
    reasoning = naive_acc(h, "The Eiffel Tower is in", ["Rome", "Berlin city"], policy)
    aliasing = naive_acc(h, "The capital of the French Republic is", ["Berlin"])
    assert got["portability.reasoning"] == reasoning
    assert got["portability.subject_aliasing"] == aliasing  # the probe with no answers does not count
    assert got["portability"] == pytest.approx((reasoning + aliasing) / 2)
    groups = {}
    for group, probes in case.locality.items():
        values = []
        for p in probes:
            post = naive_score(h, p.prompt, next(a for a in p.answers if a.strip()))[0]
            values.append(sum(a == b for a, b in zip(loc_pre[p.prompt], post, strict=True)) / len(post))
        groups[group] = sum(values) / len(values)
        assert got[f"locality.{group}"] == groups[group]
    assert got["locality"] == pytest.approx(sum(groups.values()) / 2)
    assert got["locality"] < 1.0  # the perturbation is large enough to move some argmax tokens


def test_a_cases_teacher_forced_probes_run_in_one_forward_pass(tiny_gpt2):
    """A run scores each case right after its edit; on a GPU that is latency-bound, so all of a
    case's teacher-forced probes (edit, rephrases, portability, locality) share one batch."""
    case = case_with_probes()
    evaluator = Evaluator(tiny_gpt2, ["edit_succ", "generalization", "portability", "locality"])
    evaluator.prepare([case])
    assert len(evaluator.requests(case)) > 4
    calls = []
    hook = tiny_gpt2.model.register_forward_pre_hook(lambda _module, _args: calls.append(1))
    try:
        evaluator.evaluate([case])
    finally:
        hook.remove()
    assert len(calls) == 1


def test_best_alias_is_at_least_first_and_absent_groups_stay_absent(tiny_handle):
    case = EditCase("c", "The capital of France is", "Paris", portability={"reasoning": (Probe("q", ()),)})
    first = Evaluator(
        tiny_handle, ["portability", "generalization", "locality"], EvalOptions(use_cache=False)
    )
    assert first.evaluate_pre([case]) == [{}]
    case = case_with_probes()
    by_policy = {
        policy: Evaluator(tiny_handle, ["portability"], EvalOptions(alias_policy=policy)).evaluate_pre(
            [case]
        )[0]
        for policy in ("first", "best")
    }
    assert by_policy["best"]["portability.reasoning"] >= by_policy["first"]["portability.reasoning"]


def test_exact_match_equals_greedy_generation(tiny_handle):
    """exact_match reads teacher-forced argmaxes; it must agree with real greedy decoding of as many
    tokens as the answer has."""
    prompt = "The capital of France is"
    (made,) = run_generations(
        tiny_handle.model, tiny_handle.tokenizer, [Request.generate(prompt, 3)], EvalOptions()
    )
    answers = [tiny_handle.tokenizer.decode(made.token_ids).strip() or "Paris", "Paris", "Berlin Berlin"]
    cases = [EditCase(str(i), prompt, a) for i, a in enumerate(answers)]
    results = Evaluator(tiny_handle, ["exact_match"]).evaluate_pre(cases)
    for answer, got in zip(answers, results, strict=True):
        gold = naive_score(tiny_handle, prompt, answer)[1]
        ids = tiny_handle.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = tiny_handle.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=len(gold),
                do_sample=False,
                min_new_tokens=len(gold),
                pad_token_id=tiny_handle.tokenizer.pad_token_id,
            )
        assert got["exact_match"] == float(out[0, ids.shape[1] :].tolist() == gold)


def test_contains_and_fluency_from_generations(tiny_handle):
    from harness.seeding import case_seed
    from harness_plugins.metrics.text import weighted_ngram_entropy

    case = EditCase("c", "The capital of France is", "Paris")
    options = EvalOptions(metric_options={"fluency_max_new_tokens": 30, "generation_max_new_tokens": 8})
    (got,) = Evaluator(tiny_handle, ["contains", "fluency"], options).evaluate_pre([case])
    model, tok = tiny_handle.model, tiny_handle.tokenizer
    greedy = run_generations(model, tok, [Request.generate(case.prompt, 8)], options)[0].text
    request = Request.generate(
        case.prompt, 30, top_k=5, seed=case_seed(options.seed, case.prompt), stop_at_eos=False
    )
    sampled = run_generations(model, tok, [request], options)[0].text
    assert got["contains"] == float(" paris " in f" {greedy.lower()} ")
    assert got["fluency"] == pytest.approx(weighted_ngram_entropy(case.prompt + sampled))


def test_pre_cache_reused_and_invalidated(tiny_llama):
    case = case_with_probes()
    names = ["edit_succ", "locality", "fluency"]
    first = Evaluator(tiny_llama, names, EvalOptions(metric_options={"fluency_max_new_tokens": 5}))
    first.prepare([case])
    assert first.pre_computed == 3  # the locality probes; edit_succ and fluency are post-only
    second = Evaluator(tiny_llama, names, EvalOptions(metric_options={"fluency_max_new_tokens": 5}))
    second.prepare([case])
    assert second.pre_computed == 0
    assert second.evaluate_pre([case]) == first.evaluate_pre([case])
    other_side = Evaluator(
        tiny_llama, names, EvalOptions(padding_side="right", metric_options={"fluency_max_new_tokens": 5})
    )
    other_side.prepare([case])
    assert other_side.pre_computed == 3


def test_pre_cache_keyed_by_what_an_outcome_holds(tiny_gpt2, monkeypatch):
    """An outcome that gains a field (as TokenScores gained gold_ranks) is never read from a file
    written without it."""
    import harness.evaluation.cache as pre_cache

    case = case_with_probes()
    Evaluator(tiny_gpt2, ["locality"]).prepare([case])
    original = pre_cache.OUTCOME_FIELDS
    grown = {**original, "score": [*original["score"], "new_field"]}
    monkeypatch.setattr(pre_cache, "OUTCOME_FIELDS", grown)
    evaluator = Evaluator(tiny_gpt2, ["locality"])
    evaluator.prepare([case])
    assert evaluator.pre_computed == 3
    monkeypatch.setattr(pre_cache, "OUTCOME_FIELDS", original)  # not undo(): it would drop the private home
    again = Evaluator(tiny_gpt2, ["locality"])
    again.prepare([case])
    assert again.pre_computed == 0


def test_pre_cache_keyed_by_weights(tiny_model_dirs):
    from harness.models.load import load_model

    case = case_with_probes()
    handle = load_model(tiny_model_dirs["gpt2"], device="cpu")
    Evaluator(handle, ["locality"]).prepare([case])
    changed = load_model(tiny_model_dirs["gpt2"], device="cpu")
    perturb(changed)
    evaluator = Evaluator(changed, ["locality"])
    evaluator.prepare([case])
    assert evaluator.pre_computed == 3


def test_evaluate_without_prepare_is_a_clear_error(tiny_gpt2):
    with pytest.raises(HarnessError, match="prepare"):
        Evaluator(tiny_gpt2, ["locality"]).evaluate([case_with_probes()])


def test_context_goes_before_post_prompts_only(tiny_gpt2):
    case = EditCase("c", "The capital of France is", "Berlin")
    evaluator = Evaluator(tiny_gpt2, ["edit_succ"])
    evaluator.prepare([case])
    context = "New fact: The capital of France is Berlin.\n"
    (got,) = evaluator.evaluate([case], contexts={"c": context})
    assert got["edit_succ"] == naive_acc(tiny_gpt2, context + case.prompt, ["Berlin"])


def test_kl_matches_full_distributions(tiny_handle):
    from harness_plugins.metrics.convsent import coarse_kl

    question, sentence = "What about dogs?", "They are fine animals."
    pre_full = naive_score(tiny_handle, question, sentence)[3]
    case = EditCase(
        "c",
        "p",
        "t",
        extras={
            "question": "q",
            "target_sentences": ["a"],
            "opposite_sentences": ["b"],
            "outer_question": question,
            "outer_sentences": [sentence],
        },
    )
    options = EvalOptions(metric_options={"kl_top_k": len(tiny_handle.tokenizer)})
    evaluator = Evaluator(tiny_handle, ["convsent_kl"], options)
    evaluator.prepare([case])
    perturb(tiny_handle, 0.3)
    post_full = naive_score(tiny_handle, question, sentence)[3]
    full_kl = (pre_full.exp() * (pre_full - post_full)).sum(-1).mean().item()
    (got,) = evaluator.evaluate([case])
    assert full_kl > 1e-3
    assert got["convsent_kl"] == pytest.approx(full_kl, abs=1e-4)
    top = pre_full.topk(4, -1)
    coarse = sum(
        coarse_kl(a, b)
        for a, b in zip(top.values.tolist(), post_full.gather(-1, top.indices).tolist(), strict=True)
    ) / len(pre_full)
    assert 0 < coarse <= full_kl + 1e-6


class TargetRank(Metric):
    """What a plugin author writes from docs/plugins.md: the rank of target_new's first token after
    the prompt (1 = most likely) on the edited model, from `TokenScores.gold_ranks`. It also asks
    for a full distribution and reports the position of the gold token in `dist_ids`
    (`target_rank.dist_position`), which issue 24's author took for the rank."""

    name = "target_rank"
    info = MetricInfo(unit="rank", higher_is_better=False)

    @staticmethod
    def request(case: EditCase) -> Request:
        return Request.score(case.prompt, case.target_new, phases=BOTH, dist_top_k=100_000)

    def requests(self, case: EditCase) -> list[Request]:
        return [self.request(case)]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        post = outcomes.scores(self.request(case), "post")
        return {
            self.name: post.gold_ranks[0],
            f"{self.name}.dist_position": post.dist_ids[0].index(post.gold_ids[0]) + 1,
        }


def direct_rank(handle, prompt: str, answer: str) -> int:
    """The first answer token's rank from one unbatched forward pass over the full vocabulary."""
    _, gold, _, logprobs = naive_score(handle, prompt, answer)
    return int((logprobs[0] > logprobs[0, gold[0]]).sum()) + 1


def test_target_rank_from_the_documented_outcome_is_the_true_post_edit_rank(tiny_handle):
    case = EditCase("c", "The capital of France is", "Japan")
    evaluator = Evaluator(tiny_handle, [TargetRank])
    evaluator.prepare([case])
    (before,) = evaluator.evaluate_pre([case])  # the unedited model is scored first, as in every run
    pre_rank = direct_rank(tiny_handle, case.prompt, case.target_new)
    assert before == {"target_rank": pre_rank, "target_rank.dist_position": pre_rank}
    perturb(tiny_handle, 0.5)  # the edit
    (after,) = evaluator.evaluate([case])
    truth = direct_rank(tiny_handle, case.prompt, case.target_new)
    assert truth != pre_rank, "the stand-in edit must move the rank for this test to mean anything"
    assert after["target_rank"] == truth
    # As documented, the post-edit `dist_ids` keep the unedited model's order: a position there is
    # the pre-edit rank, which is why `gold_ranks` exists.
    assert after["target_rank.dist_position"] == pre_rank


def test_gold_ranks_of_every_answer_token_match_a_direct_forward(tiny_handle):
    jobs = [ScoreJob(Request.score(p, a)) for p, a in PAIRS]
    for (prompt, answer), got in zip(
        PAIRS, run_scores(tiny_handle.model, tiny_handle.tokenizer, jobs, EvalOptions()), strict=True
    ):
        _, gold, _, logprobs = naive_score(tiny_handle, prompt, answer)
        gold_lp = logprobs.gather(-1, torch.tensor(gold)[:, None])
        assert got.gold_ranks == tuple(((logprobs > gold_lp).sum(-1) + 1).tolist())
        assert all(
            rank == 1 for rank, p, g in zip(got.gold_ranks, got.pred_ids, got.gold_ids, strict=True) if p == g
        )
    assert TokenScores.from_json(got.to_json()) == got  # the pre-edit cache keeps the ranks


def test_metric_options_have_the_metrics_defaults_and_are_recorded(tiny_gpt2):
    evaluator = Evaluator(tiny_gpt2, ["fluency", "contains", "edit_succ"], EvalOptions(use_cache=False))
    recorded = evaluator.settings()["options"]
    assert recorded["fluency_max_new_tokens"] == 100 and recorded["fluency_top_k"] == 5
    assert recorded["generation_max_new_tokens"] == 32 and "kl_top_k" not in recorded
    assert recorded["alias_policy"] == "first" and recorded["seed"] == RunConfig().seed == 0
    options = EvalOptions(metric_options={"fluency_top_k": 3, "kl_top_k": 8})
    fluency = Evaluator(tiny_gpt2, ["fluency"], options)
    assert fluency.settings()["options"]["fluency_top_k"] == 3
    (request,) = fluency.requests(EditCase("c", "The capital of France is", "Paris"))
    assert (request.top_k, request.max_new_tokens) == (3, 100)
    with pytest.raises(HarnessError, match="declares no option 'fluency_top_k'"):
        options.metric_option(TargetRank, "fluency_top_k")

    class Clash(TargetRank):
        name = "clash"
        option_defaults: ClassVar[dict[str, int]] = {"fluency_top_k": 7}

    with pytest.raises(HarnessError, match=r"declared by 'fluency'.*and 'clash'"):
        Evaluator(tiny_gpt2, ["fluency", Clash], options)
