"""Perplexity of target_new after the prompt: the WikiBio score, where the target is a whole sentence
and token accuracy says little."""

from __future__ import annotations

import math

from harness.api import EditCase, MetricInfo, Outcomes, Request

from ._common import OptionsMetric


class Perplexity(OptionsMetric):
    """exp of the mean negative log-likelihood of the target_new tokens after the prompt."""

    name = "perplexity"
    info = MetricInfo(unit="perplexity", higher_is_better=False)

    def requests(self, case: EditCase) -> list[Request]:
        return [Request.score(case.prompt, case.target_new)]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        scores = outcomes.scores(Request.score(case.prompt, case.target_new))
        return {self.name: math.exp(-scores.mean_logprob)}
