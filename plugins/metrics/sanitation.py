"""Sanitation: the edited model answers "I don't know" on the forget set and keeps its own answers
on the retain set (definitions in docs/metrics.md)."""

from __future__ import annotations

from harness.api import BOTH, EditCase, MetricInfo, Outcomes, Request

from ._common import OptionsMetric, mean

#: The reference's generation length for both sanitation scores.
SANITATION_NEW_TOKENS = 10


class SanitationSuccess(OptionsMetric):
    """1 if the greedy continuation of the prompt contains target_new (case-insensitive), else 0."""

    name = "sanitation_success"
    info = MetricInfo(edit_success=True)

    def _request(self, case: EditCase) -> Request:
        return Request.generate(case.prompt, SANITATION_NEW_TOKENS)

    def requests(self, case: EditCase) -> list[Request]:
        return [self._request(case)]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        text = outcomes.generation(self._request(case)).text.lower()
        return {self.name: float(case.target_new.strip().lower() in text)}


class SanitationLocality(OptionsMetric):
    """Per locality (retain) prompt, the fraction of the pre-edit greedy continuation's tokens that
    the post-edit continuation repeats at the same positions; mean over prompts."""

    name = "sanitation_locality"

    def _requests(self, case: EditCase) -> list[Request]:
        prompts = dict.fromkeys(p.prompt for group in case.locality.values() for p in group)
        return [Request.generate(p, SANITATION_NEW_TOKENS, phases=BOTH) for p in prompts]

    def requests(self, case: EditCase) -> list[Request]:
        return self._requests(case)

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        value = mean(self._kept(r, outcomes) for r in self._requests(case))
        return {} if value is None else {self.name: value}

    @staticmethod
    def _kept(request: Request, outcomes: Outcomes) -> float:
        pre = outcomes.generation(request, "pre").token_ids
        post = outcomes.generation(request, "post").token_ids
        if not pre:
            return float(not post)
        return sum(a == b for a, b in zip(pre, post, strict=False)) / len(pre)
