"""ConvSent: did the edit move the model's sentiment about the topic, and how far did it move its
next-token distributions on another topic? (definitions and the reference's bugs in docs/metrics.md)

Inputs come from EditCase.extras: "question" (a question about the edited topic),
"target_sentences" and "opposite_sentences" (answers of the target and of the other sentiment),
"outer_question" and "outer_sentences" (a question and answers about a different topic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from harness.api import BOTH, EditCase, HarnessError, MetricInfo, Outcomes, Request

from ._common import OptionsMetric, mean

EXTRAS = ("question", "target_sentences", "opposite_sentences", "outer_question", "outer_sentences")


def _extras(case: EditCase, metric: str) -> dict:
    missing = [k for k in EXTRAS if k not in case.extras]
    if missing:
        raise HarnessError(f"case {case.case_id!r}: metric {metric} needs extras {', '.join(missing)}")
    return dict(case.extras)


def _sentences(values: Sequence[str]) -> list[str]:
    return [s for s in values if s.strip()]


def _mean_logprob(question: str, sentences: Sequence[str], outcomes: Outcomes, phase: str) -> float:
    """Mean over sentences of the per-token mean log-probability of the sentence after the question."""
    return sum(outcomes.scores(Request.score(question, s), phase).mean_logprob for s in sentences) / len(
        sentences
    )


class ConvSentSuccess(OptionsMetric):
    """sigmoid(L_post(target) - L_post(opposite)) * min(1, exp(L_post(target) - L_pre(target)))."""

    name = "convsent_es"
    info = MetricInfo(edit_success=True)

    def requests(self, case: EditCase) -> list[Request]:
        x = _extras(case, self.name)
        return [Request.score(x["question"], s, phases=BOTH) for s in _sentences(x["target_sentences"])] + [
            Request.score(x["question"], s) for s in _sentences(x["opposite_sentences"])
        ]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        x = _extras(case, self.name)
        target, opposite = _sentences(x["target_sentences"]), _sentences(x["opposite_sentences"])
        if not target or not opposite:
            return {}
        post_t = _mean_logprob(x["question"], target, outcomes, "post")
        post_o = _mean_logprob(x["question"], opposite, outcomes, "post")
        pre_t = _mean_logprob(x["question"], target, outcomes, "pre")
        # exp only of non-positive numbers: no overflow however far apart the log-probabilities are
        gap = post_t - post_o
        sigmoid = 1 / (1 + math.exp(-gap)) if gap >= 0 else math.exp(gap) / (1 + math.exp(gap))
        return {self.name: sigmoid * math.exp(min(0.0, post_t - pre_t))}


def coarse_kl(pre_logprobs: Sequence[float], post_logprobs: Sequence[float]) -> float:
    """KL(pre || post) over the pre-edit top-k tokens plus one bucket for all other tokens: exact
    for the top-k ids, a lower bound on the full-vocabulary KL, tight when the tail mass is small."""
    p = [math.exp(v) for v in pre_logprobs]
    q = [math.exp(v) for v in post_logprobs]
    kl = sum(pi * (lp - lq) for pi, lp, lq in zip(p, pre_logprobs, post_logprobs, strict=False))
    p_rest, q_rest = max(0.0, 1 - sum(p)), max(1e-30, 1 - sum(q))
    return kl + (p_rest * math.log(p_rest / q_rest) if p_rest > 0 else 0.0)


class ConvSentKL(OptionsMetric):
    """Mean over the answer positions of the outer-topic sentences of KL(pre || post), in nats
    (lower is better)."""

    name = "convsent_kl"
    info = MetricInfo(unit="nats", higher_is_better=False)
    #: How many of the unedited model's most likely tokens are kept per position.
    option_defaults: ClassVar[Mapping[str, Any]] = {"kl_top_k": 64}

    def _requests(self, case: EditCase) -> list[Request]:
        x = _extras(case, self.name)
        return [
            Request.score(x["outer_question"], s, phases=BOTH, dist_top_k=self.option("kl_top_k"))
            for s in _sentences(x["outer_sentences"])
        ]

    def requests(self, case: EditCase) -> list[Request]:
        return self._requests(case)

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        values = []
        for request in self._requests(case):
            pre, post = outcomes.scores(request, "pre"), outcomes.scores(request, "post")
            values += [coarse_kl(a, b) for a, b in zip(pre.dist_logprobs, post.dist_logprobs, strict=False)]
        value = mean(values)
        return {} if value is None else {self.name: value}
